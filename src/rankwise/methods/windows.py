"""Sliding windows, back to front, shared by listwise generation and FIRST."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

WindowRanker = Callable[[list[int]], Awaitable[list[int]]]


def window_starts(n: int, window: int, step: int) -> list[int]:
    """Starts of the windows for ``n`` candidates, from the bottom up.

    The last window always starts at 0, so the top is reranked even when ``n - window`` is
    not a multiple of ``step`` (the original RankGPT loop misses it). Count:
    ``ceil((n - window) / step) + 1`` for ``n > window``, else 1.
    """
    if window < 2 or step < 1:
        raise ValueError("window must be at least 2 and step at least 1")
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
