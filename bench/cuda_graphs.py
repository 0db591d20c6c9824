"""CUDA graphs on and off for the local backend on a GPU, side by side in one run.

    python bench/cuda_graphs.py --queries 5 --depth 20

For each method below, the embedded model on one CUDA device, two backends that differ only
in ``cuda_graphs`` (the default, on, against plain ``model(...)`` passes), query by query,
arms interleaved, each arm run ``--repeats`` times per query (median kept):

* ``pointwise`` and ``pointwise-qlm`` (the demo's default): one batch of up to 16 prompts
  after another, all independent;
* ``setwise`` and ``prp-heapsort`` (top 10), ``first`` (windows of 20, step 10): calls that
  depend on earlier answers, so most batches hold one to four prompts, where a plain pass is
  mostly kernel launches.

A bucket shape is captured on its second use. Each query is first run once per arm
(``cold``: its shapes new to the backend or seen in earlier queries, captures included, as in
a stream of new queries), then ``--repeats`` more times (``graphs``/``plain``: the steady
state, its shapes already captured). The first query of all (``first_query_*``) shows what a
fresh backend pays. Also reported: whether both arms ranked identically, and the graphs kept
and the device memory they hold. Needs a CUDA GPU;
writes ``bench/results/cuda_graphs_cuda.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from _common import dl19, machine, median, result_name, time_rerank, write_json

from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import QueryRecord

METHODS: dict[str, dict[str, Any]] = {
    "pointwise": {"max_passage_tokens": 128},
    "pointwise-qlm": {"max_passage_tokens": 128},
    "setwise": {"top_n": 10, "max_passage_tokens": 128},
    "prp-heapsort": {"top_n": 10, "max_passage_tokens": 128},
    "first": {"window": 20, "step": 10},
}


async def timed(
    backend: TransformersBackend, method: str, record: QueryRecord, depth: int
) -> tuple[float, list[str]]:
    seconds, ranked = await time_rerank(Reranker(method, backend, **METHODS[method]), record, depth)
    return seconds, ranked.ids


async def compare(
    arms: dict[str, TransformersBackend],
    method: str,
    warm_up: QueryRecord,
    records: list[QueryRecord],
    depth: int,
    repeats: int,
) -> dict[str, Any]:
    first = {
        name: (await timed(backend, method, warm_up, depth))[0] for name, backend in arms.items()
    }
    rows = []
    for record in records:
        cold = {}
        for name, backend in arms.items():
            cold[name] = (await timed(backend, method, record, depth))[0]
        seconds: dict[str, list[float]] = {name: [] for name in arms}
        ids: dict[str, list[str]] = {}
        for _ in range(repeats):
            for name, backend in arms.items():
                elapsed, ids[name] = await timed(backend, method, record, depth)
                seconds[name].append(elapsed)
        graphed, plain = median(seconds["graphs"]), median(seconds["plain"])
        rows.append(
            {
                "qid": record.qid,
                "graphs_cold_s": round(cold["graphs"], 4),
                "plain_cold_s": round(cold["plain"], 4),
                "graphs_s": round(graphed, 4),
                "plain_s": round(plain, 4),
                "speedup": round(plain / graphed, 2),
                "same_ranking": ids["graphs"] == ids["plain"],
            }
        )
    graphs = arms["graphs"].graphs
    assert graphs is not None
    summary = {
        "method": method,
        "depth": depth,
        "queries": len(rows),
        "repeats": repeats,
        "median_graphs_s_per_query": round(median([r["graphs_s"] for r in rows]), 4),
        "median_plain_s_per_query": round(median([r["plain_s"] for r in rows]), 4),
        "median_speedup": round(median([r["plain_s"] / r["graphs_s"] for r in rows]), 2),
        "median_graphs_cold_s_per_query": round(median([r["graphs_cold_s"] for r in rows]), 4),
        "median_plain_cold_s_per_query": round(median([r["plain_cold_s"] for r in rows]), 4),
        "identical_rankings": sum(r["same_ranking"] for r in rows),
        "first_query_graphs_s": round(first["graphs"], 3),
        "first_query_plain_s": round(first["plain"], 3),
        "graphs_kept": len(graphs),
        "graph_memory_mb": round(graphs.bytes / 2**20, 1),
        "per_query": rows,
    }
    print(
        f"{method:14} graphs {summary['median_graphs_s_per_query']:.4f} s/q  plain "
        f"{summary['median_plain_s_per_query']:.4f} s/q  {summary['median_speedup']}x  cold "
        f"{summary['median_graphs_cold_s_per_query']:.4f} vs "
        f"{summary['median_plain_cold_s_per_query']:.4f} s/q  "
        f"same ranking {summary['identical_rankings']}/{len(rows)}  first query "
        f"{first['graphs']:.2f} vs {first['plain']:.2f} s  {len(graphs)} graphs, "
        f"{summary['graph_memory_mb']} MB",
        flush=True,
    )
    return summary


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/cuda_graphs.py needs a CUDA GPU (none is visible to torch here)")
    records, _ = dl19(args.queries + 1)
    warm_up, records = records[0], records[1:]
    results: dict[str, Any] = {
        "benchmark": "cuda_graphs",
        "model": "",
        "device": args.device,
        "methods": [],
    }
    for method in METHODS:  # fresh backends per method: each captures only its own buckets
        arms = {
            "graphs": TransformersBackend("default", device=args.device),
            "plain": TransformersBackend("default", device=args.device, cuda_graphs=False),
        }
        results["model"] = arms["graphs"].model_name
        summary = await compare(arms, method, warm_up, records, args.depth, args.repeats)
        results["methods"].append(summary)
        del arms
    results["machine"] = machine()
    print(f"wrote {write_json(result_name('cuda_graphs', args.device), results)}")


if __name__ == "__main__":
    asyncio.run(main())
