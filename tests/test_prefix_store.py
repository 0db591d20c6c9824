"""The prefix store: longest-match lookup, replacement of covered prefixes, LRU eviction."""

from __future__ import annotations

import pytest

from rankwise.backends.prefix_cache import PrefixStore


def test_longest_match_wins_and_short_matches_are_ignored() -> None:
    store: PrefixStore[str] = PrefixStore(1000, min_length=3)
    store.store([1, 2, 3, 4, 5], "five", 10)
    store.store([1, 2, 9, 9], "other", 10)
    hit = store.longest([1, 2, 3, 4, 7, 8])
    assert hit is not None and (hit.length, hit.states, hit.stored_length) == (4, "five", 5)
    assert store.match_length([1, 2, 3, 4, 7, 8]) == 4
    assert store.longest([1, 2, 8]) is None  # 2 shared tokens < min_length
    assert (store.hits, store.misses) == (1, 1)


def test_an_entry_covered_by_a_longer_one_is_replaced_not_duplicated() -> None:
    store: PrefixStore[str] = PrefixStore(1000, min_length=2)
    store.store([1, 2, 3], "short", 10)
    store.store([1, 2, 3, 4], "long", 20)
    assert len(store) == 1 and store.bytes == 20
    store.store([1, 2, 3], "again", 10)  # already covered: nothing new is kept
    assert len(store) == 1 and store.bytes == 20
    hit = store.longest([1, 2, 3, 4, 5])
    assert hit is not None and hit.states == "long"


def test_least_recently_used_entries_go_first_within_the_budget() -> None:
    store: PrefixStore[str] = PrefixStore(30, min_length=2)
    store.store([1, 1], "a", 10)
    store.store([2, 2], "b", 10)
    store.store([3, 3], "c", 10)
    assert store.longest([1, 1, 0]) is not None  # "a" is now the most recent
    store.store([4, 4], "d", 10)  # evicts "b", the least recently used
    assert store.bytes == 30 and len(store) == 3
    assert store.longest([2, 2]) is None
    assert {store.longest(k).states for k in ([1, 1], [3, 3], [4, 4])} == {"a", "c", "d"}
    store.store([5, 5], "too big", 31)  # larger than the whole budget: not kept
    assert store.longest([5, 5]) is None and store.bytes == 30
    store.clear()
    assert len(store) == 0 and store.bytes == 0


def test_a_zero_budget_keeps_nothing_and_a_negative_one_is_refused() -> None:
    store: PrefixStore[str] = PrefixStore(0)
    store.store(list(range(50)), "x", 1)
    assert len(store) == 0
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixStore(-1)
