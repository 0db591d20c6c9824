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

from rankwise import Reranker
from rankwise.abstain import Calibrator, cross_validated_nauc
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import mean, ndcg_at_k

DEPTH = 10


async def main() -> None:
    records, qrels = dl19(16)
    backend = TransformersBackend("default")
    reranker = Reranker("pointwise-qlm", backend)
    scores, quality = [], []
    for record in records:
        ranked = await reranker.arerank(record.query, record.documents(DEPTH))
        scores.append([item.score for item in ranked.items])
        quality.append(ndcg_at_k(ranked.ids, qrels[record.qid]))

    reference, held_out = slice(0, 12), slice(12, 16)
    calibrator = Calibrator(n=DEPTH, method="pointwise-qlm", model=backend.model_name)
    calibrator.fit(scores[reference], quality[reference], abstention_rate=0.25)
    calibrator.save(Path(tempfile.gettempdir()) / "rankwise-calibrator.json")  # reload with .load()
    print(f"fitted on 12 queries; abstain when predicted nDCG@10 <= {calibrator.threshold:.3f}")

    guarded = Reranker("pointwise-qlm", backend, top_n=3, abstain=calibrator)
    for record, actual in zip(records[held_out], quality[held_out], strict=True):
        ranked = await guarded.arerank(record.query, record.documents(DEPTH))
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
