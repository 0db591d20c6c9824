"""Retrieve, fuse and rerank: the pipeline behind the framework retrievers.

``query → [rewrites] → retrieve each → fuse (RRF) → rerank against the original query →
abstain?``. The retrieval function is the framework's own async retriever, wrapped by the
adapter; everything here is async.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence

from rankwise._concurrency import gather_all
from rankwise.errors import InputError
from rankwise.fusion import check_rrf_k, reciprocal_rank_fusion
from rankwise.inputs import normalise_query
from rankwise.reranker import Reranker
from rankwise.rewrite import QueryRewriter, RewriteResult, same_query_key
from rankwise.types import Candidate, RankedList

Retrieve = Callable[[str], Awaitable[Sequence[Candidate]] | Sequence[Candidate]]
Rewrite = Callable[[str], Awaitable[Sequence[str] | str] | Sequence[str] | str]


class RetrievalPipeline:
    """Run retrieval for the query (and its rewrites), fuse the lists, rerank the pool.

    Args:
        reranker: the configured :class:`Reranker` (method, backend, top_n, abstention).
        rewrite: optional function returning extra queries for a query (a list of
            strings, or one string for one query), or a
            :class:`~rankwise.rewrite.QueryRewriter`; results for the original and every
            rewrite are fused with reciprocal rank fusion. An ``async`` function is awaited;
            a plain one runs on the event loop, so it should be quick (no model call).
        rrf_k: the RRF constant (60, as published).
    """

    def __init__(self, reranker: Reranker, *, rewrite: Rewrite | None = None, rrf_k: int = 60):
        if not isinstance(reranker, Reranker):
            raise InputError(f"reranker must be a rankwise Reranker, got {reranker!r:.100}")
        check_rewrite(rewrite)
        check_rrf_k(rrf_k)
        self.reranker = reranker
        self.rewrite = rewrite
        self.rrf_k = rrf_k

    async def arun(self, query: str, retrieve: Retrieve, *, chat_history: str = "") -> RankedList:
        """Retrieve, fuse and rerank for ``query``.

        ``retrieve`` maps a query to its documents (anything :meth:`Reranker.arerank`
        takes); an ``async`` function is awaited, a plain one runs on the event loop.

        With a :class:`~rankwise.rewrite.QueryRewriter` as ``rewrite``, the result's
        ``usage`` and ``trace`` include the rewriting calls, so the cost of a query is whole,
        and ``chat_history`` (the earlier turns, as text) reaches its ``conversational``
        strategy.
        """
        query = normalise_query(query)
        if not callable(retrieve):
            raise InputError(
                f"retrieve must be a function from a query to its documents, got {retrieve!r:.100}"
            )
        if not query.strip():
            raise InputError("query is empty; pass the text to search and rank documents for")
        if chat_history and not isinstance(self.rewrite, QueryRewriter):
            raise InputError(
                "chat_history is read only by a QueryRewriter (its 'conversational' "
                "strategy); pass rewrite=QueryRewriter(backend, ['conversational']), or "
                "fold the history into your own rewrite function"
            )
        queries = [query]
        rewriting: RewriteResult | None = None
        if isinstance(self.rewrite, QueryRewriter):
            rewriting = await self.rewrite.arewrite(query, chat_history=chat_history)
            rewrites = [r.text for r in rewriting.rewrites if r.strategy != "original"]
        elif self.rewrite is not None:
            returned = self.rewrite(query)
            rewrites = _as_queries(await returned if inspect.isawaitable(returned) else returned)
        else:
            rewrites = []
        queries = _distinct(queries + rewrites)
        lists = await gather_all(_retrieved(retrieve, q) for q in queries)
        pool = list(lists[0]) if len(lists) == 1 else reciprocal_rank_fusion(lists, k=self.rrf_k)
        ranked = await self.reranker.arerank(query, pool)
        if rewriting is not None:
            ranked.usage.add(rewriting.usage)
            ranked.trace.events[:0] = rewriting.trace.events
            calls = f", {rewriting.usage.calls} rewriting calls"
        else:
            calls = ""
        if self.rewrite is not None:
            ranked.trace.record(
                "info",
                f"searched with {len(queries)} queries ({len(queries) - 1} rewrites{calls})",
                queries=queries,
            )
        return ranked


def check_rewrite(rewrite: object) -> None:
    """Raise :class:`InputError` unless ``rewrite`` is None, a
    :class:`~rankwise.rewrite.QueryRewriter` or a function (a QueryRewriter is callable)."""
    if rewrite is not None and not callable(rewrite):
        raise InputError(
            f"rewrite must be a QueryRewriter, a function or None, got {rewrite!r:.100}; for "
            "a strategy by name, pass QueryRewriter(backend, ['multi_query'])"
        )


async def _retrieved(retrieve: Retrieve, query: str) -> Sequence[Candidate]:
    """What ``retrieve`` found for ``query``: an ``async`` function is awaited, a plain one
    runs on the event loop."""
    found = retrieve(query)
    return await found if inspect.isawaitable(found) else found


def _distinct(queries: Sequence[str]) -> list[str]:
    """The queries in order, without blank ones or repeats (ignoring case, spacing and the
    punctuation around them, as :class:`~rankwise.rewrite.QueryRewriter` does): a query
    searched twice would be paid for twice and its list would count twice in the fusion."""
    kept: dict[str, str] = {}
    for query in queries:
        if key := same_query_key(query):
            kept.setdefault(key, query)
    return list(kept.values())


def _as_queries(returned: object) -> list[str]:
    """A rewrite function's answer as a list of queries: one string is one query (iterating
    it would search for each character)."""
    if isinstance(returned, str):
        return [returned]
    queries = list(returned) if isinstance(returned, Iterable) else None
    if queries is not None and all(isinstance(q, str) for q in queries):
        return queries
    raise InputError(
        f"the rewrite function returned {returned!r}; it must return a list of query strings"
    )
