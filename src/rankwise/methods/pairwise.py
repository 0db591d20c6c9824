"""Pairwise Ranking Prompting (PRP, Qin et al. 2023): all pairs, heapsort top-k, sliding-K.

Every comparison asks both orders, (a, b) and (b, a); a wins only when both answers agree,
otherwise it is a tie. Local models read the answer after the chat template plus
`` Passage:`` (as llm-rankers does): in scoring mode (the default there) by comparing the
log-probs of " A" and " B", in generation mode from one greedy token. Chat APIs generate a
reply of up to ``answer_tokens`` (8; more for a model that writes a sentence before the label)
that is parsed ("Passage A/B", else a bare letter). Unreadable answers count as
ties and are summed up in the trace, as are comparisons whose two answers name the same
position (``split``): a model that picks by position, not by passage.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

from rankwise._checks import check_whole
from rankwise._concurrency import gather_all
from rankwise.context import RankContext
from rankwise.errors import InputError
from rankwise.methods.base import (
    CallBounds,
    MethodResult,
    RankingMethod,
    order_by_scores,
    rank_scores,
)
from rankwise.methods.heap import heap_groups, heap_new_groups, heap_top_k
from rankwise.parsing import parse_choice
from rankwise.types import Candidate

Mode = Literal["auto", "score", "generate"]
Ties = Literal["first-stage", "published"]
LABELS = "AB"
ANSWER_PREFIX = " Passage:"  # what llm-rankers appends after a causal model's chat template


class Comparator:
    """Asks the model which of two passages is more relevant, in both orders."""

    def __init__(
        self,
        query: str,
        candidates: Sequence[Candidate],
        context: RankContext,
        *,
        prompt: str,
        mode: Mode,
        max_passage_tokens: int | None,
        labels: str = LABELS,
        answer_tokens: int = 8,
    ) -> None:
        self.query = query
        self.answer_tokens = answer_tokens
        self.context = context
        self.template = context.prompts.get(prompt)
        self.texts = [context.truncate(c.text, max_passage_tokens) for c in candidates]
        self.local = context.backend.capabilities.exact_logprobs
        self.mode: Mode = ("score" if self.local else "generate") if mode == "auto" else mode
        self.labels = labels
        self.comparisons = 0
        self.unreadable = 0
        self.answers = 0
        self.split = 0

    async def choose(self, positions: Sequence[int], **fields: str) -> int | None:
        """Index (into ``positions``) of the passage the model picks, or None if unreadable."""
        self.answers += 1
        messages = self.template.render(
            [{"label": self.labels[k], "passage": self.texts[p]} for k, p in enumerate(positions)],
            query=self.query,
            **fields,
        )
        labels = self.labels[: len(positions)]
        if self.mode == "score":
            answer = await self.context.label_logprobs(
                messages, [f" {label}" for label in labels], assistant_prefix=ANSWER_PREFIX
            )
            if len(answer.logprobs) == len(labels):
                return max(range(len(labels)), key=lambda k: answer.logprobs[f" {labels[k]}"])
            choice = parse_choice(answer.text, labels)
        elif self.local:
            generated = await self.context.generate(
                messages, max_tokens=1, assistant_prefix=ANSWER_PREFIX
            )
            token = generated.text.strip().upper()
            choice = labels.index(token) if len(token) == 1 and token in labels else None
        else:
            generated = await self.context.generate(messages, max_tokens=self.answer_tokens)
            choice = parse_choice(generated.text, labels)
        if choice is None:
            self.unreadable += 1
        return choice

    async def prefer(self, a: int, b: int) -> int:
        """+1 if ``a`` beats ``b`` in both orders, -1 if ``b`` beats ``a``, else 0: a tie
        when an answer is unreadable, or when both answers name the same position (the
        model chose by position, not by passage), which :attr:`split` counts."""
        self.comparisons += 1
        first, second = await gather_all(
            [
                self.choose([a, b], doc1=self.texts[a], doc2=self.texts[b]),
                self.choose([b, a], doc1=self.texts[b], doc2=self.texts[a]),
            ]
        )
        if first == 0 and second == 1:
            return 1
        if first == 1 and second == 0:
            return -1
        if first is not None and first == second:
            self.split += 1
        return 0

    def report(self) -> None:
        """Record comparison counts, split comparisons and unreadable answers in the trace."""
        self.context.trace.record(
            "info",
            f"{self.comparisons} comparisons, mode {self.mode}",
            comparisons=self.comparisons,
        )
        if self.split:
            self.context.trace.record(
                "info",
                f"{self.split} of {self.comparisons} comparisons named the same position in "
                "both orders (position bias); counted as ties",
                split=self.split,
                comparisons=self.comparisons,
            )
        if self.unreadable:
            self.context.trace.record(
                "fallback",
                f"{self.unreadable} of {self.answers} answers named no passage; counted as ties "
                "(or kept the parent)",
                unreadable=self.unreadable,
                answers=self.answers,
            )


class _PairwiseMethod(RankingMethod):
    requires = ("chat",)
    prompt_fields = frozenset({"query", "doc1", "doc2", "label", "passage"})
    default_answer_tokens = 8
    """Room for a generated answer (APIs): PRP's prompt ends "Output Passage A or Passage
    B:", so models start with the label."""

    def __init__(
        self,
        *,
        mode: Mode = "auto",
        max_passage_tokens: int | None = 128,
        prompt: str = "prp",
        top_k: int = 10,
        ties: Ties = "first-stage",
        answer_tokens: int | None = None,
    ) -> None:
        if answer_tokens is not None:
            check_whole("answer_tokens", answer_tokens, 1)
        self.answer_tokens = answer_tokens or self.default_answer_tokens
        if mode not in ("auto", "score", "generate"):
            raise InputError(f"mode must be 'auto', 'score' or 'generate', got {mode!r}")
        if ties not in ("first-stage", "published"):
            raise InputError(f"ties must be 'first-stage' or 'published', got {ties!r}")
        self.ties: Ties = ties
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        self.mode: Mode = mode
        self.max_passage_tokens = max_passage_tokens
        self.prompt = prompt
        self.top_k = top_k

    def missing_capabilities(self, capabilities):  # type: ignore[no-untyped-def]
        missing = super().missing_capabilities(capabilities)
        if self.mode == "score" and not capabilities.exact_logprobs:
            missing.append("exact_logprobs")
        return missing

    labels: str = LABELS

    def comparator(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> Comparator:
        return Comparator(
            query,
            candidates,
            context,
            prompt=self.prompt,
            mode=self.mode,
            max_passage_tokens=self.max_passage_tokens,
            labels=self.labels,
            answer_tokens=self.answer_tokens,
        )


class PairwiseAllPairs(_PairwiseMethod):
    """PRP-Allpair: every pair in both orders, all concurrent. Calls: N·(N−1).
    Score: wins + 0.5·ties (a Borda count in [0, N−1]); ties keep input order."""

    name = "prp-allpair"
    score_kind = "wins"

    def expected_calls(self, n: int) -> int:
        return n * (n - 1)

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        compare = self.comparator(query, candidates, context)
        pairs = list(itertools.combinations(range(len(candidates)), 2))
        outcomes = await gather_all(compare.prefer(a, b) for a, b in pairs)
        scores = [0.0] * len(candidates)
        for (a, b), outcome in zip(pairs, outcomes, strict=True):
            if outcome == 1:
                scores[a] += 1
            elif outcome == -1:
                scores[b] += 1
            else:
                scores[a] += 0.5
                scores[b] += 0.5
        compare.report()
        return MethodResult(order_by_scores(scores), scores)


class PairwiseHeapsort(_PairwiseMethod):
    """PRP-Sorting: heapsort where a > b on a consistent win; extracts the top ``top_k``,
    the rest follow in first-stage order. A tie (inconsistent or unreadable answers) goes
    to the candidate earlier in the first stage, so a model that says nothing useful leaves
    the input order unchanged. ``ties="published"`` treats a tie as "not greater", as the
    published code does (which shuffles such a list through the heap). Calls: 2 per
    comparison, O(N + k·log N) comparisons, depending on the answers (the trace records the
    count). Score: 1/rank."""

    name = "prp-heapsort"
    score_kind = "rank"

    def call_bounds(self, n: int) -> CallBounds:
        """A sift-down step compares the parent with each child in turn, both orders each:
        2·(group size − 1) calls. The most follows the longest path (:func:`heap_groups`);
        the fewest counts the groups that cannot repeat a comparison (:func:`heap_new_groups`),
        since a pair met again is answered by its first asking."""
        most = sum(2 * (size - 1) for size in heap_groups(n, self.top_k, 2, descend=True))
        return CallBounds(sum(2 * (size - 1) for size in heap_new_groups(n, 2)), most)

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        compare = self.comparator(query, candidates, context)

        async def pick(group: list[int]) -> int:
            best = 0
            for challenger in range(1, len(group)):
                outcome = await compare.prefer(group[challenger], group[best])
                earlier = group[challenger] < group[best] and self.ties == "first-stage"
                if outcome == 1 or (outcome == 0 and earlier):
                    best = challenger  # a tie goes to the earlier first-stage candidate
            return best

        order = await heap_top_k(list(range(len(candidates))), self.top_k, 2, pick)
        compare.report()
        return MethodResult(order, rank_scores(order))


class PairwiseSliding(_PairwiseMethod):
    """PRP-Sliding-K: ``top_k`` bubble passes from the bottom up, swapping neighbours on a
    consistent win. Comparisons: Σ_{i<K}(N−1−i) with K = min(top_k, N−1), two prompts each.
    A pair a later pass meets again (neighbours no swap parted) is answered by its first
    asking, so the calls run from 2·(N−1), when no pass swaps anything after the first, to
    2·Σ_{i<K}(N−1−i). Score: 1/rank."""

    name = "prp-sliding"
    score_kind = "rank"

    def call_bounds(self, n: int) -> CallBounds:
        """The first pass compares N−1 different pairs; every later comparison may repeat
        one already answered, or be new."""
        passes = min(self.top_k, n - 1)
        if passes < 1:
            return CallBounds(0, 0)
        return CallBounds(2 * (n - 1), 2 * sum(n - 1 - i for i in range(passes)))

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        compare = self.comparator(query, candidates, context)
        order = list(range(len(candidates)))
        for settled in range(min(self.top_k, len(order) - 1)):
            for j in range(len(order) - 2, settled - 1, -1):
                if await compare.prefer(order[j + 1], order[j]) == 1:
                    order[j], order[j + 1] = order[j + 1], order[j]
            context.checkpoint(order)
        compare.report()
        return MethodResult(order, rank_scores(order))
