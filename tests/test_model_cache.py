"""The converted-model cache: one copy per transformers major version, written once by
processes that start together, converted again when it is damaged (not when the caller's
options are at fault), and the caller's model options honoured on every load.

The conversion tests load a small real GGUF model written from the embedded one
(``tests/tiny_gguf.py``): the same code path, at about a second a load instead of 20 to 30 s.
Every test that uses ``local_backend`` loads the embedded model itself through this cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import transformers

from rankwise import Reranker
from rankwise.backends.model_files import (
    converted_model_dir,
    default_gguf_path,
    installed_transformers_major,
    is_complete,
)
from tests.tiny_gguf import VOCAB, tiny_parameter_count, write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A small GGUF model (2 layers, 1,024 tokens) with the embedded model's metadata."""
    folder = tmp_path_factory.mktemp("tiny-model")
    return write_tiny_gguf(default_gguf_path(), folder / "tiny-smollm2.gguf")


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
    tiny_gguf, dl19, tmp_path, monkeypatch, caplog, part
) -> None:
    from rankwise.backends.transformers import TransformersBackend

    monkeypatch.setenv("RANKWISE_CACHE_DIR", str(tmp_path))
    record = dl19[0]
    documents = record.documents(5)
    first = TransformersBackend(str(tiny_gguf))  # converts into the empty cache
    before = Reranker("pointwise-qlm", first).rerank(record.query, documents)
    del first  # its weights may be mapped from the file damaged below
    folder = converted_model_dir(tiny_gguf)
    assert is_complete(folder)
    size = (folder / "model.safetensors").stat().st_size
    _damage(folder, part)
    with pytest.raises(Exception):  # noqa: B017 - whichever error this part gives
        transformers.AutoModelForCausalLM.from_pretrained(folder)

    with caplog.at_level(logging.WARNING, logger="rankwise.backends.gguf_conversion"):
        backend = TransformersBackend(str(tiny_gguf), model_kwargs={"attn_implementation": "eager"})
    assert any("converting" in record.getMessage() for record in caplog.records)
    assert backend.model.config._attn_implementation == "eager"  # kwargs on a converting load
    assert is_complete(folder)
    json.loads((folder / "config.json").read_text())
    assert (folder / "model.safetensors").stat().st_size == size
    transformers.AutoModelForCausalLM.from_pretrained(folder)  # the new copy loads

    again = Reranker("pointwise-qlm", backend).rerank(record.query, documents)
    assert sorted(again.ids) == sorted(document["id"] for document in documents)
    assert again.ids == before.ids
    for new, old in zip(again.items, before.items, strict=True):
        assert new.score == pytest.approx(old.score, abs=1e-4)


_LOAD_AND_REPORT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from rankwise.backends.transformers import TransformersBackend
backend = TransformersBackend(sys.argv[1])
print(backend.model.num_parameters())
"""


def _start_loading(cache: Path, gguf: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, "RANKWISE_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", _LOAD_AND_REPORT, str(gguf)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_processes_that_start_together_convert_once(tiny_gguf, tmp_path) -> None:
    """Two processes load a GGUF model into an empty cache at the same time: one converts,
    the other waits for the lock and loads that copy."""
    processes = [_start_loading(tmp_path, tiny_gguf) for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-2000:]
        assert int(stdout.strip().splitlines()[-1]) == tiny_parameter_count()
    conversions = sum(stderr.count("to safetensors in") for _, stderr in outputs)
    assert conversions == 1, [stderr[-1000:] for _, stderr in outputs]
    folder = tmp_path / "models" / converted_model_dir(tiny_gguf).name
    assert is_complete(folder)
    left = sorted(path.name for path in folder.parent.iterdir())
    assert left == [folder.name, f"{folder.name}.lock"], left  # no staging copy left


@pytest.mark.parametrize(
    ("options", "temp_writable", "conversions"),
    [
        ({}, True, 1),
        ({"attn_implementation": "eager"}, True, 1),
        ({"attn_implementation": "eager"}, False, 2),
    ],
    ids=["no-options", "options", "options-without-temp-folder"],
)
def test_an_unwritable_cache_still_loads(
    tiny_gguf, tmp_path, monkeypatch, caplog, options, temp_writable, conversions
) -> None:
    """A cache the process may not write to costs a conversion per load, not the load. Model
    options are applied to a copy staged in a temporary folder, so the GGUF file is
    de-quantised once; only where no temporary folder can be written is it loaded again."""
    from rankwise.backends.gguf_conversion import load_gguf

    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be")
    monkeypatch.setenv("RANKWISE_CACHE_DIR", str(cache))
    if not temp_writable:
        blocked = tmp_path / "temp"
        blocked.write_text("a file where the temporary folder should be")
        monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained
    gguf_loads: list[str] = []

    def counting_from_pretrained(*args, **kwargs):
        if kwargs.get("gguf_file"):
            gguf_loads.append(kwargs["gguf_file"])
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", counting_from_pretrained
    )
    with caplog.at_level(logging.WARNING, logger="rankwise.backends.gguf_conversion"):
        tokenizer, model = load_gguf(tiny_gguf, torch.float32, dict(options))
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not cache" in message for message in messages), messages
    assert gguf_loads == [tiny_gguf.name] * conversions, gguf_loads
    assert any("could not stage" in message for message in messages) != temp_writable
    assert len(tokenizer) == VOCAB
    assert tokenizer.encode("Fleas", add_special_tokens=False) == [54, 290, 292]
    assert model.num_parameters() == tiny_parameter_count()
    assert model.dtype == torch.float32
    if options:
        assert model.config._attn_implementation == "eager"
    assert cache.read_text().startswith("a file")
    prompt = tokenizer("Fleas live up to a year.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**prompt).logits[0, -1]
    assert torch.isfinite(logits).all() and logits.shape[-1] == model.config.vocab_size


def test_a_bad_model_kwarg_is_the_callers_error_not_a_damaged_copy(local_backend, caplog) -> None:
    """A sound cached copy that fails to load because of the caller's options is neither
    converted again nor removed: the caller gets the error."""
    from rankwise.backends.transformers import TransformersBackend

    folder = converted_model_dir(default_gguf_path())
    assert is_complete(folder)
    written = (folder / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="rankwise.backends.gguf_conversion"):
        with pytest.raises(ValueError, match="no_such_attention"):
            TransformersBackend(
                "default", model_kwargs={"attn_implementation": "no_such_attention"}
            )
    assert not caplog.records, [record.getMessage() for record in caplog.records]
    assert is_complete(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == written


def test_gguf_files_of_one_name_and_size_are_not_given_each_others_weights(
    tmp_path, monkeypatch
) -> None:
    """Two fine-tunes of one model, exported with one quantisation under one file name,
    have the same size to the byte. The converted copy was named after the file's stem and
    size only, so the second model loaded the first one's weights, and said nothing."""
    from rankwise.backends.transformers import TransformersBackend

    monkeypatch.setenv("RANKWISE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = []
    for seed, folder in enumerate(("first", "second")):
        (tmp_path / folder).mkdir()
        paths.append(write_tiny_gguf(default_gguf_path(), tmp_path / folder / "tuned.gguf", seed))
    assert paths[0].stat().st_size == paths[1].stat().st_size
    loaded = [TransformersBackend(f"~/{path.parent.name}/{path.name}") for path in paths]
    weights = [backend.model.get_input_embeddings().weight for backend in loaded]
    assert not torch.equal(weights[0], weights[1])
    direct = transformers.AutoModelForCausalLM.from_pretrained(
        paths[1].parent, gguf_file=paths[1].name, dtype=torch.float32
    )
    assert torch.equal(weights[1], direct.get_input_embeddings().weight)
    assert loaded[0].cache_identity != loaded[1].cache_identity  # and answers are kept apart
    before = converted_model_dir(paths[0])
    status = paths[0].stat()
    os.utime(paths[0], ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    assert converted_model_dir(paths[0]) != before  # replaced in place: converted again


def test_a_cache_folder_named_under_home_is_expanded(tmp_path, monkeypatch) -> None:
    """``RANKWISE_CACHE_DIR=~/models``, as an env file or a container sets it (no shell
    expands the ``~`` there), put the converted models in a folder named "~" inside the
    working directory."""
    from rankwise.backends.model_files import cache_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RANKWISE_CACHE_DIR", "~/models")
    assert cache_root() == tmp_path / "models"
