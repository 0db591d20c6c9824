"""A LlamaIndex FunctionTool so an agent can rerank passages, or search with reranking."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.tools import FunctionTool

from llama_index.postprocessor.rankwise.base import RankwiseRerank
from rankwise._sync import run_sync


def _payload(ranked: Any, top_n: int) -> dict[str, Any]:
    chosen = [] if ranked.abstained else ranked.items[:top_n]
    return {
        "abstained": ranked.abstained,
        "confidence": ranked.confidence,
        "results": [{"rank": i.rank, "id": i.id, "score": i.score, "text": i.text} for i in chosen],
    }


def rankwise_function_tool(
    reranker: RankwiseRerank, *, retriever: BaseRetriever | None = None, name: str | None = None
) -> FunctionTool:
    """With ``retriever``: ``search_reranked(query, top_n)``; without:
    ``rerank_passages(query, passages, top_n)``. Both sync and async."""
    if retriever is None:

        async def rerank_passages(query: str, passages: list[str], top_n: int = 3) -> dict[str, Any]:
            """Rank passages by how well they answer the query; best first."""
            return _payload(await reranker.reranker.arerank(query, passages), top_n)

        def rerank_sync(query: str, passages: list[str], top_n: int = 3) -> dict[str, Any]:
            """Rank passages by how well they answer the query; best first."""
            return run_sync(rerank_passages(query, passages, top_n))

        return FunctionTool.from_defaults(
            fn=rerank_sync, async_fn=rerank_passages, name=name or "rerank_passages"
        )

    async def search_reranked(query: str, top_n: int = 3) -> dict[str, Any]:
        """Search the knowledge base; return the most relevant passages, best first."""
        nodes = await retriever.aretrieve(query)
        texts = [n.node.get_content() for n in nodes]
        return _payload(await reranker.reranker.arerank(query, texts), top_n)

    def search_sync(query: str, top_n: int = 3) -> dict[str, Any]:
        """Search the knowledge base; return the most relevant passages, best first."""
        return run_sync(search_reranked(query, top_n))

    return FunctionTool.from_defaults(
        fn=search_sync, async_fn=search_reranked, name=name or "search_reranked"
    )
