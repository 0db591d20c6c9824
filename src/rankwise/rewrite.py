"""Query rewriting: more (or better) queries to retrieve with, fused before reranking.

Strategies and their prompts (``prompts/rewrite_*.txt``):

- ``multi_query``: LangChain's MultiQueryRetriever prompt (3 paraphrases, one per line).
- ``pseudo_answer``: HyDE's web-search prompt; the hypothetical passage is the query.
- ``decompose``: the rag-from-scratch decomposition prompt (sub-questions).
- ``conversational``: LangChain's condense-question prompt (chat history + follow-up in,
  standalone question out).
- ``keywords``, ``core_content``, ``general``: DMQR-RAG's KWR, CCE and GQR. The paper
  publishes no code, so these prompts are rankwise's own short renderings of its definitions.
- ``adaptive``: DMQR-RAG's selection: one call picks the smallest useful subset of
  GQR/KWR/PAR/CCE, then one call per picked strategy.

Every rewrite is cleaned (numbering, bullets, quotes, blank lines, lead-ins, duplicates and
echoes of the original removed). When nothing usable remains, the original query stands
alone and the result's ``trace`` says why.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from rankwise._checks import check_flag, check_whole
from rankwise._concurrency import gather_all
from rankwise._sync import run_sync
from rankwise.backends.base import Backend
from rankwise.backends.resolve import (
    FrameworkModel,
    aload_local_backend,
    local_backend,
    resolve_backend,
)
from rankwise.backends.tokens import prompt_counter
from rankwise.errors import InputError
from rankwise.inputs import normalise_query
from rankwise.parsing import after_reasoning
from rankwise.prompts import PromptLibrary, check_fields
from rankwise.types import Trace, Usage

Strategy = Literal[
    "original",
    "multi_query",
    "pseudo_answer",
    "decompose",
    "conversational",
    "keywords",
    "core_content",
    "general",
]
STRATEGIES: tuple[str, ...] = tuple(s for s in get_args(Strategy) if s != "original")
_SELECTABLE = {"GQR": "general", "KWR": "keywords", "PAR": "pseudo_answer", "CCE": "core_content"}
_MULTI_LINE = {"multi_query", "decompose"}
_END_PUNCTUATION = " .?!,;:\"'`“”‘’"
# A list mark: bullets, or "1." / "2)" / "3 -" / "a)" before a space ("e.g." and "3.5" are text).
_NUMBERING = re.compile(
    r"^\s*(?:[-*•]+|(?:\(?\d+[.)]|\d+\s*[-:]|[a-z][.)])(?=\s|$))\s*", re.IGNORECASE
)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LABEL = re.compile(
    r"^\s*(?:query|question|sub-question|keywords?|rewritten query|core query|"
    r"standalone question|passage)\s*\d*\s*:\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Rewrite:
    """One query to retrieve with, and the strategy that produced it."""

    text: str
    strategy: str


@dataclass
class RewriteResult:
    """The queries (the original first unless excluded), with usage and trace."""

    rewrites: list[Rewrite]
    usage: Usage = field(default_factory=Usage)
    trace: Trace = field(default_factory=Trace)

    @property
    def queries(self) -> list[str]:
        return [rewrite.text for rewrite in self.rewrites]


def clean_lines(text: str, *, multi_line: bool, original: str = "") -> list[str]:
    """Usable queries from raw model output."""
    text = after_reasoning(text)
    lines = text.splitlines() if multi_line else [_one_query_text(text)]
    seen = {same_query_key(original)} if original else set()
    cleaned: list[str] = []
    for line in lines:
        line = line.strip()
        while (unmarked := _NUMBERING.sub("", line, count=1)) != line:  # "- 1." is two marks
            line = unmarked
        line = _LABEL.sub("", line).strip().strip("\"'`“”‘’*").strip()  # quotes, **bold**
        key = same_query_key(line)
        if len(line) < 2 or not key or key in seen or line.endswith(":"):  # ":" leads in
            continue
        seen.add(key)
        cleaned.append(line)
    return cleaned


def _one_query_text(text: str) -> str:
    """The text of an answer that holds one query, on one line: its first paragraph with
    text, without its lead-in lines ("Here is the rewritten query:"), or the next paragraph
    when the first only leads in. A reasoning model's answer starts with a blank line after
    its thoughts, and a chatty one with a lead-in paragraph. What follows the query (an
    explanation) is not read, nor is anything after two paragraphs of lead-ins (a small
    model's run of headings, the last one cut short by the token limit)."""
    paragraphs = [paragraph for paragraph in _PARAGRAPH_BREAK.split(text) if paragraph.strip()]
    for paragraph in paragraphs[:2]:
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        while lines and _is_lead_in(lines[0]):
            del lines[0]
        if lines:
            return " ".join(" ".join(lines).split())
    return ""


def _is_lead_in(line: str) -> bool:
    """Whether a line only introduces what follows (it ends with a colon, bold or not)."""
    return line.rstrip("*_ ").endswith(":")


def same_query_key(text: str) -> str:
    """What two queries share when they differ only in case, spacing or the punctuation
    around them (an echo of the question with a "?" added searches for the same thing)."""
    return " ".join(text.casefold().split()).strip(_END_PUNCTUATION)


class QueryRewriter:
    """Rewrite queries with an LLM backend.

    Args:
        backend: any rankwise backend that can generate, a local model name, ``None`` for
            the embedded model (loaded on first use), or a LangChain chat model or
            LlamaIndex LLM (wrapped).
        strategies: which strategies to run (one name, or several; each runs once), or
            ``"adaptive"`` to let the model choose.
        include_original: keep the original query first (default).
        max_tokens: new tokens per rewrite call, at least 1 (HyDE passages use 4× this).
        prompts: template overrides by name.
    """

    def __init__(
        self,
        backend: Backend | str | FrameworkModel | None = None,
        strategies: str | Sequence[str] = ("multi_query",),
        *,
        include_original: bool = True,
        max_tokens: int = 64,
        prompts: dict[str, str] | None = None,
    ) -> None:
        check_flag("include_original", include_original)
        if isinstance(strategies, str):
            strategies = (strategies,)  # one name, not its letters
        if not strategies:
            raise InputError(
                "strategies is empty, so nothing would be rewritten; name at least one, or "
                "pass no rewriter"
            )
        unknown = [s for s in strategies if s not in STRATEGIES and s != "adaptive"]
        if unknown:
            raise InputError(f"unknown strategies {unknown}; use {list(STRATEGIES)} or 'adaptive'")
        check_whole("max_tokens", max_tokens, 1)
        resolved = resolve_backend(backend)
        self._backend = None if resolved is None or isinstance(resolved, str) else resolved
        self._local_name = resolved if isinstance(resolved, str) else None
        self.strategies = tuple(dict.fromkeys(strategies))
        self.include_original = include_original
        self.max_tokens = max_tokens
        self.prompts = PromptLibrary(prompts)
        self.prompts.check_names(prefix="rewrite_")  # every rewrite_* name is a packaged one
        for name in prompts or {}:  # its own templates; others (a reranker's) are not its to judge
            if name.startswith("rewrite_"):
                fills = {"question"} if name == "rewrite_select" else {"question", "chat_history"}
                check_fields(self.prompts.get(name), frozenset(fills))

    @property
    def backend(self) -> Backend:
        """The backend, loading the local model on first access when none was given."""
        if self._backend is None:
            self._backend = local_backend(self._local_name)
        return self._backend

    async def arewrite(self, question: str, *, chat_history: str = "") -> RewriteResult:
        """Rewrite ``question`` with every configured strategy (concurrently); the result's
        ``usage`` counts the calls, tokens and seconds, its ``trace`` every fallback.

        ``chat_history`` (the earlier turns as text) is read by the ``conversational``
        strategy; where it does not fit the model's context, its latest lines are kept and
        the cut is traced."""
        started = time.perf_counter()
        result = await self._rewrite(question, chat_history)
        result.usage.seconds = time.perf_counter() - started
        return result

    def rewrite(self, question: str, *, chat_history: str = "") -> RewriteResult:
        """Synchronous :meth:`arewrite`; safe to call inside a running event loop (Jupyter)."""
        return run_sync(self.arewrite(question, chat_history=chat_history))

    async def _rewrite(self, question: str, chat_history: str) -> RewriteResult:
        question = normalise_query(question)
        if not isinstance(chat_history, str):
            raise InputError(
                f"chat_history must be a str, got {type(chat_history).__name__}; pass the "
                "earlier turns as text"
            )
        if not question.strip():
            raise InputError("question is empty; pass the text to rewrite")
        if self._backend is None:  # a local model, loaded off the event loop
            self._backend = await aload_local_backend(self._local_name)
        result = RewriteResult([Rewrite(question, "original")] if self.include_original else [])
        strategies = list(self.strategies)
        if "adaptive" in strategies:
            strategies.remove("adaptive")
            strategies += [s for s in await self._select(question, result) if s not in strategies]
        if "conversational" in strategies and not chat_history.strip():
            result.trace.record(
                "info",
                "conversational: no chat history was given, so the question is rephrased on "
                "its own; pass chat_history= with the earlier turns",
            )
        outputs = await gather_all(
            self._run(strategy, question, chat_history, result) for strategy in strategies
        )
        seen = {same_query_key(r.text) for r in result.rewrites}
        for strategy, texts in zip(strategies, outputs, strict=True):
            for text in texts:
                if same_query_key(text) not in seen:
                    seen.add(same_query_key(text))
                    result.rewrites.append(Rewrite(text, strategy))
        if not result.rewrites:
            result.rewrites.append(Rewrite(question, "original"))
            result.trace.record("fallback", "no usable rewrite; searching with the original query")
        return result

    async def __call__(self, question: str) -> list[str]:
        """The rewritten queries only (the pipeline adds the original itself)."""
        result = await self.arewrite(question)
        return [r.text for r in result.rewrites if r.strategy != "original"]

    async def _select(self, question: str, result: RewriteResult) -> list[str]:
        text = after_reasoning(await self._generate("rewrite_select", result, question=question))
        picked = [_SELECTABLE[name] for name in re.findall(r"\b(GQR|KWR|PAR|CCE)\b", text.upper())]
        if not picked:
            result.trace.record(
                "fallback", "strategy selection unreadable; using GQR", text=text[:80]
            )
            return ["general"]
        return list(dict.fromkeys(picked))

    async def _run(
        self, strategy: str, question: str, chat_history: str, result: RewriteResult
    ) -> list[str]:
        tokens = self.max_tokens * (4 if strategy == "pseudo_answer" else 1)
        if strategy == "conversational":
            chat_history = self._recent_history(question, chat_history, tokens, result)
        text = await self._generate(
            f"rewrite_{strategy}",
            result,
            max_tokens=tokens,
            question=question,
            chat_history=chat_history,
        )
        if strategy == "pseudo_answer":
            passage = " ".join(after_reasoning(text).split())
            cleaned = [passage] if passage else []
        else:
            cleaned = clean_lines(text, multi_line=strategy in _MULTI_LINE, original=question)
        if not cleaned:
            result.trace.record("fallback", f"{strategy}: no usable rewrite", text=text[:80])
        return cleaned

    def _recent_history(
        self, question: str, chat_history: str, answer_tokens: int, result: RewriteResult
    ) -> str:
        """The latest whole lines of ``chat_history`` that fit the model's context beside the
        prompt and ``answer_tokens``: the follow-up question leans on the latest turns. A cut
        is recorded in the trace."""
        count = prompt_counter(self.backend)
        template = self.prompts.get("rewrite_conversational")
        frame = count(template.render(question=question, chat_history=""))
        room = self.backend.capabilities.max_context - answer_tokens - frame
        if self.backend.count_tokens(chat_history) <= room:
            return chat_history
        lines = chat_history.splitlines()
        kept: list[str] = []
        for line in reversed(lines):
            room -= self.backend.count_tokens(line) + 1  # and its newline
            if room < 0:
                break
            kept.insert(0, line)
        result.trace.record(
            "truncation",
            f"conversational: chat history cut to its last {len(kept)} of {len(lines)} lines "
            "to fit the context",
            kept_lines=len(kept),
            lines=len(lines),
        )
        return "\n".join(kept)

    async def _generate(
        self, prompt: str, result: RewriteResult, *, max_tokens: int | None = None, **values: str
    ) -> str:
        messages = self.prompts.get(prompt).render(**values)
        answer = await self.backend.generate(messages, max_tokens=max_tokens or self.max_tokens)
        result.usage.calls += 1
        result.usage.prompt_tokens += answer.prompt_tokens
        result.usage.completion_tokens += answer.completion_tokens
        result.usage.retries += answer.retries
        return answer.text
