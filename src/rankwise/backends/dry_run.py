"""A backend that answers without calling any model, to predict calls and tokens up front.

:class:`DryRunBackend` wraps the backend a rerank would use. Methods build exactly the
prompts they would send; the dry-run backend counts their tokens with the wrapped backend's
tokenizer (or its documented estimate) and answers neutrally: equal label log-probs, an
empty generation, zero continuation log-probs, uniform attention. Call counts are therefore
exact for methods whose call pattern does not depend on the answers (pointwise, all-pairs,
sliding windows, FIRST, ICR); for heapsort, setwise and PRP-Sliding they follow the path of
a model that prefers no passage (``Reranker.call_bounds`` gives the fewest and the most).
A prompt asked again on that path is answered without a call, as in a real rerank.
Completion tokens are the requested maximum, an upper bound. With a response cache, a
prompt whose answer it holds costs no call, as in the real rerank, and the cached answer
steers the path; the dry run writes nothing to the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rankwise.backends.base import (
    AttentionScan,
    Backend,
    Capabilities,
    ContinuationLogprobs,
    Generation,
    LabelLogprobs,
)
from rankwise.backends.tokens import estimate_chat_prompt_tokens
from rankwise.prompts import Message


class DryRunBackend:
    """Looks like ``backend`` to every method but never calls a model."""

    def __init__(self, backend: Backend) -> None:
        self.wrapped = backend

    @property
    def model_name(self) -> str:
        return self.wrapped.model_name

    @property
    def kind(self) -> str:
        return self.wrapped.kind

    @property
    def capabilities(self) -> Capabilities:
        return self.wrapped.capabilities

    @property
    def cache_identity(self) -> str:
        """The wrapped backend's, so a dry run finds the answers its real rerank stored."""
        return str(getattr(self.wrapped, "cache_identity", self.wrapped.model_name))

    @property
    def top_logprobs(self) -> int | None:
        """The wrapped backend's alternatives count (part of a label request's cache key)."""
        return getattr(self.wrapped, "top_logprobs", None)

    def count_tokens(self, text: str) -> int:
        return self.wrapped.count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self.wrapped.truncate(text, max_tokens)

    @property
    def exact_prompt_tokens(self) -> bool:
        """True when the wrapped backend renders prompts itself (a local chat template), so
        prompt token counts are exact; otherwise they are an estimate."""
        return hasattr(self.wrapped, "prompt_ids")

    def prompt_tokens(self, messages: Sequence[Message], assistant_prefix: str = "") -> int:
        """Tokens of a chat prompt: exact through a local chat template, else an estimate.
        A local model refuses, as it would in the real rerank, a prompt past its context."""
        if self.exact_prompt_tokens:
            tokens = len(self.wrapped.prompt_ids(messages, assistant_prefix))  # type: ignore[attr-defined]
            self._check_fits(tokens, 1)
            return tokens
        return estimate_chat_prompt_tokens(self.count_tokens, [m.content for m in messages])

    def _check_fits(self, prompt_tokens: int, read_tokens: int) -> None:
        """The wrapped local model's refusal of a prompt that, with the ``read_tokens`` after
        it, runs past its context (an API server's context is not known here)."""
        check = getattr(self.wrapped, "check_fits", None)
        if check is not None:
            check(prompt_tokens, read_tokens)

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        assistant_prefix: str = "",
    ) -> Generation:
        return Generation(
            text="",
            prompt_tokens=self.prompt_tokens(messages, assistant_prefix),
            completion_tokens=max_tokens,
        )

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        even = -math.log(max(1, len(labels)))
        return LabelLogprobs(
            logprobs={label: even for label in labels},
            text=labels[0] if labels else "",
            prompt_tokens=self.prompt_tokens(messages, assistant_prefix),
            completion_tokens=1,
        )

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        exact = getattr(self.wrapped, "continuation_ids", None)
        if exact is not None:  # a local model: the ids it would read
            prefix_ids, continuation_ids = exact(prefix, continuation)
            first, count = len(prefix_ids), max(1, len(continuation_ids))
            self._check_fits(first, len(continuation_ids))
        else:
            first, count = self.count_tokens(prefix), max(1, self.count_tokens(continuation))
        return ContinuationLogprobs(token_logprobs=[0.0] * count, prompt_tokens=first + count)

    async def query_attention(
        self, context_pieces: Sequence[str], query_texts: Sequence[str]
    ) -> AttentionScan:
        spans, start = [], 0
        for piece in context_pieces:
            length = self.count_tokens(piece)
            spans.append((start, start + length))
            start += length
        uniform = [1.0 / max(1, start)] * start
        return AttentionScan(
            spans=spans,
            attention=[list(uniform) for _ in query_texts],
            prompt_tokens=start + sum(self.count_tokens(text) for text in query_texts),
        )

    def chat_affixes(self) -> tuple[str, str]:
        affixes = getattr(self.wrapped, "chat_affixes", None)
        return affixes() if affixes is not None else ("", "")

    async def aclose(self) -> None:
        await self.wrapped.aclose()
