"""Key/value states kept across calls (the backend's prefix store) for the methods that call
the local model one step after another, on and off, side by side in one run.

    python bench/prefix_store.py --queries 2 --depth 20

Setwise, PRP heapsort (top 10) and PRP sliding (top 5) make dependent calls, so their
batches hold one comparison (both orders) and a batch's own shared prefix is short. With
the store, each call starts from the longest prefix any recent prompt had: the template,
instruction and query always, a whole passage when a pair starts with a passage seen
before, and the entire prompt when a comparison repeats (sliding passes compare the same
pairs again).
FIRST is run over three windows, and then once more over the same query (a repeated query
is served almost entirely from the store).

Both arms use the same model and batching; ``off`` is ``prefix_cache_mb=0``. The store is
emptied before each query, so only reuse within one rerank is counted. Reports seconds and
computed/reused prompt tokens per query, and whether both arms gave the same ranking.
Writes ``bench/results/prefix_store.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import dl19, machine, median, write_json

from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import QueryRecord

METHODS: dict[str, dict[str, Any]] = {
    "setwise": {"top_n": 10, "max_passage_tokens": 128},
    "prp-heapsort": {"top_n": 10, "max_passage_tokens": 128},
    "prp-sliding": {"top_n": 5, "max_passage_tokens": 128},
    "first": {"window": 20, "step": 10},
}


async def run_arm(
    backend: TransformersBackend, method: str, record: QueryRecord, depth: int
) -> dict[str, Any]:
    backend.clear_prefix_cache()
    before = (backend.stats.real_tokens, backend.stats.stored_prefix_tokens)
    reranker = Reranker(method, backend, **METHODS[method])
    started = time.perf_counter()
    ranked = await reranker.arerank(record.query, record.documents(depth))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "ids": ranked.ids,
        "calls": ranked.usage.calls,
        "computed_tokens": backend.stats.real_tokens - before[0],
        "kept_prefix_tokens": backend.stats.stored_prefix_tokens - before[1],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--first-depth", type=int, default=40)
    args = parser.parse_args()
    records, _ = dl19(args.queries)
    on = TransformersBackend("default")
    off = TransformersBackend("default", prefix_cache_mb=0)
    for backend in (on, off):  # warm-up, not reported
        await Reranker("setwise", backend, top_n=3).arerank(
            records[-1].query, records[-1].documents(5)
        )
    rows: dict[str, list[dict[str, Any]]] = {method: [] for method in METHODS}
    for record in records:
        for method in METHODS:  # interleaved, query by query
            depth = args.first_depth if method == "first" else args.depth
            with_store = await run_arm(on, method, record, depth)
            without = await run_arm(off, method, record, depth)
            row = {
                "qid": record.qid,
                "calls": with_store["calls"],
                "on_s": round(with_store["seconds"], 3),
                "off_s": round(without["seconds"], 3),
                "speedup": round(without["seconds"] / with_store["seconds"], 2),
                "on_computed_tokens": with_store["computed_tokens"],
                "off_computed_tokens": without["computed_tokens"],
                "kept_prefix_tokens": with_store["kept_prefix_tokens"],
                "same_ranking": with_store["ids"] == without["ids"],
            }
            if method == "first":  # the same query again, store warm
                started = time.perf_counter()
                await Reranker("first", on, **METHODS["first"]).arerank(
                    record.query, record.documents(depth)
                )
                row["repeat_on_s"] = round(time.perf_counter() - started, 3)
            rows[method].append(row)
            print(f"{method:13} {row}", flush=True)
    summary = []
    for method, per_query in rows.items():
        entry = {
            "method": method,
            "depth": args.first_depth if method == "first" else args.depth,
            "queries": len(per_query),
            "median_calls": median([r["calls"] for r in per_query]),
            "median_on_s_per_query": round(median([r["on_s"] for r in per_query]), 2),
            "median_off_s_per_query": round(median([r["off_s"] for r in per_query]), 2),
            "median_speedup": round(median([r["speedup"] for r in per_query]), 3),
            "computed_token_share": round(
                sum(r["on_computed_tokens"] for r in per_query)
                / max(sum(r["off_computed_tokens"] for r in per_query), 1),
                3,
            ),
            "identical_rankings": sum(r["same_ranking"] for r in per_query),
            "per_query": per_query,
        }
        if method == "first":
            entry["median_repeat_s_per_query"] = round(
                median([r["repeat_on_s"] for r in per_query]), 3
            )
        summary.append(entry)
        print(
            f"{method}: {entry['median_on_s_per_query']} s/query with the store vs "
            f"{entry['median_off_s_per_query']} without ({entry['median_speedup']}×), "
            f"{entry['computed_token_share']:.0%} of the positions computed, "
            f"{entry['identical_rankings']}/{entry['queries']} identical rankings"
        )
    payload = {
        "benchmark": "prefix_store",
        "model": on.model_name,
        "dtype": "float32",
        "prefix_cache_mb": on.prefix_store.max_bytes / 2**20,
        "options": METHODS,
        "methods": summary,
        "machine": machine(),
    }
    print(f"wrote {write_json('prefix_store', payload)}")


if __name__ == "__main__":
    asyncio.run(main())
