"""A LlamaIndex FunctionTool so an agent can rerank passages, or search with reranking."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.tools import FunctionTool
from llama_index.postprocessor.rankwise.base import (
    RankwiseRerank,
    check_parts,
    nodes_to_candidates,
)

from rankwise._sync import run_sync
from rankwise.errors import InputError
from rankwise.types import check_top_n


def rankwise_function_tool(
    reranker: RankwiseRerank, *, retriever: BaseRetriever | None = None, name: str | None = None
) -> FunctionTool:
    """With ``retriever``: ``search_reranked(query, top_n)``; without:
    ``rerank_passages(query, passages, top_n)``. Both sync and async.

    An empty query or a bad ``top_n`` from the agent raises :class:`~rankwise.InputError`
    before anything is retrieved or asked of the LLM; LlamaIndex's agents give its message
    back to the model as the tool's answer."""
    check_parts(reranker, retriever)
    if retriever is None:

        async def rerank_passages(
            query: str, passages: list[str], top_n: int = 3
        ) -> dict[str, Any]:
            """Rank passages by how well they answer the query; best first."""
            _check_arguments(query, top_n, "rank passages for")
            return (await reranker.reranker.arerank(query, passages)).as_tool_result(top_n)

        def rerank_sync(query: str, passages: list[str], top_n: int = 3) -> dict[str, Any]:
            """Rank passages by how well they answer the query; best first."""
            return run_sync(rerank_passages(query, passages, top_n))

        return FunctionTool.from_defaults(
            fn=rerank_sync, async_fn=rerank_passages, name=name or "rerank_passages"
        )

    async def search_reranked(query: str, top_n: int = 3) -> dict[str, Any]:
        """Search the knowledge base; return the most relevant passages, best first."""
        _check_arguments(query, top_n, "search for")
        candidates, _ = nodes_to_candidates(await retriever.aretrieve(query))
        return (await reranker.reranker.arerank(query, candidates)).as_tool_result(top_n)

    def search_sync(query: str, top_n: int = 3) -> dict[str, Any]:
        """Search the knowledge base; return the most relevant passages, best first."""
        return run_sync(search_reranked(query, top_n))

    return FunctionTool.from_defaults(
        fn=search_sync, async_fn=search_reranked, name=name or "search_reranked"
    )


def _check_arguments(query: str, top_n: int, purpose: str) -> None:
    """Refuse the agent's bad arguments before the retriever or the LLM is paid for."""
    check_top_n(top_n)
    if not query.strip():
        raise InputError(f"the query is empty; call the tool again with the text to {purpose}")
