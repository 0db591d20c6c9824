"""Drive rankwise methods with any LangChain chat model the user already configured.

Requires the ``langchain`` extra. Log-probs are used only when ``logprobs=True`` is passed
and the model returns them in ``response_metadata["logprobs"]`` (``ChatOpenAI`` does);
without them, the log-prob methods raise a :class:`CapabilityError` naming the ones that work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rankwise.backends.base import API_CONCURRENCY, API_MAX_CONTEXT
from rankwise.backends.framework import (
    AUTO_MAX_TOKENS,
    FrameworkBackend,
    Reply,
    names_a_secret,
    resolve_max_tokens_kwarg,
)
from rankwise.errors import InputError
from rankwise.prompts import Message

try:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
    from langchain_core.runnables import Runnable, RunnableWithFallbacks
    from langchain_core.runnables.base import RunnableBindingBase
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("LangChainBackend needs: pip install 'rankwise[langchain]'") from error

_ROLES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


class LangChainBackend(FrameworkBackend):
    """A LangChain ``BaseChatModel`` as a rankwise backend.

    Args:
        model: any configured chat model (``ChatOpenAI``, ``ChatOllama``, ...), also as
            wrapped by ``bind()``, ``with_retry()`` or ``with_fallbacks()`` (whose fallbacks
            are chat models too): calls go through the wrapper, and the model inside gives
            the name and fields.
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
        model: BaseChatModel | Runnable,
        *,
        logprobs: bool = False,
        top_logprobs: int = 5,
        max_tokens_kwarg: str | None = AUTO_MAX_TOKENS,
        concurrency: int = API_CONCURRENCY,
        max_context: int = API_MAX_CONTEXT,
    ) -> None:
        chat = chat_model_of(model)
        if chat is None:
            raise TypeError(f"expected a LangChain BaseChatModel, got {type(model).__name__}")
        super().__init__(
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            max_tokens_kwarg=resolve_max_tokens_kwarg(max_tokens_kwarg, chat),
            concurrency=concurrency,
            max_context=max_context,
        )
        self.model = model
        """What is called: the chat model, or its wrapper."""
        self.chat_model = chat
        """The chat model itself, inside any wrapper."""
        self.model_name = _name_of(model)

    def _settings(self) -> str:
        """The model as LangChain's own response cache keys it (its class and constructor
        arguments, secrets masked), with what a wrapper adds that changes the answers: the
        arguments it binds, and its fallbacks."""
        return _settings_of(self.model)

    async def _call(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        return _reply_of(await self.model.ainvoke(_converted(messages), **extra))

    def _call_blocking(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        return _reply_of(self.model.invoke(_converted(messages), **extra))


def _converted(messages: Sequence[Message]) -> list[Any]:
    return [_ROLES[m.role](content=m.content) for m in messages]


def _reply_of(response: Any) -> Reply:
    """A chat model's message as a :class:`Reply`: text, log-probs and usage."""
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


def chat_model_of(value: object) -> BaseChatModel | None:
    """The chat model that ``value`` is, or that its ``bind()``, ``with_retry()`` or
    ``with_fallbacks()`` wrappers hold; None when ``value`` is none of these. A wrapper around
    something else (a fallback that is a plain function) is an :class:`InputError`: each
    model a wrapper may call is sent chat messages, and must answer as a chat model does."""
    if isinstance(value, BaseChatModel):
        return value
    if isinstance(value, RunnableBindingBase):
        inner = value.bound
    elif isinstance(value, RunnableWithFallbacks):
        inner = value.runnable
        for fallback in value.fallbacks:
            if chat_model_of(fallback) is None:
                raise _not_a_chat_model(fallback, "fallback")
    else:
        return None
    chat = chat_model_of(inner)
    if chat is None:
        raise _not_a_chat_model(inner, "wrapped runnable")
    return chat


def _not_a_chat_model(value: object, role: str) -> InputError:
    return InputError(
        f"the {role} {type(value).__name__} is not a LangChain chat model; rankwise sends it "
        "chat messages and reads its answer as a chat model's, so wrap chat models only"
    )


def _name_of(model: Any) -> str:
    """The chat model's name; a wrapper with fallbacks names them too, as any of them may
    answer."""
    if isinstance(model, RunnableWithFallbacks):
        fallbacks = ", ".join(_name_of(fallback) for fallback in model.fallbacks)
        return f"{_name_of(model.runnable)} (falling back to {fallbacks})"
    if isinstance(model, RunnableBindingBase):
        return _name_of(model.bound)
    chat = chat_model_of(model)
    name = getattr(chat, "model_name", None) or getattr(chat, "model", None)
    return str(name or type(chat).__name__)


def _settings_of(model: Any) -> str:
    """The cache key part of a chat model or its wrapper (see :meth:`_settings`)."""
    if isinstance(model, BaseChatModel):
        return model._get_llm_string()
    if isinstance(model, RunnableWithFallbacks):
        fallbacks = " ".join(f"fallback {_settings_of(f)}" for f in model.fallbacks)
        return f"{_settings_of(model.runnable)} {fallbacks}"
    bound = {k: v for k, v in model.kwargs.items() if not names_a_secret(k)}
    inner = _settings_of(model.bound)
    return f"{inner} bound {json.dumps(bound, sort_keys=True, default=str)}" if bound else inner


def _text(response: BaseMessage) -> str:
    content = response.content
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text", "") if isinstance(part, dict) else str(part) for part in content
    )
