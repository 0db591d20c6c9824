"""Setwise heapsort (Zhuang et al., SIGIR 2024): pick the most relevant of a parent and its
``children`` in one prompt, as a c-ary heap; extract the top ``top_k``."""

from __future__ import annotations

from collections.abc import Sequence

from rankwise.context import RankContext
from rankwise.methods.base import MethodResult, rank_scores
from rankwise.methods.pairwise import Mode, _PairwiseMethod
from rankwise.parsing import LETTERS
from rankwise.types import Candidate


class SetwiseHeapsort(_PairwiseMethod):
    """Setwise heapsort with ``children`` (c) children per node: each heapify step is one call
    over the parent and its children (labels A, B, C, ...); if a child wins, it swaps with
    the parent and the step recurses into it. Likelihood mode on local models (the label
    with the highest log-prob after "Passage:"), generation elsewhere. An unreadable answer
    keeps the parent. Calls: about N/c + k·log_c N, depending on the answers (the trace
    records the count). Output: the top ``top_k``, then the rest in first-stage order;
    score 1/rank.
    """

    name = "setwise"
    score_kind = "rank"
    labels = LETTERS

    def __init__(
        self,
        *,
        children: int = 3,
        mode: Mode = "auto",
        max_passage_tokens: int | None = 128,
        prompt: str = "setwise",
        top_k: int = 10,
    ) -> None:
        if not 1 <= children < len(LETTERS):
            raise ValueError(f"children must be between 1 and 25, got {children}")
        super().__init__(
            mode=mode, max_passage_tokens=max_passage_tokens, prompt=prompt, top_k=top_k
        )
        self.children = children

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        compare = self.comparator(query, candidates, context)
        heap = list(range(len(candidates)))
        c = self.children

        async def heapify(size: int, root: int) -> None:
            while c * root + 1 < size:
                nodes = [root, *range(c * root + 1, min(c * root + c + 1, size))]
                compare.comparisons += 1
                best = await compare.choose([heap[node] for node in nodes])
                largest = nodes[best] if best is not None and best < len(nodes) else root
                if largest == root:
                    return
                heap[root], heap[largest] = heap[largest], heap[root]
                root = largest

        size = len(heap)
        for root in range(size // c, -1, -1):
            await heapify(size, root)
        top: list[int] = []
        for end in range(size - 1, 0, -1):
            heap[0], heap[end] = heap[end], heap[0]
            top.append(heap[end])
            if len(top) == self.top_k:
                break
            await heapify(end, 0)
        if len(top) < self.top_k:
            top.append(heap[0])
        chosen = set(top)
        order = top + [p for p in range(len(candidates)) if p not in chosen]
        compare.report()
        return MethodResult(order, rank_scores(order))
