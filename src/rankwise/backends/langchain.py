"""Drive rankwise methods with any LangChain chat model the user already configured.

Requires the ``langchain`` extra. Log-probs are used only when ``logprobs=True`` is passed
and the model returns them in ``response_metadata["logprobs"]`` (``ChatOpenAI`` does);
without them, the log-prob methods raise a :class:`CapabilityError` naming the ones that work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankwise.backends.base import API_CONCURRENCY, API_MAX_CONTEXT
from rankwise.backends.framework import (
    AUTO_MAX_TOKENS,
    FrameworkBackend,
    Reply,
    resolve_max_tokens_kwarg,
)
from rankwise.prompts import Message

try:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("LangChainBackend needs: pip install 'rankwise[langchain]'") from error

_ROLES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


class LangChainBackend(FrameworkBackend):
    """A LangChain ``BaseChatModel`` as a rankwise backend.

    Args:
        model: any configured chat model (``ChatOpenAI``, ``ChatOllama``, ...).
        logprobs: the model returns OpenAI-style log-probs when called with
            ``logprobs=True, top_logprobs=k`` (true for ``ChatOpenAI``).
        top_logprobs: alternatives to ask for.
        max_tokens_kwarg: the call keyword that limits new tokens. ``"auto"`` passes
            ``max_tokens`` when the model declares that field (``ChatOpenAI`` and most API
            chat models do), so a yes/no judgement asks for 1 token instead of the model's
            default; ``None`` keeps the model's own setting.
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
        max_tokens_kwarg: str | None = AUTO_MAX_TOKENS,
        concurrency: int = API_CONCURRENCY,
        max_context: int = API_MAX_CONTEXT,
    ) -> None:
        if not isinstance(model, BaseChatModel):
            raise TypeError(f"expected a LangChain BaseChatModel, got {type(model).__name__}")
        super().__init__(
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            max_tokens_kwarg=resolve_max_tokens_kwarg(max_tokens_kwarg, model),
            concurrency=concurrency,
            max_context=max_context,
        )
        self.model = model
        name = getattr(model, "model_name", None) or getattr(model, "model", None)
        self.model_name = str(name or type(model).__name__)

    def _settings(self) -> str:
        """The model as LangChain's own response cache keys it: its class and constructor
        arguments, secrets masked."""
        return self.model._get_llm_string()

    async def _call(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        converted = [_ROLES[m.role](content=m.content) for m in messages]
        response = await self.model.ainvoke(converted, **extra)
        content = (response.response_metadata.get("logprobs") or {}).get("content") or []
        positions = [
            [(entry.get("token", ""), entry.get("logprob", float("-inf")))]
            + [(alt["token"], alt["logprob"]) for alt in entry.get("top_logprobs", [])]
            for entry in content
        ]
        usage = getattr(response, "usage_metadata", None) or {}
        return Reply(
            _text(response),
            positions,
            int(usage.get("input_tokens", 0)),
            int(usage.get("output_tokens", 0)),
        )


def _text(response: BaseMessage) -> str:
    content = response.content
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text", "") if isinstance(part, dict) else str(part) for part in content
    )
