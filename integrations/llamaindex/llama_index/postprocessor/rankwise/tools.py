"""A LlamaIndex FunctionTool so an agent can rerank passages, or search with reranking."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.tools import FunctionTool
from llama_index.postprocessor.rankwise.base import RankwiseRerank, nodes_to_candidates

from rankwise._sync import run_sync


def rankwise_function_tool(
    reranker: RankwiseRerank, *, retriever: BaseRetriever | None = None, name: str | None = None
) -> FunctionTool:
    """With ``retriever``: ``search_reranked(query, top_n)``; without:
    ``rerank_passages(query, passages, top_n)``. Both sync and async."""
    if retriever is None:

        async def rerank_passages(
            query: str, passages: list[str], top_n: int = 3
        ) -> dict[str, Any]:
            """Rank passages by how well they answer the query; best first."""
            return (await reranker.reranker.arerank(query, passages)).as_tool_result(top_n)

        def rerank_sync(query: str, passages: list[str], top_n: int = 3) -> dict[str, Any]:
            """Rank passages by how well they answer the query; best first."""
            return run_sync(rerank_passages(query, passages, top_n))

        return FunctionTool.from_defaults(
            fn=rerank_sync, async_fn=rerank_passages, name=name or "rerank_passages"
        )

    async def search_reranked(query: str, top_n: int = 3) -> dict[str, Any]:
        """Search the knowledge base; return the most relevant passages, best first."""
        candidates, _ = nodes_to_candidates(await retriever.aretrieve(query))
        return (await reranker.reranker.arerank(query, candidates)).as_tool_result(top_n)

    def search_sync(query: str, top_n: int = 3) -> dict[str, Any]:
        """Search the knowledge base; return the most relevant passages, best first."""
        return run_sync(search_reranked(query, top_n))

    return FunctionTool.from_defaults(
        fn=search_sync, async_fn=search_reranked, name=name or "search_reranked"
    )
