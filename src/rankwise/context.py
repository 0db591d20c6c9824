"""The per-rerank call context: every LLM call a method makes goes through here and is counted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from rankwise.backends.base import Backend, ContinuationLogprobs, Generation, LabelLogprobs
from rankwise.cache import ResponseCache
from rankwise.prompts import Message, PromptLibrary
from rankwise.types import Trace, Usage

Result = TypeVar("Result", Generation, LabelLogprobs, ContinuationLogprobs)


class BudgetExhausted(Exception):
    """Raised inside a rerank when its call budget is spent (handled by the Reranker)."""


class RankContext:
    """Wraps a backend for one rerank: usage accounting, the trace, and the response cache.

    A cache hit costs no LLM call: it counts in ``usage.cache_hits``, not ``usage.calls``.
    """

    def __init__(
        self,
        backend: Backend,
        prompts: PromptLibrary,
        cache: ResponseCache | None = None,
        *,
        max_calls: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.backend = backend
        self.prompts = prompts
        self.cache = cache
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.usage = Usage()
        self.trace = Trace()
        self.best_order: list[int] | None = None
        self.budget_stopped = False

    def checkpoint(self, order: list[int]) -> None:
        """Record the best order known so far; a budget stop falls back to it."""
        self.best_order = list(order)

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, assistant_prefix: str = ""
    ) -> Generation:
        """Generate greedily and count the call."""
        request = {
            "messages": _plain(messages),
            "max_tokens": max_tokens,
            "prefix": assistant_prefix,
        }
        return await self._cached(
            "generate",
            request,
            Generation,
            lambda: self.backend.generate(
                messages, max_tokens=max_tokens, assistant_prefix=assistant_prefix
            ),
        )

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        """First-token log-probs of ``labels`` and count the call."""
        request = {"messages": _plain(messages), "labels": list(labels), "prefix": assistant_prefix}
        return await self._cached(
            "label_logprobs",
            request,
            LabelLogprobs,
            lambda: self.backend.label_logprobs(
                messages, labels, assistant_prefix=assistant_prefix
            ),
        )

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        """Log-probs of ``continuation`` after ``prefix`` and count the call."""
        request = {"prefix": prefix, "continuation": continuation}
        return await self._cached(
            "continuation_logprobs",
            request,
            ContinuationLogprobs,
            lambda: self.backend.continuation_logprobs(prefix, continuation),
        )

    async def _cached(
        self,
        operation: str,
        request: dict[str, object],
        cls: type[Result],
        call: Callable[[], Awaitable[Result]],
    ) -> Result:
        key = None
        if self.cache is not None:
            key = self.cache.key(self.backend.kind, self.backend.model_name, operation, request)
            hit = self.cache.get(key, cls)
            if hit is not None:
                self.usage.cache_hits += 1
                return hit
        if self.max_calls is not None and self.usage.calls >= self.max_calls:
            raise BudgetExhausted(f"the budget of {self.max_calls} LLM calls is spent")
        if self.max_tokens is not None and self.usage.total_tokens >= self.max_tokens:
            raise BudgetExhausted(f"the budget of {self.max_tokens} tokens is spent")
        result = await call()
        completion = getattr(result, "completion_tokens", 0)
        self._count(result.prompt_tokens, completion, result.retries)
        if self.cache is not None and key is not None:
            self.cache.put(key, self.backend.kind, self.backend.model_name, operation, result)
        return result

    def truncate(self, text: str, max_tokens: int | None) -> str:
        """Cut ``text`` to ``max_tokens`` tokens of the backend's tokenizer (None: no cut)."""
        if max_tokens is None:
            return text
        return self.backend.truncate(text, max_tokens)

    def _count(self, prompt_tokens: int, completion_tokens: int, retries: int) -> None:
        self.usage.calls += 1
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        self.usage.retries += retries


def _plain(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [message.as_dict() for message in messages]
