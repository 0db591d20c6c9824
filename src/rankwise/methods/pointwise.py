"""Pointwise methods: each passage is scored alone, so all calls run concurrently.

- ``pointwise``: the llm-rankers yes/no prompt; score = P(Yes) / (P(Yes) + P(No)) from the
  first-token log-probs of "Yes" and "No".
- ``pointwise-qlm``: query likelihood (UPR): score = mean log P(query tokens | passage prompt).

When a call budget (``max_calls``, ``max_tokens``) or the deadline runs out part-way, the
passages scored so far (the first ones in input order, as calls go out in that order) come
first, best first, ahead of the rest in input order: the best order known, as if the
rerank depth had been what the budget allowed.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Iterable, Sequence

from rankwise._concurrency import gather_all
from rankwise.backends.base import LabelLogprobs
from rankwise.context import BudgetExhausted, RankContext
from rankwise.errors import InputError
from rankwise.methods.base import MethodResult, RankingMethod, order_by_scores
from rankwise.types import Candidate


class PointwiseYesNo(RankingMethod):
    """Yes/no relevance from first-token log-probs. Calls: one per candidate.

    Scores are pseudo-probabilities in [0, 1]. When an API lists only one of the labels among
    its top log-probs, the other's mass is taken as the rest (score = P(Yes), or 1 − P(No)).
    When neither is listed, the generated text decides ("yes" → 0.5, else 0.0) and the trace
    records a fallback.
    """

    name = "pointwise"
    score_kind = "probability"
    prompt_fields = frozenset({"query", "text"})
    requires = ("chat", "logprobs")
    absolute_scores = True

    def __init__(
        self,
        *,
        prompt: str = "pointwise_yes_no",
        max_passage_tokens: int | None = 128,
        yes: str = "Yes",
        no: str = "No",
    ) -> None:
        labels_ok = isinstance(yes, str) and isinstance(no, str) and yes != no
        if not labels_ok or not yes.strip() or not no.strip():
            raise InputError(
                f"yes and no must be two different, non-empty labels; got {yes!r} and {no!r}"
            )
        self.prompt = prompt
        self.max_passage_tokens = max_passage_tokens
        self.yes = yes
        self.no = no

    def expected_calls(self, n: int) -> int:
        return n

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        template = context.prompts.get(self.prompt)

        async def score(position: int, candidate: Candidate) -> float:
            text = context.truncate(candidate.text, self.max_passage_tokens)
            messages = template.render(query=query, text=text)
            answer = await context.label_logprobs(messages, [self.yes, self.no])
            return self.read(answer, position, context)

        scores = await scores_within_budget(
            (score(i, c) for i, c in enumerate(candidates)), context, len(candidates)
        )
        return MethodResult(order_by_scores(scores), list(scores))

    def read(self, answer: LabelLogprobs, position: int, context: RankContext) -> float:
        """Turn label log-probs into P(Yes | Yes or No)."""
        yes = answer.logprobs.get(self.yes)
        no = answer.logprobs.get(self.no)
        if yes is not None and no is not None:
            return yes_share(yes, no)
        if yes is not None:
            return min(1.0, math.exp(yes))
        if no is not None:
            return max(0.0, 1.0 - math.exp(no))
        fallback = 0.5 if answer.text.strip().lower().startswith("yes") else 0.0
        context.trace.record(
            "fallback",
            "no yes/no log-probs in the answer; scored from the generated text",
            position=position,
            text=answer.text[:80],
            score=fallback,
        )
        return fallback


def yes_share(yes: float, no: float) -> float:
    """P(Yes) / (P(Yes) + P(No)) from the two log-probs, for any gap between them: APIs
    report -9999 for a label they all but rule out, and exp(9999) overflows."""
    if yes == no:  # also both -inf: nothing tells them apart
        return 0.5
    gap = no - yes
    if gap > 0:
        small = math.exp(-gap)
        return small / (1.0 + small)
    return 1.0 / (1.0 + math.exp(gap))


CONTENT_FREE = "N/A"


class QueryLikelihood(RankingMethod):
    """Query likelihood (UPR / QLM): how well the passage explains the query.

    Score: mean log-prob per query token of `` {query}`` after the prompt ``Passage: {text}
    Please write a question based on this passage. Question:`` (raw text, no chat template).
    Within one query the mean ranks exactly like the sum. Calls: one forward pass per candidate.

    With ``calibrated=True`` the score becomes a log-likelihood ratio: the same mean minus the
    query's mean log-prob after a content-free passage ("N/A"). The order within a query does
    not change, but the score now says how much a passage *explains* the query, rather than
    how fluent the query is, so one threshold works across queries (abstention).
    Calls: N + 1.
    """

    name = "pointwise-qlm"
    score_kind = "log_likelihood"
    prompt_fields = frozenset({"text"})  # the query is the continuation scored, not a field
    requires = ("prompt_logprobs",)

    def __init__(
        self,
        *,
        prompt: str = "pointwise_qlm",
        max_passage_tokens: int | None = 256,
        calibrated: bool = False,
    ):
        self.prompt = prompt
        self.max_passage_tokens = max_passage_tokens
        self.calibrated = calibrated
        self.absolute_scores = calibrated  # a ratio to the content-free passage's score

    def expected_calls(self, n: int) -> int:
        return n + (1 if self.calibrated else 0)

    def empty_score(self) -> float:
        return -1e9

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        template = context.prompts.get(self.prompt)

        async def score(text: str) -> float:
            prefix = template.render_text(text=text)
            result = await context.continuation_logprobs(prefix, " " + query.strip())
            return result.mean

        texts = [context.truncate(c.text, self.max_passage_tokens) for c in candidates]
        if self.calibrated:
            texts.append(CONTENT_FREE)
        scores = await scores_within_budget(
            (score(text) for text in texts), context, len(candidates)
        )
        if self.calibrated:
            baseline = scores.pop()
            scores = [value - baseline for value in scores]
        return MethodResult(order_by_scores(scores), list(scores))


async def scores_within_budget(
    scorings: Iterable[Awaitable[float]], context: RankContext, candidates: int
) -> list[float]:
    """Run independent scorings concurrently, the first ``candidates`` of them one per
    candidate in input order, and keep the context's checkpoint up to date as they finish:
    the candidates scored so far, best first, then the rest in input order. A deadline
    falls back to it. If the budget refuses some scorings, the calls already sent still
    finish, and then the budget stop is raised."""
    refused: list[BudgetExhausted] = []
    scored: dict[int, float] = {}

    def best_known() -> list[int] | None:
        if not scored:
            return None
        best_first = sorted(scored, key=lambda i: (-scored[i], i))
        return best_first + [i for i in range(candidates) if i not in scored]

    context.checkpoint(best_known)

    async def within_budget(position: int, scoring: Awaitable[float]) -> float | None:
        try:
            score = await scoring
        except BudgetExhausted as stop:
            refused.append(stop)
            return None
        if position < candidates:
            scored[position] = score
        return score

    results = await gather_all(
        within_budget(position, scoring) for position, scoring in enumerate(scorings)
    )
    if refused:
        raise refused[0]
    return [score for score in results if score is not None]
