"""Drive rankwise methods with any LlamaIndex LLM the user already configured.

Requires the ``llamaindex`` extra. Log-probs are used only when ``logprobs=True`` is passed and
the LLM fills ``ChatResponse.logprobs`` (LlamaIndex's OpenAI LLMs do, when asked with
``logprobs=True, top_logprobs=k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankwise.backends.base import Capabilities, ContinuationLogprobs, Generation, LabelLogprobs
from rankwise.backends.framework import (
    EstimatedTokens,
    LoopSemaphores,
    match_labels,
    position_after_prefix,
)
from rankwise.errors import BackendError, CapabilityError
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


class LlamaIndexBackend(EstimatedTokens):
    """A LlamaIndex ``LLM`` as a rankwise backend.

    Args:
        llm: any configured LlamaIndex LLM; ``None`` takes ``Settings.llm``.
        logprobs: the LLM returns log-probs in ``ChatResponse.logprobs`` when called with
            ``logprobs=True, top_logprobs=k``.
        top_logprobs: alternatives to ask for.
        max_tokens_kwarg: the call keyword that limits new tokens, if the LLM takes one.
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
        max_tokens_kwarg: str | None = None,
        concurrency: int = 16,
        max_context: int | None = None,
    ) -> None:
        if llm is None:
            from llama_index.core import Settings

            llm = Settings.llm
        if not isinstance(llm, LLM):
            raise TypeError(f"expected a LlamaIndex LLM, got {type(llm).__name__}")
        super().__init__()
        self.llm = llm
        metadata = llm.metadata
        self.model_name = str(metadata.model_name or type(llm).__name__)
        self.top_logprobs = top_logprobs
        self.max_tokens_kwarg = max_tokens_kwarg
        self._semaphores = LoopSemaphores(concurrency)
        context = max_context or int(metadata.context_window or 4096)
        self._capabilities = Capabilities(chat=True, logprobs=logprobs, max_context=context)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        assistant_prefix: str = "",
    ) -> Generation:
        response = await self._chat(messages, self._limit(max_tokens))
        prompt, completion = _usage(response)
        return Generation(str(response.message.content or ""), prompt, completion)

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        if not self._capabilities.logprobs:
            raise CapabilityError(
                f"{self.model_name}: log-probs are off; pass logprobs=True if the LLM returns "
                "them, or use a method that only generates (listwise, setwise, prp-*)"
            )
        extra: dict[str, Any] = {
            "logprobs": True,
            "top_logprobs": max(self.top_logprobs, len(labels)),
        }
        extra.update(self._limit(1 + (3 if assistant_prefix.strip() else 0)))
        response = await self._chat(messages, extra)
        found: dict[str, float] = {}
        positions = response.logprobs or []
        if positions:
            tokens = [alternatives[0].token if alternatives else "" for alternatives in positions]
            chosen = positions[position_after_prefix(tokens, assistant_prefix)]
            found = match_labels(((lp.token, lp.logprob) for lp in chosen), labels)
        prompt, completion = _usage(response)
        return LabelLogprobs(found, str(response.message.content or ""), prompt, completion)

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        raise CapabilityError("chat LLMs do not score a given continuation; use a local model")

    async def aclose(self) -> None:
        return None

    def _limit(self, max_tokens: int) -> dict[str, Any]:
        return {self.max_tokens_kwarg: max_tokens} if self.max_tokens_kwarg else {}

    async def _chat(self, messages: Sequence[Message], extra: dict[str, Any]) -> ChatResponse:
        converted = [ChatMessage(role=_ROLES[m.role], content=m.content) for m in messages]
        async with self._semaphores.get():
            try:
                return await self.llm.achat(converted, **extra)
            except Exception as error:
                raise BackendError(
                    f"{self.model_name} failed: {type(error).__name__}: {error}"
                ) from error


def _usage(response: ChatResponse) -> tuple[int, int]:
    raw = response.raw
    usage = getattr(raw, "usage", None) if raw is not None and not isinstance(raw, dict) else None
    if isinstance(raw, dict):
        usage = raw.get("usage")
    if usage is None:
        extra = response.additional_kwargs or {}
        return int(extra.get("prompt_tokens", 0)), int(extra.get("completion_tokens", 0))
    get = (
        usage.get
        if isinstance(usage, dict)
        else lambda key, default=0: getattr(usage, key, default)
    )
    return int(get("prompt_tokens", 0) or 0), int(get("completion_tokens", 0) or 0)
