"""rankwise: LLM reranking as a drop-in part of RAG apps.

Importing rankwise does not import torch; the local backend loads it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rankwise.backends.base import Backend, Capabilities
from rankwise.errors import (
    BackendError,
    BackendUnavailableError,
    CacheError,
    CapabilityError,
    ContextOverflowError,
    DuplicateIdError,
    InputError,
    ModelNotFoundError,
    PromptNotFoundError,
    RankwiseError,
    UnknownMethodError,
)
from rankwise.methods import method_names
from rankwise.methods.base import CallBounds
from rankwise.reranker import Reranker
from rankwise.types import Candidate, RankedCandidate, RankedList, Trace, TraceEvent, Usage

if TYPE_CHECKING:
    from rankwise.backends.openai import OpenAIBackend
    from rankwise.backends.transformers import TransformersBackend

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "OpenAIBackend":
        from rankwise.backends.openai import OpenAIBackend

        return OpenAIBackend
    if name == "TransformersBackend":
        from rankwise.backends.transformers import TransformersBackend

        return TransformersBackend
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "CacheError",
    "CallBounds",
    "Candidate",
    "Capabilities",
    "CapabilityError",
    "ContextOverflowError",
    "DuplicateIdError",
    "InputError",
    "ModelNotFoundError",
    "OpenAIBackend",
    "PromptNotFoundError",
    "RankedCandidate",
    "RankedList",
    "RankwiseError",
    "Reranker",
    "Trace",
    "TraceEvent",
    "TransformersBackend",
    "UnknownMethodError",
    "Usage",
    "__version__",
    "method_names",
]
