"""The local backend's host work per prompt: rendering the chat template and tokenising,
with remembered layouts and text pieces vs rendering and tokenising every prompt whole.

    python bench/host_work.py --queries 5 --depth 20 --model-queries 3

On a GPU the forward passes of the embedded model are short (a pointwise query's batches
took 0.076 s on an H100), so the host's work per prompt decides much of rankwise's overhead
over plain ``model(...)`` calls. This benchmark measures that work on its own, side by side
in one run:

* ``whole``: every prompt rendered through the Jinja chat template and tokenised whole
  (``ChunkedEncoder.enabled`` and ``ChatRenderer.fills_in`` off: rankwise before both);
* ``remembered``: the default: the template's layout filled in, token ids built from
  remembered pieces (see ``rankwise.backends.chunked_encoding``).

Part 1 runs each method through ``DryRunBackend`` (every prompt built, truncated, rendered
and tokenised exactly as for a real rerank, and no model run), query by query, arms
interleaved, with the backend's memories emptied before each query, so each query's
passages are tokenised from scratch. It reports milliseconds per prompt and checks that
both arms counted the same prompt tokens.

Part 2 reranks pointwise with the real model on ``--device`` and reports each arm's wall
time and the seconds its forward passes took; on a CPU their difference is the host's
share (prompt work, batching, asyncio), which does not overlap the forward passes there.

Writes ``bench/results/host_work.json`` (``host_work_cuda.json`` with ``--device cuda``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import dl19, machine, median, result_name, write_json

from rankwise import Reranker
from rankwise.backends.dry_run import DryRunBackend
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import QueryRecord

METHODS: dict[str, dict[str, Any]] = {
    "pointwise": {"max_passage_tokens": 128},
    "prp-allpair": {"max_passage_tokens": 128},
    "setwise": {"max_passage_tokens": 128},
    "listwise": {},
    "first": {},
}


def make_arms(device: str) -> dict[str, TransformersBackend]:
    whole = TransformersBackend("default", device=device)
    whole.encoder.enabled = False
    whole.renderer.fills_in = False
    return {"whole": whole, "remembered": TransformersBackend("default", device=device)}


def forget(backend: TransformersBackend) -> None:
    """Empty what the backend remembers of texts, so a query starts from scratch."""
    backend.encoder.clear()
    backend._truncate_cached.cache_clear()
    backend.clear_prefix_cache()


async def dry_rerank(
    backend: TransformersBackend, method: str, record: QueryRecord, depth: int
) -> tuple[float, int, int]:
    """Seconds, prompts and prompt tokens of one rerank with no model run."""
    forget(backend)
    reranker = Reranker(method, DryRunBackend(backend), **METHODS[method])
    started = time.perf_counter()
    ranked = await reranker.arerank(record.query, record.documents(depth))
    return time.perf_counter() - started, ranked.usage.calls, ranked.usage.prompt_tokens


async def prompt_work(
    arms: dict[str, TransformersBackend], records: list[QueryRecord], depth: int, repeats: int
) -> list[dict[str, Any]]:
    summary = []
    for method in METHODS:
        rows = []
        for record in records:
            runs: dict[str, list[float]] = {name: [] for name in arms}
            counted: dict[str, int] = {}
            prompts = 0
            for _ in range(repeats):
                for name, backend in arms.items():  # interleaved
                    seconds, prompts, tokens = await dry_rerank(backend, method, record, depth)
                    runs[name].append(seconds)
                    counted[name] = tokens
            whole, remembered = median(runs["whole"]), median(runs["remembered"])
            rows.append(
                {
                    "qid": record.qid,
                    "prompts": prompts,
                    "whole_ms_per_prompt": round(1000 * whole / prompts, 3),
                    "remembered_ms_per_prompt": round(1000 * remembered / prompts, 3),
                    "speedup": round(whole / remembered, 2),
                    "same_prompt_tokens": counted["whole"] == counted["remembered"],
                }
            )
        entry = {
            "method": method,
            "depth": depth,
            "queries": len(rows),
            "repeats": repeats,
            "median_prompts_per_query": median([r["prompts"] for r in rows]),
            "median_whole_ms_per_prompt": round(
                median([r["whole_ms_per_prompt"] for r in rows]), 3
            ),
            "median_remembered_ms_per_prompt": round(
                median([r["remembered_ms_per_prompt"] for r in rows]), 3
            ),
            "median_speedup": round(median([r["speedup"] for r in rows]), 2),
            "same_prompt_tokens": sum(r["same_prompt_tokens"] for r in rows),
            "per_query": rows,
        }
        summary.append(entry)
        print(
            f"{method:12} host work per prompt: whole {entry['median_whole_ms_per_prompt']:.3f} "
            f"ms vs remembered {entry['median_remembered_ms_per_prompt']:.3f} ms "
            f"({entry['median_speedup']}×), same prompt tokens "
            f"{entry['same_prompt_tokens']}/{entry['queries']}",
            flush=True,
        )
    return summary


async def model_reranks(
    arms: dict[str, TransformersBackend], records: list[QueryRecord], depth: int
) -> dict[str, Any]:
    """Pointwise with the real model: wall time and forward seconds per arm."""
    rows = []
    for record in records:
        row: dict[str, Any] = {"qid": record.qid}
        rankings = []
        for name, backend in arms.items():
            forget(backend)
            before = backend.stats.seconds
            reranker = Reranker("pointwise", backend, **METHODS["pointwise"])
            started = time.perf_counter()
            ranked = await reranker.arerank(record.query, record.documents(depth))
            wall = time.perf_counter() - started
            forward = backend.stats.seconds - before
            row[f"{name}_s"] = round(wall, 4)
            row[f"{name}_forward_s"] = round(forward, 4)
            row[f"{name}_host_ms_per_prompt"] = round(1000 * (wall - forward) / depth, 3)
            rankings.append(ranked.ids)
        row["same_ranking"] = rankings[0] == rankings[1]
        rows.append(row)
        print(f"pointwise with the model {row}", flush=True)
    result: dict[str, Any] = {"method": "pointwise", "depth": depth, "queries": len(rows)}
    for name in arms:
        for key in ("s", "forward_s", "host_ms_per_prompt"):
            result[f"median_{name}_{key}"] = median([r[f"{name}_{key}"] for r in rows])
    result["identical_rankings"] = sum(r["same_ranking"] for r in rows)
    result["per_query"] = rows
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="dry runs per arm and query")
    parser.add_argument("--model-queries", type=int, default=3, help="pointwise with the model")
    parser.add_argument("--device", default="cpu", help="torch device for part 2, e.g. cuda")
    args = parser.parse_args()
    records, _ = dl19(max(args.queries, args.model_queries) + 1)
    warm_up, records = records[0], records[1:]
    arms = make_arms(args.device)
    for backend in arms.values():  # warm-up at full size, unreported
        await Reranker("pointwise", backend).arerank(warm_up.query, warm_up.documents(args.depth))
    summary = await prompt_work(arms, records[: args.queries], args.depth, args.repeats)
    model = await model_reranks(arms, records[: args.model_queries], args.depth)
    payload = {
        "benchmark": "host_work",
        "model": arms["remembered"].model_name,
        "device": args.device,
        "tokenizer_chunking": arms["remembered"].encoder.enabled,
        "template_filled_in": arms["remembered"].renderer.fills_in,
        "methods": summary,
        "pointwise_with_model": model,
        "machine": machine(),
    }
    print(f"wrote {write_json(result_name('host_work', args.device), payload)}")


if __name__ == "__main__":
    asyncio.run(main())
