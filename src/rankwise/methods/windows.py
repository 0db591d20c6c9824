"""Sliding windows, back to front, shared by listwise generation and FIRST."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from rankwise.errors import InputError
from rankwise.methods.base import RankingMethod

WindowRanker = Callable[[list[int]], Awaitable[list[int]]]


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
