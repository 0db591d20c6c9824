"""How nDCG@10 and time grow with how much the default method reads: rerank depth and
passage length, on every DL19 query.

    python bench/quality_vs_cost.py --depths 10,20,50 --passage-tokens 64,128,256

``method="auto"`` on a local model is ``pointwise-qlm``: one forward pass per candidate,
costing about as much as the candidate's tokens. Two settings decide that cost: how many
first-stage candidates are reranked (``depth``) and where each passage is cut
(``max_passage_tokens``, 256 by default). This runs every combination on the same queries
with the embedded model in float32, interleaved query by query, so that the machine's
drifts in speed fall on every combination alike. The prefix store is emptied before each
rerank, so no combination reuses another's key/value states.

Reports, per combination: nDCG@10, the queries better and worse than BM25, median and mean
seconds per query, and each query's numbers. Writes ``bench/results/quality_vs_cost.json``
(``--name`` picks another file, e.g. for a run at other settings).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any

from _common import against_first_stage, dl19, machine, median, time_rerank, write_json

from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import mean, ndcg_at_k

METHOD = "pointwise-qlm"


def numbers(text: str) -> list[int]:
    """``"10,20,50"`` as ``[10, 20, 50]``."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 10,20,50, got {text!r}")
    return values


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depths", type=numbers, default=[10, 20, 50])
    parser.add_argument("--passage-tokens", type=numbers, default=[64, 128, 256])
    parser.add_argument("--queries", type=int, default=None, help="the first N (all by default)")
    parser.add_argument(
        "--name", default="quality_vs_cost", help="results file: bench/results/NAME.json"
    )
    args = parser.parse_args()
    records, qrels = dl19(args.queries)
    backend = TransformersBackend("default")
    grid = list(itertools.product(args.passage_tokens, args.depths))
    rerankers = {
        (tokens, depth): Reranker(METHOD, backend, max_passage_tokens=tokens)
        for tokens, depth in grid
    }
    await time_rerank(rerankers[grid[0]], records[0], grid[0][1])  # warm-up, unreported

    bm25: dict[str, float] = {}
    runs: dict[tuple[int, int], dict[str, dict[str, float]]] = {key: {} for key in grid}
    for record in records:
        relevant = qrels.get(record.qid, {})
        bm25[record.qid] = round(ndcg_at_k([d["id"] for d in record.documents(10)], relevant), 4)
        for key in grid:
            backend.clear_prefix_cache()
            seconds, ranked = await time_rerank(rerankers[key], record, key[1])
            ndcg = round(ndcg_at_k(ranked.ids, relevant), 4)
            runs[key][record.qid] = {"ndcg@10": ndcg, "seconds": round(seconds, 3)}
            print(f"{record.qid} tokens={key[0]} depth={key[1]}: {ndcg:.4f} {seconds:.2f} s")

    rows: list[dict[str, Any]] = []
    for (tokens, depth), per_query in runs.items():
        scores = {qid: values["ndcg@10"] for qid, values in per_query.items()}
        seconds = [values["seconds"] for values in per_query.values()]
        rows.append(
            {
                "max_passage_tokens": tokens,
                "depth": depth,
                **against_first_stage(scores, bm25),
                "median_seconds_per_query": round(median(seconds), 3),
                "mean_seconds_per_query": round(mean(seconds), 3),
                "per_query": [{"qid": qid, **values} for qid, values in per_query.items()],
            }
        )
        print(
            f"tokens={tokens:4} depth={depth:3}  nDCG@10 {rows[-1]['ndcg@10']:.4f}  "
            f"{rows[-1]['median_seconds_per_query']:.2f} s/query"
        )
    result = {
        "benchmark": "quality_vs_cost",
        "name": args.name,
        "model": backend.model_name,
        "method": METHOD,
        "dtype": "float32",
        "queries": len(records),
        "bm25_ndcg@10": round(mean(list(bm25.values())), 4),
        "bm25_per_query": bm25,
        "rows": rows,
        "machine": machine(),
    }
    print(f"wrote {write_json(args.name, result)}")


if __name__ == "__main__":
    asyncio.run(main())
