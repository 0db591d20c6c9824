"""An agent's tool call: "search with reranking" as a LangChain tool and a LlamaIndex
FunctionTool, each with a typed schema.

    python cookbook/03_agent_tool.py

The embedded 135M model is too small to drive an agent loop reliably, so this script makes
the structured tool call exactly as an agent would (tool name + JSON arguments) and prints
the JSON the agent would read back. With a capable chat model, hand the same tools to
``create_agent`` / ``FunctionAgent``.
"""

from __future__ import annotations

import asyncio
import json

from _shared import dl19, langchain_embeddings, passages
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_rankwise import RankwiseRerank, rankwise_tool

from rankwise.backends.transformers import TransformersBackend


async def main() -> None:
    records, _ = dl19(3)
    store = InMemoryVectorStore(langchain_embeddings())
    store.add_documents([Document(page_content=p["text"], id=p["id"]) for p in passages(records)])
    reranker = RankwiseRerank(method="pointwise-qlm", backend=TransformersBackend("default"))
    search = rankwise_tool(reranker, retriever=store.as_retriever(search_kwargs={"k": 8}))
    rerank = rankwise_tool(reranker)
    print("tools offered to the agent:")
    for tool in (search, rerank):
        print(f"  {tool.name}: {json.dumps(tool.args)}")

    call = {"name": "search_reranked", "args": {"query": records[2].query, "top_n": 2}}
    print(f"\nagent calls {call['name']} with {json.dumps(call['args'])}")
    result = await search.ainvoke(call["args"])
    print(
        json.dumps(
            {**result, "results": [{**r, "text": r["text"][:80]} for r in result["results"]]},
            indent=2,
        )
    )

    call = {
        "query": "what is wifi",
        "passages": ["WiFi is wireless networking.", "Cats purr."],
        "top_n": 1,
    }
    print(f"\nagent calls rerank_passages with {json.dumps(call)}")
    print(json.dumps(await rerank.ainvoke(call), indent=2))
    assert len(result["results"]) == 2


if __name__ == "__main__":
    asyncio.run(main())
