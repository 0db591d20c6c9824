"""Listwise permutation generation: RankGPT's sliding window and full single-pass ranking."""

from __future__ import annotations

from collections.abc import Sequence

from rankwise.context import RankContext
from rankwise.methods.base import MethodResult, rank_scores
from rankwise.methods.windows import WindowedMethod, slide
from rankwise.parsing import PermutationRepair, fence_ids, parse_permutation
from rankwise.types import Candidate


def _example_ordering(size: int) -> str:
    return "[2] > [1]" if size >= 2 else "[1]"


class ListwiseSlidingWindow(WindowedMethod):
    """RankGPT: the model writes ``[i] > [j] > ...`` for a window of passages.

    Windows of ``window`` passages move from the bottom of the list to the top by ``step``
    (10 as in RankGPT; half the window for windows under 20); the last always starts at 0.
    Calls: ``ceil((N - window) / step) + 1`` for N > window, else 1 (sequential within a
    query). Each passage shows its first ``max_words`` words (see
    :func:`~rankwise.methods.windows.window_passage`), fewer where the window's prompt would
    not fit the model's context (:func:`~rankwise.methods.windows.fit_to_context`). Output
    is repaired into a permutation (every repair recorded in the trace). Score: ``1 / rank``.
    """

    name = "listwise"
    score_kind = "rank"
    requires = ("chat",)
    prompt_fields = frozenset({"query", "num", "example_ordering", "i", "passage"})

    def __init__(
        self,
        *,
        window: int = 20,
        step: int | None = None,
        max_words: int | None = 300,
        prompt: str = "listwise_rankgpt",
        max_new_tokens: int | None = None,
    ) -> None:
        super().__init__(window=window, step=step, max_words=max_words, prompt=prompt)
        self.max_new_tokens = max_new_tokens

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        template = context.prompts.get(self.prompt)
        safe_query = fence_ids(query)

        async def rank_window(positions: list[int]) -> list[int]:
            budget = self.max_new_tokens or _id_budget(len(positions))
            messages = self.window_messages(
                context,
                template,
                candidates,
                positions,
                id_field="i",
                ids=range(1, len(positions) + 1),
                reserve=budget,
                query=safe_query,
                example_ordering=_example_ordering(len(positions)),
            )
            answer = await context.generate(messages, max_tokens=budget)
            repair = parse_permutation(answer.text, len(positions))
            record_repair(context, repair, positions, answer.text)
            return [positions[k] for k in repair.order]

        order = await slide(
            list(range(len(candidates))), self.window, self.step, rank_window, context.checkpoint
        )
        return MethodResult(order, rank_scores(order))


class ListwiseFull(ListwiseSlidingWindow):
    """Full ranking: every candidate in one prompt (the RankVicuna-era prompt, 100 words per
    passage), one generation of all ids, repaired. Calls: 1. Needs a long context."""

    name = "listwise-full"

    def __init__(
        self,
        *,
        max_words: int | None = 100,
        prompt: str = "listwise_full",
        max_new_tokens: int | None = None,
    ) -> None:
        super().__init__(
            window=10_000,
            step=10_000,
            max_words=max_words,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
        )

    def expected_calls(self, n: int) -> int:
        return 1


def _id_budget(size: int) -> int:
    """New tokens for ``[1] > [2] > ... > [size]`` plus slack (about 4 tokens per id)."""
    return 6 * size + 8


def record_repair(
    context: RankContext, repair: PermutationRepair, positions: list[int], text: str
) -> None:
    """Add a trace event when a window's answer needed repair (or gave nothing usable)."""
    if not repair.repaired:
        return
    kind = "fallback" if len(repair.missing) == len(positions) else "repair"
    context.trace.record(
        kind,
        "window answer was not a clean permutation"
        + ("; kept the window's order" if kind == "fallback" else "; repaired"),
        window=list(positions),
        well_formed=repair.well_formed,
        missing=len(repair.missing),
        duplicates=len(repair.duplicates),
        out_of_range=len(repair.out_of_range),
        text=text[:200],
    )
