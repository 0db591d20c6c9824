"""A GGUF model file (the embedded model's, or one a user names), converted once to a safetensors
copy in rankwise's cache.

Loading a GGUF file de-quantises every tensor (about 10 s for the 135M model on a 2-core
CPU); the copy loads in a fraction of a second. Copies are kept per ``transformers`` major version
(:func:`~rankwise.backends.model_files.converted_model_dir`), written under a lock so that
processes starting together convert once, and converted again when they no longer load.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import transformers
from filelock import FileLock
from safetensors import SafetensorError, safe_open

from rankwise.backends.model_files import converted_model_dir, is_complete

logger = logging.getLogger(__name__)

_UNLOADABLE = (OSError, ValueError, SafetensorError)
"""What loading a damaged converted copy, or one another version wrote, raises."""


def load_gguf(gguf: Path, dtype: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Load a GGUF model, converting it once to a safetensors copy in the cache.

    ``kwargs`` go to ``from_pretrained`` on every load, the first (converting) one included.
    Where the cache cannot be written, each load converts the GGUF file once (with a warning)
    and still honours ``kwargs``.
    """
    folder = converted_model_dir(gguf)
    if is_complete(folder):
        try:
            return _load_converted(folder, dtype, kwargs)
        except _UNLOADABLE:
            pass  # judged below, under the lock
    with _conversion_lock(folder):
        cached = _load_cached(folder, dtype, kwargs)  # another process may have written it
        if cached is not None:
            return cached
        logger.info("converting %s to safetensors in %s (once)", gguf.name, folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        try:
            _save_converted(loaded, tokenizer, folder)
        except (OSError, SafetensorError) as error:  # a cache we cannot write costs only speed
            logger.warning("could not cache the converted model in %s: %s", folder, error)
        else:
            return _load_converted(folder, dtype, kwargs)
    if not kwargs:
        return tokenizer, loaded.to(dtype)
    return _load_with_options_uncached(gguf, loaded, tokenizer, dtype, kwargs)


def _load_with_options_uncached(
    gguf: Path, loaded: Any, tokenizer: Any, dtype: Any, kwargs: dict[str, Any]
) -> tuple[Any, Any]:
    """Apply the caller's ``from_pretrained`` options where the cache cannot be written.

    The converted model is staged in a temporary folder and loaded from there with the
    options, which costs a second or two; de-quantising the GGUF file again would cost about
    10 s. Only where no temporary folder can be written either is the GGUF file loaded again.
    """
    with ExitStack() as cleanup:
        try:
            scratch = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rankwise-model-"))
            staged = Path(scratch) / "model"
            _save_converted(loaded, tokenizer, staged)
        except (OSError, SafetensorError) as error:
            logger.warning(
                "could not stage the converted model (%s); loading %s again", error, gguf
            )
        else:
            return _load_converted(staged, dtype, kwargs)
    return tokenizer, transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=dtype, **kwargs
    )


def _load_cached(folder: Path, dtype: Any, kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
    """The cached copy, loaded; None where there is none, or where it is damaged or written by
    another version (then it is removed with a warning). An error that is not the copy's, such
    as a bad ``kwargs``, is raised."""
    if not is_complete(folder):
        return None
    try:
        return _load_converted(folder, dtype, kwargs)
    except _UNLOADABLE as error:
        if _is_sound(folder):
            raise
        logger.warning(
            "the converted model in %s could not be loaded (%s); converting it again",
            folder,
            error,
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _load_converted(folder: Path, dtype: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return tokenizer, transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, **kwargs
    )


def _is_sound(folder: Path) -> bool:
    """Whether a cached copy's tokenizer, config and weight files all read, without loading
    the weights."""
    try:
        transformers.AutoTokenizer.from_pretrained(folder)
        transformers.AutoConfig.from_pretrained(folder)
        for weights in folder.glob("*.safetensors"):
            with safe_open(str(weights), framework="pt"):
                pass
    except _UNLOADABLE:
        return False
    return True


@contextmanager
def _conversion_lock(folder: Path) -> Iterator[None]:
    """Hold a lock file beside ``folder`` so that processes that start together convert the
    model once, the others waiting and then loading that copy. The operating system drops
    the lock when its process ends, however it ends. Where the cache cannot be written,
    there is nothing to share, and each process goes on without the lock."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{folder}.lock")
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _save_converted(loaded: Any, tokenizer: Any, folder: Path) -> None:
    """Write a plain (de-quantised) copy to a staging folder, then move it into place whole.

    The staging folder is made first, so a folder that cannot be written fails before the
    plain copy of the model is built."""
    staging = folder.with_name(folder.name + ".partial")  # left by a process that was killed
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = transformers.AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / ".complete").write_text("ok\n")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
