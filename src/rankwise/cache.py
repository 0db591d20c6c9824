"""A persistent response cache (sqlite), so repeated experiments do not pay again.

Entries are keyed by a hash of (backend kind, model, operation, prompt and decoding
parameters); a local model counts with its dtype and, read from a folder or file, its path
and when its weights last changed, since those change its answers. Each entry is one row
written in one statement, so a cancelled rerank never leaves half an entry. Enable it with
``Reranker(cache="path.sqlite")``, ``--cache PATH`` on the command line, or the
``RANKWISE_CACHE`` environment variable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from rankwise.errors import InputError

T = TypeVar("T")

logger = logging.getLogger(__name__)

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
    """A sqlite-backed map from request to response, safe for concurrent use in one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(
                f"the response cache path {str(self.path)!r} is a folder; pass a file path "
                f"such as {str(self.path / 'rankwise-cache.sqlite')!r}"
            )
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None
            )
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.execute(_SCHEMA)
            columns = tuple(
                row[1] for row in self._connection.execute("PRAGMA table_info(responses)")
            )
        except (OSError, sqlite3.Error) as error:
            if hasattr(self, "_connection"):
                self._connection.close()
            raise InputError(
                f"cannot open the response cache {str(self.path)!r} ({error}); pass a writable "
                "file path that is a rankwise cache or does not exist yet"
            ) from error
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
        with self._lock:
            row = self._connection.execute(
                "SELECT value FROM responses WHERE key = ?", (key,)
            ).fetchone()
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
        """Store a response (a dataclass) under ``key``."""
        data = json.dumps(asdict(value))
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO responses (key, kind, model, operation, value) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, kind, model, operation, data),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()


_open: dict[str, ResponseCache] = {}
_open_lock = threading.Lock()


def open_cache(spec: str | Path | ResponseCache | None) -> ResponseCache | None:
    """A cache from a path (shared per path within the process), an instance, or
    ``RANKWISE_CACHE`` when ``spec`` is None."""
    if isinstance(spec, ResponseCache):
        return spec
    spec = spec or os.environ.get("RANKWISE_CACHE")
    if not spec:
        return None
    resolved = str(Path(spec).expanduser().resolve())
    with _open_lock:
        if resolved not in _open:
            _open[resolved] = ResponseCache(resolved)
        return _open[resolved]
