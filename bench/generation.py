"""Local generation: how the prompts' pass is run and when finished prompts leave the
batch. Three arms, side by side in one run, taking turns at going first, same prompts:

- ``rankwise``: the backend's default. On a CPU the prompts' pass is one packed row (no
  padding); decoding drops each prompt from the batch once it is done.
- ``padded prefill``: the same decoding after a left-padded pass over the prompts (what
  the backend does where packing is off, as on a GPU).
- ``model.generate``: a left-padded batch decoded by ``model.generate``, which computes
  every prompt until the longest answer ends.

Two workloads:

- the query rewriter with every strategy for one DL19 question (seven short prompts in one
  batch; the pseudo-answer may write 256 tokens, the others 64);
- listwise (RankGPT) reranking of several DL19 queries at once (``--parallel`` queries,
  one window each at depth 20): long prompts of unequal length, short answers.

    python bench/generation.py --queries 4 --parallel 4 --rounds 4

Reports median seconds per question (rewriting) and per round of queries (listwise), the
ratios, tokens generated and whether every arm wrote the same text. Writes
``bench/results/generation.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from _common import dl19, machine, median, turns, write_json

import rankwise.backends.transformers as transformers_backend
from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.rewrite import STRATEGIES, QueryRewriter

ARMS = ("rankwise", "padded prefill", "model.generate")


@contextmanager
def arm(name: str, backend: TransformersBackend) -> Iterator[None]:
    """Run inside with the given arm's prefill and decoding."""
    packs = backend.pack_prompts
    plain_greedy = transformers_backend.plain_greedy
    if name != ARMS[0]:
        backend.pack_prompts = False
    if name == ARMS[2]:
        transformers_backend.plain_greedy = lambda config: False
    try:
        yield
    finally:
        backend.pack_prompts = packs
        transformers_backend.plain_greedy = plain_greedy


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work()
    return time.perf_counter() - started, result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=4, help="questions to rewrite")
    parser.add_argument("--parallel", type=int, default=4, help="listwise queries at once")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of listwise queries")
    parser.add_argument("--depth", type=int, default=20)
    args = parser.parse_args()
    records, _ = dl19(max(args.queries, args.parallel * args.rounds))
    backend = TransformersBackend("default")
    rewriter = QueryRewriter(backend, list(STRATEGIES))
    listwise = Reranker("listwise", backend, window=args.depth)
    await rewriter.arewrite("warm up")

    rewriting: dict[str, dict[str, list[Any]]] = {
        a: {"s": [], "tokens": [], "out": []} for a in ARMS
    }
    for number, record in enumerate(records[: args.queries]):
        for name in turns(number, ARMS):
            with arm(name, backend):
                seconds, result = await timed(lambda q=record.query: rewriter.arewrite(q))
            rewriting[name]["s"].append(seconds)
            rewriting[name]["tokens"].append(result.usage.completion_tokens)
            rewriting[name]["out"].append(result.queries)
            print(
                f"rewrite {record.qid:>8} {name:22} {seconds:6.2f} s, "
                f"{result.usage.completion_tokens} tokens",
                flush=True,
            )

    ranking: dict[str, dict[str, list[Any]]] = {a: {"s": [], "tokens": [], "out": []} for a in ARMS}
    for round_number in range(args.rounds):
        batch = records[round_number * args.parallel : (round_number + 1) * args.parallel]
        for name in turns(round_number, ARMS):

            async def together(batch: list = batch) -> list:
                return await asyncio.gather(
                    *(listwise.arerank(r.query, r.documents(args.depth)) for r in batch)
                )

            with arm(name, backend):
                seconds, results = await timed(together)
            tokens = sum(r.usage.completion_tokens for r in results)
            ranking[name]["s"].append(seconds)
            ranking[name]["tokens"].append(tokens)
            ranking[name]["out"].append([r.ids for r in results])
            print(
                f"listwise round {round_number} {name:22} {seconds:6.2f} s, "
                f"{tokens} tokens ({[r.usage.completion_tokens for r in results]})",
                flush=True,
            )

    def summary(rows: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
        new, padded, generate = (median(rows[a]["s"]) for a in ARMS)
        outputs = [rows[a]["out"] for a in ARMS]
        return {
            "median_seconds": {a: round(median(rows[a]["s"]), 3) for a in ARMS},
            "seconds": {a: [round(s, 3) for s in rows[a]["s"]] for a in ARMS},
            "generated_tokens": {a: rows[a]["tokens"] for a in ARMS},
            "speedup_vs_generate": round(generate / new, 2),
            "speedup_vs_padded_prefill": round(padded / new, 2),
            "same_output": all(output == outputs[0] for output in outputs),
        }

    payload = {
        "benchmark": "generation",
        "model": backend.model_name,
        "dtype": "float32",
        "packed_prefill": backend.pack_prompts,
        "rewriting": {
            "strategies": list(STRATEGIES),
            "questions": args.queries,
            **summary(rewriting),
        },
        "listwise_queries_at_once": {
            "parallel": args.parallel,
            "rounds": args.rounds,
            "depth": args.depth,
            "window": args.depth,
            **summary(ranking),
        },
        "machine": machine(),
    }
    for name in ("rewriting", "listwise_queries_at_once"):
        part = payload[name]
        print(
            f"{name}: {part['median_seconds']} -> {part['speedup_vs_generate']}x vs "
            f"model.generate, {part['speedup_vs_padded_prefill']}x vs padded prefill, "
            f"same output: {part['same_output']}"
        )
    print(f"wrote {write_json('generation', payload)}")


if __name__ == "__main__":
    asyncio.run(main())
