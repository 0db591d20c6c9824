"""RankwiseRetriever: wrap any LlamaIndex retriever with rewrite → retrieve → fuse → rerank."""

from __future__ import annotations

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.postprocessor.rankwise.base import (
    RankwiseRerank,
    nodes_to_candidates,
    selected_nodes,
)

from rankwise._sync import run_sync
from rankwise.pipeline import RetrievalPipeline, Rewrite
from rankwise.types import Candidate


class RankwiseRetriever(BaseRetriever):
    """Retrieve with ``retriever`` for the query (and rewrites), fuse with reciprocal rank
    fusion, rerank with ``reranker``, and return the selected nodes (``[]`` on abstention;
    ``reranker.last_result`` says why)."""

    def __init__(
        self,
        retriever: BaseRetriever,
        reranker: RankwiseRerank,
        *,
        rewrite: Rewrite | None = None,
        **kwargs: object,
    ) -> None:
        self._retriever = retriever
        self._reranker = reranker
        self._rewrite = rewrite
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        seen: dict[str, NodeWithScore] = {}

        async def retrieve(text: str) -> list[Candidate]:
            candidates, originals = nodes_to_candidates(await self._retriever.aretrieve(text))
            for key, node in originals.items():
                seen.setdefault(key, node)
            return candidates

        pipeline = RetrievalPipeline(self._reranker.reranker, rewrite=self._rewrite)
        ranked = await pipeline.arun(query_bundle.query_str, retrieve)
        self._reranker._last = ranked
        return selected_nodes(ranked, seen)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return run_sync(self._aretrieve(query_bundle))
