"""Typed exceptions. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class RankwiseError(Exception):
    """Base class for every error rankwise raises on purpose."""


class InputError(RankwiseError, ValueError):
    """The documents, the query or an option passed in cannot be used as given (an empty
    query, a document without text, ``top_n=-1``, ``window=1``, ``concurrency=0``, ...)."""


class DuplicateIdError(InputError):
    """Two input documents share one id."""


class UnknownMethodError(RankwiseError, ValueError):
    """The method name is not one rankwise implements."""


class CapabilityError(RankwiseError):
    """The backend cannot do what the chosen method needs (log-probs, attention, ...)."""


class BackendError(RankwiseError):
    """The LLM backend failed after its retry budget was spent."""


class BackendUnavailableError(BackendError):
    """The backend could not be reached at all (connection refused, DNS, timeout)."""


class ContextOverflowError(RankwiseError):
    """A prompt cannot be fitted into the model's context even after truncation.

    ``context_length`` is set when the server's refusal stated a context shorter than the
    one prompts were fitted to: the backend fits prompts to it from then on, so a prompt
    built again fits (a :class:`~rankwise.Reranker` ranks again once by itself)."""

    def __init__(self, message: str, *, context_length: int | None = None) -> None:
        super().__init__(message)
        self.context_length = context_length


class CacheError(RankwiseError):
    """The response cache could not be read or written (another process holds the file
    locked, the disk is full, ...). A rerank goes on without the cache and records why in
    its trace; this error reaches callers of :class:`~rankwise.cache.ResponseCache` only."""


class PromptNotFoundError(RankwiseError, KeyError):
    """No prompt template of that name exists."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(RankwiseError):
    """The local model could not be located or loaded."""
