"""API concurrency: rankwise's wall time against a loopback OpenAI-compatible stub with a
fixed latency, next to the one-call-at-a-time pattern of RankGPT / llm-rankers and the ideal
``calls × latency / concurrency``. Also reported: the least time whole waves of at most
``concurrency`` calls can take (100 calls at 16 need 7 waves: 1.4 s at 200 ms, not 1.25 s).
Each scenario is reranked ``--repeats`` times (default 7) and the median kept: the stub runs
in the same process as the client, so on a 2-core machine single runs vary by up to 10%.

    python bench/api_concurrency.py [--latency 0.2] [--concurrency 16]

Writes bench/results/api_concurrency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time

from _common import ROOT, write_json

sys.path.insert(0, str(ROOT))

from rankwise import OpenAIBackend, Reranker
from tests.oracle import oracle, relevance_docs
from tests.stub_server import StubServer

SCENARIOS = [("prp-allpair", 10), ("pointwise", 100), ("listwise", 100)]


async def run(server: StubServer, method: str, n: int, concurrency: int, repeats: int) -> dict:
    backend = OpenAIBackend("stub", base_url=server.base_url, concurrency=concurrency)
    docs = relevance_docs([((i * 7919) % 1000) / 1000 for i in range(n)])
    reranker = Reranker(method, backend)
    times, calls = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        ranked = await reranker.arerank("q", docs)
        times.append(time.perf_counter() - started)
        calls = ranked.usage.calls
        assert sorted(ranked.ids) == sorted(d["id"] for d in docs)
    await backend.aclose()
    return {"seconds": sorted(times)[len(times) // 2], "calls": calls}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=7, help="reranks per scenario; the median is kept"
    )
    args = parser.parse_args()

    def slow_oracle(request):
        reply = oracle(request)
        reply.delay = args.latency
        return reply

    rows = []
    with StubServer(slow_oracle) as server:
        for method, n in SCENARIOS:
            measured = await run(server, method, n, args.concurrency, args.repeats)
            sequential = await run(server, method, n, 1, 1) if n <= 10 else None
            calls = measured["calls"]
            dependent = method == "listwise"  # windows of one query must run in order
            ideal = calls * args.latency / (1 if dependent else min(args.concurrency, calls))
            # Calls go out in whole waves of at most ``concurrency``: the least any client
            # could take (the ideal above counts a last partial wave as a fraction).
            waves = calls if dependent else math.ceil(calls / args.concurrency)
            row = {
                "method": method,
                "candidates": n,
                "calls": calls,
                "rankwise_seconds": round(measured["seconds"], 3),
                "one_at_a_time_seconds": round(
                    sequential["seconds"] if sequential else calls * args.latency, 3
                ),
                "one_at_a_time_measured": sequential is not None,
                "ideal_seconds": round(ideal, 3),
                "whole_waves_seconds": round(waves * args.latency, 3),
            }
            row["ratio_to_ideal"] = round(row["rankwise_seconds"] / ideal, 3)
            row["speedup_vs_one_at_a_time"] = round(
                row["one_at_a_time_seconds"] / row["rankwise_seconds"], 2
            )
            rows.append(row)
            print(row, flush=True)
    payload = {
        "benchmark": "api_concurrency",
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "rows": rows,
    }
    print(f"wrote {write_json('api_concurrency', payload)}")


if __name__ == "__main__":
    asyncio.run(main())
