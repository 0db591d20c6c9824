"""How much batching can gain on this machine at most: the model's forward passes measured
against the device's matrix-multiply peak, with plain ``model(...)`` calls and nothing of
rankwise around them.

    python bench/compute_ceiling.py --queries 3 --depth 20

Batching makes a forward pass faster only by running the device closer to its peak
arithmetic rate. If one prompt at a time already runs near that peak, no batching can be
much faster, whatever the library. For the exact pointwise prompts rankwise sends on DL19
(same model, token ids from the local backend), in float32 and bfloat16, side by side in
one run:

* ``peak``: the best rate of large square matrix products (2048 and 3072), GFLOP/s;
* ``one_at_a_time``: every prompt in its own forward pass;
* ``batched``: the same prompts, 16 at a time, left-padded, as the local backend batches them.

Floating-point operations are counted by ``torch.utils.flop_counter.FlopCounterMode`` on
the one-at-a-time passes (the useful work: no padding). An operation it does not count
lowers both rates, so the ceiling it gives is, if anything, too high. ``ceiling`` is
``peak / one_at_a_time rate``: the most any batching could gain over one prompt at a time
without computing less, if every operation ran at the matrix-multiply peak. Most of the
rest of a forward pass (normalisation, activations, rotary embeddings, attention) is
element-wise work that grows with the tokens and gains little from batching, so
``profiled_ceiling`` is a closer estimate, not a bound: ``torch.profiler`` measures the
share of a batched pass spent in matrix products, and the estimate is the one-at-a-time
time over the batched pass's other work plus its matrix products at peak.

Writes ``bench/results/compute_ceiling.json`` (``compute_ceiling_cuda.json`` with
``--device cuda``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import dl19, left_padded, machine, median, result_name, write_json

from rankwise import Reranker
from rankwise.backends.dry_run import DryRunBackend
from rankwise.backends.transformers import TransformersBackend

BATCH = 16


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gflops(dtype: Any, device: Any, repeats: int = 5) -> float:
    """The best rate of large square matrix products."""
    import torch

    best = 0.0
    for size in (2048, 3072):
        a = torch.randn(size, size, dtype=dtype, device=device)
        b = torch.randn(size, size, dtype=dtype, device=device)
        a @ b  # warm-up
        synchronize(a.device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(a.device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


async def pointwise_prompts(backend: TransformersBackend, records: list, depth: int) -> list:
    """The token ids of every pointwise prompt rankwise sends for ``records``."""
    prompts: list[list[int]] = []
    original = backend.encode_prompt

    def recording(text: str) -> list[int]:
        ids = original(text)
        prompts.append(ids)
        return ids

    backend.encode_prompt = recording  # type: ignore[method-assign]
    try:
        for record in records:
            reranker = Reranker("pointwise", DryRunBackend(backend), max_passage_tokens=128)
            await reranker.arerank(record.query, record.documents(depth))
    finally:
        del backend.encode_prompt
    return prompts


def forward(model: Any, pad: int, batch: list[list[int]]) -> None:
    import torch

    ids, mask, positions = left_padded(batch, pad, model.device)
    with torch.inference_mode():
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=1,
            use_cache=False,
        )


def timed(model: Any, pad: int, batches: list[list[list[int]]]) -> float:
    synchronize(model.device)
    started = time.perf_counter()
    for batch in batches:
        forward(model, pad, batch)
    synchronize(model.device)
    return time.perf_counter() - started


def counted_flops(model: Any, pad: int, prompts: list[list[int]]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        for ids in prompts:
            forward(model, pad, [ids])
    return int(counter.get_total_flops())


MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def matmul_share(model: Any, pad: int, batches: list[list[list[int]]]) -> float:
    """The share of the batched passes' host time spent in matrix products."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        timed(model, pad, batches)
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    products = sum(event.self_cpu_time_total for event in events if event.key in MATMULS)
    return products / total if total else 0.0


def measure(backend: TransformersBackend, prompts: list[list[int]], repeats: int) -> dict[str, Any]:
    import torch

    model, pad = backend.model, backend._pad_id
    dtype = str(model.dtype).removeprefix("torch.")
    single = [[ids] for ids in prompts]
    batched = [prompts[i : i + BATCH] for i in range(0, len(prompts), BATCH)]
    timed(model, pad, batched[:1])  # warm-up
    flops = counted_flops(model, pad, prompts)
    one, many = [], []
    for _ in range(repeats):  # interleaved
        one.append(timed(model, pad, single))
        many.append(timed(model, pad, batched))
    peak = peak_gflops(getattr(torch, dtype), model.device)
    share = matmul_share(model, pad, batched) if model.device.type == "cpu" else None
    one_rate = flops / median(one) / 1e9
    many_rate = flops / median(many) / 1e9
    result = {
        "dtype": dtype,
        "prompts": len(prompts),
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "gflop_per_prompt": round(flops / len(prompts) / 1e9, 3),
        "peak_gflops": round(peak, 1),
        "one_at_a_time_s": round(median(one), 3),
        "batched_s": round(median(many), 3),
        "one_at_a_time_gflops": round(one_rate, 1),
        "batched_gflops": round(many_rate, 1),
        "one_at_a_time_share_of_peak": round(one_rate / peak, 3),
        "batched_share_of_peak": round(many_rate / peak, 3),
        "batching_speedup": round(median(one) / median(many), 2),
        "ceiling": round(peak / one_rate, 2),
    }
    if share is not None:
        other = median(many) * (1 - share)
        result["batched_matmul_share"] = round(share, 3)
        result["profiled_ceiling"] = round(median(one) / (other + flops / peak / 1e9), 2)
    print(
        f"{dtype:9} peak {result['peak_gflops']} GFLOP/s; one prompt at a time "
        f"{result['one_at_a_time_gflops']} GFLOP/s ({result['one_at_a_time_share_of_peak']:.0%} "
        f"of peak), batched {result['batched_gflops']} GFLOP/s "
        f"({result['batched_share_of_peak']:.0%}); batching {result['batching_speedup']}×, "
        f"at most {result['ceiling']}× (matrix products {result.get('batched_matmul_share', 0):.0%}"
        f" of a batched pass; about {result.get('profiled_ceiling')}× with the rest as it is)",
        flush=True,
    )
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument(
        "--name",
        help="result file name under bench/results/, without .json (default "
        "compute_ceiling, or compute_ceiling_cuda with --device cuda)",
    )
    args = parser.parse_args()
    records, _ = dl19(args.queries)
    full = TransformersBackend("default", device=args.device)  # float32: collects the prompts too
    prompts = await pointwise_prompts(full, records, args.depth)
    rows = [measure(full, prompts, args.repeats)]
    del full  # one model in memory at a time
    half = TransformersBackend("default", dtype="bfloat16", device=args.device)
    rows.append(measure(half, prompts, args.repeats))
    payload = {
        "benchmark": "compute_ceiling",
        "method": "pointwise",
        "depth": args.depth,
        "queries": args.queries,
        "batch": BATCH,
        "device": args.device,
        "rows": rows,
        "machine": machine(),
    }
    name = args.name or result_name("compute_ceiling", args.device)
    print(f"wrote {write_json(name, payload)}")


if __name__ == "__main__":
    asyncio.run(main())
