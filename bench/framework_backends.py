"""What the token limit is worth when rankwise drives a framework model: pointwise yes/no
judgements through ``LangChainBackend(ChatOpenAI)`` and ``LlamaIndexBackend(OpenAILike)``,
with the limit passed per call (``max_tokens_kwarg="auto"``, the default) and without it
(``None``, the model's own setting), side by side with ``OpenAIBackend``, all against one
llama.cpp server (the embedded SmolLM2 GGUF on 127.0.0.1).

    ./run bench framework_backends       # runs in .venv-libs (needs OpenAILike)
    python bench/framework_backends.py --queries 3 --depth 10

Each query is ranked by every arm in turn, in an order that rotates from one query to the
next; before each timed ranking the server's prompt cache is replaced by a short prompt
(``vs_libraries.clear_prompt_cache``), so that no arm reuses the key/value states of the one
before it. Reports the median seconds per query, completion tokens per call, the paired
ratio of each arm's time to its own ``auto`` arm's, and nDCG@10 (the same judgements must
rank the same way with and without the limit). Writes ``bench/results/framework_backends.json``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from _common import dl19, machine, median, time_rerank, turns, write_json
from vs_libraries import MODEL, clear_prompt_cache, openai_like

from rankwise import Reranker
from rankwise.backends.base import Backend
from rankwise.backends.openai import OpenAIBackend
from rankwise.evaluate import mean, ndcg_at_k
from rankwise.llamacpp import serve_gguf


def openai_direct(url: str) -> Backend:
    return OpenAIBackend(MODEL, base_url=url, timeout=300)


def langchain(limit: str | None) -> Callable[[str], Backend]:
    def build(url: str) -> Backend:
        from langchain_openai import ChatOpenAI

        from rankwise.backends.langchain import LangChainBackend

        chat = ChatOpenAI(model=MODEL, base_url=url, api_key="none", temperature=0, timeout=300)
        return LangChainBackend(chat, logprobs=True, max_tokens_kwarg=limit)

    return build


def llamaindex(limit: str | None) -> Callable[[str], Backend]:
    def build(url: str) -> Backend:
        from rankwise.backends.llamaindex import LlamaIndexBackend

        llm = openai_like(url, timeout=300)  # no max_tokens: what an unset limit costs
        return LlamaIndexBackend(llm, logprobs=True, max_tokens_kwarg=limit)

    return build


ARMS: dict[str, Callable[[str], Backend]] = {
    "OpenAIBackend": openai_direct,
    "LlamaIndexBackend(OpenAILike), auto": llamaindex("auto"),
    "LlamaIndexBackend(OpenAILike), None": llamaindex(None),
    "LangChainBackend(ChatOpenAI), auto": langchain("auto"),
    "LangChainBackend(ChatOpenAI), None": langchain(None),
}


async def measure(url: str, queries: int, depth: int) -> dict[str, Any]:
    records, qrels = dl19(None)
    records = [r for r in records if r.qid in qrels][:queries]
    rerankers = {name: Reranker("pointwise", build(url)) for name, build in ARMS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in ARMS}
    completion: dict[str, list[float]] = {name: [] for name in ARMS}
    quality: dict[str, list[float]] = {name: [] for name in ARMS}
    fallbacks = dict.fromkeys(ARMS, 0)
    for number, record in enumerate(records):
        for name in turns(number, tuple(ARMS)):
            clear_prompt_cache(url)
            took, ranked = await time_rerank(rerankers[name], record, depth)
            assert sorted(ranked.ids) == sorted(d["id"] for d in record.documents(depth))
            seconds[name].append(took)
            completion[name].append(ranked.usage.completion_tokens / max(ranked.usage.calls, 1))
            quality[name].append(ndcg_at_k(ranked.ids, qrels[record.qid]))
            fallbacks[name] += len(ranked.trace.fallbacks)
            print(f"{record.qid} {name:40} {took:6.2f} s", flush=True)
    rows = []
    for name in ARMS:
        auto = name.replace(", None", ", auto")
        pairs = zip(seconds[name], seconds[auto], strict=True)
        paired = [without / limited for without, limited in pairs]
        rows.append(
            {
                "arm": name,
                "median_seconds_per_query": round(median(seconds[name]), 3),
                "seconds_per_query": [round(s, 3) for s in seconds[name]],
                "completion_tokens_per_call": round(mean(completion[name]), 2),
                "ndcg@10": round(mean(quality[name]), 4),
                "fallbacks": fallbacks[name],
                "paired_over_auto": round(median(paired), 2) if auto != name else None,
            }
        )
    return {"qids": [r.qid for r in records], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--depth", type=int, default=10)
    args = parser.parse_args()
    with serve_gguf() as url:
        found = asyncio.run(measure(url, args.queries, args.depth))
    payload = {
        "benchmark": "framework_backends",
        "model": "SmolLM2-135M-Instruct (GGUF) on llama-cpp-python server, 127.0.0.1",
        "method": "pointwise",
        "queries": args.queries,
        "depth": args.depth,
        **found,
        "note": (
            "ChatOpenAI sends the limit as max_completion_tokens, which llama-cpp-python's "
            "server ignores, so its two arms write the same number of tokens here; OpenAI's "
            "API and llama.cpp's own server read it. OpenAILike sends max_tokens."
        ),
        "machine": machine(),
    }
    for row in payload["rows"]:
        print(
            f"{row['arm']:40} {row['median_seconds_per_query']:7.2f} s/query "
            f"{row['completion_tokens_per_call']:6.1f} tokens/call nDCG@10 {row['ndcg@10']:.4f} "
            f"paired/auto {row['paired_over_auto']}"
        )
    print("wrote", write_json("framework_backends", payload))


if __name__ == "__main__":
    main()
