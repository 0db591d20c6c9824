"""Calibrated abstention on your own labelled queries: fit on a reference set, then let the
reranker say "nothing relevant here" instead of passing junk on.

    python cookbook/06_abstention_calibration.py

Replace the DL19 queries and qrels with a few dozen of your own labelled queries.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from _shared import dl19

from rankwise import RankedList, Reranker
from rankwise.abstain import Calibrator, cross_validated_nauc
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import mean, ndcg_at_k

DEPTH = 10


async def main() -> None:
    records, qrels = dl19(16)
    reference, held_out = records[:12], records[12:]
    backend = TransformersBackend("default")
    scores, quality = [], []

    def record_scores(ranked: RankedList, qid: str) -> float:
        """Keep the list's scores and its actual nDCG@10 for the cross-validation below."""
        scores.append([item.score for item in ranked.items])
        quality.append(ndcg_at_k(ranked.ids, qrels[qid]))
        return quality[-1]

    reranker = Reranker("pointwise-qlm", backend)
    for record in reference:
        record_scores(await reranker.arerank(record.query, record.documents(DEPTH)), record.qid)

    calibrator = Calibrator(n=DEPTH, method="pointwise-qlm", model=backend.model_name)
    calibrator.fit(scores, quality, abstention_rate=0.25)
    calibrator.save(Path(tempfile.gettempdir()) / "rankwise-calibrator.json")  # reload with .load()
    print(f"fitted on 12 queries; abstain when predicted nDCG@10 <= {calibrator.threshold:.3f}")

    # The guarded list still holds every document and its score; only `selected` is emptied
    # when it abstains.
    guarded = Reranker("pointwise-qlm", backend, top_n=3, abstain=calibrator)
    for record in held_out:
        ranked = await guarded.arerank(record.query, record.documents(DEPTH))
        actual = record_scores(ranked, record.qid)
        verdict = (
            "ABSTAIN (nothing relevant)"
            if ranked.abstained
            else f"answer with {len(ranked.selected)} passages"
        )
        print(
            f"  {record.query[:45]:45} predicted {ranked.confidence:.3f} actual {actual:.3f} -> {verdict}"
        )

    print(f"mean nDCG@10 over all 16: {mean(quality):.3f}")
    print(
        "nAUC over 5 random 80/20 splits (1 = oracle, 0 = random):",
        cross_validated_nauc(scores, quality),
    )


if __name__ == "__main__":
    asyncio.run(main())
