"""FIRST: listwise ranking from the logits of the first generated identifier token."""

from __future__ import annotations

from collections.abc import Sequence

from rankwise.context import RankContext
from rankwise.methods.base import MethodResult, rank_scores
from rankwise.methods.windows import WindowedMethod, slide
from rankwise.parsing import LETTERS, fence_ids
from rankwise.types import Candidate

_ANSWER_TOKENS = 4
"""Kept free in the context for the assistant prefix ``[`` and the one label read after it."""


class First(WindowedMethod):
    """FIRST (Reddy et al., 2024): one forward pass per window, no generation.

    Passages get letter ids ``[A]``..; after the chat prompt and a literal ``[``, the
    log-probs of the single-token letters order the window (letters the model did not
    list, on APIs, follow in their current order and are traced). Windows slide as in
    RankGPT (``step`` 10, or half the window for windows under 20), and passages are cut to
    ``max_words`` words, and to fit the context, as listwise's are. Calls:
    ``ceil((N - window) / step) + 1`` for N > window, else 1. Score: ``1 / rank``.
    """

    name = "first"
    score_kind = "rank"
    requires = ("chat", "logprobs")
    prompt_fields = frozenset({"query", "num", "example_ordering", "label", "passage"})
    max_window = len(LETTERS)  # single-token letter ids

    def __init__(
        self,
        *,
        window: int = 20,
        step: int | None = None,
        max_words: int | None = 300,
        prompt: str = "first",
    ) -> None:
        super().__init__(window=window, step=step, max_words=max_words, prompt=prompt)

    async def rank(
        self, query: str, candidates: Sequence[Candidate], context: RankContext
    ) -> MethodResult:
        template = context.prompts.get(self.prompt)
        safe_query = fence_ids(query)

        async def rank_window(positions: list[int]) -> list[int]:
            labels = LETTERS[: len(positions)]

            messages = self.window_messages(
                context,
                template,
                candidates,
                positions,
                id_field="label",
                ids=labels,
                reserve=_ANSWER_TOKENS,
                query=safe_query,
                example_ordering="[B] > [A]",
            )
            answer = await context.label_logprobs(messages, list(labels), assistant_prefix="[")
            seen = sorted(answer.logprobs, key=lambda label: -answer.logprobs[label])
            missing = [label for label in labels if label not in answer.logprobs]
            if missing:
                context.trace.record(
                    "repair" if seen else "fallback",
                    f"{len(missing)} identifier(s) had no log-prob; kept in window order",
                    window=list(positions),
                    missing=len(missing),
                )
            return [positions[labels.index(label)] for label in seen + missing]

        order = await slide(
            list(range(len(candidates))), self.window, self.step, rank_window, context.checkpoint
        )
        return MethodResult(order, rank_scores(order))
