"""Packed against padded label and query-likelihood batches on the CPU, side by side.

    python bench/packing.py --queries 3 --depth 20

Two backends with the embedded model that differ only in ``pack_prompts`` (the CPU's
default, on: a batch's prompts laid end to end in one row, no padding computed; off: each
prompt padded to the longest of its batch), for ``pointwise-qlm`` (the demo's default:
query likelihood, log-probs of the query's tokens after each passage) and ``pointwise``
(yes/no label), query by query, arms interleaved. Reports seconds per query, the share of
computed positions that were padding in the padded arm, and whether both arms ranked
identically. Writes ``bench/results/packing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from _common import dl19, machine, median, time_rerank, write_json

from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import QueryRecord

METHODS = ("pointwise-qlm", "pointwise")


async def timed(
    backend: TransformersBackend, method: str, record: QueryRecord, depth: int
) -> tuple[float, list[str], float]:
    """Seconds, ranked ids, and the padding share of the positions computed."""
    stats = backend.stats
    real, padded = stats.real_tokens, stats.padded_tokens
    reranker = Reranker(method, backend, max_passage_tokens=128)
    seconds, ranked = await time_rerank(reranker, record, depth)
    real, padded = stats.real_tokens - real, stats.padded_tokens - padded
    return seconds, ranked.ids, 1 - real / padded if padded else 0.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--depth", type=int, default=20)
    args = parser.parse_args()
    records, _ = dl19(args.queries + 1)
    arms = {
        "packed": TransformersBackend("default"),
        "padded": TransformersBackend("default", pack_prompts=False),
    }
    assert arms["packed"].pack_prompts, "packing is refused for this model"
    results: dict[str, Any] = {
        "benchmark": "packing",
        "model": arms["packed"].model_name,
        "methods": [],
    }
    for method in METHODS:
        for backend in arms.values():  # warm-up, unreported
            await timed(backend, method, records[-1], args.depth)
        rows = []
        for record in records[: args.queries]:
            runs = {}
            for name, backend in arms.items():
                backend.clear_prefix_cache()
                runs[name] = await timed(backend, method, record, args.depth)
            rows.append(
                {
                    "qid": record.qid,
                    "packed_s": round(runs["packed"][0], 3),
                    "padded_s": round(runs["padded"][0], 3),
                    "speedup": round(runs["padded"][0] / runs["packed"][0], 2),
                    "packed_padding": round(runs["packed"][2], 3),
                    "padded_padding": round(runs["padded"][2], 3),
                    "same_ranking": runs["packed"][1] == runs["padded"][1],
                }
            )
        summary = {
            "method": method,
            "depth": args.depth,
            "queries": len(rows),
            "median_packed_s_per_query": median([r["packed_s"] for r in rows]),
            "median_padded_s_per_query": median([r["padded_s"] for r in rows]),
            "median_speedup": round(median([r["padded_s"] / r["packed_s"] for r in rows]), 2),
            "median_padded_padding": median([r["padded_padding"] for r in rows]),
            "identical_rankings": sum(r["same_ranking"] for r in rows),
            "per_query": rows,
        }
        results["methods"].append(summary)
        print(
            f"{method:14} packed {summary['median_packed_s_per_query']} s/q  padded "
            f"{summary['median_padded_s_per_query']} s/q  {summary['median_speedup']}x  "
            f"(padding in the padded arm {summary['median_padded_padding']:.1%})  same ranking "
            f"{summary['identical_rankings']}/{len(rows)}",
            flush=True,
        )
    results["machine"] = machine()
    print(f"wrote {write_json('packing', results)}")


if __name__ == "__main__":
    asyncio.run(main())
