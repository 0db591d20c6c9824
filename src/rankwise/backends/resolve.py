"""What a ``backend=`` argument may be, and how each kind becomes a backend.

A rankwise :class:`~rankwise.backends.base.Backend` is used as it is; a string names a local
model and ``None`` the embedded one (both loaded on first use); a LangChain chat model or a
LlamaIndex LLM is wrapped. Anything else is an :class:`~rankwise.errors.InputError` when the
object is built, not an ``AttributeError`` at the first call.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from typing import Any, TypeAlias

from rankwise.backends.base import Backend
from rankwise.errors import InputError

FrameworkModel: TypeAlias = Any
"""A LangChain chat model (``BaseChatModel``) or a LlamaIndex ``LLM``."""


def resolve_backend(value: object) -> Backend | str | None:
    """``value`` as a backend, or as the local model it names (``None``: the embedded one).

    A framework model is wrapped without log-probs; to use the log-probs it returns, wrap it
    yourself: ``LangChainBackend(chat_model, logprobs=True)``.
    """
    if value is None or isinstance(value, str):
        return value
    # Framework models first: testing a LangChain wrapper against the Backend protocol reads
    # attributes through its __getattr__, which (in langchain-core 1.8) fails on some of them
    # with a NameError instead of an AttributeError.
    if is_framework_model(value):
        return backend_from_llm(value)
    if isinstance(value, Backend):
        return value
    raise InputError(
        f"backend must be a rankwise backend (OpenAIBackend, TransformersBackend, ...), a local "
        f"model name, None for the embedded model, or a LangChain chat model or LlamaIndex LLM; "
        f"got {type(value).__name__}"
    )


_shared_local: weakref.WeakValueDictionary[str, Backend] = weakref.WeakValueDictionary()
_shared_local_lock = threading.Lock()


def local_backend(name: str | None) -> Backend:
    """The local model ``name`` names (``None`` or ``"default"``: the embedded one), loaded
    on first use and shared by every reranker and rewriter that names it while any of them
    holds it: one copy of the weights in memory, and their calls batched together."""
    key = name or "default"
    with _shared_local_lock:
        backend = _shared_local.get(key)
        if backend is None:
            from rankwise.backends.transformers import TransformersBackend

            backend = _shared_local[key] = TransformersBackend(key)
        return backend


async def aload_local_backend(name: str | None) -> Backend:
    """:func:`local_backend` on a worker thread: loading a model takes seconds, which would
    stall every other task on the event loop."""
    return await asyncio.to_thread(local_backend, name)


def is_framework_model(value: object) -> bool:
    """Whether ``value`` is a LangChain chat model or a LlamaIndex LLM."""
    return _is_langchain(value) or _is_llamaindex(value)


def backend_from_llm(llm: Any, *, logprobs: bool = False) -> Backend:
    """Wrap a LangChain chat model or a LlamaIndex LLM as a rankwise backend."""
    if type(llm).__module__.startswith("langchain") or _is_langchain(llm):
        from rankwise.backends.langchain import LangChainBackend

        return LangChainBackend(llm, logprobs=logprobs)
    from rankwise.backends.llamaindex import LlamaIndexBackend

    return LlamaIndexBackend(llm, logprobs=logprobs)


def _is_langchain(value: object) -> bool:
    """A LangChain chat model, or one wrapped by ``bind()``, ``with_retry()`` or
    ``with_fallbacks()``."""
    if "langchain_core" not in sys.modules:
        return False  # nothing made from LangChain can exist; don't pay to import it
    try:
        from rankwise.backends.langchain import chat_model_of
    except ImportError:
        return False
    return chat_model_of(value) is not None


def _is_llamaindex(value: object) -> bool:
    if "llama_index.core" not in sys.modules:
        return False
    try:
        from llama_index.core.llms import LLM
    except ImportError:
        return False
    return isinstance(value, LLM)
