"""What the framework adapters share: turning their settings into a Reranker, and
framework models into backends. The adapters themselves hold no ranking logic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rankwise.abstain import Abstention, Calibrator
from rankwise.backends.base import Backend
from rankwise.backends.resolve import backend_from_llm, is_framework_model
from rankwise.errors import InputError
from rankwise.reranker import Reranker


def reranker_for(settings: Any, *, llm: Any, loaded: Backend | None = None) -> Reranker:
    """The Reranker an adapter's fields describe: ``method``, ``backend``, ``llm_logprobs``,
    ``top_n``, ``score_threshold``, ``abstain`` and ``method_options``, with ``llm`` the
    framework model its ``llm`` field stands for (``Settings.llm`` for ``"settings"``).

    ``loaded`` is a backend already built from these same backend fields; it is used in their
    place, so that a local model is not loaded again."""
    return make_reranker(
        method=settings.method,
        backend=settings.backend,
        llm=llm,
        llm_logprobs=settings.llm_logprobs,
        top_n=settings.top_n,
        score_threshold=settings.score_threshold,
        abstain=settings.abstain,
        options=settings.method_options,
        loaded=loaded,
    )


def _framework_llm(llm: Any) -> Any:
    if isinstance(llm, str) and llm == "settings":
        from llama_index.core import Settings

        return Settings.llm
    return llm


class AdapterReranker:
    """Keeps the Reranker an adapter's fields describe, and builds it again when a field
    changes (``compressor.top_n = 5`` takes effect on the next call; a ``method_options``
    dict changed in place too). A backend already loaded is kept while ``backend``, ``llm``
    and ``llm_logprobs`` stay the same objects."""

    def __init__(self) -> None:
        self._fields: tuple[Any, ...] | None = None
        self._reranker: Reranker | None = None

    def check(self, settings: Any) -> None:
        """Build the Reranker now, so that a bad ``method``, ``top_n`` or option raises when
        the adapter is built, not at its first query. With ``llm="settings"`` this waits for
        the first query, as LlamaIndex's ``Settings.llm`` may be set later."""
        if not (isinstance(settings.llm, str) and settings.llm == "settings"):
            self.get(settings)

    def get(self, settings: Any) -> Reranker:
        """The Reranker for the adapter's current fields."""
        fields = _fields_of(settings)
        loaded = None
        if self._reranker is not None and self._fields is not None:
            if _same(fields, self._fields):
                return self._reranker
            if _same(fields[:3], self._fields[:3]):  # the same backend fields
                loaded = self._reranker.loaded_backend
        reranker = reranker_for(settings, llm=fields[1], loaded=loaded)  # llm resolved once
        self._reranker, self._fields = reranker, fields
        return reranker


def _fields_of(settings: Any) -> tuple[Any, ...]:
    # The backend fields come first: _same(fields[:3], ...) asks whether a loaded backend fits.
    return (
        settings.backend,
        _framework_llm(settings.llm),
        settings.llm_logprobs,
        settings.method,
        settings.top_n,
        settings.score_threshold,
        settings.abstain,
        dict(settings.method_options),
    )


def _same(left: tuple[Any, ...], right: tuple[Any, ...]) -> bool:
    """Strings, numbers, None and plain containers compare by value; objects (backends,
    framework models, calibrators) by identity, as their equality may be costly or absent."""
    return all(
        a == b if isinstance(a, str | int | float | dict | tuple | type(None)) else a is b
        for a, b in zip(left, right, strict=True)
    )


def make_reranker(
    *,
    method: str,
    backend: Backend | str | None,
    llm: Any,
    llm_logprobs: bool,
    top_n: int | None,
    score_threshold: float | None,
    abstain: Abstention | Calibrator | None,
    options: Mapping[str, Any],
    loaded: Backend | None = None,
) -> Reranker:
    """Build the Reranker an adapter's fields describe (``llm=`` or ``backend=``, not both);
    ``loaded`` is a backend already built from those fields, used in their place."""
    if llm is not None and backend is not None:
        raise InputError("pass either llm= (a framework model) or backend=, not both")
    if loaded is not None:
        backend = loaded
    elif llm is not None:
        if not is_framework_model(llm):
            raise InputError(
                f"llm= takes a LangChain chat model or a LlamaIndex LLM, got "
                f"{type(llm).__name__}; pass a rankwise backend or a local model name as "
                "backend= instead"
            )
        backend = backend_from_llm(llm, logprobs=llm_logprobs)
    return Reranker(
        method,
        backend,
        top_n=top_n,
        score_threshold=score_threshold,
        abstain=abstain,
        **dict(options),
    )


class CandidateKeys:
    """Candidate ids for framework documents, across the lists of one retrieval.

    A document keeps its own id where it can. A second copy in one list is numbered
    (``x#2``, ``x#3``...) so that the list is ranked whole, nothing dropped. A key already
    given to a document of other text, in this list or an earlier one, is never given
    again: fusion merges documents by key, so two chunks that share an id (the id of the
    file they were split from) must not share a key, or the second would be lost."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def assign(self, documents: Iterable[tuple[str, str]]) -> list[str]:
        """The keys of one list of ``(id, text)`` pairs, in order."""
        keys: list[str] = []
        here: set[str] = set()
        for base, text in documents:
            key, n = base, 1
            while key in here or self._texts.get(key, text) != text:
                n += 1
                key = f"{base}#{n}"
            here.add(key)
            self._texts.setdefault(key, text)
            keys.append(key)
        return keys


def check_part(name: str, value: object, kind: type, what: str, example: str) -> None:
    """Raise :class:`InputError` unless ``value``, an adapter's ``name`` argument, is a
    ``kind`` (``what`` in words; ``example`` shows one): checked when the adapter is built,
    not as an AttributeError at its first call."""
    if not isinstance(value, kind):
        raise InputError(f"{name} must be {what}, got {value!r:.100}; pass {example}")


def check_parts(
    reranker: object,
    retriever: object | None,
    *,
    framework: str,
    reranker_kind: type,
    reranker_role: str,
    retriever_kind: type,
    retriever_example: str,
) -> None:
    """Refuse an adapter's ``reranker`` that is not the ``framework``'s ``RankwiseRerank``
    (``reranker_kind``, a ``reranker_role`` there), and a ``retriever``, where one is given,
    that is not one of its retrievers (``retriever_kind``; ``retriever_example`` builds one)."""
    check_part(
        "reranker",
        reranker,
        reranker_kind,
        f"a RankwiseRerank {reranker_role}",
        "RankwiseRerank(method=..., top_n=...)",
    )
    if retriever is not None:
        check_part(
            "retriever",
            retriever,
            retriever_kind,
            f"a {framework} retriever",
            f"one such as {retriever_example}",
        )
