"""A small OpenAI-compatible HTTP server on 127.0.0.1 for fault injection in tests.

Each request is answered by ``StubServer.handler(request_json) -> Reply``; tests swap the
handler to script 429s, 5xx, hangs, malformed bodies, missing log-probs and so on. The server
counts requests and the most requests it had in flight at once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the stub sends back."""

    status: int = 200
    body: bytes | dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"


def completion(
    text: str,
    *,
    top_logprobs: dict[str, float] | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int = 1,
) -> dict[str, Any]:
    """A chat.completion body; ``top_logprobs`` maps first-token alternatives to log-probs."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if top_logprobs is not None:
        best = max(top_logprobs, key=top_logprobs.__getitem__)
        alternatives = [
            {"token": token, "logprob": value, "bytes": None}
            for token, value in sorted(top_logprobs.items(), key=lambda kv: -kv[1])
        ]
        choice["logprobs"] = {
            "content": [
                {
                    "token": best,
                    "logprob": top_logprobs[best],
                    "bytes": None,
                    "top_logprobs": alternatives,
                }
            ]
        }
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "stub",
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chunk(choices: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A chat.completion.chunk with these ``choices`` (and ``fields`` such as ``usage``)."""
    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0}
    return {**base, "model": "stub", "choices": choices, **fields}


def streamed(body: dict[str, Any], *, usage: bool = True) -> Reply:
    """``body`` (a chat.completion) sent as a server-sent-event stream of chat.completion.chunk
    objects: one chunk per log-prob entry (or one for the whole text), then the usage chunk
    (when ``usage``) and ``[DONE]``."""
    choice = body["choices"][0]
    entries = (choice.get("logprobs") or {}).get("content") or []
    pieces = [(entry["token"], {"content": [entry]}) for entry in entries] or [
        (choice["message"]["content"], None)
    ]
    chunks = [chunk([{"index": 0, "delta": {"role": "assistant"}, "logprobs": None}])]
    for text, logprobs in pieces:
        chunks.append(chunk([{"index": 0, "delta": {"content": text}, "logprobs": logprobs}]))
    chunks.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if usage:
        chunks.append(chunk([], usage=body["usage"]))
    return sse(chunks)


def streamed_when_asked(
    handler: Callable[[dict[str, Any]], Reply],
) -> Callable[[dict[str, Any]], Reply]:
    """``handler``, its reply sent as a stream (:func:`streamed`) to a request that asks for
    one (``"stream": true``) and whole otherwise."""

    def answer(request: dict[str, Any]) -> Reply:
        reply = handler(request)
        return streamed(reply.body) if request.get("stream") else reply

    return answer


def sse(chunks: list[dict[str, Any]] | list[bytes]) -> Reply:
    """A reply streaming ``chunks`` (objects, or raw lines sent as they are) as server-sent
    events, ended by ``data: [DONE]``."""
    lines = [c if isinstance(c, bytes) else json.dumps(c).encode() for c in chunks]
    raw = b"".join(b"data: " + line + b"\n\n" for line in [*lines, b"[DONE]"])
    return Reply(body=raw, content_type="text/event-stream")


def yes_no(p_yes: float, **kwargs: Any) -> dict[str, Any]:
    """A yes/no answer with the given P(Yes) (and P(No) = 1 - P(Yes))."""
    p_yes = min(max(p_yes, 1e-6), 1 - 1e-6)
    text = "Yes" if p_yes >= 0.5 else "No"
    return completion(
        text, top_logprobs={"Yes": math.log(p_yes), "No": math.log(1 - p_yes)}, **kwargs
    )


class StubServer:
    """Start with ``with StubServer(handler) as server:``; ``server.base_url`` ends in /v1."""

    def __init__(self, handler: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self.handler = handler or (lambda request: Reply(body=completion("ok")))
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            # Real servers send small replies at once; without this, Nagle's algorithm and
            # the client's delayed ACK add about 40 ms to every keep-alive exchange.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:  # keep test output clean
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                with stub._lock:
                    stub.requests.append(request)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    reply = stub.handler(request)
                    if reply.delay:
                        time.sleep(reply.delay)
                    body = reply.body
                    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                    self.send_response(reply.status)
                    self.send_header("content-type", reply.content_type)
                    self.send_header("content-length", str(len(raw)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        return Handler


def sent_tokens(backend: Any, request: dict[str, Any]) -> int:
    """Tokens of a chat request's message texts under ``backend``'s tokenizer."""
    return sum(backend.count_tokens(m["content"]) for m in request.get("messages", []))


def user_text(request: dict[str, Any]) -> str:
    """All user-message text of a chat request, joined."""
    return "\n".join(m["content"] for m in request.get("messages", []) if m.get("role") == "user")
