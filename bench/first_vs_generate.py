"""FIRST (one forward pass, ranking from the first token's logits) against listwise generation
(RankGPT: the model writes the whole permutation) on the local model, same windows, same
queries, side by side in one run.

    python bench/first_vs_generate.py --queries 5 --depth 20 --window 20

Reports seconds per window (median over queries), the speed ratio, tokens generated,
nDCG@10 and fallbacks. Target: FIRST at least 2x faster per window. Writes
``bench/results/first_vs_generate.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import dl19, machine, median, write_json

from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import mean, ndcg_at_k

TARGET = 2.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--step", type=int, default=10)
    args = parser.parse_args()
    records, qrels = dl19(args.queries)
    backend = TransformersBackend("default")
    settings = {"window": args.window, "step": args.step}
    rerankers = {name: Reranker(name, backend, **settings) for name in ("first", "listwise")}
    await rerankers["first"].arerank(records[0].query, records[0].documents(3))  # warm-up

    per_method: dict[str, dict[str, list[Any]]] = {
        name: {"per_window_s": [], "ndcg": [], "completion_tokens": [], "fallbacks": []}
        for name in rerankers
    }
    for record in records:
        for name, reranker in rerankers.items():  # interleaved, query by query
            started = time.perf_counter()
            ranked = await reranker.arerank(record.query, record.documents(args.depth))
            seconds = time.perf_counter() - started
            row = per_method[name]
            row["per_window_s"].append(seconds / max(ranked.usage.calls, 1))
            row["ndcg"].append(ndcg_at_k(ranked.ids, qrels.get(record.qid, {})))
            row["completion_tokens"].append(ranked.usage.completion_tokens)
            row["fallbacks"].append(len(ranked.trace.fallbacks))
            print(
                f"{record.qid:>8} {name:9} {seconds:6.2f} s, {ranked.usage.calls} window(s), "
                f"{ranked.usage.completion_tokens} generated tokens",
                flush=True,
            )
    summary = {}
    for name, row in per_method.items():
        summary[name] = {
            "median_seconds_per_window": round(median(row["per_window_s"]), 3),
            "seconds_per_window": [round(s, 3) for s in row["per_window_s"]],
            "ndcg@10": round(mean(row["ndcg"]), 4),
            "median_generated_tokens_per_query": median(row["completion_tokens"]),
            "fallbacks": sum(row["fallbacks"]),
        }
    ratio = (
        summary["listwise"]["median_seconds_per_window"]
        / summary["first"]["median_seconds_per_window"]
    )
    payload = {
        "benchmark": "first_vs_generate",
        "model": backend.model_name,
        "dtype": "float32",
        "queries": len(records),
        "depth": args.depth,
        "window": args.window,
        "step": args.step,
        "methods": summary,
        "speedup_first_over_listwise": round(ratio, 2),
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "machine": machine(),
    }
    print(
        f"FIRST {summary['first']['median_seconds_per_window']} s/window vs listwise "
        f"{summary['listwise']['median_seconds_per_window']} s/window: {ratio:.2f}× "
        f"(target ≥{TARGET}×: {'met' if ratio >= TARGET else 'MISSED'})"
    )
    print(f"wrote {write_json('first_vs_generate', payload)}")


if __name__ == "__main__":
    asyncio.run(main())
