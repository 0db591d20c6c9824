"""A server's "the prompt is longer than the model's context" refusal: telling it from other
failures, whichever client raised it (the ``openai`` SDK, or a framework model over it), and
learning from it the context that prompts should be fitted to, where it states one."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

from rankwise.backends.tokens import prompt_counter
from rankwise.errors import ContextOverflowError
from rankwise.prompts import Message

logger = logging.getLogger("rankwise.backends")

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


_STATED_LIMIT = re.compile(
    r"maximum context length is (\d+)"  # OpenAI, vLLM, llama-cpp-python
    r"|context window of (\d+)"  # llama-cpp-python's completions
    r"|maximum model length (?:is |of )?(\d+)",  # vLLM
    re.IGNORECASE,
)
_STATED_PROMPT = re.compile(
    r"\((\d+) in the messages"  # OpenAI, vLLM, llama-cpp-python
    r"|prompt \(length (\d+)\)"  # vLLM
)
MAX_TOKENIZER_RATIO = 4.0
"""The most tokens a server's tokenizer is believed to count where tiktoken counts one; a
count further off is not taken as the same prompt's, and the context is not scaled by it."""
LEARNED_CONTEXT_MARGIN = 0.95
"""Share of the learned context that prompts are fitted to: tiktoken's count of a refitted
prompt stands for the server's tokenizer only roughly."""


def stated_context(error: BaseException) -> tuple[int, int | None] | None:
    """The model's context length that a "too long" refusal states, and the refused
    prompt's tokens by the server's count where it says (None if not); None when it states
    no length. Read from the message (OpenAI, vLLM, llama-cpp-python) or from the error
    body's ``n_ctx`` and ``n_prompt_tokens`` (llama.cpp's server)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("n_ctx"), int):
        prompt = body.get("n_prompt_tokens")
        return body["n_ctx"], prompt if isinstance(prompt, int) else None
    said = str(error)
    limit = _STATED_LIMIT.search(said)
    if limit is None:
        return None
    prompt = _STATED_PROMPT.search(said)
    counted = int(next(g for g in prompt.groups() if g)) if prompt else None
    return int(next(g for g in limit.groups() if g)), counted


def learned_context(error: BaseException, counted: int, fitted_to: int) -> int | None:
    """The context length, in rankwise's token counts, to fit prompts to from now on, as
    the refusal ``error`` of a prompt that rankwise counted ``counted`` tokens teaches; None
    when it states no context length shorter than ``fitted_to``, the one prompts were fitted
    to. Where the server says how many tokens it counted, the length is scaled to
    rankwise's count (another tokenizer counts more tokens for the same text)."""
    stated = stated_context(error)
    if stated is None:
        return None
    limit, server_count = stated
    believable = server_count is not None and 0 < server_count <= MAX_TOKENIZER_RATIO * counted
    scale = min(1.0, counted / server_count) if believable else 1.0
    learned = math.floor(limit * scale * LEARNED_CONTEXT_MARGIN)
    return learned if 0 < learned < fitted_to else None


def context_overflow(
    error: BaseException,
    backend: object,
    messages: Sequence[Message],
    *,
    where: str,
    option: str,
) -> ContextOverflowError:
    """The error for a prompt (``messages``) that ``backend`` sent and the server refused
    as too long (``error``). When the refusal states a context shorter than the one prompts
    were fitted to, the error's ``context_length`` holds what to fit them to now (see
    :func:`learned_context`), and that is logged once; the backend adopts it. ``option``
    sets the context, with ``N`` for the length (``"OpenAIBackend(..., max_context=N)"``)."""
    fitted_to = backend.capabilities.max_context  # type: ignore[attr-defined]
    learned = learned_context(error, prompt_counter(backend)(messages), fitted_to)
    if learned is None:
        return ContextOverflowError(
            f"{where} refused a prompt longer than the model's context "
            f"({type(error).__name__}: {error}); {context_refusal_advice(fitted_to, option)}"
        )
    logger.warning(
        "%s refused a prompt longer than the model's context: rankwise fitted prompts to %d "
        "tokens, and now fits them to %d, as the refusal teaches; pass %s to start there",
        where,
        fitted_to,
        learned,
        option.replace("=N", f"={learned}").replace(" N ", f" {learned} "),
    )
    return ContextOverflowError(
        f"{where} refused a prompt longer than the model's context, which it states "
        f"({type(error).__name__}: {error}); prompts are now fitted to {learned} tokens, so "
        "build them again",
        context_length=learned,
    )
