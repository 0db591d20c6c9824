"""Local throughput with the embedded model: batched forward passes against one prompt at a
time, and rankwise's overhead against the raw model forward time for the same prompts.

    python bench/local_throughput.py --queries 3 --depth 20

For pointwise and PRP all-pairs on DL19 (same queries, same model, side by side in one run):

* ``batched``: the default backend for the device (micro-batches of up to 32 prompts on a
  CPU and 16 on a GPU; on a CPU the prompts of a batch are packed end to end in one row with
  no padding, a prompt prefix shared by a batch, such as PRP's query and passage A, is
  computed once, and prefixes kept from earlier batches of the same rerank are reused; the
  store is emptied before each query; on a GPU prompts are padded, there is no prefix reuse
  by default, and passes replay CUDA graphs);
* ``batched_padded`` (when the default packs): the same with every prompt padded to the
  longest of its batch instead, which shows what packing saves;
* ``batched_no_prefix_store``: padded batches without prefixes kept across batches, and
  plain ``model(...)`` passes with no CUDA graphs (on a GPU, ``batched`` without graphs):
  the arm whose batches are replayed raw;
* ``batched_no_prefix_reuse``: the default without any prefix reuse;
* ``batched_prefix_reuse`` (GPU only): the CPU's default reuse (16 tokens, 256 MB) turned
  on, which shows why it is off there by default;
* ``one_at_a_time``: ``max_batch=1`` and no reuse, one whole prompt per forward pass, as a
  plain loop over the prompts would run them;
* ``raw_forward``: the exact token ids of ``batched_no_prefix_store``, in the exact batches
  it formed, run through plain ``model(...)`` calls with nothing else around them (padded,
  as that arm pads, so the two compute the same positions).
  rankwise's overhead is ``batched_no_prefix_store / raw_forward - 1`` (prompt rendering,
  tokenising, batching, parsing, asyncio); on a GPU ``batched / raw_forward - 1`` is also
  reported (``graphed_vs_raw``): the default, graphs and all, against plain ``model(...)``;
* ``direct_batches``: the same batches of ``batched_no_prefix_store`` (its recorded
  requests) through rankwise's own batch function, called one after another with no event
  loop, no prompt work and no batching: ``direct_batches / raw_forward - 1`` is the part of
  the overhead spent in each batch (padding the ids on the host, copying them to the device,
  log-softmax, picking the label log-probs, the copy back), and the rest of the overhead is
  prompt work and scheduling;
* ``raw_one_at_a_time``: the same token ids through plain ``model(...)``, one prompt per
  call. ``raw_one_at_a_time / raw_forward`` is what those batches can gain on this machine
  with nothing around them: the ceiling for batching plus in-batch prefix sharing, against
  which rankwise's own speed-up is read.

Pointwise is measured twice: in float32 (the default) and in bfloat16, where CPUs with
matrix units (AMX) run wide matrix products much faster than narrow ones, so batching
gains more. ``--parts`` runs some of the three parts only (``pointwise``, ``prp-allpair``,
``bfloat16``), and ``--name`` writes the result under another name, so that a run on
another machine, or of one part, leaves the committed file alone.

On a GPU a query takes a fraction of a second, so ``--repeats N`` times every arm N times
per query and keeps the median.

Also reported: padding waste (share of computed positions that were padding) and effective
tokens per second (real prompt tokens / forward seconds). Writes
``bench/results/local_throughput.json`` (``local_throughput_cuda.json`` with
``--device cuda``, ``NAME.json`` with ``--name NAME``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import dl19, left_padded, machine, median, result_name, time_rerank, write_json

from rankwise import Reranker
from rankwise.backends.batching import reusable_prefix
from rankwise.backends.kv_cache import cache_keyword, returned_cache
from rankwise.backends.transformers import DType, TransformersBackend, device_defaults
from rankwise.evaluate import QueryRecord

TARGET_SPEEDUP = 3.0
TARGET_OVERHEAD = 0.10


class BatchRecorder:
    """While active, keeps every label batch the backend runs (its requests)."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.requests: list[list[Any]] = []
        self._batcher = backend._labels
        self._original = backend._labels._run_batch

    @property
    def batches(self) -> list[list[list[int]]]:
        """The token ids of every recorded batch."""
        return [[list(request.input_ids) for request in batch] for batch in self.requests]

    def _recording(self, requests: list[Any]) -> list[Any]:
        self.requests.append(list(requests))
        return self._original(requests)

    def __enter__(self) -> BatchRecorder:
        self._batcher._run_batch = self._recording
        return self

    def __exit__(self, *_: object) -> None:
        self._batcher._run_batch = self._original


def raw_one_at_a_time_seconds(
    backend: TransformersBackend, batches: list[list[list[int]]]
) -> float:
    """Plain transformers, one whole prompt per forward pass, over the same token ids."""
    return raw_forward_seconds(backend, [[prompt] for batch in batches for prompt in batch])


def direct_batches_seconds(backend: TransformersBackend, batches: list[list[Any]]) -> float:
    """rankwise's own batch function over recorded label batches, one after another, with
    no event loop around it (each call ends with its results on the host)."""
    started = time.perf_counter()
    for requests in batches:
        backend._run_labels(requests)
    return time.perf_counter() - started


def raw_forward_seconds(backend: TransformersBackend, batches: list[list[list[int]]]) -> float:
    """Plain transformers over the recorded batches: left padding, one forward pass each;
    where the batch shares a prefix of ``min_shared_prefix`` tokens or more, that prefix is
    run once and its cache expanded, as rankwise does."""
    import torch

    model, pad, device = backend.model, backend._pad_id, backend.model.device
    keyword = cache_keyword(model)  # read once, outside the timed loop
    started = time.perf_counter()
    for sequences in batches:
        shared = reusable_prefix(sequences, backend.min_shared_prefix)
        ids, mask, positions = left_padded([s[shared:] for s in sequences], pad, device)
        positions = positions + shared
        with torch.inference_mode():
            cache = None
            if shared:
                prefix = torch.tensor([sequences[0][:shared]], device=device)
                cache = returned_cache(model(input_ids=prefix, use_cache=True))
                cache.batch_repeat_interleave(len(sequences))
                ones = torch.ones((len(sequences), shared), dtype=mask.dtype, device=device)
                mask = torch.cat([ones, mask], 1)
            model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{keyword: cache},
                logits_to_keep=1,
                use_cache=cache is not None,
            ).logits.float().log_softmax(dim=-1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


async def timed_rerank(
    backend: TransformersBackend, method: str, record: QueryRecord, depth: int
) -> tuple[float, list[str], int]:
    reranker = Reranker(method, backend, max_passage_tokens=128)
    seconds, ranked = await time_rerank(reranker, record, depth)
    return seconds, ranked.ids, ranked.usage.calls


async def repeated_rerank(
    backend: TransformersBackend, method: str, record: QueryRecord, depth: int, repeats: int
) -> tuple[float, list[str], int]:
    """Median seconds of ``repeats`` reranks (the store emptied before each), with the first
    run's ranking and calls."""
    runs = []
    for _ in range(repeats):
        backend.clear_prefix_cache()
        runs.append(await timed_rerank(backend, method, record, depth))
    return median([seconds for seconds, _, _ in runs]), runs[0][1], runs[0][2]


async def compare(
    method: str,
    arms: dict[str, TransformersBackend],
    records: list[QueryRecord],
    depth: int,
    repeats: int = 1,
) -> dict[str, Any]:
    """Every arm and the raw forward replay, query by query, interleaved."""
    dtype = str(arms["batched"].model.dtype).removeprefix("torch.")
    graphed = arms["batched"].graphs is not None
    rows = []
    speedups, overheads = [], []  # unrounded, for the medians and the targets
    for record in records:
        fast, fast_ids, calls = await repeated_rerank(
            arms["batched"], method, record, depth, repeats
        )
        exact = arms["batched_no_prefix_store"]
        before = _stats(exact)
        with BatchRecorder(exact) as recorder:  # the first of its `repeats` runs
            recorded, _, _ = await timed_rerank(exact, method, record, depth)
        after = _stats(exact)
        more = [await timed_rerank(exact, method, record, depth) for _ in range(repeats - 1)]
        measured = median([recorded, *(seconds for seconds, _, _ in more)])
        batches = recorder.batches
        raw = median([raw_forward_seconds(exact, batches) for _ in range(repeats)])
        direct = median([direct_batches_seconds(exact, recorder.requests) for _ in range(repeats)])
        raw_single = median([raw_one_at_a_time_seconds(exact, batches) for _ in range(repeats)])
        plain, _, _ = await repeated_rerank(
            arms["batched_no_prefix_reuse"], method, record, depth, repeats
        )
        padded = None
        if "batched_padded" in arms:
            padded, _, _ = await repeated_rerank(
                arms["batched_padded"], method, record, depth, repeats
            )
        reuse = None
        if "batched_prefix_reuse" in arms:
            reuse, _, _ = await repeated_rerank(
                arms["batched_prefix_reuse"], method, record, depth, repeats
            )
        slow, slow_ids, _ = await repeated_rerank(
            arms["one_at_a_time"], method, record, depth, repeats
        )
        real = after["real_tokens"] - before["real_tokens"]
        positions = after["padded_tokens"] - before["padded_tokens"]
        forward = after["seconds"] - before["seconds"]
        reused = after["reused_tokens"] - before["reused_tokens"]
        row = {
            "qid": record.qid,
            "calls": calls,
            "batches": after["batches"] - before["batches"],
            "batched_s": round(fast, 3),
            "batched_no_prefix_store_s": round(measured, 3),
            "batched_no_prefix_reuse_s": round(plain, 3),
            **({"batched_padded_s": round(padded, 3)} if padded is not None else {}),
            **({"batched_prefix_reuse_s": round(reuse, 3)} if reuse is not None else {}),
            "one_at_a_time_s": round(slow, 3),
            "raw_forward_s": round(raw, 3),
            "direct_batches_s": round(direct, 3),
            "raw_one_at_a_time_s": round(raw_single, 3),
            "raw_speedup": round(raw_single / raw, 2),
            "speedup": round(slow / fast, 2),
            "overhead": round(measured / raw - 1, 3),
            "batch_work_overhead": round(direct / raw - 1, 3),
            **({"graphed_vs_raw": round(fast / raw - 1, 3)} if graphed else {}),
            "padding_waste": round(1 - real / positions, 3) if positions else 0.0,
            "reused_prefix_tokens": reused,
            "tokens_per_s": round((real + reused) / forward, 1) if forward else 0.0,
            "same_ranking": fast_ids == slow_ids,
        }
        rows.append(row)
        speedups.append(slow / fast)
        overheads.append(measured / raw - 1)
        print(
            f"{method:12} {dtype:8} {record.qid:>8}  batched {row['batched_s']:7.2f} s  (no store "
            f"{row['batched_no_prefix_store_s']:.2f} s, no prefix reuse "
            f"{row['batched_no_prefix_reuse_s']:.2f} s)  one-at-a-time "
            f"{row['one_at_a_time_s']:7.2f} s  ({row['speedup']}×)  raw forward "
            f"{row['raw_forward_s']:7.2f} s (one at a time {row['raw_one_at_a_time_s']:.2f} s, "
            f"{row['raw_speedup']}×)  overhead {row['overhead']:+.1%} (in batches "
            f"{row['batch_work_overhead']:+.1%})  padding "
            f"{row['padding_waste']:.1%}  {row['tokens_per_s']:.0f} tok/s"
            + (f"  graphed vs raw {row['graphed_vs_raw']:+.1%}" if graphed else ""),
            flush=True,
        )
    speedup, overhead = median(speedups), median(overheads)
    return {
        "method": method,
        "dtype": dtype,
        "depth": depth,
        "queries": len(rows),
        "repeats": repeats,
        "median_batched_s_per_query": round(median([r["batched_s"] for r in rows]), 3),
        "median_batched_no_prefix_store_s_per_query": round(
            median([r["batched_no_prefix_store_s"] for r in rows]), 3
        ),
        "median_batched_no_prefix_reuse_s_per_query": round(
            median([r["batched_no_prefix_reuse_s"] for r in rows]), 3
        ),
        **(
            {
                "median_batched_padded_s_per_query": round(
                    median([r["batched_padded_s"] for r in rows]), 3
                )
            }
            if padded is not None
            else {}
        ),
        **(
            {
                "median_batched_prefix_reuse_s_per_query": round(
                    median([r["batched_prefix_reuse_s"] for r in rows]), 3
                )
            }
            if reuse is not None
            else {}
        ),
        "median_one_at_a_time_s_per_query": round(median([r["one_at_a_time_s"] for r in rows]), 3),
        "median_raw_forward_s_per_query": round(median([r["raw_forward_s"] for r in rows]), 3),
        "median_raw_one_at_a_time_s_per_query": round(
            median([r["raw_one_at_a_time_s"] for r in rows]), 3
        ),
        "median_speedup": round(speedup, 2),
        "median_raw_speedup": round(median([r["raw_speedup"] for r in rows]), 2),
        "median_overhead": round(overhead, 3),
        "median_batch_work_overhead": round(median([r["batch_work_overhead"] for r in rows]), 3),
        **(
            {"median_graphed_vs_raw": round(median([r["graphed_vs_raw"] for r in rows]), 3)}
            if graphed
            else {}
        ),
        "median_padding_waste": median([r["padding_waste"] for r in rows]),
        "median_tokens_per_s": median([r["tokens_per_s"] for r in rows]),
        "speedup_target": TARGET_SPEEDUP,
        "speedup_target_met": speedup >= TARGET_SPEEDUP,
        "overhead_target": TARGET_OVERHEAD,
        "overhead_target_met": overhead <= TARGET_OVERHEAD,
        "identical_rankings": sum(r["same_ranking"] for r in rows),
        "per_query": rows,
    }


async def many_queries(
    batched: TransformersBackend, records: list[QueryRecord], depth: int, repeats: int
) -> dict[str, Any]:
    """Pointwise for several queries: one after another vs all at once (shared batches).

    The two arms alternate for ``repeats + 1`` rounds, the prefix store emptied before each.
    The first round is reported on its own (``cold``): all at once, batches mix queries into
    shapes not seen before, which on a GPU run plain or are captured as CUDA graphs then.
    The medians of the rounds after it are the steady state.
    """

    async def one_after_another() -> None:
        for record in records:
            await timed_rerank(batched, "pointwise", record, depth)

    async def all_at_once() -> None:
        await asyncio.gather(*(timed_rerank(batched, "pointwise", r, depth) for r in records))

    arms = {"one_query_after_another": one_after_another, "all_queries_at_once": all_at_once}
    rounds: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats + 1):
        for name, run in arms.items():
            batched.clear_prefix_cache()
            started = time.perf_counter()
            await run()
            rounds[name].append(time.perf_counter() - started)
    sequential = median(rounds["one_query_after_another"][1:])
    together = median(rounds["all_queries_at_once"][1:])
    result = {
        "method": "pointwise",
        "depth": depth,
        "queries": len(records),
        "rounds": repeats,
        "one_query_after_another_s": round(sequential, 3),
        "all_queries_at_once_s": round(together, 3),
        "speedup": round(sequential / together, 2),
        "cold_one_query_after_another_s": round(rounds["one_query_after_another"][0], 3),
        "cold_all_queries_at_once_s": round(rounds["all_queries_at_once"][0], 3),
    }
    print(f"pointwise, {len(records)} queries at once: {result}", flush=True)
    return result


def _stats(backend: TransformersBackend) -> dict[str, float]:
    stats = backend.stats
    return {
        "batches": stats.batches,
        "real_tokens": stats.real_tokens,
        "padded_tokens": stats.padded_tokens,
        "reused_tokens": stats.reused_tokens,
        "seconds": stats.seconds,
    }


def make_arms(dtype: DType, device: str) -> dict[str, TransformersBackend]:
    """The configurations compared, all with the embedded model in ``dtype``."""
    common: dict[str, Any] = {"dtype": dtype, "device": device}
    batched = TransformersBackend("default", **common)
    plain = {"cuda_graphs": False} if batched.graphs is not None else {}
    arms = {
        "batched": batched,
        "batched_no_prefix_store": TransformersBackend(
            "default", prefix_cache_mb=0, pack_prompts=False, **plain, **common
        ),
        "batched_no_prefix_reuse": TransformersBackend("default", min_shared_prefix=0, **common),
        "one_at_a_time": TransformersBackend("default", max_batch=1, min_shared_prefix=0, **common),
    }
    if arms["batched"].pack_prompts:
        arms["batched_padded"] = TransformersBackend("default", pack_prompts=False, **common)
    cpu = device_defaults("cpu")
    if arms["batched"].min_shared_prefix != cpu.min_shared_prefix:  # show what reuse would do
        arms["batched_prefix_reuse"] = TransformersBackend(
            "default",
            min_shared_prefix=cpu.min_shared_prefix,
            prefix_cache_mb=cpu.prefix_cache_mb,
            **common,
        )
    return arms


PARTS = ("pointwise", "prp-allpair", "bfloat16")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--pairwise-queries", type=int, default=2)
    parser.add_argument(
        "--bf16-queries", type=int, default=6, help="queries for pointwise in bfloat16 (cheap)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm and query")
    parser.add_argument(
        "--parts",
        type=parts_option,
        default=PARTS,
        help="comma-separated parts to run: pointwise (float32, with the many-queries arm), "
        "prp-allpair (float32), bfloat16 (pointwise); all by default. PRP all-pairs is the "
        "slow part: about 10 to 20 minutes per query on a 2-core CPU",
    )
    parser.add_argument(
        "--name",
        help="result file name under bench/results/, without .json (default "
        "local_throughput, or local_throughput_cuda with --device cuda)",
    )
    args = parser.parse_args()
    records, _ = dl19(max(args.queries, args.bf16_queries))
    bf16_records, records = records[: args.bf16_queries], records[: args.queries]
    float32 = {"pointwise", "prp-allpair"} & set(args.parts)  # the parts that need it
    arms = make_arms("float32", args.device) if float32 else {}
    bf16_arms = make_arms("bfloat16", args.device) if "bfloat16" in args.parts else {}
    batched = (arms or bf16_arms)["batched"]  # the model and batch size, alike in both
    for backend in [*arms.values(), *bf16_arms.values()]:  # warm-up at full size, unreported
        await timed_rerank(backend, "pointwise", records[-1], args.depth)
    if "prp-allpair" in args.parts:
        for backend in arms.values():  # only float32 runs all-pairs
            await timed_rerank(backend, "prp-allpair", records[-1], 5)
    methods = []
    if "pointwise" in args.parts:
        methods.append(await compare("pointwise", arms, records, args.depth, args.repeats))
    if "prp-allpair" in args.parts:
        pairwise = records[: args.pairwise_queries]
        methods.append(await compare("prp-allpair", arms, pairwise, args.depth, args.repeats))
    if "bfloat16" in args.parts:
        methods.append(
            await compare("pointwise", bf16_arms, bf16_records, args.depth, args.repeats)
        )
    results: dict[str, Any] = {
        "benchmark": "local_throughput",
        "model": batched.model_name,
        "dtypes": list(dict.fromkeys(row["dtype"] for row in methods)),
        "device": args.device,
        "max_batch": batched._labels.max_batch,
        "max_passage_tokens": 128,
        "methods": methods,
        **(
            {"many_queries": await many_queries(batched, records, args.depth, args.repeats)}
            if "pointwise" in args.parts
            else {}
        ),
        "machine": machine(),
    }
    for row in results["methods"]:
        print(
            f"{row['method']} {row['dtype']}: batched {row['median_batched_s_per_query']} s/query"
            f" vs {row['median_one_at_a_time_s_per_query']} one at a time = "
            f"{row['median_speedup']}× (plain model(...) over the same batches: "
            f"{row['median_raw_speedup']}×; target ≥{TARGET_SPEEDUP}×: "
            f"{'met' if row['speedup_target_met'] else 'MISSED'}); overhead vs raw forward "
            f"{row['median_overhead']:+.1%} (target ≤{TARGET_OVERHEAD:.0%}: "
            f"{'met' if row['overhead_target_met'] else 'MISSED'})"
            + (
                f"; graphed vs raw forward {row['median_graphed_vs_raw']:+.1%}"
                if "median_graphed_vs_raw" in row
                else ""
            )
        )
    name = args.name or result_name("local_throughput", args.device)
    print(f"wrote {write_json(name, results)}")


def parts_option(text: str) -> tuple[str, ...]:
    """``--parts``: names from :data:`PARTS`, comma-separated, or an error naming them."""
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(PARTS)}"
        )
    return parts


if __name__ == "__main__":
    asyncio.run(main())
