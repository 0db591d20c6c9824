"""Shared pieces of the backends that wrap a framework's chat model (LangChain, LlamaIndex)."""

from __future__ import annotations

import asyncio
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rankwise._checks import check_flag, check_whole
from rankwise._loops import PerLoop
from rankwise._sync import on_sync_loop
from rankwise.backends.base import (
    Capabilities,
    ContinuationLogprobs,
    Generation,
    LabelLogprobs,
    MissingLogprobsWarning,
)
from rankwise.backends.refusals import context_overflow, refused_as_too_long
from rankwise.backends.tokens import TokenCounter
from rankwise.errors import BackendError, CapabilityError, InputError
from rankwise.prompts import Message

logger = logging.getLogger(__name__)


def match_labels(
    alternatives: Iterable[tuple[str, float]], labels: Sequence[str]
) -> dict[str, float]:
    """Log-prob of each label among (token, logprob) alternatives, ignoring surrounding
    whitespace; several spellings of one label ("Yes", " Yes") are summed."""
    found: dict[str, float] = {}
    seen: set[tuple[str, float]] = set()
    for token, logprob in alternatives:
        if (token, logprob) in seen or not token.strip():
            continue
        seen.add((token, logprob))
        for label in labels:
            if token.strip() == label.strip():
                previous = found.get(label)
                found[label] = logprob if previous is None else _logaddexp(previous, logprob)
    return found


PREFIX_TOKENS = 3  # tokens generated to get past an assistant prefix such as "["


def read_labels(
    positions: Sequence[Sequence[tuple[str, float]]], labels: Sequence[str], prefix: str
) -> dict[str, float]:
    """Label log-probs at the generated position that follows ``prefix``.

    ``positions`` holds, per generated token, (token, logprob) pairs with the chosen token
    first; an empty list (no log-probs returned) gives no labels.
    """
    if not positions:
        return {}
    tokens = [entry[0][0] if entry else "" for entry in positions]
    return match_labels(positions[position_after_prefix(tokens, prefix)], labels)


def position_after_prefix(tokens: Sequence[str], prefix: str) -> int:
    """Index of the generated token that follows ``prefix`` (such as FIRST's ``[``), for APIs
    that cannot continue a partial reply; 0 when there is no prefix or it was not written."""
    prefix = prefix.strip()
    if not prefix:
        return 0
    written = ""
    for index, token in enumerate(tokens[:-1]):
        written += token
        if written.strip().endswith(prefix):
            return index + 1
    return 0


def _logaddexp(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    if low == -math.inf:  # exp(-inf - -inf) would be NaN
        return high
    return high + math.log1p(math.exp(low - high))


AUTO_MAX_TOKENS = "auto"
"""``max_tokens_kwarg`` value that detects the keyword from the model's declared fields."""


def resolve_max_tokens_kwarg(value: str | None, model: object) -> str | None:
    """The call keyword that limits new tokens for ``model``.

    ``"auto"`` gives ``"max_tokens"`` when the model declares a ``max_tokens`` field (the
    per-call name LangChain's and LlamaIndex's API models take, as ``ChatOpenAI`` and
    LlamaIndex's ``OpenAI`` and ``OpenAILike`` do), else ``None``, which keeps the model's
    own setting. Any other value is used as given.
    """
    if value != AUTO_MAX_TOKENS:
        return value
    fields = getattr(type(model), "model_fields", None) or {}
    return "max_tokens" if "max_tokens" in fields else None


def names_a_secret(field: str) -> bool:
    """Whether a field's name says it holds a credential (``api_key``, ``token``,
    ``client_secret``; not ``max_tokens``)."""
    name = field.lower()
    return any(word in name for word in ("key", "secret", "password")) or name.endswith("token")


def check_concurrency(limit: int) -> None:
    """Raise :class:`InputError` unless ``limit`` is a whole number of calls, at least 1."""
    check_whole("concurrency", limit, 1)


MAX_TOP_LOGPROBS = 20
"""The most alternatives per token that the OpenAI API lists."""


def check_top_logprobs(value: int) -> None:
    """Raise :class:`InputError` unless ``value`` is a whole number the API takes."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InputError(
            f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}] (the OpenAI API's range), "
            f"got {value!r}"
        )


class LoopSemaphores:
    """One semaphore per event loop, so a backend can serve several loops."""

    def __init__(self, limit: int) -> None:
        check_concurrency(limit)
        self._by_loop: PerLoop[asyncio.Semaphore] = PerLoop(lambda: asyncio.Semaphore(limit))

    def get(self) -> asyncio.Semaphore:
        """The running loop's semaphore."""
        return self._by_loop.get()


@dataclass
class Reply:
    """What a framework model returned, reduced to what rankwise reads.

    ``positions`` holds, per generated token, (token, logprob) pairs: the chosen token first,
    then the alternatives (empty when the model gave no log-probs).
    """

    text: str
    positions: list[list[tuple[str, float]]]
    prompt_tokens: int = 0
    completion_tokens: int = 0


class FrameworkBackend(ABC):
    """The shared logic of backends that wrap a framework's chat model.

    Subclasses implement :meth:`_call`; token counting uses tiktoken when its encoding is on
    disk, else 4 characters a token.
    """

    kind: str = "framework"
    model_name: str

    def __init__(
        self,
        *,
        logprobs: bool,
        top_logprobs: int,
        max_tokens_kwarg: str | None,
        concurrency: int,
        max_context: int,
    ) -> None:
        check_flag("logprobs", logprobs)
        check_top_logprobs(top_logprobs)
        check_whole("max_context", max_context, 1, " token")
        if max_tokens_kwarg is not None and not (
            isinstance(max_tokens_kwarg, str) and max_tokens_kwarg.isidentifier()
        ):
            raise InputError(
                f"max_tokens_kwarg must be a keyword name or None (keep the model's own "
                f"limit), got {max_tokens_kwarg!r}"
            )
        self._counter = TokenCounter()
        self.top_logprobs = top_logprobs
        self.max_tokens_kwarg = max_tokens_kwarg
        self._semaphores = LoopSemaphores(concurrency)
        self._capabilities = Capabilities(chat=True, logprobs=logprobs, max_context=max_context)
        self._no_logprobs = MissingLogprobsWarning(
            logger, f"{type(self).__name__}(model, logprobs=False)"
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def cache_identity(self) -> str:
        """What the response cache keys this model by: its name and its settings (the
        class, server, temperature and the like), which change its answers: two
        providers' models of one name, or one model at two temperatures, must not share
        answers."""
        return f"{self.model_name} {self._settings()}"

    @abstractmethod
    def _settings(self) -> str:
        """The wrapped model's settings as stable text, without secrets."""

    def count_tokens(self, text: str) -> int:
        return self._counter.count(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self._counter.truncate(text, max_tokens)

    @abstractmethod
    async def _call(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        """Call the wrapped model with extra keyword arguments."""

    @abstractmethod
    def _call_blocking(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        """Call the wrapped model through its synchronous interface (for the sync API)."""

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        assistant_prefix: str = "",
    ) -> Generation:
        """Generate with the model's own settings (plus the token limit, if configured)."""
        reply = await self._guarded(messages, self._limit(max_tokens))
        return Generation(reply.text, reply.prompt_tokens, reply.completion_tokens)

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        """Labels among the top log-probs, at the position after ``assistant_prefix``."""
        if not self._capabilities.logprobs:
            raise CapabilityError(
                f"{self.model_name}: log-probs are off; pass logprobs=True if the model returns "
                "them, or use a method that only generates (listwise, setwise, prp-*)"
            )
        extra: dict[str, Any] = {
            "logprobs": True,
            "top_logprobs": max(self.top_logprobs, len(labels)),
        }
        extra.update(self._limit(1 + (PREFIX_TOKENS if assistant_prefix.strip() else 0)))
        reply = await self._guarded(messages, extra)
        if not reply.positions:
            self._no_logprobs.give(self.model_name)
        found = read_labels(reply.positions, labels, assistant_prefix)
        return LabelLogprobs(found, reply.text, reply.prompt_tokens, reply.completion_tokens)

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        raise CapabilityError("chat models do not score a given continuation; use a local model")

    async def aclose(self) -> None:
        return None

    def _limit(self, max_tokens: int) -> dict[str, Any]:
        return {self.max_tokens_kwarg: max_tokens} if self.max_tokens_kwarg else {}

    async def _guarded(self, messages: Sequence[Message], extra: dict[str, Any]) -> Reply:
        async with self._semaphores.get():
            try:
                if on_sync_loop():
                    # The caller used rankwise's synchronous API, so the model is called
                    # through its synchronous interface. Frameworks keep one async HTTP client
                    # per model, bound to the event loop that first used it (LangChain's
                    # ChatOpenAI does): calling it from rankwise's own loop after the app's
                    # failed with "Event loop is closed".
                    return await asyncio.to_thread(self._call_blocking, messages, extra)
                return await self._call(messages, extra)
            except Exception as error:
                if refused_as_too_long(error):
                    overflow = context_overflow(
                        error,
                        self,
                        messages,
                        where=self.model_name,
                        option=f"{type(self).__name__}(..., max_context=N)",
                    )
                    if overflow.context_length is not None:
                        self._capabilities = replace(
                            self._capabilities, max_context=overflow.context_length
                        )
                    raise overflow from error
                hint = ""
                if self.max_tokens_kwarg and self.max_tokens_kwarg in str(error):
                    hint = (
                        f"; if the model does not take {self.max_tokens_kwarg}= per call, "
                        "pass max_tokens_kwarg=None (or the keyword it takes)"
                    )
                raise BackendError(
                    f"{self.model_name} failed: {type(error).__name__}: {error}{hint}"
                ) from error
