"""The per-rerank call context: every LLM call a method makes goes through here and is counted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from rankwise.backends.base import (
    AttentionScan,
    Backend,
    ContinuationLogprobs,
    Generation,
    LabelLogprobs,
)
from rankwise.cache import ResponseCache
from rankwise.errors import CacheError, CapabilityError
from rankwise.prompts import Message, PromptLibrary
from rankwise.types import Trace, Usage

logger = logging.getLogger(__name__)

Result = TypeVar("Result", Generation, LabelLogprobs, ContinuationLogprobs)


class BudgetExhausted(Exception):
    """Raised inside a rerank when its call budget is spent (handled by the Reranker)."""


class _Abandoned(Exception):
    """The first asking of a prompt was cancelled; a later asking sends it itself."""


class RankContext:
    """Wraps a backend for one rerank: usage accounting, the trace, and the response cache.

    A cache hit costs no LLM call: it counts in ``usage.cache_hits``, not ``usage.calls``.
    A cache that cannot be read or written (another process holds it locked, the disk is
    full) does not fail the rerank, whose calls may already be paid for: the rerank goes on
    without it, with a warning and an ``info`` event in the trace.

    A prompt asked again within one rerank (with the same decoding parameters) is answered
    by its first asking, also while that one is still in flight, and counts in
    ``usage.reused_answers``. Answers are greedy, so asking again would give the same answer
    at the cost of a call: PRP-Sliding's later passes compare many of the neighbours the
    pass before compared, and heapsort meets pairs again while it sifts.

    Budgets (``max_calls``, ``max_tokens``) are checked before each call against what is
    spent *and* what is in flight, so methods whose calls run concurrently (pointwise,
    all-pairs PRP) stop at the budget instead of sending every call before the first one
    returns. A call in flight counts one call and, against ``max_tokens``, its prompt's
    tokens under the backend's tokenizer plus the most it may generate.

    With ``cache_writes=False`` the cache is only read (a dry run, whose answers are not
    the model's).
    """

    def __init__(
        self,
        backend: Backend,
        prompts: PromptLibrary,
        cache: ResponseCache | None = None,
        *,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        cache_writes: bool = True,
    ) -> None:
        self.backend = backend
        self.prompts = prompts
        self.cache = cache
        self.cache_writes = cache_writes
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.usage = Usage()
        self.trace = Trace()
        self._best_order: Callable[[], list[int] | None] | None = None
        self.budget_stopped = False
        self._calls_in_flight = 0
        self._tokens_in_flight = 0
        self._answers: dict[str, asyncio.Future[Any]] = {}

    def checkpoint(self, order: list[int] | Callable[[], list[int] | None]) -> None:
        """Record the best order known so far, or a function that gives it when asked
        (None while nothing is known; cheaper where it changes often); a budget stop falls
        back to it."""
        if callable(order):
            self._best_order = order
        else:
            kept = list(order)
            self._best_order = lambda: kept

    @property
    def best_order(self) -> list[int] | None:
        """The order :meth:`checkpoint` last recorded, or None."""
        return None if self._best_order is None else self._best_order()

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
        """First-token log-probs of ``labels`` and count the call. An API lists only the
        alternatives asked for, so how many (the backend's ``top_logprobs``) is part of the
        request's cache key: a label missing from the top 5 may be among the top 10."""
        request = {"messages": _plain(messages), "labels": list(labels), "prefix": assistant_prefix}
        alternatives = getattr(self.backend, "top_logprobs", None)
        if alternatives is not None:
            request["top_logprobs"] = alternatives
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
        identity = getattr(self.backend, "cache_identity", self.backend.model_name)
        key = ResponseCache.key(self.backend.kind, identity, operation, request)
        return await self._reused(key, lambda: self._ask(key, operation, request, cls, call))

    async def _reused(self, key: str, ask: Callable[[], Awaitable[Result]]) -> Result:
        """The answer of the first asking of ``key`` in this rerank, or ``ask()``'s."""
        while (first := self._answers.get(key)) is not None:
            try:
                answer: Result = await asyncio.shield(first)
            except _Abandoned:
                continue  # its first asking was cancelled: ask it here, unless another did
            self.usage.reused_answers += 1
            return answer
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._answers[key] = future
        try:
            answer = await ask()
        except BaseException as error:
            del self._answers[key]
            abandoned = not isinstance(error, Exception)  # cancelled, or the process stops
            future.set_exception(_Abandoned() if abandoned else error)
            future.exception()  # retrieved here, so nobody waiting is not an error
            raise
        future.set_result(answer)
        return answer

    async def _ask(
        self,
        key: str,
        operation: str,
        request: dict[str, object],
        cls: type[Result],
        call: Callable[[], Awaitable[Result]],
    ) -> Result:
        """Answer from the response cache, or make the call and count it."""
        if self.cache is not None:
            try:
                hit = self.cache.get(key, cls)
            except CacheError as error:
                self._go_on_without_cache(error)
                hit = None
            if hit is not None:
                self.usage.cache_hits += 1
                return hit
        tokens = _request_tokens(request, self.backend) if self.max_tokens is not None else 0
        async with self._budgeted(calls=1, tokens=tokens):
            result = await call()
        completion = getattr(result, "completion_tokens", 0)
        self._count(result.prompt_tokens, completion, result.retries)
        if self.cache is not None and self.cache_writes:
            try:
                self.cache.put(key, self.backend.kind, self.backend.model_name, operation, result)
            except CacheError as error:
                self._go_on_without_cache(error)
        return result

    def _go_on_without_cache(self, error: CacheError) -> None:
        """Stop using the response cache for the rest of this rerank (so a locked file
        costs one wait, not one per call), with a warning and a trace event. Called only
        right after a cache call, with no await between the check for a cache and here."""
        self.cache = None
        message = (
            f"{error}; this rerank goes on without the cache, so its answers are not stored "
            "and a later run pays for them again"
        )
        logger.warning("%s", message)
        self.trace.record("info", message)

    async def query_attention(
        self, context_pieces: Sequence[str], query_texts: Sequence[str]
    ) -> AttentionScan:
        """One attention scan of ``context_pieces`` per query text (``icr``), counted as one
        call per query text; not cached (it returns per-token attention, not an answer)."""
        scan = getattr(self.backend, "query_attention", None)
        if scan is None:
            raise CapabilityError(
                f"backend {self.backend.kind} exposes no attention; use a local model"
            )
        tokens = 0
        if self.max_tokens is not None:
            context_tokens = sum(self.backend.count_tokens(piece) for piece in context_pieces)
            tokens = sum(context_tokens + self.backend.count_tokens(text) for text in query_texts)
        async with self._budgeted(calls=len(query_texts), tokens=tokens):
            result = await scan(context_pieces, query_texts)
        self.usage.calls += len(query_texts)
        self.usage.prompt_tokens += result.prompt_tokens
        return result

    @asynccontextmanager
    async def _budgeted(self, *, calls: int, tokens: int) -> AsyncIterator[None]:
        """Refuse the call if the budgets, counting calls in flight, are spent; else hold
        its share of them while it runs."""
        if self.max_calls is not None and (
            self.usage.calls + self._calls_in_flight + calls > self.max_calls
        ):
            raise BudgetExhausted(f"the budget of {self.max_calls} LLM calls is spent")
        if self.max_tokens is not None and (
            self.usage.total_tokens + self._tokens_in_flight >= self.max_tokens
        ):
            raise BudgetExhausted(f"the budget of {self.max_tokens} tokens is spent")
        self._calls_in_flight += calls
        self._tokens_in_flight += tokens
        try:
            yield
        finally:
            self._calls_in_flight -= calls
            self._tokens_in_flight -= tokens

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


def _request_tokens(request: dict[str, object], backend: Backend) -> int:
    """The tokens a request may spend: its text under ``backend``'s tokenizer (no chat
    template) plus the most it may generate (one token for label log-probs)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        prompt = sum(backend.count_tokens(message["content"]) for message in messages)
        prompt += backend.count_tokens(str(request.get("prefix", "")))
        generated = request.get("max_tokens", 1)
        return prompt + (generated if isinstance(generated, int) else 1)
    return backend.count_tokens(str(request.get("prefix", ""))) + backend.count_tokens(
        str(request.get("continuation", ""))
    )
