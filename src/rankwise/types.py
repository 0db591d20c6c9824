"""Public data types: the candidates that go in and the ranked list that comes out."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rankwise.errors import InputError


def check_top_n(top_n: int | None) -> None:
    """Raise :class:`InputError` unless ``top_n`` is None or a whole number >= 0."""
    if top_n is None:
        return
    if isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral):
        raise InputError(f"top_n must be a whole number or None, got {top_n!r}")
    if top_n < 0:
        raise InputError(f"top_n must be >= 0, got {top_n}")


class Candidate(BaseModel):
    """One document to rank.

    ``id`` defaults to the input position (as a string) when not given.
    ``score`` is the first-stage (retriever) score, kept for reference only.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RankedCandidate(Candidate):
    """A candidate with its place in the ranking.

    ``rank`` is 1-based. ``score`` is the reranker's score (its meaning depends on the method,
    see :attr:`RankedList.score_kind`); ``input_rank`` and ``input_score`` keep the first stage.
    ``judged`` is False for a document placed last without a judgement, under a placeholder
    score: one with no text, or one the model gave no usable score (NaN).
    """

    score: float
    rank: int
    input_rank: int
    input_score: float | None = None
    judged: bool = True


class Usage(BaseModel):
    """What a rerank cost: LLM calls, tokens, cache hits and wall-clock seconds.

    ``reused_answers`` counts prompts asked again within one rerank and answered by their
    first asking, without a call (they are in neither ``calls`` nor the tokens)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    reused_answers: int = 0
    retries: int = 0
    seconds: float = 0.0

    def add(self, other: Usage) -> None:
        """Add another usage record into this one, field by field."""
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cache_hits += other.cache_hits
        self.reused_answers += other.reused_answers
        self.retries += other.retries
        self.seconds += other.seconds

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def sum(cls, usages: Iterable[Usage]) -> Usage:
        """One record adding up ``usages``."""
        total = cls()
        for usage in usages:
            total.add(usage)
        return total


TraceKind = Literal["fallback", "repair", "retry", "truncation", "budget", "info"]


class TraceEvent(BaseModel):
    """One notable thing that happened while ranking."""

    kind: TraceKind
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class Trace(BaseModel):
    """The record of fallbacks, repairs, retries and truncations of one rerank."""

    events: list[TraceEvent] = Field(default_factory=list)

    def record(self, kind: TraceKind, message: str, **data: Any) -> None:
        """Append an event."""
        self.events.append(TraceEvent(kind=kind, message=message, data=data))

    def count(self, kind: TraceKind) -> int:
        """How many events of one kind were recorded."""
        return sum(1 for event in self.events if event.kind == kind)

    @property
    def fallbacks(self) -> list[TraceEvent]:
        return [event for event in self.events if event.kind == "fallback"]


def judged_scores(items: Sequence[RankedCandidate]) -> list[float]:
    """The scores of the judged items, in list order. A document with no text, or with no
    usable score from the model, is placed last under a placeholder score (``-1e9`` for
    log-likelihoods), which says nothing of relevance: abstention and calibration read only
    these scores."""
    return [item.score for item in items if item.judged]


ScoreKind = Literal["probability", "log_likelihood", "wins", "rank", "attention", "fused"]


class RankedList(BaseModel):
    """Every input candidate exactly once, best first, with usage and trace.

    ``items`` always holds the whole ranking. ``top_n`` and ``score_threshold`` only decide
    what :attr:`selected` returns; what they cut stays in ``items`` (see :attr:`cut`).
    When abstention is on and the ranker abstains, :attr:`selected` is empty.

    A threshold is read against the method's own scores. When a deadline or budget stopped
    the rerank, the scores are ranks (``score_kind == "rank"``), no candidate is known to
    pass the threshold, and :attr:`selected` is empty; ``items`` keeps the best order known.
    """

    query: str
    method: str
    model: str
    score_kind: ScoreKind
    items: list[RankedCandidate]
    top_n: int | None = None
    score_threshold: float | None = None
    usage: Usage = Field(default_factory=Usage)
    trace: Trace = Field(default_factory=Trace)
    abstained: bool = False
    confidence: float | None = None
    abstain_reason: str | None = None
    """Why the list abstained, in words ("confidence 0.012 below 0.05", "no document had
    text to judge", "there were no documents to rank", "the rerank stopped before its scores
    were complete"); None when it did not."""

    @model_validator(mode="after")
    def _check_contract(self) -> RankedList:
        ids = [item.id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("a RankedList must hold every candidate exactly once")
        if [item.rank for item in self.items] != list(range(1, len(self.items) + 1)):
            raise ValueError("ranks must be 1..N in list order")
        return self

    @property
    def selected(self) -> list[RankedCandidate]:
        """Candidates to pass on: cut by ``top_n`` and ``score_threshold``; empty if abstained."""
        chosen = self._passing()
        return chosen if self.top_n is None else chosen[: self.top_n]

    def _passing(self) -> list[RankedCandidate]:
        """The items that abstention and ``score_threshold`` let through, best first."""
        if self.abstained:
            return []
        if self.score_threshold is None:
            return self.items
        if self.score_kind == "rank":  # a stopped rerank: ranks are not relevance
            return []
        # a placeholder score is no judgement: it passes no threshold, not even one it meets
        return [i for i in self.items if i.judged and i.score >= self.score_threshold]

    @property
    def cut(self) -> list[RankedCandidate]:
        """The candidates that :attr:`selected` leaves out, in ranked order."""
        kept = {item.id for item in self.selected}
        return [item for item in self.items if item.id not in kept]

    @property
    def judged_scores(self) -> list[float]:
        """The scores of the items the method judged, best first (:func:`judged_scores`)."""
        return judged_scores(self.items)

    @property
    def ids(self) -> list[str]:
        """All ids in ranked order."""
        return [item.id for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def as_tool_result(self, top_n: int | None = None) -> dict[str, Any]:
        """A small JSON-ready answer for agent tools: what :attr:`selected` holds, with
        ``top_n`` (when given) in place of the list's own; none if abstained."""
        check_top_n(top_n)
        chosen = self._passing()
        limit = self.top_n if top_n is None else top_n
        if limit is not None:
            chosen = chosen[:limit]
        return {
            "abstained": self.abstained,
            "confidence": self.confidence,
            "abstain_reason": self.abstain_reason,
            "results": [
                {"rank": item.rank, "id": item.id, "score": item.score, "text": item.text}
                for item in chosen
            ],
        }
