"""The whole pipeline: rewrite → retrieve (MiniLM vector store) → fuse (RRF) → rerank →
abstain, on DL19 queries and on off-topic queries the corpus cannot answer.

    python cookbook/07_rewrite_fuse_abstain.py

The off-topic questions should come back as "nothing relevant here" instead of passing
the nearest (irrelevant) passages on to the answer prompt.
"""

from __future__ import annotations

import asyncio

from _shared import dl19, langchain_embeddings, passages
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_rankwise import RankwiseRerank, RankwiseRetriever

from rankwise.abstain import Abstention
from rankwise.backends.transformers import TransformersBackend
from rankwise.rewrite import QueryRewriter

OFF_TOPIC = [
    "best sourdough pizza dough recipe",
    "who won the 1998 football world cup",
    "how do I configure a kubernetes ingress controller",
]
# Calibrated query likelihood: how many nats per query token the best passage adds over a
# content-free passage. Below this, no passage explains the query. Fit the threshold on your
# own labelled queries (cookbook 06) for real use.
THRESHOLD = 1.0


async def main() -> None:
    records, _ = dl19(5)
    store = InMemoryVectorStore(langchain_embeddings())
    store.add_documents([Document(page_content=p["text"], id=p["id"]) for p in passages(records)])
    llm = TransformersBackend("default")
    rewriter = QueryRewriter(llm, ["keywords"])  # one extra query per question
    reranker = RankwiseRerank(
        method="pointwise-qlm",
        method_options={"calibrated": True},
        backend=llm,
        top_n=3,
        abstain=Abstention("max", THRESHOLD),
    )
    retriever = RankwiseRetriever(
        base_retriever=store.as_retriever(search_kwargs={"k": 8}),
        reranker=reranker,
        rewrite=rewriter,
    )
    abstained = {}
    for question in [r.query for r in records[:3]] + OFF_TOPIC:
        documents = await retriever.ainvoke(question)
        result = reranker.last_result
        abstained[question] = result.abstained
        verdict = f"ABSTAIN: {result.abstain_reason}" if result.abstained else "answer"
        print(f"{question[:50]:50} {verdict}; {len(documents)} passages passed on")
        print(f"{'':4}pool of {len(result.items)} fused candidates from the query and its rewrite")
    on_topic_kept = sum(not abstained[r.query] for r in records[:3])
    off_topic_abstained = sum(abstained[q] for q in OFF_TOPIC)
    print(f"on-topic answered: {on_topic_kept}/3, off-topic abstained: {off_topic_abstained}/3")


if __name__ == "__main__":
    asyncio.run(main())
