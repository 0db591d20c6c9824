"""State kept per event loop, forgotten once its loop is closed.

A backend may serve several event loops (the synchronous API's own loop, and one per
``asyncio.run``), and its semaphores, queues and tasks belong to one loop each. A
``WeakKeyDictionary`` alone does not forget them: a value that refers to its loop (a task, a
semaphore that has made a caller wait) keeps the key alive, so every ``asyncio.run`` left
its loop and state behind. Threads that each run their own loop (``asyncio.run`` in a
threaded web server) share one holder, so it is locked.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One value per running event loop, made by ``make`` on the loop's first use."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's value (call from a coroutine)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            value = self._by_loop.get(loop)
            if value is None:
                for closed in [known for known in self._by_loop if known.is_closed()]:
                    self._by_loop.pop(closed, None)  # its weak reference may have gone
                value = self._by_loop[loop] = self._make()
            return value

    def forget(self) -> None:
        """Drop the running loop's value (it is made again on the loop's next use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._by_loop.pop(loop, None)

    def clear(self) -> list[T]:
        """Drop every loop's value, and return them (to close what they hold)."""
        with self._lock:
            values = list(self._by_loop.values())
            self._by_loop.clear()
            return values
