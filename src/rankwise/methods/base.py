"""What every ranking method implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from rankwise.backends.base import Capabilities
from rankwise.context import RankContext
from rankwise.types import Candidate, ScoreKind


@dataclass
class MethodResult:
    """A method's answer: ``order`` lists input positions best first; ``scores[i]`` belongs to
    input position ``i`` (not to rank ``i``)."""

    order: list[int]
    scores: list[float]


class CallBounds(NamedTuple):
    """The fewest and the most LLM calls a rerank can make, whatever the model answers.

    A prompt asked twice in one rerank is answered once, so a list that holds the same
    passage text twice may take fewer calls than ``fewest``."""

    fewest: int
    most: int

    @property
    def exact(self) -> bool:
        """True when the count does not depend on the answers."""
        return self.fewest == self.most


class RankingMethod(ABC):
    """A ranking method: pure logic over a backend reached through a :class:`RankContext`.

    Subclasses set ``name`` (the CLI name), ``score_kind``, ``requires`` (capability names
    the backend must have), ``absolute_scores`` (True when a score means the same across
    queries and calls, so thresholds make sense) and ``prompt_fields``.
    """

    name: ClassVar[str]
    score_kind: ClassVar[ScoreKind]
    requires: ClassVar[tuple[str, ...]] = ("chat",)
    absolute_scores: bool = False
    prompt_fields: ClassVar[frozenset[str]] = frozenset()
    """The fields the method fills in its ``prompt`` template (empty: it has none)."""

    def missing_capabilities(self, capabilities: Capabilities) -> list[str]:
        """Capabilities this method needs that ``capabilities`` lacks."""
        return [name for name in self.requires if not capabilities.has(name)]

    def expected_calls(self, n: int) -> int | None:
        """LLM calls for ``n`` non-empty candidates, when it does not depend on the answers."""
        return None

    def call_bounds(self, n: int) -> CallBounds:
        """The fewest and most LLM calls for ``n`` non-empty candidates.

        Methods whose calls depend on the answers (the heapsorts) override this; the others
        make exactly :meth:`expected_calls`.
        """
        expected = self.expected_calls(n)
        if expected is None:
            raise NotImplementedError(f"{type(self).__name__} must implement call_bounds")
        return CallBounds(expected, expected)

    def empty_score(self) -> float:
        """Score given to candidates with empty text (they rank last without an LLM call)."""
        return 0.0

    @abstractmethod
    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        """Rank ``candidates`` (none empty) for ``query``: at least two, or one when the
        method's scores are more than ranks (a lone candidate still gets its real score)."""


def order_by_scores(scores: Sequence[float]) -> list[int]:
    """Positions sorted by descending score; ties keep input order (stable). A NaN score
    goes last: it compares false with everything, which leaves a plain sort out of order."""
    return sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i]))


def rank_scores(order: Sequence[int]) -> list[float]:
    """The rank-derived score ``1 / rank`` (1-based) for order-only methods, by input position."""
    scores = [0.0] * len(order)
    for rank, position in enumerate(order, start=1):
        scores[position] = 1.0 / rank
    return scores
