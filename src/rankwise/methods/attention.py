"""ICR, in-context reranking from attention (Chen, Gutiérrez and Su, ICLR 2025).

All candidates go into one prompt, first-stage top-1 nearest the query (reversed order). Two
passes share the document prefix's key/value cache: one with the query, one with the
content-free query "N/A". A document's score is the attention its tokens receive from the
query span, calibrated by subtracting the N/A pass, summed over its tokens above
mean − 2·std. Local models only. Calls: 2 (forward passes), whatever N is.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

from rankwise.context import RankContext
from rankwise.errors import CapabilityError, ContextOverflowError, InputError
from rankwise.methods.base import MethodResult, RankingMethod, order_by_scores
from rankwise.types import Candidate

SEPARATOR = "\n\n"
CONTENT_FREE_QUERY = "N/A"


class InContextReranking(RankingMethod):
    """Attention-based reranking. Score: calibrated attention mass (higher is better)."""

    name = "icr"
    score_kind = "attention"
    requires = ("attention",)

    def __init__(
        self,
        *,
        task: Literal["retrieval", "qa"] = "retrieval",
        max_passage_tokens: int | None = 300,
        reserve_tokens: int = 256,
    ) -> None:
        if task not in ("retrieval", "qa"):
            raise InputError(f"task must be 'retrieval' or 'qa', got {task!r}")
        self.task = task
        self.max_passage_tokens = max_passage_tokens
        self.reserve_tokens = reserve_tokens

    def expected_calls(self, n: int) -> int:
        return 2

    def empty_score(self) -> float:
        return float("-1e9")

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        backend = context.backend
        scan = getattr(backend, "query_attention", None)
        affixes = getattr(backend, "chat_affixes", None)
        if scan is None or affixes is None:
            raise CapabilityError(f"backend {backend.kind} exposes no attention; use a local model")
        prefix, suffix = affixes()
        instruction = context.prompts.get("icr_instruction").render_text()
        late_name = "icr_instruction_late_qa" if self.task == "qa" else "icr_instruction_late"
        late = context.prompts.get(late_name).render_text()
        queries = [
            f"{late}{SEPARATOR}Query: {text}{suffix}" for text in (query, CONTENT_FREE_QUERY)
        ]
        fixed = backend.count_tokens(prefix + instruction + SEPARATOR)
        fixed += max(backend.count_tokens(text) for text in queries)
        budget = self._passage_budget(len(candidates), backend.capabilities.max_context, fixed)
        if budget < self.max_passage_tokens_or(budget):
            context.trace.record(
                "truncation", f"passages cut to {budget} tokens to fit the context", tokens=budget
            )
        pieces = [prefix + instruction]
        doc_piece: dict[int, int] = {}
        reversed_positions = list(range(len(candidates)))[::-1]
        for slot, position in enumerate(reversed_positions, start=1):
            pieces.append(f"{SEPARATOR}[{slot}] ")
            doc_piece[position] = len(pieces)
            pieces.append(context.truncate(candidates[position].text.strip(), budget))
        pieces.append(SEPARATOR)
        result = await context.query_attention(pieces, queries)
        real, content_free = result.attention
        calibrated = [a - b for a, b in zip(real, content_free, strict=True)]
        scores = []
        for position in range(len(candidates)):
            start, end = result.spans[doc_piece[position]]
            scores.append(_span_score(calibrated[start:end]))
        return MethodResult(order_by_scores(scores), scores)

    def max_passage_tokens_or(self, default: int) -> int:
        return self.max_passage_tokens if self.max_passage_tokens is not None else default

    def _passage_budget(self, n: int, max_context: int, fixed: int) -> int:
        """Tokens per passage: the context less ``reserve_tokens`` (or the ``fixed`` tokens
        of template, instruction and query, where they need more) and 8 per passage's id."""
        room = max_context - max(self.reserve_tokens, fixed) - 8 * n
        per_passage = room // max(1, n)
        if per_passage < 8:
            raise ContextOverflowError(
                f"{n} passages do not fit a {max_context}-token context for ICR beside the "
                f"{fixed} tokens of its instruction and query; pass fewer candidates (depth), "
                "shorten the query, or use a model with a longer context"
            )
        return min(self.max_passage_tokens_or(per_passage), per_passage)


def _span_score(values: Sequence[float]) -> float:
    """Sum of the calibrated attention above mean − 2·std within one document's tokens."""
    if not values:
        return 0.0
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    threshold = mean - 2 * spread
    return float(sum(value for value in values if value > threshold))
