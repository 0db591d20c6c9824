"""What the framework adapters share: turning their settings into a Reranker, and
framework models into backends. The adapters themselves hold no ranking logic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rankwise.abstain import Abstention
from rankwise.backends.base import Backend
from rankwise.errors import InputError
from rankwise.reranker import Reranker


def backend_from_llm(llm: Any, *, logprobs: bool = False) -> Backend:
    """Wrap a LangChain chat model or a LlamaIndex LLM as a rankwise backend."""
    module = type(llm).__module__
    if module.startswith("langchain") or _is_langchain(llm):
        from rankwise.backends.langchain import LangChainBackend

        return LangChainBackend(llm, logprobs=logprobs)
    from rankwise.backends.llamaindex import LlamaIndexBackend

    return LlamaIndexBackend(llm, logprobs=logprobs)


def _is_langchain(llm: Any) -> bool:
    try:
        from langchain_core.language_models.chat_models import BaseChatModel
    except ImportError:
        return False
    return isinstance(llm, BaseChatModel)


def reranker_for(settings: Any) -> Reranker:
    """The Reranker an adapter's fields describe: ``method``, ``backend`` or ``llm`` (a
    framework model, or ``"settings"`` for LlamaIndex's ``Settings.llm``), ``llm_logprobs``,
    ``top_n``, ``score_threshold``, ``abstain`` and ``method_options``."""
    llm = settings.llm
    if llm == "settings":
        from llama_index.core import Settings

        llm = Settings.llm
    return make_reranker(
        method=settings.method,
        backend=settings.backend,
        llm=llm,
        llm_logprobs=settings.llm_logprobs,
        top_n=settings.top_n,
        score_threshold=settings.score_threshold,
        abstain=settings.abstain,
        options=settings.method_options,
    )


def make_reranker(
    *,
    method: str,
    backend: Backend | str | None,
    llm: Any,
    llm_logprobs: bool,
    top_n: int | None,
    score_threshold: float | None,
    abstain: Abstention | None,
    options: Mapping[str, Any],
) -> Reranker:
    """Build the Reranker an adapter's fields describe (``llm=`` or ``backend=``, not both)."""
    if llm is not None and backend is not None:
        raise InputError("pass either llm= (a framework model) or backend=, not both")
    if llm is not None:
        backend = backend_from_llm(llm, logprobs=llm_logprobs)
    return Reranker(
        method,
        backend,
        top_n=top_n,
        score_threshold=score_threshold,
        abstain=abstain,
        **dict(options),
    )


def unique_ids(ids: Iterable[str]) -> list[str]:
    """The ids made unique in order: a repeat of ``x`` becomes ``x#2``, ``x#3``... so that a
    framework list holding the same document twice is ranked whole, nothing dropped."""
    unique: list[str] = []
    taken: set[str] = set()
    for base in ids:
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base}#{n}"
        taken.add(key)
        unique.append(key)
    return unique
