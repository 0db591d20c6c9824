"""Key/value states of recent prompt prefixes, kept across forward passes.

Methods that make one call after another (setwise, PRP heapsort and sliding, FIRST's
windows, a second rerank of the same query) send prompts that begin alike: the chat
template, the instruction and the query, and often the same first passage. A
:class:`PrefixStore` keeps the attention key/value states of recent prompts, so the next
prompt only computes what follows the longest prefix already seen. Entries are evicted
least recently used first, within a byte budget.

The store is model-agnostic: it keeps opaque per-layer states and their size in bytes,
and never imports torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rankwise.backends.batching import shared_prefix_length
from rankwise.errors import InputError

States = TypeVar("States")


@dataclass(frozen=True)
class PrefixHit(Generic[States]):
    """The longest stored prefix of a prompt: its length in tokens and the states of the
    stored prompt (longer than ``length`` when only part of it matched; cut it down)."""

    length: int
    states: States
    stored_length: int


class PrefixStore(Generic[States]):
    """Least-recently-used store of key/value states keyed by token prefix.

    Args:
        max_bytes: size budget; storing past it evicts the least recently used entries.
            ``0`` keeps nothing.
        min_length: shortest match worth reusing, in tokens.
    """

    def __init__(self, max_bytes: int, *, min_length: int = 16) -> None:
        if max_bytes < 0:
            raise InputError(f"max_bytes must be 0 (off) or positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.min_length = min_length
        self._entries: OrderedDict[tuple[int, ...], tuple[States, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def match_length(self, tokens: Sequence[int]) -> int:
        """Tokens of ``tokens`` that :meth:`longest` would serve (0 if none); changes nothing."""
        return self._best(tokens)[1]

    def longest(self, tokens: Sequence[int]) -> PrefixHit[States] | None:
        """The stored entry sharing the longest prefix with ``tokens`` (at least
        ``min_length`` tokens), marked as recently used; ``None`` when there is none."""
        best_key, best = self._best(tokens)
        if best_key is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(best_key)
        states, _ = self._entries[best_key]
        return PrefixHit(length=best, states=states, stored_length=len(best_key))

    def store(self, tokens: Sequence[int], states: States, size_bytes: int) -> None:
        """Keep ``states`` (the key/value states of exactly ``tokens``). An entry that is a
        prefix of ``tokens`` is replaced; one that already covers ``tokens`` is kept."""
        key = tuple(tokens)
        if self.max_bytes == 0 or size_bytes > self.max_bytes or len(key) < self.min_length:
            return
        for existing in list(self._entries):
            if len(existing) >= len(key) and existing[: len(key)] == key:
                self._entries.move_to_end(existing)
                return
            if key[: len(existing)] == existing:
                self._drop(existing)
        self._entries[key] = (states, size_bytes)
        self._bytes += size_bytes
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        """Forget every entry (benchmarks do this between arms)."""
        self._entries.clear()
        self._bytes = 0

    def _best(self, tokens: Sequence[int]) -> tuple[tuple[int, ...] | None, int]:
        best_key: tuple[int, ...] | None = None
        best = 0
        for key in self._entries:
            length = shared_prefix_length([key, tokens])
            if length > best:
                best_key, best = key, length
        if best < max(self.min_length, 1):
            return None, 0
        return best_key, best

    def _drop(self, key: tuple[int, ...]) -> None:
        _, size = self._entries.pop(key)
        self._bytes -= size
