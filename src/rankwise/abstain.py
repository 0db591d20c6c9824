"""Abstention: a confidence for a ranked list, and the decision to answer "nothing relevant".

Reference-free confidence functions (Gisserot-Boukhlef et al., TMLR 2024) work on the scores
of the top ``n`` candidates. They need real-valued scores (``pointwise``, ``pointwise-qlm``,
``icr``, ``prp-allpair``); on rank-only scores they are constants.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

ConfidenceName = Literal["max", "std", "margin", "entropy"]


def confidence_max(scores: Sequence[float]) -> float:
    """The best score."""
    return max(scores) if scores else 0.0


def confidence_std(scores: Sequence[float]) -> float:
    """Population standard deviation: spread suggests the ranker separated something."""
    return statistics.pstdev(scores) if len(scores) > 1 else 0.0


def confidence_margin(scores: Sequence[float]) -> float:
    """Top-1 minus top-2."""
    ordered = sorted(scores, reverse=True)
    return ordered[0] - ordered[1] if len(ordered) > 1 else 0.0


def confidence_entropy(scores: Sequence[float]) -> float:
    """One minus the normalised entropy of the softmax of the scores (1 = all mass on one)."""
    if len(scores) < 2:
        return 1.0
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    entropy = -sum((w / total) * math.log(w / total) for w in weights if w > 0)
    return 1.0 - entropy / math.log(len(scores))


CONFIDENCE_FUNCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "max": confidence_max,
    "std": confidence_std,
    "margin": confidence_margin,
    "entropy": confidence_entropy,
}


@dataclass(frozen=True)
class Abstention:
    """Abstain when the confidence of the top ``top_n`` scores is below ``threshold``.

    Example: ``Abstention("max", 0.5)`` with ``pointwise`` abstains when no passage gets
    P(Yes) ≥ 0.5 from the judge.
    """

    confidence: ConfidenceName = "max"
    threshold: float = 0.5
    top_n: int = 10

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCE_FUNCTIONS:
            raise ValueError(
                f"unknown confidence {self.confidence!r}; use one of {list(CONFIDENCE_FUNCTIONS)}"
            )

    def score(self, ranked_scores: Sequence[float]) -> float:
        """The confidence of a list's scores (best first)."""
        return CONFIDENCE_FUNCTIONS[self.confidence](list(ranked_scores)[: self.top_n])

    def decide(self, ranked_scores: Sequence[float]) -> tuple[bool, float]:
        """(abstain?, confidence)."""
        value = self.score(ranked_scores)
        return value < self.threshold, value
