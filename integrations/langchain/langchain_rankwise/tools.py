"""LangChain tools so an agent can rerank passages, or search with reranking."""

from __future__ import annotations

from typing import Any

from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from langchain_rankwise.compressor import RankwiseRerank
from rankwise._sync import run_sync
from rankwise.types import RankedList


class RerankInput(BaseModel):
    """Arguments of the rerank tool."""

    query: str = Field(description="The question the passages should answer.")
    passages: list[str] = Field(description="The passages to rank, as plain text.")
    top_n: int = Field(default=3, ge=1, description="How many passages to return.")


class SearchInput(BaseModel):
    """Arguments of the search tool."""

    query: str = Field(description="What to search for.")
    top_n: int = Field(default=3, ge=1, description="How many passages to return.")


def _as_payload(ranked: RankedList, top_n: int) -> dict[str, Any]:
    chosen = [] if ranked.abstained else ranked.items[:top_n]
    return {
        "abstained": ranked.abstained,
        "confidence": ranked.confidence,
        "results": [
            {"rank": i.rank, "id": i.id, "score": i.score, "text": i.text} for i in chosen
        ],
    }


def rankwise_tool(
    reranker: RankwiseRerank,
    *,
    retriever: BaseRetriever | None = None,
    name: str | None = None,
    description: str | None = None,
) -> StructuredTool:
    """A structured tool: with ``retriever``, "search with reranking"; without, "rerank these
    passages for this query". Results are JSON: rank, id, score and text per passage, plus
    ``abstained`` and ``confidence``."""
    if retriever is None:

        async def rerank(query: str, passages: list[str], top_n: int = 3) -> dict[str, Any]:
            ranked = await reranker.reranker.arerank(query, passages)
            return _as_payload(ranked, top_n)

        return StructuredTool.from_function(
            func=lambda **kwargs: run_sync(rerank(**kwargs)),
            coroutine=rerank,
            name=name or "rerank_passages",
            description=description
            or "Rank passages by how well they answer a query; returns the best ones first.",
            args_schema=RerankInput,
        )

    async def search(query: str, top_n: int = 3) -> dict[str, Any]:
        documents = await retriever.ainvoke(query)
        ranked = await reranker.reranker.arerank(query, [d.page_content for d in documents])
        return _as_payload(ranked, top_n)

    return StructuredTool.from_function(
        func=lambda **kwargs: run_sync(search(**kwargs)),
        coroutine=search,
        name=name or "search_reranked",
        description=description
        or "Search the knowledge base and return the most relevant passages, best first.",
        args_schema=SearchInput,
    )
