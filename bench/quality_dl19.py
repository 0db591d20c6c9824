"""Quality on every DL19 query: the embedded model's scoring methods against BM25, and the
model's order blended with BM25's by reciprocal rank fusion.

    python bench/quality_dl19.py --depth 20

The method comparison in ``bench/methods.py`` runs every method on a few queries; this one
runs the two scoring methods that are cheap enough for all 43 queries (``pointwise-qlm``, the
demo's default, and ``pointwise``) in float32, with the Reranker's default options, as a user
would.

Both run again in bfloat16, which CPUs with matrix units (AMX) run about twice as fast:
how much nDCG@10 moves, and on how many queries the top 10 stays the same as in float32.

It also answers whether a blend with the first-stage order is worth offering: for each
method, the model's order and BM25's are fused with weighted RRF, ``(1 - w) / (k + model
rank) + w / (k + BM25 rank)`` with ``k = 60``, for a few weights ``w``. The blends need no
further model calls; they re-sort the rankings already made.

Reports nDCG@10 (trec_eval's definition) per system, how many queries each method improves
or worsens against BM25, seconds per query, and each query's numbers. Writes
``bench/results/quality_dl19.json``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from _common import against_first_stage, dl19, machine, median, time_rerank, write_json

from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import mean, ndcg_at_k
from rankwise.fusion import RRF_K

METHODS = ("pointwise-qlm", "pointwise")
BLEND_WEIGHTS = (0.25, 0.5, 0.75)
DTYPES = ("float32", "bfloat16")


def blended(first_stage: list[str], model: list[str], weight: float, k: int = RRF_K) -> list[str]:
    """The two orders fused by weighted RRF; ties keep the first-stage order."""
    first_rank = {doc: rank for rank, doc in enumerate(first_stage, start=1)}
    model_rank = {doc: rank for rank, doc in enumerate(model, start=1)}

    def fused(doc: str) -> float:
        return (1 - weight) / (k + model_rank[doc]) + weight / (k + first_rank[doc])

    return sorted(first_stage, key=lambda doc: (-fused(doc), first_rank[doc]))


async def run_method(
    backend: TransformersBackend, method: str, records: list[Any], depth: int
) -> list[dict[str, Any]]:
    reranker = Reranker(method, backend)
    rows = []
    for record in records:
        seconds, ranked = await time_rerank(reranker, record, depth)
        rows.append({"qid": record.qid, "ids": ranked.ids, "seconds": round(seconds, 3)})
        print(f"{method} {record.qid}: {seconds:.2f} s", flush=True)
    return rows


def summary(
    system: str, scores: dict[str, float], bm25: dict[str, float], **extra: Any
) -> dict[str, Any]:
    """One table row: mean nDCG@10 and the queries better and worse than BM25."""
    return {"system": system, **against_first_stage(scores, bm25), **extra}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--queries", type=int, default=None, help="the first N (all by default)")
    args = parser.parse_args()
    records, qrels = dl19(args.queries)
    first_stage = {r.qid: [doc["id"] for doc in r.documents(args.depth)] for r in records}

    def ndcg(qid: str, ranking: list[str]) -> float:
        return round(ndcg_at_k(ranking, qrels.get(qid, {})), 4)

    bm25 = {qid: ndcg(qid, ids) for qid, ids in first_stage.items()}
    systems: list[dict[str, Any]] = [
        {"system": "BM25 (input order)", "ndcg@10": round(mean(list(bm25.values())), 4)}
    ]
    per_query: dict[str, dict[str, Any]] = {qid: {"bm25": value} for qid, value in bm25.items()}
    float32: dict[str, dict[str, list[str]]] = {}
    for dtype in DTYPES:
        backend = TransformersBackend("default", dtype=dtype)
        await run_method(backend, METHODS[0], records[:1], args.depth)  # warm-up, unreported
        for method in METHODS:
            rows = await run_method(backend, method, records, args.depth)
            scores = {row["qid"]: ndcg(row["qid"], row["ids"]) for row in rows}
            seconds = median([row["seconds"] for row in rows])
            label = method if dtype == "float32" else f"{method}, {dtype}"
            for row in rows:
                per_query[row["qid"]][label] = scores[row["qid"]]
            if dtype != "float32":  # how much the cheaper dtype changes the ranking
                same = sum(row["ids"][:10] == float32[method][row["qid"]][:10] for row in rows)
                extra = {"median_seconds_per_query": seconds, "same_top10_as_float32": same}
                systems.append(summary(label, scores, bm25, **extra))
                continue
            float32[method] = {row["qid"]: row["ids"] for row in rows}
            systems.append(summary(label, scores, bm25, median_seconds_per_query=seconds))
            for weight in BLEND_WEIGHTS:
                fused = {
                    row["qid"]: ndcg(
                        row["qid"], blended(first_stage[row["qid"]], row["ids"], weight)
                    )
                    for row in rows
                }
                systems.append(summary(f"{method} + BM25 order, RRF weight {weight}", fused, bm25))
    for row in systems:
        print(f"{row['system']:45} nDCG@10 {row['ndcg@10']:.4f}", flush=True)
    result = {
        "benchmark": "quality_dl19",
        "model": backend.model_name,
        "dtypes": list(DTYPES),
        "depth": args.depth,
        "queries": len(records),
        "rrf_k": RRF_K,
        "systems": systems,
        "per_query": [{"qid": qid, **values} for qid, values in per_query.items()],
        "machine": machine(),
    }
    print(f"wrote {write_json('quality_dl19', result)}")


if __name__ == "__main__":
    asyncio.run(main())
