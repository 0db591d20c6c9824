"""Choosing a method: quality, calls and time for each method on DL19, from the committed
benchmark JSON (bench/results/methods.json), with a picture.

    python cookbook/05_choosing_a_method.py [--out methods.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "cookbook" / "methods.png"))
    args = parser.parse_args()
    data = json.loads((ROOT / "bench" / "results" / "methods.json").read_text())
    rows = [
        r
        for r in data["rows"]
        if r["system"] == "rankwise" and not r.get("options", {}).get("ties")
    ]
    bm25 = next(r["ndcg@10"] for r in data["rows"] if r["method"] == "bm25")
    print(f"DL19, {data['queries']} queries, {data['model']}; BM25 nDCG@10 = {bm25:.4f}")
    print(f"{'method':15} {'depth':>5} {'nDCG@10':>8} {'vs BM25':>8} {'calls/q':>8} {'s/query':>8}")
    for row in sorted(rows, key=lambda r: -r["ndcg@10"]):
        print(
            f"{row['method']:15} {row['depth']:>5} {row['ndcg@10']:>8.4f} "
            f"{row['ndcg@10'] - bm25:>+8.4f} {row['calls_per_query']:>8} {row['seconds_per_query']:>8}"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    for row in rows:
        axis.scatter(row["seconds_per_query"], row["ndcg@10"])
        axis.annotate(
            row["method"],
            (row["seconds_per_query"], row["ndcg@10"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    axis.axhline(bm25, color="grey", linestyle=":", label="BM25 (input order)")
    axis.set_xscale("log")
    axis.set_xlabel("seconds per query (log scale, this CPU)")
    axis.set_ylabel("nDCG@10")
    axis.set_title(f"rankwise methods with {data['model']} on TREC DL19")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
