"""The Backend protocol every LLM backend implements, and the results it returns."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rankwise.prompts import Message


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; methods check this when they are built.

    - ``chat``: generates text from chat messages.
    - ``logprobs``: returns log-probs of chosen labels for the first generated token.
    - ``exact_logprobs``: those log-probs cover every label (local weights), not only the
      top-k alternatives an API lists.
    - ``prompt_logprobs``: scores a given continuation (query likelihood).
    - ``attention``: exposes attention weights (in-context reranking).
    - ``max_context``: the context length in tokens.
    """

    chat: bool = True
    logprobs: bool = False
    exact_logprobs: bool = False
    prompt_logprobs: bool = False
    attention: bool = False
    max_context: int = 4096

    def has(self, name: str) -> bool:
        """True if the capability called ``name`` is present."""
        return bool(getattr(self, name))


class MissingLogprobsWarning:
    """Warns once per backend when its model answers a request for log-probs without them:
    every method that reads them then scores from the answer's text. ``switch_off`` is the
    option that tells rankwise the model has none."""

    def __init__(self, logger: logging.Logger, switch_off: str) -> None:
        self._logger = logger
        self._switch_off = switch_off
        self._given = False

    def give(self, source: str) -> None:
        """Warn that ``source`` answered without log-probs, unless this already did."""
        if self._given:
            return
        self._given = True
        self._logger.warning(
            f"{source} answered without log-probs, though they were asked for, so methods that "
            "read them (pointwise, first, setwise) score from the answer's text instead, which "
            f"ranks poorly. If it does not return log-probs, pass {self._switch_off}, so that "
            "method='auto' picks listwise, or name a method that reads text: listwise, "
            "setwise, prp-*"
        )


API_CONCURRENCY = 16
"""Requests an API backend keeps in flight unless told otherwise."""
API_TIMEOUT = 60.0
"""Seconds an API backend waits for one request unless told otherwise."""
API_MAX_CONTEXT = 8192
"""Context length, in tokens, that an API backend fits prompts to unless told the model's."""

LOCAL_MODEL = Capabilities(logprobs=True, exact_logprobs=True, prompt_logprobs=True, attention=True)
"""What every local ``transformers`` model offers, known before it loads; the backend adds
``chat`` (whether the model has a chat template) and ``max_context`` once it has."""


@dataclass
class Generation:
    """Text generated for one prompt."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0


@dataclass
class LabelLogprobs:
    """Log-probs of candidate labels (e.g. "Yes"/"No") as the first generated token.

    ``logprobs`` holds only the labels the backend could see: a local model sees every label,
    an API only those among its top alternatives. ``text`` is what the model actually produced.
    """

    logprobs: dict[str, float] = field(default_factory=dict)
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        # A NaN log-prob (a model with broken numerics; JSON carries it) says nothing and
        # compares false with every number, so it is left out, like a label not seen.
        self.logprobs = {label: lp for label, lp in self.logprobs.items() if not math.isnan(lp)}


@dataclass
class ContinuationLogprobs:
    """Per-token log-probs of a given continuation after a given prefix."""

    token_logprobs: list[float]
    prompt_tokens: int = 0
    retries: int = 0

    @property
    def total(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean(self) -> float:
        return self.total / len(self.token_logprobs) if self.token_logprobs else float("-inf")


@dataclass
class AttentionScan:
    """Attention paid by query texts to a context, summed over heads and layers.

    ``spans[i]`` is the token range of context piece ``i``; ``attention[q][t]`` is the mean,
    over the tokens of query text ``q``, of the attention to context token ``t``.
    """

    spans: list[tuple[int, int]]
    attention: list[list[float]]
    prompt_tokens: int = 0


@runtime_checkable
class Backend(Protocol):
    """An LLM that rankwise methods can call. All calls are async."""

    @property
    def model_name(self) -> str:
        """A name for the model, used in reports and cache keys."""
        ...

    @property
    def kind(self) -> str:
        """The backend family: ``"openai"``, ``"transformers"``, ``"langchain"``, ..."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        assistant_prefix: str = "",
    ) -> Generation:
        """Generate a reply to chat messages (greedy at temperature 0).

        ``assistant_prefix`` starts the reply (local models); chat APIs cannot continue a
        partial reply, so they ignore it and the caller's parser must cope without it.
        """
        ...

    async def label_logprobs(
        self, messages: Sequence[Message], labels: Sequence[str], *, assistant_prefix: str = ""
    ) -> LabelLogprobs:
        """Log-probs of each label's first token as the reply's first token."""
        ...

    async def continuation_logprobs(self, prefix: str, continuation: str) -> ContinuationLogprobs:
        """Log-probs of ``continuation`` tokens after raw text ``prefix`` (no chat template)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under this backend's tokenizer (or a documented estimate)."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` of at most ``max_tokens`` tokens."""
        ...

    async def aclose(self) -> None:
        """Release network clients or worker threads."""
        ...
