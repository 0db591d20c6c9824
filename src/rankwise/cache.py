"""A persistent response cache (sqlite), so repeated experiments do not pay again.

Entries are keyed by a hash of (backend kind, model, operation, prompt and decoding
parameters, with the number of alternatives an API lists for label log-probs). A local
model counts with its dtype and, read from a folder or file, its path and when its weights
last changed; an API model with its ``request_options``; a LangChain or LlamaIndex model
with its settings (class, server, temperature; not its API key): all of these change its
answers. Each entry is one row written in one statement, so a cancelled rerank never
leaves half an entry. Enable it with ``Reranker(cache="path.sqlite")``, ``--cache PATH`` on
the command line, or the ``RANKWISE_CACHE`` environment variable.

Several processes may share one cache file. Opening waits while another process is
setting the file up; a write waits up to 5 s for another writer's lock. A rerank whose
cache cannot be read or written goes on without it (see :class:`~rankwise.errors.CacheError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, TypeVar

from rankwise.errors import CacheError, InputError

T = TypeVar("T")

logger = logging.getLogger(__name__)

OPEN_PATIENCE_S = 30.0
"""How long opening a cache waits while other connections hold it locked."""

_COLUMNS = ("key", "kind", "model", "operation", "value")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    value TEXT NOT NULL
)
"""


class ResponseCache:
    """A sqlite-backed map from request to response, safe for concurrent use by the
    threads and tasks of one process and by several processes sharing the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise InputError(
                f"the response cache path {str(self.path)!r} is a folder; pass a file path "
                f"such as {str(self.path / 'rankwise-cache.sqlite')!r}"
            )
        self._lock = threading.Lock()
        self.closed = False
        self._connection, columns = _connect_patiently(self.path)
        if columns != _COLUMNS:
            self._connection.close()
            raise InputError(
                f"{str(self.path)!r} holds a 'responses' table that is not a rankwise cache "
                f"(columns {', '.join(columns)}); pass another file path for the cache"
            )

    @staticmethod
    def key(kind: str, model: str, operation: str, request: dict[str, Any]) -> str:
        """The cache key of one request."""
        payload = json.dumps([kind, model, operation, request], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str, cls: type[T]) -> T | None:
        """The cached response for ``key`` rebuilt as ``cls``, or None.

        An entry that no longer fits ``cls`` (written by a version of rankwise whose response
        had other fields, or damaged) counts as a miss; the fresh response replaces it."""
        try:
            with self._lock:
                row = self._connection.execute(
                    "SELECT value FROM responses WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as error:
            raise CacheError(
                f"cannot read the response cache {str(self.path)!r} ({error})"
            ) from error
        if row is None:
            return None
        try:
            return cls(**json.loads(row[0]))
        except (TypeError, ValueError) as error:
            logger.warning(
                "ignoring an unreadable response cache entry in %s: %s", self.path, error
            )
            return None

    def put(self, key: str, kind: str, model: str, operation: str, value: Any) -> None:
        """Store a response (a dataclass) under ``key``; :class:`CacheError` if the file
        cannot be written (after waiting up to 5 s for another writer's lock)."""
        data = json.dumps(asdict(value))
        try:
            with self._lock:
                self._connection.execute(
                    "INSERT OR REPLACE INTO responses (key, kind, model, operation, value) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (key, kind, model, operation, data),
                )
        except sqlite3.Error as error:
            raise CacheError(
                f"cannot write to the response cache {str(self.path)!r} ({error})"
            ) from error

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the file. A rerank still holding this cache goes on without it; a later
        ``Reranker(cache=path)`` opens the file again."""
        with self._lock:
            self._connection.close()
            self.closed = True


def _connect_patiently(path: Path) -> tuple[sqlite3.Connection, tuple[str, ...]]:
    """Open and set up the cache file, and read its columns. Setting up a new file takes
    a lock that sqlite refuses at once, without waiting, while another connection writes
    to it; so when several processes open a new cache together, all but one retry."""
    deadline = time.monotonic() + OPEN_PATIENCE_S
    while True:
        try:
            return _connect(path)
        except sqlite3.OperationalError as error:
            locked = error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if locked and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if locked:
                raise InputError(
                    f"cannot open the response cache {str(path)!r}: another connection has "
                    f"held it locked for {OPEN_PATIENCE_S:g} s; close it, or pass another "
                    "file path for the cache"
                ) from error
            raise _unusable(path, error) from error
        except (OSError, sqlite3.Error) as error:
            raise _unusable(path, error) from error


def _connect(path: Path) -> tuple[sqlite3.Connection, tuple[str, ...]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(_SCHEMA)
        columns = tuple(row[1] for row in connection.execute("PRAGMA table_info(responses)"))
    except BaseException:
        connection.close()
        raise
    return connection, columns


def _unusable(path: Path, error: Exception) -> InputError:
    return InputError(
        f"cannot open the response cache {str(path)!r} ({error}); pass a writable "
        "file path that is a rankwise cache or does not exist yet"
    )


_open: dict[str, ResponseCache] = {}
_open_lock = threading.Lock()


def cache_path(given: str | os.PathLike[str] | None) -> Path | None:
    """The cache file ``given`` names, or else ``RANKWISE_CACHE``, with ``~`` expanded;
    None when neither names one."""
    spec = given or os.environ.get("RANKWISE_CACHE")
    return Path(spec).expanduser() if spec else None


def open_cache(
    spec: str | Path | ResponseCache | Literal[False] | None,
) -> ResponseCache | None:
    """A cache from a path (shared per path within the process), an instance, or
    ``RANKWISE_CACHE`` when ``spec`` is None; no cache for ``False``."""
    if isinstance(spec, ResponseCache):
        return spec
    if spec is False:
        return None
    if spec is not None and not isinstance(spec, str | os.PathLike):
        raise InputError(
            f"cache must be a file path, a ResponseCache, False (none) or None (the path "
            f"RANKWISE_CACHE names), got {spec!r:.100}"
        )
    path = cache_path(spec)
    if path is None:
        return None
    resolved = str(path.resolve())
    with _open_lock:
        if resolved not in _open or _open[resolved].closed:  # closed by its user: reopen
            _open[resolved] = ResponseCache(resolved)
        return _open[resolved]
