"""Setwise heapsort (Zhuang et al., SIGIR 2024): pick the most relevant of a parent and its
``children`` in one prompt, as a c-ary heap; extract the top ``top_k``."""

from __future__ import annotations

from collections.abc import Sequence

from rankwise.context import RankContext
from rankwise.errors import InputError
from rankwise.methods.base import CallBounds, MethodResult, rank_scores
from rankwise.methods.heap import heap_groups, heap_new_groups, heap_top_k
from rankwise.methods.pairwise import Mode, Ties, _PairwiseMethod
from rankwise.parsing import LETTERS
from rankwise.types import Candidate


class SetwiseHeapsort(_PairwiseMethod):
    """Setwise heapsort with ``children`` (c) children per node.

    Each heapify step is one call over the parent and its children (labels A, B, C, ...);
    if a child wins, it swaps with the parent and the step recurses into it. Local models
    use likelihood mode (the label with the highest log-prob after " Passage:");
    ``mode="generate"`` reads one greedy token after " Passage:", as llm-rankers does; APIs
    generate an answer of up to ``answer_tokens`` (32) and read its first "Passage X". An
    unreadable answer picks the candidate earliest in the first
    stage, so a model that says nothing useful leaves the input order unchanged
    (``ties="published"`` keeps the parent instead, as the published code does, which
    shuffles such a list through the heap). Calls: about N/c + k·log_c N, depending on the
    answers (the trace records the count). Output: the top ``top_k``, then the rest in
    first-stage order; score 1/rank.
    """

    name = "setwise"
    score_kind = "rank"
    labels = LETTERS
    default_answer_tokens = 32
    """Its prompt ends "Output only the passage label of the most relevant passage:", and
    chat models often answer with a sentence first ("The most relevant passage to the given
    query is Passage D"), which 8 tokens cut before the label (the published API code sets
    no limit). A model that answers with the label alone stops there and pays no more."""
    prompt_fields = frozenset({"query", "label", "passage"})

    def __init__(
        self,
        *,
        children: int = 3,
        mode: Mode = "auto",
        max_passage_tokens: int | None = 128,
        prompt: str = "setwise",
        top_k: int = 10,
        ties: Ties = "first-stage",
        answer_tokens: int | None = None,
    ) -> None:
        if not 1 <= children < len(LETTERS):
            raise InputError(f"children must be between 1 and 25, got {children}")
        super().__init__(
            mode=mode,
            max_passage_tokens=max_passage_tokens,
            prompt=prompt,
            top_k=top_k,
            ties=ties,
            answer_tokens=answer_tokens,
        )
        self.children = children

    def call_bounds(self, n: int) -> CallBounds:
        """One call per sift-down step, whatever the group's size. The most follows the
        longest path (:func:`heap_groups`); the fewest counts the groups that cannot repeat
        (:func:`heap_new_groups`), since a group asked again is answered by its first asking."""
        return CallBounds(
            len(heap_new_groups(n, self.children)),
            len(heap_groups(n, self.top_k, self.children, descend=True)),
        )

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        compare = self.comparator(query, candidates, context)

        async def pick(group: list[int]) -> int:
            compare.comparisons += 1
            best = await compare.choose(group)
            if best is None:  # unreadable: the earliest in the first stage, or the parent
                published = self.ties == "published"
                return 0 if published else min(range(len(group)), key=group.__getitem__)
            return best

        order = await heap_top_k(list(range(len(candidates))), self.top_k, self.children, pick)
        compare.report()
        return MethodResult(order, rank_scores(order))
