"""The c-ary heapsort behind PRP-Sorting and setwise: extract the top k, keep the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Picker = Callable[[list[int]], Awaitable[int]]


async def heap_top_k(items: list[int], k: int, children: int, pick: Picker) -> list[int]:
    """Heapsort ``items`` far enough to know the top ``k``.

    ``pick(group)`` returns the index, within ``group`` (a parent followed by its children),
    of the best item. Returns the top ``k`` in order, then the other items in their
    original order. Build the heap from ``len // children`` down to 0, then extract.
    """
    heap = list(items)

    async def heapify(size: int, root: int) -> None:
        while children * root + 1 < size:
            nodes = [root, *range(children * root + 1, min(children * (root + 1) + 1, size))]
            largest = nodes[await pick([heap[node] for node in nodes])]
            if largest == root:
                return
            heap[root], heap[largest] = heap[largest], heap[root]
            root = largest

    size = len(heap)
    for root in range(size // children, -1, -1):
        await heapify(size, root)
    top: list[int] = []
    for end in range(size - 1, 0, -1):
        heap[0], heap[end] = heap[end], heap[0]
        top.append(heap[end])
        if len(top) == k:
            break
        await heapify(end, 0)
    if len(top) < min(k, len(items)):  # the last item left in the heap is the next best
        top.append(heap[0])
    chosen = set(top)
    return top + [item for item in items if item not in chosen]


def heap_groups(size: int, k: int, children: int, *, descend: bool) -> list[int]:
    """Sizes of the groups :func:`heap_top_k` hands to ``pick`` for ``size`` items, on one
    of its two extreme paths.

    Which groups are asked depends on the answers only through how far each sift-down goes:
    every sift-down asks its first group, and goes one level deeper each time a child wins.
    ``descend=False``: the parent always wins, every sift-down stops after one group (the
    fewest groups). ``descend=True``: the first child always wins; in a heap stored as an
    array it heads the deepest and fullest subtree, so every sift-down asks the most groups,
    and the largest ones, that any answers can make it ask.
    """
    sizes: list[int] = []

    async def pick(group: list[int]) -> int:
        sizes.append(len(group))
        return 1 if descend else 0

    sorting = heap_top_k(list(range(size)), k, children, pick)
    try:  # the picker never waits, so the coroutine runs to its end in one step
        sorting.send(None)
    except StopIteration:
        return sizes
    sorting.close()
    raise RuntimeError("heap_top_k waited on something other than its picker")


def heap_new_groups(size: int, children: int) -> list[int]:
    """Sizes of the groups :func:`heap_top_k` asks for ``size`` items that no answers can
    make repeat a comparison: the first group of each sift-down while the heap is built.

    The builder sifts the roots from the last parent up to 0, and a sift-down only moves
    items within the root's subtree, so when root ``r`` is sifted it still holds item ``r``,
    which no group has held before. Every later group may repeat pairs already compared;
    answers reused within a rerank cost no call, so these groups bound the calls from below.
    """
    return [
        1 + min(children, size - (children * root + 1))
        for root in range(size // children, -1, -1)
        if children * root + 1 < size
    ]
