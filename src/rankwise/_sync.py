"""Run a coroutine from synchronous code, also inside a running event loop (Jupyter).

Synchronous calls are served by one long-lived event loop on a daemon thread, so that
network clients and locks stay bound to a single loop across calls, and a caller that is
itself inside ``asyncio`` (a notebook cell) is not refused as ``asyncio.run`` would.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
SYNC_CALL_THREADS = 32
"""Threads for framework models' synchronous calls made for the sync API (at most)."""


def _forget_the_loop() -> None:
    """In a forked child (``multiprocessing``, gunicorn ``--preload``, Celery): the parent's
    loop was copied, but not the thread that ran it, so a call sent to it would wait forever.
    The child starts its own on first use."""
    global _loop, _lock
    _lock = threading.Lock()  # it may have been held by another thread at the fork
    _loop = None


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_the_loop)


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            # Framework models called through their synchronous interface run on the loop's
            # executor (see FrameworkBackend): as many at once as a backend's concurrency.
            _loop.set_default_executor(
                ThreadPoolExecutor(max_workers=SYNC_CALL_THREADS, thread_name_prefix="rankwise")
            )
            thread = threading.Thread(
                target=_loop.run_forever, name="rankwise-sync-loop", daemon=True
            )
            thread.start()
        return _loop


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Block until ``coroutine`` finishes and return its result (or raise its error)."""
    loop = _background_loop()
    if _running_loop() is loop:
        coroutine.close()
        raise RuntimeError("run_sync cannot be called from rankwise's own sync loop")
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def on_sync_loop() -> bool:
    """Whether the running code is a synchronous call's, on the loop that serves them."""
    return _loop is not None and _running_loop() is _loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
