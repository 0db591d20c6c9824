"""Soak: many concurrent reranks against a loopback stub that injects random faults.
Checks that no document is ever lost or duplicated, and reports faults, retries, fallbacks,
typed errors and peak memory.

    python bench/soak.py [--reranks 1000]

Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import threading
import time
import tracemalloc
from collections import Counter

from _common import ROOT, write_json

sys.path.insert(0, str(ROOT))

from rankwise import BackendError, OpenAIBackend, Reranker
from tests.oracle import oracle, relevance_docs
from tests.stub_server import Reply, StubServer, completion

FAULTS = {  # share of requests that get each fault
    "http_500": 0.05,
    "http_503": 0.03,
    "http_429": 0.04,
    "truncated_json": 0.03,
    "empty_choices": 0.02,
    "prose": 0.04,
    "think_block": 0.03,
}


class FaultyOracle:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.requests = 0

    def __call__(self, request) -> Reply:
        with self.lock:
            self.requests += 1
            roll = self.random.random()
        for fault, share in FAULTS.items():
            if roll < share:
                with self.lock:
                    self.injected[fault] += 1
                return self.fault(fault, request)
            roll -= share
        return oracle(request)

    def fault(self, fault: str, request) -> Reply:
        if fault == "http_500":
            return Reply(status=500, body={"error": {"message": "boom"}})
        if fault == "http_503":
            return Reply(status=503, body={"error": {"message": "busy"}})
        if fault == "http_429":
            return Reply(
                status=429, body={"error": {"message": "slow"}}, headers={"retry-after": "0"}
            )
        if fault == "truncated_json":
            return Reply(body=b'{"id": "x", "choices": [{"mess')
        if fault == "empty_choices":
            return Reply(body={"id": "x", "choices": []})
        if fault == "prose":
            return Reply(body=completion("I think these are all relevant in their own way."))
        answer = oracle(request).body
        text = answer["choices"][0]["message"]["content"]
        answer["choices"][0]["message"]["content"] = "<think>hmm [9] > [1]</think>" + text
        return Reply(body=answer)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reranks", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    tracemalloc.start()
    handler = FaultyOracle(args.seed)
    rng = random.Random(args.seed)
    outcome: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    lost = duplicated = 0
    with StubServer(handler) as server:
        backend = OpenAIBackend(
            "stub",
            base_url=server.base_url,
            concurrency=64,
            backoff=0.01,
            max_backoff=0.05,
            timeout=10,
        )
        methods = ["pointwise", "listwise", "setwise", "prp-heapsort", "first"]

        async def one(index: int) -> None:
            nonlocal lost, duplicated
            docs = relevance_docs([rng.random() for _ in range(args.docs)])
            method = methods[index % len(methods)]
            try:
                ranked = await Reranker(method, backend).arerank(f"query {index}", docs)
            except BackendError:
                outcome["typed_error"] += 1
                return
            except Exception as error:
                outcome[f"unhandled:{type(error).__name__}"] += 1
                return
            ids = ranked.ids
            lost += len({d["id"] for d in docs} - set(ids))
            duplicated += len(ids) - len(set(ids))
            outcome["ok"] += 1
            totals["calls"] += ranked.usage.calls
            totals["retries"] += ranked.usage.retries
            totals["fallbacks"] += len(ranked.trace.fallbacks)
            totals["repairs"] += ranked.trace.count("repair")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.reranks)))
        seconds = time.perf_counter() - started
        await backend.aclose()
    _, peak = tracemalloc.get_traced_memory()
    unhandled = {k: v for k, v in outcome.items() if k.startswith("unhandled")}
    payload = {
        "benchmark": "soak",
        "reranks": args.reranks,
        "documents_per_rerank": args.docs,
        "seconds": round(seconds, 2),
        "requests": handler.requests,
        "faults_injected": dict(handler.injected),
        "faults_total": sum(handler.injected.values()),
        "retries": totals["retries"],
        "fallbacks": totals["fallbacks"],
        "repairs": totals["repairs"],
        "completed": outcome["ok"],
        "typed_errors": outcome["typed_error"],
        "unhandled_exceptions": sum(unhandled.values()),
        "unhandled_detail": unhandled,
        "lost_documents": lost,
        "duplicated_documents": duplicated,
        "peak_python_heap_mb": round(peak / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(payload)
    print(f"wrote {write_json('soak', payload)}")
    assert lost == 0 and duplicated == 0 and not unhandled


if __name__ == "__main__":
    asyncio.run(main())
