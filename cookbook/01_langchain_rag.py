"""LangChain RAG with reranking: vector store → ContextualCompressionRetriever(RankwiseRerank)
→ answer prompt, all on this CPU with the embedded SmolLM2 model.

    python cookbook/01_langchain_rag.py
"""

from __future__ import annotations

import asyncio

from _shared import dl19, langchain_embeddings, passages
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_rankwise import RankwiseRerank

from rankwise.backends.transformers import TransformersBackend
from rankwise.prompts import Message


async def main() -> None:
    records, _ = dl19(3)
    store = InMemoryVectorStore(langchain_embeddings())
    store.add_documents(
        [
            Document(page_content=p["text"], metadata={"docid": p["id"]}, id=p["id"])
            for p in passages(records)
        ]
    )
    llm = TransformersBackend("default")  # the embedded model; any LangChain chat model works too
    # Query likelihood is the method that helps with this tiny model (see bench/results).
    compressor = RankwiseRerank(method="pointwise-qlm", backend=llm, top_n=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor,
        base_retriever=store.as_retriever(search_kwargs={"k": 10}),
    )
    answer_prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer from the context only."),
            ("human", "Context:\n{context}\n\nQuestion: {question}"),
        ]
    )
    question = records[0].query
    documents = await retriever.ainvoke(question)
    print(f"question: {question}")
    for document in documents:
        meta = document.metadata
        print(
            f"  #{meta['rank']} score {meta['relevance_score']:.3f} docid {meta['docid']}: "
            f"{document.page_content[:70]}..."
        )
    context = "\n\n".join(d.page_content for d in documents)
    prompt = answer_prompt.invoke({"context": context, "question": question})
    messages = [
        Message("system" if m.type == "system" else "user", str(m.content)) for m in prompt.messages
    ]
    answer = await llm.generate(messages, max_tokens=60)
    print(f"answer: {answer.text.strip()}")
    assert len(documents) == 3


if __name__ == "__main__":
    asyncio.run(main())
