"""The local backend on this CPU: load time (GGUF conversion, then the cached copy),
pointwise seconds per query at depth 20 and 100, and bf16 against fp32.

    python bench/local_backend.py --queries 3

Writes bench/results/local_backend.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

from _common import dl19, machine, median, write_json

from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import mean, ndcg_at_k


def kendall_tau(a: list[str], b: list[str]) -> float:
    """Kendall's τ between two orderings of the same ids."""
    position = {doc: i for i, doc in enumerate(b)}
    ranks = [position[doc] for doc in a]
    concordant = discordant = 0
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            if ranks[i] < ranks[j]:
                concordant += 1
            else:
                discordant += 1
    pairs = concordant + discordant
    return (concordant - discordant) / pairs if pairs else 1.0


def load_times() -> dict[str, float]:
    import os

    previous = os.environ.get("RANKWISE_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RANKWISE_CACHE_DIR"] = cache
        cold = TransformersBackend("default").load_seconds
        cached = [TransformersBackend("default").load_seconds for _ in range(3)]
    if previous is None:
        os.environ.pop("RANKWISE_CACHE_DIR", None)
    else:
        os.environ["RANKWISE_CACHE_DIR"] = previous
    return {"cold_gguf_conversion_s": round(cold, 2), "cached_median_s": round(median(cached), 2)}


async def pointwise_runs(backend, records, qrels, depth: int) -> dict[str, Any]:
    reranker = Reranker("pointwise", backend)
    seconds, ndcgs, rankings = [], [], []
    for record in records:
        started = time.perf_counter()
        ranked = await reranker.arerank(record.query, record.documents(depth))
        seconds.append(time.perf_counter() - started)
        ndcgs.append(ndcg_at_k(ranked.ids, qrels[record.qid]))
        rankings.append(ranked.ids)
    return {
        "depth": depth,
        "queries": len(records),
        "median_seconds_per_query": round(median(seconds), 2),
        "seconds_per_query": [round(s, 2) for s in seconds],
        "ndcg@10": round(mean(ndcgs), 4),
        "rankings": rankings,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--deep-queries", type=int, default=2, help="queries at depth 100")
    args = parser.parse_args()
    records, qrels = dl19(args.queries)
    loads = load_times()
    print(f"load: {loads}", flush=True)

    fp32 = TransformersBackend("default", dtype="float32")
    bf16 = TransformersBackend("default", dtype="bfloat16")
    results: dict[str, Any] = {"load": loads, "pointwise": [], "bf16_vs_fp32": []}
    for depth, subset in ((20, records), (100, records[: args.deep_queries])):
        for name, backend in (("float32", fp32), ("bfloat16", bf16)):
            run = await pointwise_runs(backend, subset, qrels, depth)
            run["dtype"] = name
            results["pointwise"].append(run)
            print(
                f"pointwise depth {depth} {name}: {run['median_seconds_per_query']} s/query, "
                f"nDCG@10 {run['ndcg@10']}",
                flush=True,
            )
        a, b = results["pointwise"][-2], results["pointwise"][-1]
        taus = [kendall_tau(x, y) for x, y in zip(a["rankings"], b["rankings"], strict=True)]
        same_top10 = sum(
            x[:10] == y[:10] for x, y in zip(a["rankings"], b["rankings"], strict=True)
        )
        agreement = {
            "depth": depth,
            "kendall_tau": [round(t, 3) for t in taus],
            "identical_top10": same_top10,
            "queries": len(taus),
            "speedup_bf16": round(a["median_seconds_per_query"] / b["median_seconds_per_query"], 2),
        }
        results["bf16_vs_fp32"].append(agreement)
        print(f"bf16 vs fp32 at depth {depth}: {agreement}", flush=True)
    for run in results["pointwise"]:
        run.pop("rankings")
    results["machine"] = machine()
    print(f"wrote {write_json('local_backend', results)}")


if __name__ == "__main__":
    asyncio.run(main())
