"""Turn whatever the user passed (strings, dicts, Candidates) into a list of Candidates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rankwise.errors import DuplicateIdError, InputError
from rankwise.types import Candidate

DocumentLike = str | Candidate | Mapping[str, Any]


def normalise_query(query: object) -> str:
    """Check the query is a string and return it."""
    if not isinstance(query, str):
        raise InputError(
            f"query must be a str, got {type(query).__name__}; pass the user's question as text"
        )
    return query


def normalise_documents(documents: Iterable[DocumentLike] | None) -> list[Candidate]:
    """Validate and convert input documents.

    Accepts ``str``, :class:`Candidate`, or mappings with ``text`` (or ``page_content``) and
    optional ``id`` (or ``docid``), ``score`` and ``metadata``. Ids default to input positions.
    Raises :class:`InputError` for anything that cannot be ranked and :class:`DuplicateIdError`
    when two documents share an id.
    """
    if documents is None:
        raise InputError("documents is None; pass a list (an empty list is fine)")
    if isinstance(documents, str | bytes | Mapping):
        raise InputError(
            "documents must be a list of documents, not a single "
            f"{type(documents).__name__}; wrap it in a list"
        )
    candidates: list[Candidate] = []
    seen: dict[str, int] = {}
    for position, document in enumerate(documents):
        candidate = _to_candidate(document, position)
        if candidate.id in seen:
            raise DuplicateIdError(
                f"documents {seen[candidate.id]} and {position} share the id {candidate.id!r}; "
                "ids must be unique (drop the duplicate or give it its own id)"
            )
        seen[candidate.id] = position
        candidates.append(candidate)
    return candidates


def _to_candidate(document: object, position: int) -> Candidate:
    if isinstance(document, Candidate):
        return document
    if isinstance(document, str):
        return Candidate(id=str(position), text=document)
    if isinstance(document, Mapping):
        return _from_mapping(document, position)
    raise InputError(
        f"document {position} is a {type(document).__name__}; expected a str, a Candidate "
        "or a dict with a 'text' key" + _framework_hint(document)
    )


def _framework_hint(document: object) -> str:
    """Where a framework's own document object belongs: its adapter keeps the objects."""
    if hasattr(document, "page_content"):
        return (
            " (for LangChain Documents use langchain_rankwise.RankwiseRerank, which returns "
            "the documents themselves, or pass [d.page_content for d in documents])"
        )
    if hasattr(document, "get_content") or hasattr(document, "node"):
        return (
            " (for LlamaIndex nodes use llama_index.postprocessor.rankwise.RankwiseRerank, "
            "which returns the nodes themselves, or pass [n.get_content() for n in nodes])"
        )
    return ""


def _from_mapping(document: Mapping[str, Any], position: int) -> Candidate:
    if "text" not in document and "page_content" not in document:
        raise InputError(f"document {position} has no 'text' key; keys are {sorted(document)}")
    text = document["text"] if "text" in document else document["page_content"]
    if not isinstance(text, str):
        raise InputError(
            f"document {position} has text of type {type(text).__name__}; text must be a str"
        )
    raw_id = document.get("id", document.get("docid", position))
    if not isinstance(raw_id, str | int):
        raise InputError(
            f"document {position} has an id of type {type(raw_id).__name__}; use a str or int"
        )
    score = document.get("score")
    if score is not None and not isinstance(score, int | float):
        raise InputError(f"document {position} has a non-numeric score {score!r}")
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InputError(f"document {position} has metadata that is not a dict")
    return Candidate(
        id=str(raw_id),
        text=text,
        score=None if score is None else float(score),
        metadata=dict(metadata),
    )
