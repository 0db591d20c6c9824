"""The same reranking against a hosted OpenAI-compatible API.

    RANKWISE_BASE_URL=https://api.openai.com/v1 RANKWISE_MODEL=gpt-4o-mini python cookbook/04_hosted_api.py
    python cookbook/04_hosted_api.py      # no URL: starts a llama.cpp server on 127.0.0.1

Only the backend line changes between a local model, vLLM, Ollama, llama.cpp and OpenAI.
"""

from __future__ import annotations

import asyncio
import os

from _shared import dl19

from rankwise import OpenAIBackend, Reranker
from rankwise.evaluate import ndcg_at_k
from rankwise.llamacpp import serve_gguf


async def rerank_with(base_url: str, model: str) -> None:
    backend = OpenAIBackend(model, base_url=base_url, concurrency=8, timeout=120)
    reranker = Reranker("pointwise", backend, top_n=3, score_threshold=0.3)
    records, qrels = dl19(2)
    for record in records:
        ranked = await reranker.arerank(record.query, record.documents(10))
        before = ndcg_at_k([d["id"] for d in record.documents(10)], qrels[record.qid])
        print(
            f"{record.query!r}: nDCG@10 {before:.3f} -> {ndcg_at_k(ranked.ids, qrels[record.qid]):.3f}; "
            f"{ranked.usage.calls} calls, {ranked.usage.prompt_tokens} prompt tokens, "
            f"{ranked.usage.seconds:.1f} s; kept {len(ranked.selected)} above P(Yes) 0.3"
        )
        for item in ranked.selected:
            print(f"    P(Yes)={item.score:.2f}  {item.text[:70]}...")
    await backend.aclose()


def main() -> None:
    url = os.environ.get("RANKWISE_BASE_URL")
    if url:
        asyncio.run(rerank_with(url, os.environ.get("RANKWISE_MODEL", "gpt-4o-mini")))
        return
    with serve_gguf() as local_url:  # rankwise's helper: llama.cpp on 127.0.0.1
        print(f"started llama.cpp at {local_url}")
        asyncio.run(rerank_with(local_url, "smollm2"))


if __name__ == "__main__":
    main()
