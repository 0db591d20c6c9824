"""Drive rankwise methods with any LangChain chat model the user already configured.

Requires the ``langchain`` extra. Log-probs are used only when ``logprobs=True`` is passed
and the model returns them in ``response_metadata["logprobs"]`` (``ChatOpenAI`` does);
without them, the log-prob methods raise a :class:`CapabilityError` naming the ones that work.
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
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("LangChainBackend needs: pip install 'rankwise[langchain]'") from error

_ROLES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


class LangChainBackend(EstimatedTokens):
    """A LangChain ``BaseChatModel`` as a rankwise backend.

    Args:
        model: any configured chat model (``ChatOpenAI``, ``ChatOllama``, ...).
        logprobs: the model returns OpenAI-style log-probs when called with
            ``logprobs=True, top_logprobs=k`` (true for ``ChatOpenAI``).
        top_logprobs: alternatives to ask for.
        max_tokens_kwarg: the call keyword that limits new tokens, when the model takes one
            per call (``"max_tokens"`` for ``ChatOpenAI``); ``None`` keeps the model's own.
        concurrency: most calls in flight at once.
        max_context: the model's context length, for truncation.
    """

    kind = "langchain"

    def __init__(
        self,
        model: BaseChatModel,
        *,
        logprobs: bool = False,
        top_logprobs: int = 5,
        max_tokens_kwarg: str | None = None,
        concurrency: int = 16,
        max_context: int = 8192,
    ) -> None:
        if not isinstance(model, BaseChatModel):
            raise TypeError(f"expected a LangChain BaseChatModel, got {type(model).__name__}")
        super().__init__()
        self.model = model
        self.model_name = str(
            getattr(model, "model_name", None)
            or getattr(model, "model", None)
            or type(model).__name__
        )
        self.top_logprobs = top_logprobs
        self.max_tokens_kwarg = max_tokens_kwarg
        self._semaphores = LoopSemaphores(concurrency)
        self._capabilities = Capabilities(chat=True, logprobs=logprobs, max_context=max_context)

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
        response = await self._invoke(messages, self._limit(max_tokens))
        prompt, completion = _usage(response)
        return Generation(text=_text(response), prompt_tokens=prompt, completion_tokens=completion)

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        if not self._capabilities.logprobs:
            raise CapabilityError(
                f"{self.model_name}: log-probs are off; pass logprobs=True if the model returns "
                "them, or use a method that only generates (listwise, setwise, prp-*)"
            )
        extra = {"logprobs": True, "top_logprobs": max(self.top_logprobs, len(labels))}
        extra.update(self._limit(1 + (3 if assistant_prefix.strip() else 0)))
        response = await self._invoke(messages, extra)
        content = (response.response_metadata.get("logprobs") or {}).get("content") or []
        found: dict[str, float] = {}
        if content:
            position = position_after_prefix(
                [e.get("token", "") for e in content], assistant_prefix
            )
            entry = content[position]
            alternatives = [(alt["token"], alt["logprob"]) for alt in entry.get("top_logprobs", [])]
            alternatives.append((entry.get("token", ""), entry.get("logprob", float("-inf"))))
            found = match_labels(alternatives, labels)
        prompt, completion = _usage(response)
        return LabelLogprobs(found, _text(response), prompt, completion)

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        raise CapabilityError("chat models do not score a given continuation; use a local model")

    async def aclose(self) -> None:
        return None

    def _limit(self, max_tokens: int) -> dict[str, Any]:
        return {self.max_tokens_kwarg: max_tokens} if self.max_tokens_kwarg else {}

    async def _invoke(self, messages: Sequence[Message], extra: dict[str, Any]) -> BaseMessage:
        converted = [_ROLES[m.role](content=m.content) for m in messages]
        async with self._semaphores.get():
            try:
                return await self.model.ainvoke(converted, **extra)
            except Exception as error:
                raise BackendError(
                    f"{self.model_name} failed: {type(error).__name__}: {error}"
                ) from error


def _text(response: BaseMessage) -> str:
    content = response.content
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text", "") if isinstance(part, dict) else str(part) for part in content
    )


def _usage(response: BaseMessage) -> tuple[int, int]:
    usage = getattr(response, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
