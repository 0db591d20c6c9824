"""The one thread a local model runs on, kept working across ``fork``.

A model's forward passes run in order on one worker thread, off the event loop. A process
forked after that thread started (``multiprocessing`` on Linux, gunicorn ``--preload``,
Celery's workers) copies the executor but not its thread, so work sent to it would wait
forever; the child gets a thread of its own on its first call instead. A model is shared by
every reranker that names it, so one closing it must not stop the others: work sent after
:meth:`ModelThread.shutdown` starts a new thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelThread(Executor):
    """A one-thread executor that starts a new thread in a forked child, and after
    :meth:`shutdown`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._open = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on the model's thread, after what was sent before."""
        if os.getpid() != self._pid:  # another thread may have held the lock at the fork
            self._lock = threading.Lock()
        with self._lock:
            # A forked child (the parent's thread is not here), or after shutdown.
            if os.getpid() != self._pid or not self._open:
                self._start()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the thread once the work sent to it is done (``wait``: block until then);
        work sent later starts a new one."""
        with self._lock:
            self._open = False
            pool = self._pool
        pool.shutdown(wait=wait, cancel_futures=cancel_futures)
