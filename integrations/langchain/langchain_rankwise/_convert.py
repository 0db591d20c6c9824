"""LangChain Documents to rankwise candidates and back."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.documents import Document

from rankwise.adapters import unique_ids
from rankwise.fusion import text_id
from rankwise.types import Candidate, RankedCandidate, RankedList


def to_candidates(documents: Sequence[Document]) -> tuple[list[Candidate], dict[str, Document]]:
    """Candidates with stable ids (the document's id, ``metadata["id"]``, or a content hash),
    and the map back to the original documents. Repeated ids get a ``#n`` suffix."""
    keys = unique_ids(
        str(document.id or document.metadata.get("id") or text_id(document.page_content))
        for document in documents
    )
    candidates = [
        Candidate(id=key, text=document.page_content)
        for key, document in zip(keys, documents, strict=True)
    ]
    return candidates, dict(zip(keys, documents, strict=True))


def to_document(item: RankedCandidate, originals: dict[str, Document]) -> Document:
    """A copy of the original document with ``relevance_score`` and ``rank`` in its metadata."""
    original = originals[item.id]
    metadata = {**original.metadata, "relevance_score": item.score, "rank": item.rank}
    return Document(page_content=original.page_content, metadata=metadata, id=original.id)


def selected_documents(ranked: RankedList, originals: dict[str, Document]) -> list[Document]:
    """The documents the ranked list selects (top_n, threshold, abstention applied)."""
    return [to_document(item, originals) for item in ranked.selected]
