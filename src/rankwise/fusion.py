"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from rankwise._checks import is_finite
from rankwise.errors import InputError
from rankwise.types import Candidate

RRF_K = 60


def text_id(text: str) -> str:
    """A stable id from content, for documents that have none."""
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def content_key(candidate: Candidate) -> str:
    """A document's identity for deduplication: its id, else a hash of its text."""
    return candidate.id or text_id(candidate.text)


def check_rrf_k(k: object) -> None:
    """Refuse an RRF constant that is not a finite number of at least 0 (a negative one
    divides by zero at rank ``-k`` and turns the ranks around)."""
    if not (is_finite(k) and k >= 0):  # type: ignore[operator]
        raise InputError(
            f"the RRF constant k must be a number of at least 0 (60 as published), got {k!r}"
        )


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Candidate]],
    *,
    k: int = RRF_K,
    weights: Sequence[float] | None = None,
) -> list[Candidate]:
    """Fuse ranked lists: score(d) = Σ weight / (k + rank), 1-based ranks.

    Documents are deduplicated by :func:`content_key` (first occurrence kept); absent
    documents add nothing; ties keep first-seen order. The fused score is stored in each
    returned candidate's ``score``.
    """
    check_rrf_k(k)
    if weights is None:
        weights = [1.0] * len(rankings)
    if not all(isinstance(w, int | float) and math.isfinite(w) for w in weights):
        raise InputError(f"RRF weights must be finite numbers, got {list(weights)}")
    if len(weights) != len(rankings):
        raise InputError(
            f"{len(weights)} weights for {len(rankings)} rankings; pass one weight per ranking"
        )
    _check_rankings(rankings)
    scores: dict[str, float] = {}
    first: dict[str, Candidate] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen_here: set[str] = set()
        for rank, candidate in enumerate(ranking, start=1):
            key = content_key(candidate)
            if key in seen_here:
                continue
            seen_here.add(key)
            first.setdefault(key, candidate)
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    order = sorted(first, key=lambda key: -scores[key])  # stable: first-seen order on ties
    return [first[key].model_copy(update={"score": scores[key]}) for key in order]


def _check_rankings(rankings: Sequence[Sequence[Candidate]]) -> None:
    """Refuse anything but a list of lists of Candidates, naming the first misfit."""
    for index, ranking in enumerate(rankings):
        if isinstance(ranking, Candidate | str):
            raise InputError(
                f"rankings[{index}] is a {type(ranking).__name__}, not a ranked list; pass a "
                "list of ranked lists (wrap a single list in another list)"
            )
        for position, item in enumerate(ranking):
            if not isinstance(item, Candidate):
                raise InputError(
                    f"rankings[{index}][{position}] is a {type(item).__name__}; each ranked "
                    "list must hold rankwise Candidates (Candidate(id=..., text=...))"
                )
