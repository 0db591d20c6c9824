"""LangChain Documents to rankwise candidates and back."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.documents import Document

from rankwise.adapters import CandidateKeys
from rankwise.fusion import text_id
from rankwise.types import Candidate, RankedCandidate, RankedList


def to_candidates(
    documents: Sequence[Document], keys: CandidateKeys | None = None
) -> tuple[list[Candidate], dict[str, Document]]:
    """Candidates with stable ids (the document's id, ``metadata["id"]``, or a content hash),
    and the map back to the original documents. Repeated ids get a ``#n`` suffix; pass the
    same ``keys`` for every list of one retrieval, so that a key names one document in all."""
    texts = [document.page_content for document in documents]
    ids = [
        str(document.id or document.metadata.get("id") or text_id(text))
        for document, text in zip(documents, texts, strict=True)
    ]
    assigned = (keys or CandidateKeys()).assign(zip(ids, texts, strict=True))
    candidates = [Candidate(id=key, text=text) for key, text in zip(assigned, texts, strict=True)]
    return candidates, dict(zip(assigned, documents, strict=True))


def to_document(item: RankedCandidate, originals: dict[str, Document]) -> Document:
    """A copy of the original document with ``relevance_score`` and ``rank`` in its metadata."""
    original = originals[item.id]
    metadata = {**original.metadata, "relevance_score": item.score, "rank": item.rank}
    return Document(page_content=original.page_content, metadata=metadata, id=original.id)


def selected_documents(ranked: RankedList, originals: dict[str, Document]) -> list[Document]:
    """The documents the ranked list selects (top_n, threshold, abstention applied)."""
    return [to_document(item, originals) for item in ranked.selected]
