"""RankwiseRetriever: wrap any LangChain retriever with rewrite → retrieve → fuse → rerank."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.messages import (
    MessageLikeRepresentation,
    convert_to_messages,
    get_buffer_string,
)
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from langchain_rankwise._convert import selected_documents, to_candidates
from langchain_rankwise.compressor import RankwiseRerank
from rankwise._sync import run_sync
from rankwise.adapters import CandidateKeys
from rankwise.pipeline import RetrievalPipeline, Rewrite
from rankwise.types import Candidate


class RankwiseRetriever(BaseRetriever):
    """Retrieve with ``base_retriever`` (for the query and any rewrites), fuse the lists with
    reciprocal rank fusion, rerank the pool with ``reranker``, and return its selection.

    When the reranker's abstention rule fires, the result is ``[]`` and the callbacks get a
    text event saying why.

    For a follow-up question, pass the earlier turns to a ``QueryRewriter`` with the
    ``conversational`` strategy: ``retriever.invoke(question, chat_history=messages)``
    (LangChain messages, or what LangChain reads as messages, such as ``("human", "...")``
    pairs and role/content dicts; or text).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_retriever: BaseRetriever
    reranker: RankwiseRerank
    rewrite: Rewrite | None = None

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        chat_history: str | Sequence[MessageLikeRepresentation] = "",
    ) -> list[Document]:
        originals: dict[str, Document] = {}
        keys = CandidateKeys()  # one key, one document, in every list of this retrieval

        async def retrieve(text: str) -> list[Candidate]:
            documents = await self.base_retriever.ainvoke(
                text, config={"callbacks": run_manager.get_child()}
            )
            candidates, mapping = to_candidates(documents, keys)
            for key, document in mapping.items():
                originals.setdefault(key, document)
            return candidates

        pipeline = RetrievalPipeline(self.reranker.reranker, rewrite=self.rewrite)
        if not isinstance(chat_history, str):
            chat_history = get_buffer_string(convert_to_messages(chat_history))
        ranked = await pipeline.arun(query, retrieve, chat_history=chat_history)
        self.reranker._last = ranked
        if ranked.abstained:
            await run_manager.on_text(f"rankwise abstained: {ranked.abstain_reason}", verbose=False)
        return selected_documents(ranked, originals)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        chat_history: str | Sequence[MessageLikeRepresentation] = "",
    ) -> list[Document]:
        async def run() -> list[Document]:
            return await self._aget_relevant_documents(
                query, run_manager=_AsyncRunManagerShim(run_manager), chat_history=chat_history
            )

        return run_sync(run())


class _AsyncRunManagerShim:
    """Lets the sync path reuse the async implementation with the sync run manager."""

    def __init__(self, manager: CallbackManagerForRetrieverRun) -> None:
        self._manager = manager

    def get_child(self) -> Any:
        return self._manager.get_child()

    async def on_text(self, text: str, **kwargs: Any) -> None:
        self._manager.on_text(text, **kwargs)
