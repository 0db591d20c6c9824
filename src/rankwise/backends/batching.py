"""Coalesce concurrent requests from many coroutines into batched calls on one worker thread.

Methods simply ``await backend.label_logprobs(...)`` from as many tasks as they like; the
batcher collects what arrives within one turn of the event loop, sorts it by length so that
padding is small, and runs the batches one after another on a single worker thread. The
event loop is never blocked by model work.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass
class _LoopState(Generic[Request, Result]):
    pending: list[tuple[Request, asyncio.Future[Result]]] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None


@dataclass
class BatchStats:
    """Counters for throughput and padding reports."""

    batches: int = 0
    requests: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0

    @property
    def padding_waste(self) -> float:
        """Share of computed positions that were padding."""
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


class MicroBatcher(Generic[Request, Result]):
    """Run ``run_batch`` over groups of requests submitted concurrently.

    ``length`` gives each request's size (tokens); batches hold at most ``max_batch``
    requests and at most ``max_batch_tokens`` padded tokens.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Request]], list[Result]],
        *,
        length: Callable[[Request], int],
        executor: Executor,
        max_batch: int = 16,
        max_batch_tokens: int = 8192,
    ) -> None:
        self._run_batch = run_batch
        self._length = length
        self._executor = executor
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self._states: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopState[Request, Result]
        ] = weakref.WeakKeyDictionary()

    async def submit(self, request: Request) -> Result:
        """Queue one request and wait for its result."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = _LoopState()
            self._states[loop] = state
        future: asyncio.Future[Result] = loop.create_future()
        state.pending.append((request, future))
        if state.worker is None or state.worker.done():
            state.worker = loop.create_task(self._drain(loop, state))
        return await future

    def plan(self, requests: list[Request]) -> list[list[int]]:
        """Group request indices into batches: sorted by length, bounded by size and tokens."""
        order = sorted(range(len(requests)), key=lambda i: self._length(requests[i]))
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            longest = self._length(requests[index])  # sorted, so this one is the longest
            if current and (
                len(current) >= self.max_batch
                or longest * (len(current) + 1) > self.max_batch_tokens
            ):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

    async def _drain(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        # Let every coroutine started in the same turn (e.g. by gather) enqueue first.
        for _ in range(3):
            await asyncio.sleep(0)
        while state.pending:
            taken, state.pending = state.pending, []
            live = [(request, future) for request, future in taken if not future.done()]
            requests = [request for request, _ in live]
            for batch in self.plan(requests):
                members = [live[i] for i in batch if not live[i][1].done()]
                if not members:
                    continue
                try:
                    results = await loop.run_in_executor(
                        self._executor, self._run_batch, [request for request, _ in members]
                    )
                except Exception as error:  # delivered to every waiter of this batch
                    for _, future in members:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(members, results, strict=True):
                    if not future.done():
                        future.set_result(result)
