"""Retrieve, fuse and rerank: the pipeline behind the framework retrievers.

``query → [rewrites] → retrieve each → fuse (RRF) → rerank against the original query →
abstain?``. The retrieval function is the framework's own async retriever, wrapped by the
adapter; everything here is async.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from rankwise._concurrency import gather_all
from rankwise.fusion import reciprocal_rank_fusion
from rankwise.reranker import Reranker
from rankwise.types import Candidate, RankedList

Retrieve = Callable[[str], Awaitable[Sequence[Candidate]]]
Rewrite = Callable[[str], Awaitable[Sequence[str]]]


class RetrievalPipeline:
    """Run retrieval for the query (and its rewrites), fuse the lists, rerank the pool.

    Args:
        reranker: the configured :class:`Reranker` (method, backend, top_n, abstention).
        rewrite: optional async function returning extra queries for a query; results for
            the original and every rewrite are fused with reciprocal rank fusion.
        rrf_k: the RRF constant (60, as published).
    """

    def __init__(self, reranker: Reranker, *, rewrite: Rewrite | None = None, rrf_k: int = 60):
        self.reranker = reranker
        self.rewrite = rewrite
        self.rrf_k = rrf_k

    async def arun(self, query: str, retrieve: Retrieve) -> RankedList:
        """Retrieve, fuse and rerank for ``query``."""
        queries = [query]
        if self.rewrite is not None:
            queries += [q for q in await self.rewrite(query) if q.strip() and q != query]
        lists = await gather_all(retrieve(q) for q in queries)
        pool = list(lists[0]) if len(lists) == 1 else reciprocal_rank_fusion(lists, k=self.rrf_k)
        return await self.reranker.arerank(query, pool)
