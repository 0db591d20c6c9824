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
