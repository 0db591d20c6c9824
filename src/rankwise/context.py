"""The per-rerank call context: every LLM call a method makes goes through here and is counted."""

from __future__ import annotations

from collections.abc import Sequence

from rankwise.backends.base import Backend, ContinuationLogprobs, Generation, LabelLogprobs
from rankwise.prompts import Message, PromptLibrary
from rankwise.types import Trace, Usage


class RankContext:
    """Wraps a backend for one rerank, adding usage accounting and the trace."""

    def __init__(self, backend: Backend, prompts: PromptLibrary) -> None:
        self.backend = backend
        self.prompts = prompts
        self.usage = Usage()
        self.trace = Trace()

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, assistant_prefix: str = ""
    ) -> Generation:
        """Generate greedily and count the call."""
        result = await self.backend.generate(
            messages, max_tokens=max_tokens, assistant_prefix=assistant_prefix
        )
        self._count(result.prompt_tokens, result.completion_tokens, result.retries)
        return result

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        """First-token log-probs of ``labels`` and count the call."""
        result = await self.backend.label_logprobs(
            messages, labels, assistant_prefix=assistant_prefix
        )
        self._count(result.prompt_tokens, result.completion_tokens, result.retries)
        return result

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        """Log-probs of ``continuation`` after ``prefix`` and count the call."""
        result = await self.backend.continuation_logprobs(prefix, continuation)
        self._count(result.prompt_tokens, 0, result.retries)
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
