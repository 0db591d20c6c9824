"""Drive rankwise methods with any LlamaIndex LLM the user already configured.

Requires the ``llamaindex`` extra. Log-probs are used only when ``logprobs=True`` is passed and
the LLM fills ``ChatResponse.logprobs`` (LlamaIndex's OpenAI LLMs do, when asked with
``logprobs=True, top_logprobs=k``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rankwise.backends.base import API_CONCURRENCY
from rankwise.backends.framework import (
    AUTO_MAX_TOKENS,
    FrameworkBackend,
    Reply,
    names_a_secret,
    resolve_max_tokens_kwarg,
)
from rankwise.prompts import Message

try:
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
    from llama_index.core.llms import LLM
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("LlamaIndexBackend needs: pip install 'rankwise[llamaindex]'") from error

_ROLES = {
    "system": MessageRole.SYSTEM,
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
}


class LlamaIndexBackend(FrameworkBackend):
    """A LlamaIndex ``LLM`` as a rankwise backend.

    Args:
        llm: any configured LlamaIndex LLM; ``None`` takes ``Settings.llm``.
        logprobs: the LLM returns log-probs in ``ChatResponse.logprobs`` when called with
            ``logprobs=True, top_logprobs=k``.
        top_logprobs: alternatives to ask for.
        max_tokens_kwarg: the call keyword that limits new tokens. ``"auto"`` passes
            ``max_tokens`` when the LLM declares that field (LlamaIndex's ``OpenAI`` and
            ``OpenAILike`` do); ``None`` keeps the LLM's own setting.
        concurrency: most calls in flight at once.
        max_context: the context length, for truncation (default: the LLM's metadata).
    """

    kind = "llamaindex"

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        logprobs: bool = False,
        top_logprobs: int = 5,
        max_tokens_kwarg: str | None = AUTO_MAX_TOKENS,
        concurrency: int = API_CONCURRENCY,
        max_context: int | None = None,
    ) -> None:
        if llm is None:
            from llama_index.core import Settings

            llm = Settings.llm
        if not isinstance(llm, LLM):
            raise TypeError(f"expected a LlamaIndex LLM, got {type(llm).__name__}")
        metadata = llm.metadata
        super().__init__(
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            max_tokens_kwarg=resolve_max_tokens_kwarg(max_tokens_kwarg, llm),
            concurrency=concurrency,
            max_context=(
                int(metadata.context_window or 4096) if max_context is None else max_context
            ),
        )
        self.llm = llm
        self.model_name = str(metadata.model_name or type(llm).__name__)

    def _settings(self) -> str:
        """The LLM's class and its plain settings (text, numbers, flags), without fields
        that name a key or secret: what LlamaIndex serialises of it, less what could differ
        between two equal LLMs or leak a credential."""
        fields = {
            name: value
            for name, value in self.llm.to_dict().items()
            if isinstance(value, str | int | float | bool | None) and not names_a_secret(name)
        }
        kind = f"{type(self.llm).__module__}.{type(self.llm).__qualname__}"
        return f"{kind} {json.dumps(fields, sort_keys=True)}"

    async def _call(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        return _reply_of(await self.llm.achat(_converted(messages), **extra))

    def _call_blocking(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        return _reply_of(self.llm.chat(_converted(messages), **extra))


def _converted(messages: Sequence[Message]) -> list[ChatMessage]:
    return [ChatMessage(role=_ROLES[m.role], content=m.content) for m in messages]


def _reply_of(response: ChatResponse) -> Reply:
    """An LLM's chat response as a :class:`Reply`: text, log-probs and usage."""
    positions = [[(lp.token, lp.logprob) for lp in entry] for entry in response.logprobs or []]
    prompt, completion = _usage(response)
    return Reply(str(response.message.content or ""), positions, prompt, completion)


def _usage(response: ChatResponse) -> tuple[int, int]:
    raw = response.raw
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    if usage is None:
        extra = response.additional_kwargs or {}
        return int(extra.get("prompt_tokens", 0)), int(extra.get("completion_tokens", 0))
    if isinstance(usage, dict):
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(
        getattr(usage, "completion_tokens", 0) or 0
    )
