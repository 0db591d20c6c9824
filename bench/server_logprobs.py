"""What asking for log-probs costs on the llama.cpp server that ``vs_libraries`` drives.

    ./run bench server_logprobs --queries 3 --repeats 3

llama-cpp-python's server (``--logits_all``, which it needs to return log-probs) computes
the log-probabilities of every prompt position when a request that is not streamed asks for
any; for a streamed request it computes them only at the generated tokens. rankwise's FIRST
and pointwise need log-probs; RankGPT-style generation does not. For each query this sends
rankwise FIRST's exact request (captured through the counting proxy of ``vs_libraries``) as
it is, streamed (what ``OpenAIBackend(stream_logprobs=True)`` sends) and without
``logprobs``/``top_logprobs``, arms taking turns at going first, the server's prompt cache
cleared before each, and keeps the medians. Writes ``bench/results/server_logprobs.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _common import dl19, machine, median, turns, write_json
from vs_libraries import (
    CountingProxy,
    cut_words,
    package_version,
    post_chat,
    rankwise_system,
    read_reply,
)

from rankwise.llamacpp import serve_gguf

ARMS = ("with log-probs", "with log-probs, streamed", "without log-probs")


def timed(url: str, body: dict[str, Any]) -> tuple[float, bytes]:
    """Seconds one chat completion took (a streamed one read to its end), and its reply."""
    started = time.perf_counter()
    payload = post_chat(url, body)
    return time.perf_counter() - started, payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--words", type=int, default=64, help="words kept per passage")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    records, qrels = dl19(None)
    records = [r for r in records if r.qid in qrels][: args.queries]
    rows = []
    with serve_gguf(n_ctx=8192) as url:
        proxy = CountingProxy(url)
        try:
            first = rankwise_system(
                "first", proxy.base_url, args.depth, window=args.depth, step=args.depth
            )
            for record in records:
                first(record.query, cut_words(record.documents(args.depth), args.words))
                assert proxy.last_body is not None
                asked = json.loads(proxy.last_body)
                bodies = {
                    ARMS[0]: asked,
                    ARMS[1]: {**asked, "stream": True},
                    ARMS[2]: {k: v for k, v in asked.items() if "logprobs" not in k},
                }
                seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
                answers: dict[str, set[str | None]] = {arm: set() for arm in ARMS}
                for repeat in range(args.repeats):
                    for arm in turns(repeat, ARMS):
                        proxy.clear_prompt_cache()
                        elapsed, payload = timed(url, bodies[arm])
                        seconds[arm].append(round(elapsed, 3))
                        answers[arm].add(read_reply(payload)[1])
                        if arm == ARMS[0]:
                            prompt_tokens = json.loads(payload)["usage"]["prompt_tokens"]
                whole, streamed, without = (median(seconds[arm]) for arm in ARMS)
                row = {
                    "qid": record.qid,
                    "prompt_tokens": prompt_tokens,
                    "max_tokens": asked.get("max_tokens"),
                    "seconds": seconds,
                    "same_answer_in_every_arm": len(set().union(*answers.values())) == 1,
                    "median_with_logprobs_s": round(whole, 3),
                    "median_streamed_s": round(streamed, 3),
                    "median_without_logprobs_s": round(without, 3),
                    "logprobs_cost_s": round(whole - without, 3),
                    "streamed_logprobs_cost_s": round(streamed - without, 3),
                }
                rows.append(row)
                print(row, flush=True)
        finally:
            proxy.close()
    payload = {
        "benchmark": "server_logprobs",
        "server": (
            "llama-cpp-python server (--logits_all True, --interrupt_requests False), 127.0.0.1"
        ),
        "llama_cpp_python": package_version("llama-cpp-python"),
        "depth": args.depth,
        "words_per_passage": args.words,
        "repeats": args.repeats,
        "machine": machine(),
        "rows": rows,
        "median_logprobs_cost_s": round(median([r["logprobs_cost_s"] for r in rows]), 3),
        "median_share_of_request": round(
            median([r["logprobs_cost_s"] / r["median_with_logprobs_s"] for r in rows]), 3
        ),
        "median_streamed_logprobs_cost_s": round(
            median([r["streamed_logprobs_cost_s"] for r in rows]), 3
        ),
        "median_speedup_streamed": round(
            median([r["median_with_logprobs_s"] / r["median_streamed_s"] for r in rows]), 3
        ),
    }
    print(f"wrote {write_json('server_logprobs', payload)}")


if __name__ == "__main__":
    main()
