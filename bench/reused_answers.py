"""Answers reused within one rerank: the sequential comparison methods with and without it,
side by side in one run on the embedded local model, the arms taking turns at going first.

- ``reused``: rankwise's default. A prompt asked again within one rerank (a pair a later
  PRP-Sliding pass meets again, a pair or group heapsort meets again) is answered by its
  first asking.
- ``asked again``: every prompt is sent to the model, as the published code does.

Greedy answers are the same when asked again, so both arms must give the same rankings;
the benchmark checks it. On the local model each arm starts without the key/value states
the other arm kept of the same prompts. Methods: ``prp-sliding`` (K = 10), ``prp-heapsort`` and
``setwise`` (top 10), each over the first ``--depth`` BM25 candidates.

    python bench/reused_answers.py --queries 4 --depth 20
    python bench/reused_answers.py --queries 3 --depth 20 --backend api --methods prp-sliding
    python bench/reused_answers.py --queries 3 --depth 20 --backend api --update \
        --methods prp-heapsort setwise

``--backend api`` asks the same model over a llama.cpp server on 127.0.0.1 (needs
``llama-cpp-python[server]``), where a call is an HTTP request as to a hosted API; the
result goes to ``reused_answers_api.json``, and ``--update`` adds the methods run to that
file instead of replacing it (each added method records the machine and date that measured
it). The embedded model rarely prefers a passage in both orders, so PRP's passes swap little
there. ``--backend judge`` asks a strong judge instead: a loopback stub that answers from
the NIST judgments (the passage judged more relevant; on equal judgments the first shown,
so the two orders disagree and it is a tie), with ``--latency`` seconds per call; the
result goes to ``reused_answers_judge.json``.

Reports, per method and arm, median seconds per query, calls and reused answers per query,
nDCG@10, and whether the rankings matched. Writes ``bench/results/reused_answers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from _common import RESULTS, ROOT, dl19, machine, median, time_rerank, turns, write_json

sys.path.insert(0, str(ROOT))

from rankwise import OpenAIBackend, Reranker
from rankwise.backends.base import Backend
from rankwise.backends.transformers import TransformersBackend
from rankwise.context import RankContext
from rankwise.evaluate import QueryRecord, mean, ndcg_at_k
from tests.stub_server import Reply, StubServer, completion, user_text

ARMS = ("reused", "asked again")
METHODS = ("prp-sliding", "prp-heapsort", "setwise")
PASSAGE = re.compile(r'Passage ([A-Z]): "(.*?)"', re.DOTALL)
KEY_CHARS = 60
"""A passage is known by its first characters (the prompt holds it cut to a token limit)."""


def judgments_by_text(records: list[QueryRecord], qrels: dict[str, dict[str, int]]) -> dict:
    """Each candidate's NIST judgment (0 when unjudged), keyed by its text's beginning."""
    return {
        (record.query, _text_key(c["text"])): qrels[record.qid].get(c["id"], 0)
        for record in records
        for c in record.documents(None)
    }


def _text_key(text: str) -> str:
    """A passage's first characters, whitespace collapsed, as a prompt and a record show it."""
    return " ".join(text.split())[:KEY_CHARS]


def qrels_judge(judged: dict, latency: float):  # type: ignore[no-untyped-def]
    """A stub handler that picks the passage the judgments rate highest, the first on a tie."""

    def answer(request: dict[str, Any]) -> Reply:
        text = user_text(request)
        query = next(q for q, _ in judged if q in text)
        shown = PASSAGE.findall(text)  # (label, passage), in the order shown
        best = "A"
        if shown:  # the first of the highest judged
            best = max(shown, key=lambda item: judged.get((query, _text_key(item[1])), 0))[0]
        return Reply(body=completion(f"Passage {best}"), delay=latency)

    return answer


@contextmanager
def arm(name: str) -> Iterator[None]:
    """Within ``asked again``, every prompt goes past the reuse (``RankContext._reused``)
    to the response cache and the model, as it did before answers were reused."""
    reusing = RankContext._reused
    if name == ARMS[1]:
        RankContext._reused = lambda self, key, ask: ask()  # type: ignore[method-assign]
    try:
        yield
    finally:
        RankContext._reused = reusing  # type: ignore[method-assign]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    records, qrels = dl19(args.queries)
    records = [r for r in records if r.qid in qrels]
    with ExitStack() as stack:
        backend: Backend
        if args.backend == "api":
            from rankwise.llamacpp import serve_gguf

            base_url = stack.enter_context(serve_gguf())
            backend = OpenAIBackend("smollm2", base_url=base_url, api_key="none", timeout=600)
        elif args.backend == "judge":
            judge = qrels_judge(judgments_by_text(records, qrels), args.latency)
            server = stack.enter_context(StubServer(judge))
            backend = OpenAIBackend("qrels-judge", base_url=server.base_url, timeout=60)
        else:
            backend = TransformersBackend()
        return await compare(backend, records, qrels, args)


async def compare(
    backend: Backend, records: list[Any], qrels: dict[str, dict[str, int]], args: Any
) -> dict[str, Any]:
    """Both arms over every method and query, on ``backend``."""
    rows: dict[str, Any] = {}
    for method in args.methods:
        reranker = Reranker(method, backend, top_k=10)
        await reranker.arerank(records[0].query, records[0].documents(3))  # load and warm
        seen: dict[str, dict[str, list[Any]]] = {a: {} for a in ARMS}
        for number, record in enumerate(records):
            for name in turns(number, ARMS):
                if isinstance(backend, TransformersBackend):  # start cold: no states kept
                    backend.clear_prefix_cache()  # from the other arm's same prompts
                with arm(name):
                    seconds, ranked = await time_rerank(reranker, record, args.depth)
                runs = seen[name]
                runs.setdefault("seconds", []).append(seconds)
                runs.setdefault("calls", []).append(ranked.usage.calls)
                runs.setdefault("reused", []).append(ranked.usage.reused_answers)
                runs.setdefault("ids", []).append(ranked.ids)
                runs.setdefault("ndcg", []).append(ndcg_at_k(ranked.ids, qrels[record.qid]))
            print(
                f"{method} {record.qid}: "
                + ", ".join(
                    f"{a} {seen[a]['seconds'][-1]:.2f} s, {seen[a]['calls'][-1]} calls"
                    for a in ARMS
                ),
                flush=True,
            )
        same = sum(a == b for a, b in zip(seen[ARMS[0]]["ids"], seen[ARMS[1]]["ids"], strict=True))
        arms = {
            name: {
                "seconds_per_query": round(median(runs["seconds"]), 3),
                "calls_per_query": mean(runs["calls"]),
                "reused_per_query": mean(runs["reused"]),
                "ndcg@10": round(mean(runs["ndcg"]), 4),
            }
            for name, runs in seen.items()
        }
        reused, asked = arms[ARMS[0]], arms[ARMS[1]]
        rows[method] = {
            "arms": arms,
            "speedup": round(asked["seconds_per_query"] / reused["seconds_per_query"], 2),
            "calls_ratio": round(asked["calls_per_query"] / reused["calls_per_query"], 2),
            "same_rankings": f"{same}/{len(records)}",
        }
        print(method, rows[method], flush=True)
    return {
        "benchmark": "reused_answers",
        "machine": machine(),
        "backend": args.backend,
        "model": backend.model_name,
        "queries": len(records),
        "depth": args.depth,
        "methods": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--backend", choices=("local", "api", "judge"), default="local")
    parser.add_argument("--latency", type=float, default=0.05, help="judge: seconds per call")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="default: all"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="add the methods run to the existing result file of this backend (same model, "
        "queries and depth), replacing any run again, instead of writing a new file",
    )
    args = parser.parse_args()
    name = "reused_answers" if args.backend == "local" else f"reused_answers_{args.backend}"
    earlier = None
    if args.update:  # checked before the long run
        earlier = load_earlier(name)
        _check_same(
            earlier, {"backend": args.backend, "queries": args.queries, "depth": args.depth}
        )
    result = asyncio.run(run(args))
    if earlier is not None:
        result = updated(earlier, result)
    print(f"wrote {write_json(name, result)}")


def load_earlier(name: str) -> dict[str, Any]:
    """The committed result ``--update`` adds to, or a clear error when there is none."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"--update: {path} does not exist; run once without --update")
    return json.loads(path.read_text(encoding="utf-8"))


def updated(earlier: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``earlier`` with ``result``'s methods added or replaced, each added method carrying
    the machine (and date) that measured it; the two runs must match in what they compare."""
    _check_same(earlier, {key: result[key] for key in ("backend", "model", "queries", "depth")})
    methods = dict(earlier["methods"])
    for method, row in result["methods"].items():
        methods[method] = {**row, "machine": result["machine"]}
    return {**earlier, "methods": methods}


def _check_same(earlier: dict[str, Any], now: dict[str, Any]) -> None:
    for key, value in now.items():
        if earlier.get(key) != value:
            raise SystemExit(
                f"--update: the earlier run has {key} {earlier.get(key)!r} and this one "
                f"{value!r}; run with the same options, or without --update"
            )


if __name__ == "__main__":
    main()
