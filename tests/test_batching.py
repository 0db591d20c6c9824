"""Batch planning: size and token bounds, and prefix-aware grouping."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import sys
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

from rankwise.backends.batching import (
    EARLY_BATCHES_IN_FLIGHT,
    MicroBatcher,
    prefix_shared_cost,
    shared_prefix_length,
)
from rankwise.backends.framework import LoopSemaphores


def _lengths(batch: list[list[int]]) -> list[int]:
    return [len(r) for r in batch]


def _batcher(run=_lengths, executor=None, **kwargs) -> MicroBatcher[list[int], int]:
    """A batcher over token lists on its own worker thread (``executor``, or a new one);
    ``run`` answers each batch."""
    executor = executor or ThreadPoolExecutor(max_workers=1)
    return MicroBatcher(run, length=len, executor=executor, **kwargs)


def test_shared_prefix_length() -> None:
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_prefix_length([[5], [6]]) == 0
    assert shared_prefix_length([[1, 2]]) == 2
    assert shared_prefix_length([]) == 0


def test_prefix_cost_counts_the_shared_prefix_once() -> None:
    batch = [[9] * 40 + [i] * 10 for i in range(4)]
    assert prefix_shared_cost(batch, min_shared=16) == 40 + 4 * 10
    assert prefix_shared_cost(batch, min_shared=64) == 4 * 50  # prefix too short to reuse


def test_plan_bounds_batch_size_and_padded_tokens() -> None:
    requests = [[0] * n for n in (5, 50, 7, 40, 6, 45, 8)]
    plan = _batcher(max_batch=3, max_batch_tokens=100).plan(requests)
    assert sorted(i for batch in plan for i in batch) == list(range(len(requests)))
    for batch in plan:
        assert len(batch) <= 3
        assert max(len(requests[i]) for i in batch) * len(batch) <= 100


def test_plan_keeps_prompts_with_a_shared_prefix_together() -> None:
    """Two groups of prompts, each sharing a long prefix: the prefix-aware ordering keeps
    each group in its own batch although a length sort would mix them."""
    group_a = [[1] * 60 + [i] * (5 + i) for i in range(4)]
    group_b = [[2] * 60 + [i] * (5 + i) for i in range(4)]
    requests = [x for pair in zip(group_a, group_b, strict=True) for x in pair]
    batcher = _batcher(
        max_batch=16,
        orderings=[lambda r: r],
        cost=lambda batch: prefix_shared_cost(batch, 16),
    )
    plan = batcher.plan(requests)
    assert sorted(i for batch in plan for i in batch) == list(range(len(requests)))
    groups = [{tuple(requests[i][:60]) for i in batch} for batch in plan]
    assert all(len(g) == 1 for g in groups), groups
    assert len(plan) == 2


async def test_every_submitter_gets_its_own_result() -> None:
    batcher = _batcher(
        max_batch=4, orderings=[lambda r: r], cost=lambda b: prefix_shared_cost(b, 2)
    )
    requests = [[7] * (3 + i % 5) for i in range(23)]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    assert results == [len(r) for r in requests]


async def test_the_queue_is_bounded() -> None:
    """With room for 5 waiting requests, no batch can hold more than 5, whatever max_batch."""
    seen: list[int] = []

    def run(batch: list[list[int]]) -> list[int]:
        seen.append(len(batch))
        return [len(r) for r in batch]

    batcher = _batcher(run, max_batch=64, max_queue=5)
    requests = [[1] * (1 + i % 7) for i in range(40)]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    assert results == [len(r) for r in requests]
    assert max(seen) <= 5 and sum(seen) == 40


async def test_early_dispatch_starts_full_batches_while_requests_still_arrive() -> None:
    """With dispatch_early, the first batch runs before the last request is submitted;
    every request still gets its own result, none lost or run twice, bounds kept."""
    submitted = 0
    started_after: list[int] = []
    seen: list[list[int]] = []

    def run(batch: list[list[int]]) -> list[int]:
        started_after.append(submitted)
        seen.extend(r[0] for r in batch)
        return [r[0] * 10 for r in batch]

    batcher = _batcher(run, max_batch=4, max_batch_tokens=24, dispatch_early=True)

    async def one(i: int) -> int:
        nonlocal submitted
        submitted += 1
        return await batcher.submit([i] * (2 + i % 7))

    results = await asyncio.gather(*(one(i) for i in range(30)))
    assert results == [i * 10 for i in range(30)]
    assert sorted(seen) == list(range(30))  # each request ran exactly once
    assert started_after[0] < 30  # the model started before all requests had arrived


class _CountingExecutor(ThreadPoolExecutor):
    """One worker thread that remembers the most batches ever handed to it and not finished."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self._lock = threading.Lock()
        self.queued = 0
        self.most_queued = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[override]
        with self._lock:
            self.queued += 1
            self.most_queued = max(self.most_queued, self.queued)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future) -> None:
        with self._lock:
            self.queued -= 1


async def test_early_dispatch_sorts_what_gathers_while_the_device_is_busy() -> None:
    """A burst of prompts in random length order (all-pairs PRP on a GPU): only the first
    batches are cut in arrival order; the rest are planned by length over all that waited,
    so each later batch holds the shortest prompts left, from one plan made once. No more
    than two batches are ever handed to the worker at once, and every request runs exactly
    once."""
    lengths = list(range(2, 66))
    random.Random(7).shuffle(lengths)
    batches: list[list[int]] = []

    def run(batch: list[list[int]]) -> list[int]:
        time.sleep(0.01)  # a busy device
        batches.append([len(r) for r in batch])
        return [len(r) for r in batch]

    executor = _CountingExecutor()
    batcher = _batcher(run, executor=executor, max_batch=4, dispatch_early=True)
    plans = 0
    plan = batcher.plan

    def counted_plan(requests: list[list[int]]) -> list[list[int]]:
        nonlocal plans
        plans += 1
        return plan(requests)

    batcher.plan = counted_plan  # type: ignore[method-assign]
    results = await asyncio.gather(*(batcher.submit([1] * n) for n in lengths))
    assert results == lengths
    assert plans == 1  # all had arrived before the first plan: no need to plan again
    assert sorted(n for batch in batches for n in batch) == sorted(lengths)
    assert executor.most_queued == EARLY_BATCHES_IN_FLIGHT
    first = batches[:EARLY_BATCHES_IN_FLIGHT]
    assert first == [lengths[:4], lengths[4:8]]  # arrival order, started at once
    later = batches[EARLY_BATCHES_IN_FLIGHT:]
    assert all(max(a) <= min(b) for a, b in itertools.pairwise(later)), later


async def test_early_dispatch_hands_a_batch_error_to_its_waiters_only() -> None:
    def run(batch: list[list[int]]) -> list[int]:
        if any(r[0] == 99 for r in batch):
            raise RuntimeError("bad batch")
        return [r[0] for r in batch]

    batcher = _batcher(run, max_batch=2, dispatch_early=True)
    results = await asyncio.gather(
        *(batcher.submit([i]) for i in (1, 99, 3, 4)), return_exceptions=True
    )
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
    assert results[2:] == [3, 4]


async def test_a_batch_with_missing_results_fails_its_waiters_instead_of_hanging() -> None:
    for early in (False, True):
        batcher = _batcher(lambda batch: [0] * (len(batch) - 1), max_batch=3, dispatch_early=early)
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit([i]) for i in range(3)), return_exceptions=True),
            timeout=10,
        )
        assert all(isinstance(r, RuntimeError) for r in results), results


def test_each_event_loop_and_its_state_are_let_go_once_the_loop_closes() -> None:
    """A backend serving ``asyncio.run(reranker.arerank(...))`` per request kept every
    finished loop alive, with its queue and worker task (about 6.6 kB a request with the
    embedded model), because the state kept per loop refers to its loop. The batcher, and
    the framework backends' per-loop semaphores, now let closed loops go."""
    batcher = _batcher(max_batch=2, max_queue=1)  # one slot: a second request waits on it
    semaphores = LoopSemaphores(1)
    finished: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def serve() -> list[int]:
        finished.append(weakref.ref(asyncio.get_running_loop()))

        async def limited(request: list[int]) -> int:
            async with semaphores.get():
                await asyncio.sleep(0)
                return await batcher.submit(request)

        return await asyncio.gather(*(limited([0] * n) for n in (1, 2, 3)))

    for _ in range(3):
        assert asyncio.run(serve()) == [1, 2, 3]
    gc.collect()
    assert [ref() for ref in finished[:-1]] == [None, None]  # the last one is let go on next use


def test_threads_that_each_run_their_own_loop_share_the_per_loop_state() -> None:
    """A threaded web server whose handlers each call ``asyncio.run`` shares one backend
    across threads, and its per-loop state was kept unlocked: one thread dropping closed
    loops while another added its own failed with "dictionary changed size during
    iteration" or a KeyError, a few times in 2,400 requests here."""
    semaphores = LoopSemaphores(2)
    failures: list[str] = []

    async def serve() -> None:
        async with semaphores.get():
            await asyncio.sleep(0)

    def handler_thread() -> None:
        for _ in range(500):
            try:
                asyncio.run(serve())
            except Exception as error:  # what the test looks for
                failures.append(repr(error))

    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as Python can: races show
    try:
        threads = [threading.Thread(target=handler_thread) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switching)
    assert failures == []
