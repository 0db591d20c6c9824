"""LlamaIndex query engine with the RankwiseRerank node postprocessor.

    python cookbook/02_llamaindex_query_engine.py

The vector index retrieves 10 nodes with MiniLM; rankwise keeps the best 3, with its own
scores on the nodes. The answer LLM here is the embedded model behind a tiny LlamaIndex
``CustomLLM``; in your app it is whatever ``Settings.llm`` you already use.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _shared import dl19, llamaindex_embedding, passages
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.postprocessor.rankwise import RankwiseRerank

from rankwise.backends.transformers import TransformersBackend
from rankwise.prompts import Message

BACKEND = TransformersBackend("default")


class EmbeddedLLM(CustomLLM):
    """The embedded SmolLM2 model as a LlamaIndex LLM (for the answer only)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=BACKEND.model_name, context_window=8192, num_output=80)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        reply = await BACKEND.generate([Message("user", prompt)], max_tokens=80)
        return CompletionResponse(text=reply.text)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        reply = asyncio.run(BACKEND.generate([Message("user", prompt)], max_tokens=80))
        return CompletionResponse(text=reply.text)  # from synchronous code only

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        yield self.complete(prompt, formatted, **kwargs)


async def main() -> None:
    records, _ = dl19(3)
    Settings.llm = EmbeddedLLM()
    Settings.embed_model = llamaindex_embedding()
    documents = [
        Document(text=p["text"], doc_id=p["id"], metadata={"docid": p["id"]})
        for p in passages(records)
    ]
    index = VectorStoreIndex.from_documents(documents)
    rerank = RankwiseRerank(method="pointwise-qlm", backend=BACKEND, top_n=3)
    engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[rerank])
    question = records[1].query
    response = await engine.aquery(question)
    print(f"question: {question}")
    for node in response.source_nodes:
        print(
            f"  score {node.score:.3f} docid {node.node.metadata['docid']}: {node.node.get_content()[:70]}..."
        )
    print(f"answer: {str(response).strip()[:300]}")
    usage = rerank.last_result.usage
    print(
        f"rerank: {usage.calls} forward passes, {usage.prompt_tokens} prompt tokens, {usage.seconds:.1f} s"
    )
    assert len(response.source_nodes) == 3


if __name__ == "__main__":
    asyncio.run(main())
