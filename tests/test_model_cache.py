"""The converted-model cache: one copy per transformers major version, and a copy that
cannot be loaded is converted again instead of failing every load."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import transformers

from rankwise import Reranker
from rankwise.backends.model_files import (
    converted_model_dir,
    default_gguf_path,
    installed_transformers_major,
    is_complete,
)


def test_each_transformers_major_version_gets_its_own_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RANKWISE_CACHE_DIR", str(tmp_path))
    gguf = default_gguf_path()
    four, five = converted_model_dir(gguf, 4), converted_model_dir(gguf, 5)
    assert four != five
    assert four.parent == five.parent == tmp_path / "models"
    assert four.name.endswith("-transformers4") and five.name.endswith("-transformers5")
    installed = int(transformers.__version__.split(".")[0])
    assert installed_transformers_major() == installed
    assert converted_model_dir(gguf) == converted_model_dir(gguf, installed)


def _damage(folder: Path, part: str) -> None:
    """Spoil one file of a complete cached copy."""
    if part == "config":
        (folder / "config.json").write_text("{")
    else:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])


@pytest.mark.parametrize("part", ["config", "weights"])
def test_an_unloadable_cached_copy_is_converted_again(
    local_backend, dl19, tmp_path, monkeypatch, caplog, part
) -> None:
    from rankwise.backends.transformers import TransformersBackend

    shipped = converted_model_dir(default_gguf_path())
    assert is_complete(shipped), "the session's backend converts the model first"
    monkeypatch.setenv("RANKWISE_CACHE_DIR", str(tmp_path))
    folder = converted_model_dir(default_gguf_path())
    shutil.copytree(shipped, folder)
    _damage(folder, part)
    with pytest.raises(Exception):  # noqa: B017 - whichever error this part gives
        transformers.AutoModelForCausalLM.from_pretrained(folder)

    with caplog.at_level(logging.WARNING, logger="rankwise.backends.transformers"):
        backend = TransformersBackend("default")
    assert any("converting" in record.getMessage() for record in caplog.records)
    assert is_complete(folder)
    json.loads((folder / "config.json").read_text())
    assert (folder / "model.safetensors").stat().st_size > 100_000_000
    transformers.AutoModelForCausalLM.from_pretrained(folder)  # the new copy loads

    record = dl19[0]
    documents = record.documents(5)
    again = Reranker("pointwise", backend).rerank(record.query, documents)
    before = Reranker("pointwise", local_backend).rerank(record.query, documents)
    assert again.ids == before.ids
    for new, old in zip(again.items, before.items, strict=True):
        assert new.score == pytest.approx(old.score, abs=1e-5)
