"""Shared fixtures: the real embedded model, DL19 data, and a stub OpenAI server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server
