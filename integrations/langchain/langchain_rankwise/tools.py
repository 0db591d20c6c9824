"""LangChain tools so an agent can rerank passages, or search with reranking."""

from __future__ import annotations

from typing import Any

from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field

from langchain_rankwise._convert import to_candidates
from langchain_rankwise.compressor import RankwiseRerank
from rankwise._sync import run_sync
from rankwise.adapters import check_parts
from rankwise.errors import ContextOverflowError
from rankwise.types import Candidate


class RerankInput(BaseModel):
    """Arguments of the rerank tool."""

    query: str = Field(description="The question the passages should answer.")
    passages: list[str] = Field(description="The passages to rank, as plain text.")
    top_n: int = Field(default=3, ge=1, description="How many passages to return.")


class SearchInput(BaseModel):
    """Arguments of the search tool."""

    query: str = Field(description="What to search for.")
    top_n: int = Field(default=3, ge=1, description="How many passages to return.")


def rankwise_tool(
    reranker: RankwiseRerank,
    *,
    retriever: BaseRetriever | None = None,
    name: str | None = None,
    description: str | None = None,
) -> StructuredTool:
    """A structured tool: with ``retriever``, "search with reranking"; without, "rerank these
    passages for this query". Results are JSON: rank, id, score and text per passage, plus
    ``abstained``, ``confidence`` and ``abstain_reason``.

    An empty query from the agent, or one too long for the model's context, comes back to it
    as the tool's answer, an error message it can act on (a ``ToolException``, with
    ``handle_tool_error=True``), instead of ending the agent's run; arguments that do not fit
    the schema are LangChain's validation errors, and a failing backend or a misconfigured
    reranker still raises."""
    check_parts(
        reranker,
        retriever,
        framework="LangChain",
        reranker_kind=RankwiseRerank,
        reranker_role="compressor",
        retriever_kind=BaseRetriever,
        retriever_example="vector_store.as_retriever()",
    )
    if retriever is None:

        async def rerank(query: str, passages: list[str], top_n: int = 3) -> dict[str, Any]:
            _check_query(query, "rank passages for")
            return await _ranked(reranker, query, passages, top_n)

        return StructuredTool.from_function(
            func=lambda **kwargs: run_sync(rerank(**kwargs)),
            coroutine=rerank,
            name=name or "rerank_passages",
            description=description
            or "Rank passages by how well they answer a query; returns the best ones first.",
            args_schema=RerankInput,
            handle_tool_error=True,
        )

    async def search(query: str, top_n: int = 3) -> dict[str, Any]:
        _check_query(query, "search for")
        candidates, _ = to_candidates(await retriever.ainvoke(query))
        return await _ranked(reranker, query, candidates, top_n)

    return StructuredTool.from_function(
        func=lambda **kwargs: run_sync(search(**kwargs)),
        coroutine=search,
        name=name or "search_reranked",
        description=description
        or "Search the knowledge base and return the most relevant passages, best first.",
        args_schema=SearchInput,
        handle_tool_error=True,
    )


def _check_query(query: str, purpose: str) -> None:
    """An empty query is the agent's mistake: tell it, as the tool's answer."""
    if not query.strip():
        raise ToolException(f"the query is empty; call the tool again with the text to {purpose}")


async def _ranked(
    reranker: RankwiseRerank, query: str, passages: list[str] | list[Candidate], top_n: int
) -> dict[str, Any]:
    """The tool's answer; a prompt too long for the model goes back to the agent to fix."""
    try:
        ranked = await reranker.reranker.arerank(query, passages)
    except ContextOverflowError as error:
        raise ToolException(str(error)) from error
    return ranked.as_tool_result(top_n)
