"""Coalesce concurrent requests from many coroutines into batched calls on one worker thread.

Methods simply ``await backend.label_logprobs(...)`` from as many tasks as they like; the
batcher collects what arrives within one turn of the event loop, groups it into batches
(sorted by length so that padding is small, or by content so that batches share a prompt
prefix, whichever costs fewer computed positions), and runs the batches one after another
on a single worker thread. The event loop is never blocked by model work.

With ``dispatch_early`` (for accelerators, where the host's prompt work is as long as the
device's), a batch starts as soon as enough requests for it have arrived, in arrival order,
so that the model works while later prompts are still being rendered and tokenised. At most
:data:`EARLY_BATCHES_IN_FLIGHT` batches are handed to the worker at once (one running, the
next waiting): while the device is busy, requests gather, and the next batch comes from a
plan of everything waiting (length-sorted, made again only when more requests have arrived),
so that only the first batches of a large burst (all-pairs PRP: 380 prompts at depth 20) are
cut in arrival order and pad more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rankwise._checks import check_whole
from rankwise._loops import PerLoop

Request = TypeVar("Request")
Result = TypeVar("Result")

BATCH_OVERHEAD_POSITIONS = 64
"""What starting one more forward pass costs, in computed positions, when plans are compared."""

EARLY_BATCHES_IN_FLIGHT = 2
"""With early dispatch, the most batches handed to the worker at once: one running and one
ready, so the device never waits for the event loop, and no more, so later batches are planned
over all that has arrived (length-sorted) instead of cut in arrival order."""


@dataclass
class _LoopState(Generic[Request, Result]):
    slots: asyncio.Semaphore
    pending: list[tuple[Request, asyncio.Future[Result]]] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    running: set[asyncio.Future[list[Result]]] = field(default_factory=set)
    # Early dispatch: the batches still to start from the last plan, valid until a request
    # arrives (planning a burst of hundreds again for every batch would cost more than it
    # saves when prompts share prefixes).
    planned: list[list[tuple[Request, asyncio.Future[Result]]]] = field(default_factory=list)


@dataclass
class BatchStats:
    """Counters for throughput and padding reports.

    ``reused_tokens`` counts prompt positions served from a key/value cache instead of
    being computed (a batch's shared prefix, or a prefix kept from an earlier call);
    ``stored_prefix_tokens`` is the part of them kept from earlier calls.
    """

    batches: int = 0
    requests: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    reused_tokens: int = 0
    stored_prefix_tokens: int = 0
    seconds: float = 0.0

    @property
    def padding_waste(self) -> float:
        """Share of computed positions that were padding."""
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Prompt tokens served per second of model time (computed plus reused prefixes)."""
        served = self.real_tokens + self.reused_tokens
        return served / self.seconds if self.seconds else 0.0


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to every sequence."""
    if not sequences:
        return 0
    first, shortest = sequences[0], min(len(s) for s in sequences)
    for position in range(shortest):
        token = first[position]
        if any(s[position] != token for s in sequences):
            return position
    return shortest


def reusable_prefix(sequences: Sequence[Sequence[int]], min_shared: int) -> int:
    """Tokens of a batch's common prefix worth running once: 0 for a single sequence, when
    reuse is off (``min_shared <= 0``) or when the prefix is shorter than ``min_shared``.
    Every sequence keeps at least one token of its own after the prefix."""
    if min_shared <= 0 or len(sequences) < 2:
        return 0
    shared = min(shared_prefix_length(sequences), min(len(s) for s in sequences) - 1)
    return shared if shared >= min_shared else 0


def prefix_shared_cost(
    sequences: Sequence[Sequence[int]], min_shared: int, *, packed: bool = False
) -> int:
    """Positions computed when a batch's reusable prefix is run only once: the rest padded
    to the longest prompt, or, ``packed``, only each prompt's own tokens."""
    shared = reusable_prefix(sequences, min_shared)
    if packed:
        return shared + sum(len(s) - shared for s in sequences)
    width = max(len(s) for s in sequences)
    return shared + len(sequences) * (width - shared)


class MicroBatcher(Generic[Request, Result]):
    """Run ``run_batch`` over groups of requests submitted concurrently.

    ``length`` gives each request's size (tokens); batches hold at most ``max_batch``
    requests and at most ``max_batch_tokens`` padded tokens; at most ``max_queue`` requests
    wait or run at once (later submitters wait for a slot). ``orderings`` are extra sort
    keys to try besides length, and ``cost`` prices a batch (computed positions); the
    cheapest plan wins. ``dispatch_early`` starts a full batch (by size or tokens) the
    moment its last request arrives while fewer than :data:`EARLY_BATCHES_IN_FLIGHT`
    batches are on the worker, instead of planning all concurrent requests together; once
    that many are, each next batch comes from a plan of all requests waiting.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Request]], list[Result]],
        *,
        length: Callable[[Request], int],
        executor: Executor,
        max_batch: int = 16,
        max_batch_tokens: int = 8192,
        max_queue: int = 1024,
        orderings: Sequence[Callable[[Request], object]] = (),
        cost: Callable[[list[Request]], int] | None = None,
        dispatch_early: bool = False,
    ) -> None:
        self._run_batch = run_batch
        self._length = length
        self._orderings = list(orderings)
        self._cost = cost
        self._executor = executor
        self.check_limits(max_batch, max_batch_tokens, max_queue)
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.dispatch_early = dispatch_early
        self._states: PerLoop[_LoopState[Request, Result]] = PerLoop(
            lambda: _LoopState(slots=asyncio.Semaphore(self.max_queue))
        )

    @staticmethod
    def check_limits(max_batch: int, max_batch_tokens: int, max_queue: int) -> None:
        """Raise :class:`InputError` for a bound no batch could be formed under (callers that
        build batchers late, after loading a model, check first)."""
        for name, value in (
            ("max_batch", max_batch),
            ("max_batch_tokens", max_batch_tokens),
            ("max_queue", max_queue),
        ):
            check_whole(name, value, 1)

    async def submit(self, request: Request) -> Result:
        """Queue one request and wait for its result."""
        loop = asyncio.get_running_loop()
        state = self._states.get()
        async with state.slots:
            future: asyncio.Future[Result] = loop.create_future()
            state.pending.append((request, future))
            state.planned = []
            if self.dispatch_early:
                self._start_full_batches(loop, state)
            if state.worker is None or state.worker.done():
                state.worker = loop.create_task(self._drain(loop, state))
            return await future

    def plan(self, requests: list[Request]) -> list[list[int]]:
        """Group request indices into batches, bounded by size and tokens.

        Sorted by length by default. Each extra ordering is planned too, cutting a batch
        wherever adding the next request costs more than starting afresh (so prompts that
        share a long prefix stay together), and the plan with the lowest total cost wins.
        """
        indices = range(len(requests))
        by_length = self._batches(
            sorted(indices, key=lambda i: self._length(requests[i])), requests
        )
        if self._cost is None or not self._orderings or len(requests) < 2:
            return by_length
        plans = [by_length] + [
            self._batches(
                sorted(indices, key=lambda i, k=key: k(requests[i])), requests, greedy=True
            )
            for key in self._orderings
        ]
        return min(plans, key=lambda plan: self._plan_cost(plan, requests))

    def _batch_cost(self, batch: list[Request]) -> int:
        assert self._cost is not None
        return self._cost(batch) + BATCH_OVERHEAD_POSITIONS

    def _plan_cost(self, plan: list[list[int]], requests: list[Request]) -> int:
        return sum(self._batch_cost([requests[i] for i in batch]) for batch in plan)

    def _batches(
        self, order: list[int], requests: list[Request], *, greedy: bool = False
    ) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        current_cost = 0  # greedy only: the cost of ``current``
        for index in order:
            size = self._length(requests[index])
            widest = max(longest, size)
            full = (
                len(current) >= self.max_batch
                or widest * (len(current) + 1) > self.max_batch_tokens
            )
            if greedy:
                alone = self._batch_cost([requests[index]])
                joined = alone
                if current and not full:
                    joined = self._batch_cost([requests[i] for i in (*current, index)])
                    full = joined - current_cost > alone
            if current and full:
                batches.append(current)
                current, widest = [], size
                joined = alone if greedy else 0
            current.append(index)
            longest = widest
            if greedy:
                current_cost = joined
        if current:
            batches.append(current)
        return batches

    def _start_full_batches(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        """Hand full batches of the waiting requests (arrival order) to the worker now, as
        long as fewer than :data:`EARLY_BATCHES_IN_FLIGHT` are on it."""
        free = EARLY_BATCHES_IN_FLIGHT - len(state.running)
        if free <= 0:
            return
        requests = [request for request, _ in state.pending]
        batches = self._batches(list(range(len(requests))), requests)
        full = batches if len(batches[-1]) >= self.max_batch else batches[:-1]
        full = full[:free]
        if not full:
            return
        for batch in full:
            members = [state.pending[i] for i in batch if not state.pending[i][1].done()]
            if members:
                self._start(loop, state, members)
        taken = {i for batch in full for i in batch}
        state.pending = [item for i, item in enumerate(state.pending) if i not in taken]

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        state: _LoopState,
        members: list[tuple[Request, asyncio.Future[Result]]],
    ) -> asyncio.Future[list[Result]]:
        """Queue one batch on the worker; its waiters get their results when it finishes."""
        running = loop.run_in_executor(
            self._executor, self._run_batch, [request for request, _ in members]
        )
        state.running.add(running)
        running.add_done_callback(state.running.discard)
        running.add_done_callback(lambda done: _deliver(members, done))
        return running

    async def _drain(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        # Let every coroutine started in the same turn (e.g. by gather) enqueue first.
        for _ in range(3):
            await asyncio.sleep(0)
        while state.pending:
            if self.dispatch_early:
                await self._start_next(loop, state)
                continue
            taken, state.pending = state.pending, []
            live = [(request, future) for request, future in taken if not future.done()]
            requests = [request for request, _ in live]
            for batch in self.plan(requests):
                members = [live[i] for i in batch if not live[i][1].done()]
                if members:
                    running = self._start(loop, state, members)
                    await asyncio.wait([running])

    async def _start_next(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        """Early dispatch: once the worker has room, start the next batch of a plan of all
        requests waiting (what arrived while the device was busy is sorted together); the
        plan is made again only when a request has arrived since the last one."""
        while len(state.running) >= EARLY_BATCHES_IN_FLIGHT:
            await asyncio.wait(set(state.running), return_when=asyncio.FIRST_COMPLETED)
        live = [(request, future) for request, future in state.pending if not future.done()]
        if not state.planned:
            plan = self.plan([request for request, _ in live])
            state.planned = [[live[i] for i in batch] for batch in plan]
        while state.planned:
            members = [item for item in state.planned.pop(0) if not item[1].done()]
            if members:
                self._start(loop, state, members)
                chosen = {id(future) for _, future in members}
                state.pending = [item for item in live if id(item[1]) not in chosen]
                return
        state.pending = []


def _deliver(
    members: list[tuple[Request, asyncio.Future[Result]]], done: asyncio.Future[list[Result]]
) -> None:
    """Give each waiter of a finished batch its result, or the batch's error."""
    error: BaseException | None
    error = asyncio.CancelledError() if done.cancelled() else done.exception()
    results = [] if error else done.result()
    if not error and len(results) != len(members):
        error = RuntimeError(f"a batch of {len(members)} requests gave {len(results)} results")
    for position, (_, future) in enumerate(members):
        if future.done():
            continue
        if error:
            future.set_exception(error)
        else:
            future.set_result(results[position])
