"""Shared pieces of the backends that wrap a framework's chat model (LangChain, LlamaIndex)."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Iterable, Sequence

from rankwise.backends.tokens import TokenCounter


def match_labels(
    alternatives: Iterable[tuple[str, float]], labels: Sequence[str]
) -> dict[str, float]:
    """Log-prob of each label among (token, logprob) alternatives, ignoring surrounding
    whitespace; several spellings of one label ("Yes", " Yes") are summed."""
    found: dict[str, float] = {}
    seen: set[tuple[str, float]] = set()
    for token, logprob in alternatives:
        if (token, logprob) in seen or not token.strip():
            continue
        seen.add((token, logprob))
        for label in labels:
            if token.strip() == label.strip():
                previous = found.get(label)
                found[label] = logprob if previous is None else _logaddexp(previous, logprob)
    return found


def position_after_prefix(tokens: Sequence[str], prefix: str) -> int:
    """Index of the generated token that follows ``prefix`` (such as FIRST's ``[``), for APIs
    that cannot continue a partial reply; 0 when there is no prefix or it was not written."""
    prefix = prefix.strip()
    if not prefix:
        return 0
    written = ""
    for index, token in enumerate(tokens[:-1]):
        written += token
        if written.strip().endswith(prefix):
            return index + 1
    return 0


def _logaddexp(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


class LoopSemaphores:
    """One semaphore per event loop, so a backend can serve several loops."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("concurrency must be at least 1")
        self.limit = limit
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.limit)
            self._by_loop[loop] = semaphore
        return semaphore


class EstimatedTokens:
    """Token counting for framework models: tiktoken when local, else 4 characters a token."""

    def __init__(self) -> None:
        self._counter = TokenCounter()

    def count_tokens(self, text: str) -> int:
        return self._counter.count(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self._counter.truncate(text, max_tokens)
