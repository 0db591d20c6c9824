"""Sliding windows, back to front, and fitting a window's prompt into the model's context:
shared by listwise generation and FIRST."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from rankwise.backends.tokens import prompt_counter
from rankwise.context import RankContext
from rankwise.errors import ContextOverflowError, InputError
from rankwise.methods.base import RankingMethod
from rankwise.parsing import fence_ids, first_words
from rankwise.prompts import Message, PromptTemplate
from rankwise.types import Candidate

WindowRanker = Callable[[list[int]], Awaitable[list[int]]]

TOKENS_PER_WORD = 4
"""The most tokens a passage cut to N words keeps per word. English text runs at about 1.3."""


def window_starts(n: int, window: int, step: int) -> list[int]:
    """Starts of the windows for ``n`` candidates, from the bottom up.

    The last window always starts at 0, so the top is reranked even when ``n - window`` is
    not a multiple of ``step`` (the original RankGPT loop misses it). Count:
    ``ceil((n - window) / step) + 1`` for ``n > window``, else 1.
    """
    if window < 2 or step < 1:
        raise InputError(f"window must be at least 2 and step at least 1, got {window} and {step}")
    if n <= window:
        return [0]
    starts = []
    start = n - window
    while True:
        starts.append(start)
        if start == 0:
            return starts
        start = max(0, start - step)


async def slide(
    order: list[int],
    window: int,
    step: int,
    rank_window: WindowRanker,
    checkpoint: Callable[[list[int]], None] | None = None,
) -> list[int]:
    """Rerank ``order`` window by window; ``rank_window`` reorders the items it is given.
    ``checkpoint`` receives the order after each window (the best known so far)."""
    current = list(order)
    for start in window_starts(len(current), window, step):
        end = min(start + window, len(current))
        current[start:end] = await rank_window(current[start:end])
        if checkpoint is not None:
            checkpoint(current)
    return current


def default_step(window: int) -> int:
    """RankGPT's step, 10 (half its window of 20); for a window under 20, half the window, so
    that consecutive windows overlap and a passage can climb past a window's edge."""
    return min(10, max(1, window // 2)) if isinstance(window, int) else 10


class WindowedMethod(RankingMethod):
    """Shared settings of the sliding-window methods: window, step, words per passage and
    prompt; calls = the number of windows."""

    max_window: int = 10_000

    def __init__(
        self, *, window: int, step: int | None, max_words: int | None, prompt: str
    ) -> None:
        if step is None:
            step = default_step(window)
        if not 2 <= window <= self.max_window or step < 1:
            raise InputError(
                f"{self.name}: window must be in [2, {self.max_window}] and step >= 1, "
                f"got {window} and {step}"
            )
        if step > window:
            raise InputError(
                f"{self.name}: step {step} is larger than window {window}, so the passages "
                "between windows would never be ranked; use a step of at most the window "
                "(RankGPT: window 20, step 10)"
            )
        self.window = window
        self.step = step
        self.max_words = max_words
        self.prompt = prompt

    def expected_calls(self, n: int) -> int:
        return len(window_starts(n, self.window, self.step))

    def window_messages(
        self,
        context: RankContext,
        template: PromptTemplate,
        candidates: Sequence[Candidate],
        positions: list[int],
        *,
        id_field: str,
        ids: Sequence[object],
        reserve: int,
        **values: object,
    ) -> list[Message]:
        """The prompt for the window at ``positions``: passage ``k`` fills ``id_field`` with
        ``ids[k]``, ``values`` and ``num`` fill the rest, and passages are cut to
        ``max_words`` words, fewer where the prompt plus ``reserve`` answer tokens would not
        fit the context (:func:`fit_to_context`)."""

        def render(words: int | None) -> list[Message]:
            passages = [
                {id_field: ids[k], "passage": window_passage(context, candidates[p].text, words)}
                for k, p in enumerate(positions)
            ]
            return template.render(passages, num=len(positions), **values)

        return fit_to_context(context, render, self.max_words, reserve, len(positions))


def window_passage(context: RankContext, text: str, words: int | None) -> str:
    """A passage as a window prompt shows it: its first ``words`` words and at most
    :data:`TOKENS_PER_WORD` tokens a word (None: no cut), with bracketed ids fenced so that it
    cannot pose as one. The token cap leaves ordinary text as it is and bounds text that has
    few spaces to split at (Chinese or Japanese, long URLs), which words alone would not."""
    if words is None:
        return fence_ids(text.strip())
    return fence_ids(context.truncate(first_words(text, words), TOKENS_PER_WORD * words))


def fit_to_context(
    context: RankContext,
    render: Callable[[int | None], list[Message]],
    max_words: int | None,
    reserve: int,
    size: int,
) -> list[Message]:
    """Render a window's prompt, cutting every passage to fewer words until the prompt plus
    ``reserve`` new tokens fits the model's context (RankLLM's rule: drop
    max(1, excess / (4 · size)) words per passage each round). The prompt, never the
    candidate list, is what gets cut; each cut is recorded in the trace."""
    limit = context.backend.capabilities.max_context - reserve
    count = prompt_counter(context.backend)
    messages = render(max_words)
    tokens = count(messages)
    if tokens <= limit:
        return messages
    words = max_words if max_words is not None else _longest(messages)
    while tokens > limit and words > 1:
        words = max(1, words - max(1, (tokens - limit) // (4 * size)))
        messages = render(words)
        tokens = count(messages)
    if tokens > limit:
        raise ContextOverflowError(
            f"the prompt needs {tokens} tokens even with one word per passage, more than the "
            f"{context.backend.capabilities.max_context}-token context allows; shorten the "
            "query, use a smaller window, or a model with a longer context"
        )
    context.trace.record(
        "truncation", f"passages cut to {words} words to fit the context", words=words
    )
    return messages


def _longest(messages: list[Message]) -> int:
    return max((len(m.content.split()) for m in messages), default=1)
