"""Property-based tests: permutation repair and the heap sorters against a known total order."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankwise.methods import build_method
from rankwise.methods.heap import heap_groups, heap_new_groups, heap_top_k
from rankwise.methods.windows import window_starts
from rankwise.parsing import clean_answer, parse_choice, parse_permutation

ids_text = st.lists(st.integers(min_value=-3, max_value=40), max_size=40).map(
    lambda values: " > ".join(f"[{v}]" for v in values)
)


@given(st.integers(min_value=0, max_value=30), st.one_of(ids_text, st.text(max_size=200)))
def test_repair_always_gives_a_permutation(size: int, text: str) -> None:
    repair = parse_permutation(text, size)
    assert sorted(repair.order) == list(range(size))


@given(st.permutations(list(range(12))))
def test_a_clean_answer_is_read_exactly(order: list[int]) -> None:
    text = " > ".join(f"[{i + 1}]" for i in order)
    repair = parse_permutation(text, 12)
    assert repair.order == order and not repair.repaired


@given(st.permutations(list(range(8))), st.integers(min_value=1, max_value=8))
def test_a_partial_answer_keeps_its_order_then_the_rest(order: list[int], keep: int) -> None:
    thinking = "<think>[1] > [2]</think><think>[2] > [1]</think>"  # the answer follows the last
    text = thinking + " > ".join(f"[{i + 1}]" for i in order[:keep])
    repair = parse_permutation(text, 8)
    assert repair.order[:keep] == order[:keep]
    assert repair.order[keep:] == sorted(order[keep:])


def test_the_published_repair_example() -> None:
    repair = parse_permutation("[3] > [1] > [2] > [3] > [25]", 4)
    assert repair.order == [2, 0, 1, 3]
    assert (repair.missing, repair.duplicates, repair.out_of_range) == ([3], [2], [24])


def test_letters_and_exotic_digits() -> None:
    assert parse_permutation("[C] > [A]", 3, letters=True).order == [2, 0, 1]
    assert clean_answer("①⑩２") == "1102"
    assert parse_choice("Passage B is better", "AB") == 1
    assert parse_choice("I'd say A.", "AB") == 0
    assert parse_choice("neither", "AB") is None


async def _sorted_top(values: list[int], k: int, children: int, setwise: bool) -> list[int]:
    async def pick(group: list[int]) -> int:
        if setwise:
            return max(range(len(group)), key=lambda j: values[group[j]])
        best = 0
        for j in range(1, len(group)):
            if values[group[j]] > values[group[best]]:
                best = j
        return best

    return await heap_top_k(list(range(len(values))), k, children, pick)


@settings(max_examples=200)
@given(
    st.lists(st.integers(), min_size=0, max_size=60, unique=True),
    st.integers(min_value=1, max_value=15),
    st.integers(min_value=2, max_value=5),
    st.booleans(),
)
def test_heapsort_with_a_perfect_comparator_returns_the_true_top_k(
    values: list[int], k: int, children: int, setwise: bool
) -> None:
    result = asyncio.run(_sorted_top(values, k, children, setwise))
    truth = sorted(range(len(values)), key=lambda i: -values[i])
    assert sorted(result) == list(range(len(values)))
    assert result[:k] == truth[:k]
    rest = result[min(k, len(values)) :]
    assert rest == sorted(rest)  # the others keep first-stage order


@given(st.integers(min_value=1, max_value=300), st.integers(2, 40), st.integers(1, 40))
def test_windows_cover_the_top_and_count_as_documented(n: int, window: int, step: int) -> None:
    starts = window_starts(n, window, step)
    assert starts[-1] == 0
    expected = 1 if n <= window else -(-(n - window) // step) + 1
    assert len(starts) == expected


@pytest.mark.parametrize("method", ["listwise", "first"])
@pytest.mark.parametrize(("window", "step"), [(2, 1), (3, 1), (4, 2), (12, 6), (20, 10), (24, 10)])
def test_a_window_without_a_step_gets_overlapping_windows(method, window, step) -> None:
    """A window of 2..9 with no step failed ("step 10 is larger than window"), over an
    option the caller never set, and a window of 10 gave windows that did not overlap."""
    ranker = build_method(method, window=window)
    assert ranker.step == step
    starts = window_starts(45, window, ranker.step)
    assert all(a - b < window for a, b in itertools.pairwise(starts))  # each overlaps the next
    assert build_method(method, window=window, step=1).step == 1  # a step given is kept


async def _asked_groups(size: int, k: int, children: int, seed: int) -> list[int]:
    """Group sizes heap_top_k asks for when every answer is drawn at random."""
    rng = random.Random(seed)
    sizes: list[int] = []

    async def pick(group: list[int]) -> int:
        sizes.append(len(group))
        return rng.randrange(len(group))

    await heap_top_k(list(range(size)), k, children, pick)
    return sizes


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=70),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=0, max_value=10**6),
)
def test_any_answers_ask_between_the_fewest_and_the_most_groups(
    size: int, k: int, children: int, seed: int
) -> None:
    fewest = heap_groups(size, k, children, descend=False)
    most = heap_groups(size, k, children, descend=True)
    asked = asyncio.run(_asked_groups(size, k, children, seed))
    # setwise makes one call per group, PRP heapsort one comparison per child in it
    assert len(fewest) <= len(asked) <= len(most)
    assert sum(fewest) - len(fewest) <= sum(asked) - len(asked) <= sum(most) - len(most)
    new = heap_new_groups(size, children)  # asked whatever the answers: the lower bound
    assert len(new) <= len(asked) and sum(new) - len(new) <= sum(asked) - len(asked)


def test_the_most_groups_are_reached_when_the_first_child_keeps_winning() -> None:
    # 7 items in a binary heap, top 2. Building sifts down roots 2, 1 and 0 (root 3 has no
    # children); the second extraction ends the sort, so only one sift-down follows.
    # Parents winning: one group per sift-down. First children winning: root 0 goes on
    # through node 1, in building and in the sift-down after the first extraction.
    assert heap_groups(7, 2, 2, descend=False) == [3, 3, 3, 3]
    assert heap_groups(7, 2, 2, descend=True) == [3, 3, 3, 3, 3, 3]
    assert heap_groups(1, 5, 2, descend=True) == [] == heap_groups(0, 5, 3, descend=True)


def test_the_groups_no_answers_can_repeat_are_the_first_of_each_build_sift_down() -> None:
    # 6 items, binary: roots 2, 1 and 0 have children; root 2 has one (item 5)
    assert heap_new_groups(6, 2) == [2, 3, 3]
    # 10 items, 3 children: roots 2, 1 and 0, each with three children
    assert heap_new_groups(10, 3) == [4, 4, 4]
    assert heap_new_groups(1, 2) == [] == heap_new_groups(0, 3)


@pytest.mark.parametrize("cut", ["<think>", "  <think>\n"])
def test_an_answer_cut_short_in_its_thoughts_names_nothing(cut: str) -> None:
    """A token limit that ends a reasoning model's answer inside ``<think>`` leaves only
    thoughts; the ids and labels they weigh up were read as the answer."""
    thoughts = cut + "Passage [2] or passage B? [3] > [1] looks"
    repair = parse_permutation(thoughts, 3)
    assert repair.order == [0, 1, 2] and repair.missing == [0, 1, 2]
    assert parse_choice(thoughts, "AB") is None
