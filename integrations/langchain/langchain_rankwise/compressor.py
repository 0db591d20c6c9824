"""RankwiseRerank: a LangChain document compressor backed by a rankwise method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_rankwise._convert import selected_documents, to_candidates
from rankwise._sync import run_sync
from rankwise.abstain import Abstention, Calibrator
from rankwise.adapters import AdapterReranker
from rankwise.reranker import Reranker
from rankwise.types import RankedList


class RankwiseRerank(BaseDocumentCompressor):
    """Rerank retrieved documents with an LLM; use it in ``ContextualCompressionRetriever``.

    Each returned document is a copy with ``metadata["relevance_score"]`` (the method's score)
    and ``metadata["rank"]``. Pass ``backend=`` (a rankwise backend, or a local model name),
    or ``llm=`` (any LangChain chat model); with neither, the embedded local model is used.

    Example::

        compressor = RankwiseRerank(method="pointwise-qlm", top_n=3)
        retriever = ContextualCompressionRetriever(
            base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 20})
        )
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = 3
    method: str = "auto"
    """A rankwise method name; ``"auto"`` picks one for the backend (query likelihood on
    local models, ``pointwise`` with log-probs, else ``listwise``)."""
    backend: Any = None
    llm: Any = None
    llm_logprobs: bool = False
    score_threshold: float | None = None
    abstain: Abstention | Calibrator | None = None
    """An :class:`~rankwise.abstain.Abstention` rule or a fitted
    :class:`~rankwise.abstain.Calibrator`: when it fires, no document is returned."""
    method_options: dict[str, Any] = Field(default_factory=dict)
    """Options of the method (``max_passage_tokens=64``) and of the Reranker (``cache``,
    ``deadline``, ``max_calls``, ``max_tokens``, ``prompts``)."""

    _rerankers: AdapterReranker = PrivateAttr(default_factory=AdapterReranker)
    _last: RankedList | None = PrivateAttr(default=None)

    def __init__(self, **fields: Any) -> None:
        """Bad fields raise here (see :meth:`AdapterReranker.check`)."""
        super().__init__(**fields)
        self._rerankers.check(self)

    @property
    def reranker(self) -> Reranker:
        """The rankwise Reranker these fields describe, built again after a field changes
        (the loaded model is kept while ``backend``/``llm`` stay the same)."""
        return self._rerankers.get(self)

    @property
    def last_result(self) -> RankedList | None:
        """The full ranked list of the latest call: every document, usage and trace."""
        return self._last

    async def arank(
        self, documents: Sequence[Document], query: str
    ) -> tuple[RankedList, list[Document]]:
        """Rerank and return both the full :class:`RankedList` and the selected documents."""
        candidates, originals = to_candidates(documents)
        ranked = await self.reranker.arerank(query, candidates)
        self._last = ranked
        return ranked, selected_documents(ranked, originals)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank natively on the event loop and keep the selected documents."""
        _, selected = await self.arank(documents, query)
        return selected

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Synchronous twin of :meth:`acompress_documents` (safe inside Jupyter)."""
        return run_sync(self.acompress_documents(documents, query, callbacks))
