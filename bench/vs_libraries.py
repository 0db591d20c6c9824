"""rankwise against the LLM rerankers a user would otherwise pick, side by side in one run:
the same llama.cpp server (the embedded SmolLM2 GGUF on 127.0.0.1), the same DL19 queries,
the same candidates (BM25 top-N, every passage cut to the same number of words).

    ./run bench vs_libraries            # sets up .venv-libs, then runs this script
    python bench/vs_libraries.py --queries 5 --depth 10

Systems:

* rankwise ``listwise`` (RankGPT prompt, one window), ``first`` and ``pointwise``, the last
  two also with ``stream_logprobs=True`` (the same log-probs, which llama-cpp-python's server
  then computes only at the generated tokens; see ``bench/server_logprobs.py``);
* ``rerankers`` 0.10 ``RankGPTRanker`` (through LiteLLM, pointed at the server);
* LlamaIndex ``LLMRerank`` (``OpenAILike`` LLM);
* LangChain ``LLMListwiseRerank`` (``ChatOpenAI``; needs structured output).

Every request goes through a counting proxy on loopback, so calls are counted the same way
for every system. A system that cannot run, or fails on a query, is recorded with the error
in the JSON, never skipped silently. A system that returns only some candidates is scored
on what it returned (what its user gets). Writes ``bench/results/vs_libraries.json``.

Timing is side by side: each query is ranked by every system in turn, in an order that
rotates from one query (and repeat) to the next, ``--repeats`` times (default 3), and a
system's time is the median over all its queries and repeats. Before each timed ranking the
server's prompt cache is cleared (an uncounted one-token request with a short prompt): the
llama.cpp server keeps the key/value states of the last prompt and reuses their longest
common prefix, so a system that follows one with the same prompt (rankwise ``listwise`` and
``RankGPTRanker`` send identical requests) would take 0.1 s instead of 5 s. The verdict for
each library is read from the paired ratios (its time over rankwise's, same query and
repeat) as well as from the medians; quality is from the first repeat, and the rankings of
later repeats are compared with it.

The libraries pin versions (``litellm`` needs ``openai<3``) that differ from rankwise's test
environment, so this runs in its own environment; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, version
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

from _common import dl19, machine, median, turns, write_json

from rankwise import Reranker
from rankwise.backends.openai import OpenAIBackend
from rankwise.evaluate import QueryRecord, mean, ndcg_at_k
from rankwise.llamacpp import serve_gguf

MODEL = "smollm2"
Ranker = Callable[[str, list[dict[str, str]]], list[str]]


def post_chat(url: str, body: dict[str, Any]) -> bytes:
    """POST ``body`` to ``url``'s ``/chat/completions`` directly (not through a proxy) and
    return the reply's bytes (JSON, or server-sent events for a streamed request)."""
    request = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as reply:
        return bytes(reply.read())


def chat_completion(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """:func:`post_chat` for a request that is not streamed, its reply decoded."""
    return dict(json.loads(post_chat(url, body)))


def clear_prompt_cache(url: str) -> None:
    """Replace the cached prompt of the server at ``url`` with a short one: the llama.cpp
    server reuses the key/value states of the longest prefix a request shares with the last
    prompt it ran, which would let a system ride on the one timed before it."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    chat_completion(url, body)


class CountingProxy:
    """A loopback HTTP proxy in front of the server that counts the requests it forwards."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests = 0
        self.completion_tokens = 0
        self.last_answer = ""
        self.last_body: bytes | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear_prompt_cache(self) -> None:
        """:func:`clear_prompt_cache` on the server behind the proxy (not counted)."""
        clear_prompt_cache(self.upstream)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Real servers send small replies at once; without this, Nagle's algorithm and
            # the client's delayed ACK add about 40 ms to every keep-alive exchange.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                return

            def _forward(self, body: bytes | None) -> None:
                path = self.path.removeprefix("/v1")
                request = urllib.request.Request(
                    proxy.upstream + path,
                    data=body,
                    method=self.command,
                    headers={"content-type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=600) as upstream:
                        status, payload = upstream.status, upstream.read()
                        content_type = upstream.headers.get("content-type", "application/json")
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                    content_type = error.headers.get("content-type", "application/json")
                if self.command == "POST":
                    with proxy._lock:
                        proxy.requests += 1
                        proxy.last_body = body
                        tokens, answer = read_reply(payload)
                        proxy.completion_tokens += tokens
                        if answer is not None:
                            proxy.last_answer = answer
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                self._forward(self.rfile.read(length))

            def do_GET(self) -> None:
                self._forward(None)

        return Handler


def read_reply(payload: bytes) -> tuple[int, str | None]:
    """Completion tokens and answer text of a chat completion, sent whole or streamed as
    server-sent events (llama-cpp-python sends no usage in a stream, so there the tokens
    are the streamed pieces); ``(0, None)`` for a body that is neither."""
    try:
        if not payload.startswith(b"data:"):
            reply = json.loads(payload)
            usage = reply.get("usage") or {}
            message = reply["choices"][0]["message"]
            answer = message.get("content") or message.get("tool_calls") or ""
            return int(usage.get("completion_tokens", 0)), str(answer)
        pieces = []
        for line in payload.decode().splitlines():
            data = line.removeprefix("data:").strip()
            if line.startswith("data:") and data != "[DONE]":
                for choice in json.loads(data).get("choices") or []:
                    pieces.append((choice.get("delta") or {}).get("content") or "")
        return sum(1 for piece in pieces if piece), "".join(pieces)
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        return 0, None


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------- systems
def rankwise_system(
    method: str, base_url: str, depth: int, *, stream_logprobs: bool = False, **options: Any
) -> Ranker:
    backend = OpenAIBackend(
        MODEL, base_url=base_url, api_key="none", timeout=600, stream_logprobs=stream_logprobs
    )
    reranker = Reranker(method, backend, **options)

    def rank(query: str, docs: list[dict[str, str]]) -> list[str]:
        return reranker.rerank(query, docs).ids

    return rank


def rerankers_rankgpt(base_url: str, depth: int) -> Ranker:
    import litellm
    from rerankers.models.rankgpt_rankers import RankGPTRanker

    litellm.api_base = base_url
    litellm.suppress_debug_info = True
    ranker = RankGPTRanker(model=f"openai/{MODEL}", api_key="none", verbose=0)

    def rank(query: str, docs: list[dict[str, str]]) -> list[str]:
        texts = [doc["text"] for doc in docs]
        result = ranker.rank(query, texts, doc_ids=[doc["id"] for doc in docs], rank_end=depth)
        return [str(r.document.doc_id) for r in result.results]

    return rank


def openai_like(base_url: str, *, timeout: float, **settings: Any) -> Any:
    """LlamaIndex's ``OpenAILike`` chat LLM for the server at ``base_url`` (greedy, a 4,096-token
    context), with ``settings`` such as ``max_tokens`` added; left out, the LLM keeps its own."""
    from llama_index.llms.openai_like import OpenAILike

    return OpenAILike(
        model=MODEL,
        api_base=base_url,
        api_key="none",
        is_chat_model=True,
        context_window=4096,
        temperature=0.0,
        timeout=timeout,
        **settings,
    )


def llamaindex_llmrerank(base_url: str, depth: int) -> Ranker:
    from llama_index.core.postprocessor import LLMRerank
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    llm = openai_like(base_url, timeout=600, max_tokens=256)
    postprocessor = LLMRerank(llm=llm, choice_batch_size=10, top_n=depth)

    def rank(query: str, docs: list[dict[str, str]]) -> list[str]:
        nodes = [NodeWithScore(node=TextNode(text=d["text"], id_=d["id"]), score=0.0) for d in docs]
        ranked = postprocessor.postprocess_nodes(nodes, query_bundle=QueryBundle(query))
        return [n.node.node_id for n in ranked]

    return rank


def langchain_listwise(base_url: str, depth: int, *, tool_calling: bool = False) -> Ranker:
    """``LLMListwiseRerank`` needs structured output. ``ChatOpenAI`` asks for it as a JSON
    schema ``response_format``, which the llama.cpp server rejects; with ``tool_calling``
    it is asked for as a forced function call instead, which the server supports."""
    from langchain_classic.retrievers.document_compressors import LLMListwiseRerank
    from langchain_core.documents import Document
    from langchain_openai import ChatOpenAI

    class ToolCallingChat(ChatOpenAI):
        def with_structured_output(self, schema: Any = None, **kwargs: Any) -> Any:
            return super().with_structured_output(schema, method="function_calling", **kwargs)

    chat_class = ToolCallingChat if tool_calling else ChatOpenAI
    chat = chat_class(model=MODEL, base_url=base_url, api_key="none", temperature=0, timeout=600)
    compressor = LLMListwiseRerank.from_llm(chat, top_n=depth)

    def rank(query: str, docs: list[dict[str, str]]) -> list[str]:
        documents = [Document(page_content=d["text"], id=d["id"]) for d in docs]
        return [str(d.id) for d in compressor.compress_documents(documents, query)]

    return rank


SYSTEMS: dict[str, tuple[str, str | None, Callable[[str, int], Ranker]]] = {
    "rankwise listwise": (
        "rankwise",
        "rankwise",
        lambda url, depth: rankwise_system("listwise", url, depth, window=depth, step=depth),
    ),
    "rankwise first": (
        "rankwise",
        "rankwise",
        lambda url, depth: rankwise_system("first", url, depth, window=depth, step=depth),
    ),
    "rankwise pointwise": (
        "rankwise",
        "rankwise",
        lambda url, depth: rankwise_system("pointwise", url, depth),
    ),
    "rankwise first, streamed log-probs": (
        "rankwise",
        "rankwise",
        lambda url, depth: rankwise_system(
            "first", url, depth, window=depth, step=depth, stream_logprobs=True
        ),
    ),
    "rankwise pointwise, streamed log-probs": (
        "rankwise",
        "rankwise",
        lambda url, depth: rankwise_system("pointwise", url, depth, stream_logprobs=True),
    ),
    "rerankers RankGPTRanker": ("rerankers", "rerankers", rerankers_rankgpt),
    "LlamaIndex LLMRerank": ("llama-index-core", "llama-index-core", llamaindex_llmrerank),
    "LangChain LLMListwiseRerank": ("langchain-classic", "langchain-classic", langchain_listwise),
    "LangChain LLMListwiseRerank (function calling)": (
        "langchain-classic",
        "langchain-classic",
        lambda url, depth: langchain_listwise(url, depth, tool_calling=True),
    ),
}


def cut_words(docs: list[dict[str, Any]], words: int) -> list[dict[str, str]]:
    return [{"id": d["id"], "text": " ".join(d["text"].split()[:words])} for d in docs]


@dataclass
class Run:
    """One timed ranking of one query by one system."""

    seconds: float
    ids: list[str]
    calls: int
    error: str | None


def time_system(
    name: str, rank: Ranker, proxy: CountingProxy, query: str, docs: list[dict[str, str]]
) -> Run:
    """Clear the server's prompt cache, then time one ranking (a failure is kept, not raised)."""
    proxy.clear_prompt_cache()
    before = proxy.requests
    started = time.perf_counter()
    error = None
    try:
        ids = rank(query, docs)
    except Exception as failure:
        error = traceback.format_exception_only(type(failure), failure)[-1].strip()[:500]
        print(f"{name}: failed: {error[:200]}", flush=True)
        ids = []
    return Run(time.perf_counter() - started, ids, proxy.requests - before, error)


def measure(
    rankers: dict[str, Ranker],
    proxy: CountingProxy,
    records: list[QueryRecord],
    qrels: dict[str, dict[str, int]],
    depth: int,
    words: int,
    repeats: int,
) -> tuple[dict[str, dict[str, list[Run]]], dict[str, str]]:
    """Every system's runs per query (``repeats`` rounds, each query ranked by all systems
    in an order that rotates), and each system's last answer on the first query."""
    runs: dict[str, dict[str, list[Run]]] = {n: {r.qid: [] for r in records} for n in rankers}
    answers: dict[str, str] = {}
    for repeat in range(repeats if rankers else 0):
        for position, record in enumerate(records):
            docs = cut_words(record.documents(depth), words)
            for name in turns(repeat * len(records) + position, tuple(rankers)):
                run = time_system(name, rankers[name], proxy, record.query, docs)
                runs[name][record.qid].append(run)
                if repeat == 0 and position == 0:  # none where it sent nothing
                    answers[name] = proxy.last_answer[:400] if run.calls else ""
                print(
                    f"{name:48} {record.qid:>8} #{repeat}  "
                    f"nDCG@10 {ndcg_at_k(run.ids, qrels[record.qid]):.4f}  "
                    f"{run.seconds:6.1f} s  {run.calls} call(s)  "
                    f"returned {len(run.ids)}/{len(docs)}",
                    flush=True,
                )
    return runs, answers


def system_row(
    name: str,
    runs: dict[str, list[Run]],
    records: list[QueryRecord],
    qrels: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """A system's quality (first repeat), times (medians over queries and repeats), calls,
    documents returned and failures."""
    first = [runs[r.qid][0] for r in records]
    ndcgs = [ndcg_at_k(run.ids, qrels[r.qid]) for r, run in zip(records, first, strict=True)]
    every = [run.seconds for r in records for run in runs[r.qid]]
    errors = [
        {"qid": r.qid, "repeat": i, "error": run.error}
        for r in records
        for i, run in enumerate(runs[r.qid])
        if run.error
    ]
    return {
        "system": name,
        "ndcg@10": round(mean(ndcgs), 4),
        "per_query_ndcg@10": [round(x, 4) for x in ndcgs],
        "median_seconds_per_query": round(median(every), 2),
        "seconds_per_query": [round(median([x.seconds for x in runs[r.qid]]), 2) for r in records],
        "seconds_per_run": {r.qid: [round(x.seconds, 2) for x in runs[r.qid]] for r in records},
        "same_ranking_every_repeat": sum(
            all(x.ids == runs[r.qid][0].ids for x in runs[r.qid]) for r in records
        ),
        "calls_per_query": round(mean([run.calls for run in first]), 2),
        "returned_per_query": [len(run.ids) for run in first],
        "failed_queries": len({e["qid"] for e in errors}),
        "errors": errors,
    }


def paired_speedup(theirs: dict[str, list[Run]], ours: dict[str, list[Run]]) -> float:
    """Median over queries and repeats of the library's time over rankwise's, each pair
    measured in the same round."""
    return median(
        [
            other.seconds / own.seconds
            for qid, runs in theirs.items()
            for other, own in zip(runs, ours[qid], strict=True)
        ]
    )


def compare(
    rows: list[dict[str, Any]], runs: dict[str, dict[str, list[Run]]]
) -> list[dict[str, Any]]:
    """For each library that ran every query: rankwise's best quality, and the fastest
    rankwise system at least as good, with its median time and paired speed-up."""
    ours = [r for r in rows if r["system"].startswith("rankwise") and "ndcg@10" in r]
    theirs = [
        r
        for r in rows
        if not r["system"].startswith(("rankwise", "BM25"))
        and "ndcg@10" in r
        and not r["failed_queries"]
    ]
    verdicts: list[dict[str, Any]] = []
    for other in theirs if ours else []:
        best_quality = max(ours, key=lambda r: r["ndcg@10"])
        same_or_better = [r for r in ours if r["ndcg@10"] >= other["ndcg@10"]]
        fastest = min(same_or_better, key=lambda r: r["median_seconds_per_query"], default=None)
        paired = (
            round(paired_speedup(runs[other["system"]], runs[fastest["system"]]), 3)
            if fastest
            else None
        )
        verdicts.append(
            {
                "library": other["system"],
                "library_ndcg@10": other["ndcg@10"],
                "library_median_s": other["median_seconds_per_query"],
                "rankwise_best_quality": best_quality["system"],
                "rankwise_fastest_at_least_as_good": fastest["system"] if fastest else None,
                "rankwise_median_s": fastest["median_seconds_per_query"] if fastest else None,
                "median_paired_speedup": paired,
                "at_least_as_good_and_faster": bool(
                    fastest
                    and paired is not None
                    and paired > 1
                    and fastest["median_seconds_per_query"] < other["median_seconds_per_query"]
                ),
            }
        )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--words", type=int, default=64, help="words kept per passage")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over every query")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    records, qrels = dl19(None)
    records = [r for r in records if r.qid in qrels][: args.queries]
    rows: list[dict[str, Any]] = []
    with serve_gguf(n_ctx=8192) as server_url:
        proxy = CountingProxy(server_url)
        try:
            bm25 = mean(
                [
                    ndcg_at_k([d["id"] for d in r.documents(args.depth)], qrels[r.qid])
                    for r in records
                ]
            )
            rows.append(
                {"system": "BM25 (input order)", "ndcg@10": round(bm25, 4), "calls_per_query": 0}
            )
            rankers: dict[str, Ranker] = {}
            errors: dict[str, str] = {}
            for name in args.systems:
                try:
                    rankers[name] = SYSTEMS[name][2](proxy.base_url, args.depth)
                except Exception as error:  # the library cannot run here: say why
                    errors[name] = f"{type(error).__name__}: {error}"
                    print(f"{name}: cannot run: {errors[name]}", flush=True)
            runs, answers = measure(
                rankers, proxy, records, qrels, args.depth, args.words, args.repeats
            )
            for name in args.systems:
                package = SYSTEMS[name][1]
                if name in errors:
                    row: dict[str, Any] = {"system": name, "error": errors[name]}
                else:
                    row = system_row(name, runs[name], records, qrels)
                    row["first_query_last_answer"] = answers[name]
                row["version"] = package_version(package) if package else None
                rows.append(row)
        finally:
            proxy.close()
    verdicts = compare(rows, runs)
    payload = {
        "benchmark": "vs_libraries",
        "model": "SmolLM2-135M-Instruct (GGUF) on llama-cpp-python server, 127.0.0.1",
        "llama_cpp_python": package_version("llama-cpp-python"),
        "queries": len(records),
        "qids": [r.qid for r in records],
        "depth": args.depth,
        "words_per_passage": args.words,
        "repeats": args.repeats,
        "machine": machine(),
        "rows": rows,
        "verdicts": verdicts,
    }
    for verdict in verdicts:
        print(verdict)
    print(f"wrote {write_json('vs_libraries', payload)}")


if __name__ == "__main__":
    main()
