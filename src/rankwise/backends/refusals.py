"""Telling a server's "the prompt is longer than the model's context" refusal from other
failures, whichever client raised it (the ``openai`` SDK, or a framework model over it)."""

from __future__ import annotations

_CONTEXT_REFUSALS = (
    "context_length_exceeded",  # OpenAI's error code
    "maximum context length",  # OpenAI, vLLM and llama-cpp-python's messages
    "exceed_context_size",  # llama.cpp's server
    "maximum model length",  # vLLM
)


def refused_as_too_long(error: BaseException) -> bool:
    """Whether ``error`` says the prompt was longer than the model's context, by its message
    or by the ``code`` and ``type`` the ``openai`` SDK reads from the error body."""
    parts = (error, getattr(error, "code", None), getattr(error, "type", None))
    said = " ".join(str(part) for part in parts).lower()
    return any(sign in said for sign in _CONTEXT_REFUSALS)


def context_refusal_advice(max_context: int, option: str) -> str:
    """What to do about a refused prompt: set ``option``, which fits prompts to the context
    (``max_context`` now), to the model's context length."""
    return (
        f"rankwise fitted it to max_context={max_context} tokens, counted with tiktoken, so "
        f"pass {option} with N the model's context length, lower still if its tokenizer "
        "counts more tokens than OpenAI's; or shorten the query"
    )
