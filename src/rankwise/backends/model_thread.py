"""The one thread a local model runs on, kept working across ``fork``.

A model's forward passes run in order on one worker thread, off the event loop. A process
forked after that thread started (``multiprocessing`` on Linux, gunicorn ``--preload``,
Celery's workers) copies the executor but not its thread, so work sent to it would wait
forever; the child gets a thread of its own on its first call instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelThread(Executor):
    """A one-thread executor that starts a new thread in a forked child."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pid = os.getpid()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on the model's thread, after what was sent before."""
        if os.getpid() != self._pid:  # a forked child: the parent's thread is not here
            self._pid = os.getpid()
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the thread once the work sent to it is done (``wait``: block until then)."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
