"""Serve a GGUF model (the embedded SmolLM2 by default) over an OpenAI-compatible HTTP API
with llama.cpp, on 127.0.0.1. Needs ``pip install 'llama-cpp-python[server]'``.

    with serve_gguf() as base_url:
        backend = OpenAIBackend("smollm2", base_url=base_url)
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rankwise.backends.model_files import default_gguf_path
from rankwise.errors import BackendUnavailableError, ModelNotFoundError


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_gguf(
    model: str | Path | None = None, *, n_ctx: int = 4096, startup_timeout: float = 120.0
) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free loopback port; yield its ``/v1`` URL.

    Log-probs are on (``--logits_all True``), and a streamed reply is not cut short when
    another request arrives (``--interrupt_requests False``). The server's log goes to a
    temporary file (a pipe could fill up and stall it) and is quoted if the server fails to
    start.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise BackendUnavailableError(
            "llama.cpp's server is not installed; run "
            "`pip install 'llama-cpp-python[server]'` (it compiles for a few minutes)"
        )
    gguf = Path(model).expanduser() if model is not None else default_gguf_path()
    if not gguf.is_file():
        raise ModelNotFoundError(f"no GGUF file at {str(gguf)!r}; pass the path of a .gguf file")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--logits_all",
        "True",
        "--interrupt_requests",
        "False",
    ]
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, process, log, startup_timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(url: str, process: subprocess.Popen, log, timeout: float) -> None:  # type: ignore[type-arg, no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise BackendUnavailableError(f"llama.cpp server exited while starting:\n{tail}")
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    f"llama.cpp server did not answer within {timeout:.0f} s"
                ) from None
            time.sleep(0.5)
