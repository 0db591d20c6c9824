"""Helpers shared by the benchmarks: data loading, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rankwise.evaluate import QueryRecord, load_qrels, load_queries, mean
from rankwise.reranker import Reranker
from rankwise.types import RankedList

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DL19 = ROOT / "data" / "dl19"


def dl19(queries: int | None) -> tuple[list[QueryRecord], dict[str, dict[str, int]]]:
    """The first ``queries`` DL19 queries and the qrels."""
    return load_queries(DL19 / "bm25-top100.jsonl", queries), load_qrels(DL19 / "qrels.txt")


async def time_rerank(
    reranker: Reranker, record: QueryRecord, depth: int
) -> tuple[float, RankedList]:
    """Seconds one rerank of ``record``'s first ``depth`` candidates took, and its result."""
    started = time.perf_counter()
    ranked = await reranker.arerank(record.query, record.documents(depth))
    return time.perf_counter() - started, ranked


def against_first_stage(scores: dict[str, float], first_stage: dict[str, float]) -> dict[str, Any]:
    """Mean nDCG@10 of per-query ``scores``, and the queries better and worse than the
    first stage's ``first_stage`` scores for the same queries."""
    return {
        "ndcg@10": round(mean(list(scores.values())), 4),
        "better_than_bm25": sum(scores[q] > first_stage[q] for q in scores),
        "worse_than_bm25": sum(scores[q] < first_stage[q] for q in scores),
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on (without the torch fields where torch is not
    installed, as in ``.venv-libs``)."""
    model, features = _cpu_info()
    found: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": model,
        "cpu_features": features,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import torch
    except ImportError:
        return found
    found["torch_threads"] = torch.get_num_threads()
    found["torch"] = torch.__version__
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name()
    return found


MATRIX_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""CPU flags that decide how fast float32 and bfloat16 matrix products run."""


def _cpu_info() -> tuple[str, list[str]]:
    """The processor's name and which of :data:`MATRIX_FEATURES` it has, from
    ``/proc/cpuinfo`` (Linux); empty where that is not known."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, [feature for feature in MATRIX_FEATURES if feature in flags]


def result_name(benchmark: str, device: str) -> str:
    """``benchmark`` on the CPU, ``benchmark_cuda`` (say) elsewhere, so runs on different
    devices keep separate result files."""
    kind = device.split(":")[0]
    return benchmark if kind == "cpu" else f"{benchmark}_{kind}"


def left_padded(sequences: list[list[int]], pad: int, device: Any) -> tuple[Any, Any, Any]:
    """Token ids, attention mask and position ids of ``sequences`` left-padded to one width,
    as plain ``model(...)`` calls take them (the benchmarks' baselines, not rankwise)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    return ids, mask, (mask.cumsum(dim=1) - 1).clamp(min=0)


def turns(number: int, arms: tuple[str, ...]) -> tuple[str, ...]:
    """``arms`` rotated by ``number``: the order of turn ``number``, so that over the turns
    no arm always goes first, on a machine another arm has just warmed."""
    shift = number % len(arms)
    return arms[shift:] + arms[:shift]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/NAME.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
