"""Packed against padded label and query-likelihood batches on the CPU, side by side.

    python bench/packing.py --queries 3 --depth 20 --parallel 4 --rounds 3

Two backends with the embedded model that differ only in ``pack_prompts`` (the CPU's
default, on: a batch's prompts laid end to end in one row, no padding computed; off: each
prompt padded to the longest of its batch), for ``pointwise-qlm`` (the demo's default:
query likelihood, log-probs of the query's tokens after each passage) and ``pointwise``
(yes/no label), query by query, arms taking turns at going first. Reports seconds per
query, the share of computed positions that were padding in the padded arm, and whether
both arms ranked identically.

Then long prompts: FIRST over ``--parallel`` queries at once (one 20-passage window each,
about 2,000 tokens after a shared prefix), ``--rounds`` rounds, three arms taking turns:
rankwise's default (each long prompt in a packed row of its own, on the fused causal kernel
after the prefix), the packing used before (all prompts in one row, an explicit mask for
the prefix), and padded. Reports median seconds per round and whether the rankings are the
same. Writes ``bench/results/packing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _common import dl19, machine, median, time_rerank, turns, write_json

import rankwise.backends.packed_attention as packed_attention
from rankwise import Reranker
from rankwise.backends.transformers import TransformersBackend
from rankwise.evaluate import QueryRecord

METHODS = ("pointwise-qlm", "pointwise")
ARMS = ("packed", "padded")
LONG_ARMS = ("rankwise", "one row, explicit mask", "padded")


@contextmanager
def packing_before(on: bool) -> Iterator[None]:
    """Inside (when ``on``), a batch's long prompts share one packed row and attend to a
    shared prefix through an explicit mask: the packing before long prompts got rows of
    their own and the causal kernel."""
    shortest, alone = packed_attention.CAUSAL_MIN_LENGTH, packed_attention.ALONE_TOKENS
    if on:
        packed_attention.CAUSAL_MIN_LENGTH = packed_attention.ALONE_TOKENS = 2**62
    try:
        yield
    finally:
        packed_attention.CAUSAL_MIN_LENGTH, packed_attention.ALONE_TOKENS = shortest, alone


async def long_prompts(
    arms: dict[str, TransformersBackend], records: list[QueryRecord], parallel: int, rounds: int
) -> dict[str, Any]:
    """FIRST over ``parallel`` queries at once, by arm: seconds per round, rankings."""
    backends = {
        LONG_ARMS[0]: arms["packed"],
        LONG_ARMS[1]: arms["packed"],
        LONG_ARMS[2]: arms["padded"],
    }
    before = LONG_ARMS[1]
    seconds: dict[str, list[float]] = {arm: [] for arm in LONG_ARMS}
    rankings: dict[str, list[list[str]]] = {arm: [] for arm in LONG_ARMS}
    for number in range(rounds):
        batch = records[number * parallel : (number + 1) * parallel]
        for arm in turns(number, LONG_ARMS):
            backend = backends[arm]
            backend.clear_prefix_cache()
            first = Reranker("first", backend, window=20)
            with packing_before(arm == before):
                started = time.perf_counter()
                ranked = await asyncio.gather(
                    *(first.arerank(r.query, r.documents(20)) for r in batch)
                )
                seconds[arm].append(time.perf_counter() - started)
            rankings[arm].extend(r.ids for r in ranked)
            print(f"first, {parallel} at once, round {number} {arm:22} {seconds[arm][-1]:6.2f} s")
    medians = {arm: round(median(seconds[arm]), 3) for arm in LONG_ARMS}
    return {
        "method": "first",
        "window": 20,
        "parallel": parallel,
        "rounds": rounds,
        "median_seconds_per_round": medians,
        "seconds": {arm: [round(s, 3) for s in seconds[arm]] for arm in LONG_ARMS},
        "speedup_vs_one_row_explicit_mask": round(medians[before] / medians[LONG_ARMS[0]], 2),
        "speedup_vs_padded": round(medians[LONG_ARMS[2]] / medians[LONG_ARMS[0]], 2),
        "same_rankings": all(rankings[arm] == rankings[LONG_ARMS[0]] for arm in LONG_ARMS),
    }


async def timed(
    backend: TransformersBackend, method: str, record: QueryRecord, depth: int
) -> tuple[float, list[str], float]:
    """Seconds, ranked ids, and the padding share of the positions computed."""
    stats = backend.stats
    real, padded = stats.real_tokens, stats.padded_tokens
    reranker = Reranker(method, backend, max_passage_tokens=128)
    seconds, ranked = await time_rerank(reranker, record, depth)
    real, padded = stats.real_tokens - real, stats.padded_tokens - padded
    return seconds, ranked.ids, 1 - real / padded if padded else 0.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4, help="FIRST queries at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of FIRST queries")
    args = parser.parse_args()
    records, _ = dl19(max(args.queries + 1, args.parallel * args.rounds))
    arms = {
        "packed": TransformersBackend("default"),
        "padded": TransformersBackend("default", pack_prompts=False),
    }
    assert arms["packed"].pack_prompts, "packing is refused for this model"
    results: dict[str, Any] = {
        "benchmark": "packing",
        "model": arms["packed"].model_name,
        "methods": [],
    }
    for method in METHODS:
        for backend in arms.values():  # warm-up, unreported
            await timed(backend, method, records[-1], args.depth)
        rows = []
        for number, record in enumerate(records[: args.queries]):
            runs = {}
            for name in turns(number, ARMS):
                backend = arms[name]
                backend.clear_prefix_cache()
                runs[name] = await timed(backend, method, record, args.depth)
            rows.append(
                {
                    "qid": record.qid,
                    "packed_s": round(runs["packed"][0], 3),
                    "padded_s": round(runs["padded"][0], 3),
                    "speedup": round(runs["padded"][0] / runs["packed"][0], 2),
                    "packed_padding": round(runs["packed"][2], 3),
                    "padded_padding": round(runs["padded"][2], 3),
                    "same_ranking": runs["packed"][1] == runs["padded"][1],
                }
            )
        summary = {
            "method": method,
            "depth": args.depth,
            "queries": len(rows),
            "median_packed_s_per_query": median([r["packed_s"] for r in rows]),
            "median_padded_s_per_query": median([r["padded_s"] for r in rows]),
            "median_speedup": round(median([r["padded_s"] / r["packed_s"] for r in rows]), 2),
            "median_padded_padding": median([r["padded_padding"] for r in rows]),
            "identical_rankings": sum(r["same_ranking"] for r in rows),
            "per_query": rows,
        }
        results["methods"].append(summary)
        print(
            f"{method:14} packed {summary['median_packed_s_per_query']} s/q  padded "
            f"{summary['median_padded_s_per_query']} s/q  {summary['median_speedup']}x  "
            f"(padding in the padded arm {summary['median_padded_padding']:.1%})  same ranking "
            f"{summary['identical_rankings']}/{len(rows)}",
            flush=True,
        )
    long = await long_prompts(arms, records, args.parallel, args.rounds)
    results["long_prompts"] = long
    print(
        f"first, {args.parallel} at once: {long['median_seconds_per_round']} s per round, "
        f"{long['speedup_vs_one_row_explicit_mask']}x vs one row with an explicit mask, "
        f"{long['speedup_vs_padded']}x "
        f"vs padded, same rankings {long['same_rankings']}"
    )
    results["machine"] = machine()
    print(f"wrote {write_json('packing', results)}")


if __name__ == "__main__":
    asyncio.run(main())
