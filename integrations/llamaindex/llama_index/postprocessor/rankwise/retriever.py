"""RankwiseRetriever: wrap any LlamaIndex retriever with rewrite → retrieve → fuse → rerank."""

from __future__ import annotations

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.generic_utils import messages_to_history_str
from llama_index.core.memory import BaseMemory
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.postprocessor.rankwise.base import (
    RankwiseRerank,
    check_parts,
    nodes_to_candidates,
    selected_nodes,
)

from rankwise._sync import run_sync
from rankwise.adapters import CandidateKeys
from rankwise.errors import InputError
from rankwise.pipeline import RetrievalPipeline, Rewrite, check_rewrite
from rankwise.rewrite import QueryRewriter
from rankwise.types import Candidate


class RankwiseRetriever(BaseRetriever):
    """Retrieve with ``retriever`` for the query (and rewrites), fuse with reciprocal rank
    fusion, rerank with ``reranker``, and return the selected nodes (``[]`` on abstention;
    ``reranker.last_result`` says why).

    For follow-up questions in a chat engine, give the retriever the engine's ``memory`` and
    a :class:`~rankwise.rewrite.QueryRewriter` with the ``conversational`` strategy: each
    retrieval then reads the earlier turns from that memory (a chat engine such as
    ``ContextChatEngine`` retrieves before it stores the new message)::

        memory = ChatMemoryBuffer.from_defaults()
        retriever = RankwiseRetriever(
            base, rerank, rewrite=QueryRewriter(llm, ["conversational"]), memory=memory
        )
        engine = ContextChatEngine.from_defaults(retriever=retriever, memory=memory)
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        reranker: RankwiseRerank,
        *,
        rewrite: Rewrite | None = None,
        memory: BaseMemory | None = None,
        **kwargs: object,
    ) -> None:
        check_parts(reranker, retriever)
        check_rewrite(rewrite)
        if memory is not None and not isinstance(memory, BaseMemory):
            raise InputError(
                f"memory must be a LlamaIndex memory (BaseMemory), got {type(memory).__name__}; "
                "pass the chat engine's memory, such as ChatMemoryBuffer.from_defaults()"
            )
        if memory is not None and not isinstance(rewrite, QueryRewriter):
            raise InputError(
                "memory is read only by a QueryRewriter (its 'conversational' strategy); pass "
                "rewrite=QueryRewriter(backend, ['conversational']) as well"
            )
        self._retriever = retriever
        self._reranker = reranker
        self._rewrite = rewrite
        self._memory = memory
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        seen: dict[str, NodeWithScore] = {}
        keys = CandidateKeys()  # one key, one node, in every list of this retrieval

        async def retrieve(text: str) -> list[Candidate]:
            nodes = await self._retriever.aretrieve(text)
            candidates, originals = nodes_to_candidates(nodes, keys)
            for key, node in originals.items():
                seen.setdefault(key, node)
            return candidates

        history = ""
        if self._memory is not None:
            turns = [message for message in await self._memory.aget() if message.content]
            history = messages_to_history_str(turns)
        pipeline = RetrievalPipeline(self._reranker.reranker, rewrite=self._rewrite)
        ranked = await pipeline.arun(query_bundle.query_str, retrieve, chat_history=history)
        self._reranker._last = ranked
        return selected_nodes(ranked, seen)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return run_sync(self._aretrieve(query_bundle))
