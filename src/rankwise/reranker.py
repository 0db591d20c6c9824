"""The Reranker facade: a method, a backend and a few options; ``await arerank(query, docs)``."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from rankwise._checks import check_whole, is_real
from rankwise._sync import run_sync
from rankwise.abstain import Abstention, Calibrator
from rankwise.backends.base import LOCAL_MODEL, Backend
from rankwise.backends.resolve import (
    FrameworkModel,
    aload_local_backend,
    local_backend,
    resolve_backend,
)
from rankwise.cache import ResponseCache, open_cache
from rankwise.context import BudgetExhausted, RankContext
from rankwise.errors import CapabilityError, ContextOverflowError, InputError
from rankwise.inputs import DocumentLike, normalise_documents, normalise_query
from rankwise.methods import (
    AUTO,
    RankingMethod,
    build_method,
    default_method,
    methods_supported_by,
    scoring_method_names,
)
from rankwise.methods.base import CallBounds, MethodResult, rank_scores
from rankwise.prompts import PromptLibrary, check_fields
from rankwise.types import (
    Candidate,
    RankedCandidate,
    RankedList,
    Usage,
    check_top_n,
    judged_scores,
)


class Reranker:
    """Rerank documents for a query with an LLM.

    Args:
        method: a method name (``pointwise``, ``pointwise-qlm``, ...), a
            :class:`~rankwise.methods.RankingMethod` instance, or ``"auto"`` (the default):
            ``pointwise-qlm`` on local models, ``pointwise`` on backends with log-probs (and
            whenever ``score_threshold`` is set), else ``listwise``; see
            :func:`~rankwise.methods.default_method`. ``RankedList.method`` names the one used.
        backend: a backend instance; a string is a local model (hub id, folder, ``.gguf``
            or ``"default"``); ``None`` uses the embedded SmolLM2 model, loaded on first use.
            A LangChain chat model or LlamaIndex LLM is wrapped (without log-probs; wrap it
            in ``LangChainBackend(model, logprobs=True)`` to use them).
        top_n: how many candidates :attr:`RankedList.selected` keeps (all by default).
        score_threshold: keep only candidates scoring at least this (methods with absolute
            scores only: ``pointwise``, or ``pointwise-qlm`` with ``calibrated=True``).
        prompts: overrides of prompt templates by name.
        abstain: an :class:`~rankwise.abstain.Abstention` rule (a fixed threshold, so
            methods with absolute scores only, as for ``score_threshold``) or a fitted
            :class:`~rankwise.abstain.Calibrator` (any method that scores); when it fires,
            ``RankedList.abstained`` is True, ``selected`` is empty (``items`` keeps all)
            and ``RankedList.abstain_reason`` says why.
        cache: a path for the persistent response cache (``None``: the path
            ``RANKWISE_CACHE`` names, if set; ``False``: no cache); with it, an identical
            second rerank makes no LLM call.
        deadline: seconds one rerank may take; when it runs out, the candidates keep the
            best order known so far (windows and passes already done, pointwise scores
            already returned ahead of the rest, else the input order) and the trace records
            a ``budget`` event. The scores are then ranks, which say nothing of relevance:
            with a ``score_threshold`` ``selected`` is empty, and with ``abstain`` the list
            abstains (``confidence`` None).
        max_calls: most LLM calls one rerank may make, with the same fallback; calls in
            flight count, so concurrent calls never exceed it.
        max_tokens: most prompt + completion tokens one rerank may spend, with the same
            fallback: checked before each call, counting calls in flight at their prompt's
            size plus the most they may generate; the call that crosses it still finishes.
        **options: options of the method, e.g. ``max_passage_tokens=256``.

    Example::

        reranker = Reranker("pointwise-qlm", top_n=3)
        ranked = reranker.rerank("how long do fleas live", ["...", "..."])
        for item in ranked.selected:
            print(item.rank, item.score, item.text[:60])
    """

    def __init__(
        self,
        method: str | RankingMethod = AUTO,
        backend: Backend | str | FrameworkModel | None = None,
        *,
        top_n: int | None = None,
        score_threshold: float | None = None,
        prompts: Mapping[str, str] | None = None,
        abstain: Abstention | Calibrator | None = None,
        cache: str | Path | ResponseCache | Literal[False] | None = None,
        deadline: float | None = None,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> None:
        self._auto_note = ""
        backend = resolve_backend(backend)
        if isinstance(method, RankingMethod):
            if options:
                raise InputError("pass method options to the method instance, not to Reranker")
            self.method = method
        else:
            if method == AUTO:
                local = backend is None or isinstance(backend, str)
                fixed_rule = isinstance(abstain, Abstention)
                method = default_method(
                    LOCAL_MODEL if local else backend.capabilities,  # type: ignore[union-attr]
                    absolute_scores=score_threshold is not None or fixed_rule,
                )
                self._auto_note = (
                    f" (method='auto' chose {method!r} for this backend"
                    + (" and score_threshold" if score_threshold is not None else "")
                    + (" and an Abstention rule" if fixed_rule else "")
                    + "; pass a method name to choose another)"
                )
            self.method = build_method(method, **options)
        check_top_n(top_n)
        if score_threshold is not None and not is_real(score_threshold):
            raise InputError(
                f"score_threshold must be a number, or None for no threshold; got "
                f"{score_threshold!r}"
            )
        if score_threshold is not None and not self.method.absolute_scores:
            raise InputError(
                f"method {self.method.name!r} gives {self.method.score_kind} scores that only "
                "order one list, so a score_threshold would be meaningless; use top_n, or a "
                "method with absolute scores such as 'pointwise'" + self._auto_note
            )
        if (
            score_threshold is not None
            and self.method.score_kind == "probability"
            and not 0.0 <= score_threshold <= 1.0
        ):
            raise InputError(
                f"method {self.method.name!r} scores are probabilities in [0, 1], so a "
                f"score_threshold of {score_threshold} would keep "
                + ("nothing" if score_threshold > 1 else "everything")
                + "; pass a threshold between 0 and 1 (0.5 is the model's own yes/no line)"
            )
        if abstain is not None and not isinstance(abstain, Abstention | Calibrator):
            raise InputError(
                "abstain must be an Abstention rule or a fitted Calibrator (say, "
                f"Calibrator.load('calibrator.json')), or None; got {abstain!r:.100}"
            )
        if abstain is not None and self.method.score_kind == "rank":
            raise InputError(
                f"{self.method.name!r} gives rank-only scores, whose confidence is a constant; "
                f"abstain with a method that scores ({', '.join(scoring_method_names())})"
                + self._auto_note
            )
        if isinstance(abstain, Abstention) and not self.method.absolute_scores:
            raise InputError(
                f"method {self.method.name!r} gives {self.method.score_kind} scores that only "
                "order one list, so an Abstention rule's fixed threshold would mean something "
                "else for every query (it would abstain on all of them, or on none); use "
                "'pointwise', 'pointwise-qlm' with calibrated=True, or fit a Calibrator on "
                "labelled queries (`rankwise calibrate`), which learns the scores' scale"
                + self._auto_note
            )
        if isinstance(abstain, Calibrator):
            abstain.check_fitted()  # now, before any call is paid for
            abstain.warn_if_fitted_for_another("method", self.method.name)
        self.top_n = top_n
        self.score_threshold = score_threshold
        self.abstain = abstain
        self.cache = open_cache(cache)
        if deadline is not None and not (is_real(deadline) and deadline > 0):
            raise InputError(f"deadline must be a positive number of seconds, got {deadline!r}")
        for name, limit in (("max_calls", max_calls), ("max_tokens", max_tokens)):
            if limit is not None:
                check_whole(name, limit, 0)
        self.deadline = deadline
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.prompts = PromptLibrary(prompts)
        prompt = getattr(self.method, "prompt", None)
        self.prompts.check_names([prompt] if isinstance(prompt, str) else [])
        if isinstance(prompt, str):  # an unknown name or a broken template fails here
            template = self.prompts.get(prompt)
            if self.method.prompt_fields:
                check_fields(template, self.method.prompt_fields)
        self._backend_spec = backend
        self._backend: Backend | None = None
        if backend is not None and not isinstance(backend, str):
            self._backend = backend
            self._check(backend)

    @property
    def backend(self) -> Backend:
        """The backend, loading the local model on first access when none was given."""
        if self._backend is None:
            self._backend = local_backend(self._backend_spec)
            self._check(self._backend)
        return self._backend

    async def _ready_backend(self) -> Backend:
        """:attr:`backend`, with a local model loaded off the event loop."""
        if self._backend is None:
            backend = await aload_local_backend(self._backend_spec)
            self._check(backend)
            self._backend = backend
        return self._backend

    @property
    def loaded_backend(self) -> Backend | None:
        """The backend if it is built already (one passed in, or the local model once
        loaded), else None; unlike :attr:`backend` this never loads a model."""
        return self._backend

    def _check(self, backend: Backend) -> None:
        if isinstance(self.abstain, Calibrator):
            self.abstain.warn_if_fitted_for_another("model", backend.model_name)
        missing = self.method.missing_capabilities(backend.capabilities)
        if missing:
            usable = methods_supported_by(backend.capabilities)
            raise CapabilityError(
                f"method {self.method.name!r} needs {', '.join(missing)}, which backend "
                f"{backend.kind}:{backend.model_name} does not offer. Methods that work with it: "
                f"{', '.join(usable) or 'none'}" + self._auto_note
            )

    async def arerank(
        self, query: str, documents: Iterable[DocumentLike], *, top_n: int | None = None
    ) -> RankedList:
        """Rank ``documents`` for ``query``. Every document comes back exactly once."""
        return await self._arerank(query, documents, top_n, await self._ready_backend(), self.cache)

    async def aestimate(self, query: str, documents: Iterable[DocumentLike]) -> Usage:
        """Predict the calls and tokens a rerank would cost, without calling the model.

        The method builds its real prompts; a :class:`~rankwise.backends.dry_run.DryRunBackend`
        counts their tokens and answers neutrally. Calls are exact for methods whose call
        pattern does not depend on the answers; for ``prp-heapsort`` and ``setwise`` they
        follow a model that prefers no passage, and :meth:`call_bounds` gives the fewest and
        the most. Completion tokens are the requested maxima (an upper bound). With a
        response cache, answers it holds cost no call (``usage.cache_hits``), as in the real
        rerank; nothing is written to it.
        """
        from rankwise.backends.dry_run import DryRunBackend

        result = await self._arerank(
            query,
            documents,
            None,
            DryRunBackend(await self._ready_backend()),
            self.cache,
            cache_writes=False,
        )
        return result.usage

    def estimate(self, query: str, documents: Iterable[DocumentLike]) -> Usage:
        """Synchronous :meth:`aestimate`."""
        return run_sync(self.aestimate(query, documents))

    def call_bounds(self, documents: Iterable[DocumentLike]) -> CallBounds:
        """The fewest and the most LLM calls one rerank of ``documents`` can make, whatever
        the model answers; no model is loaded or called.

        Equal for every method but ``prp-heapsort`` and ``setwise``, whose sift-downs go as
        deep as the answers take them. ``max_calls`` caps both; response-cache hits cost no
        call, so a warm cache makes fewer.
        """
        candidates = normalise_documents(documents)
        count = sum(1 for candidate in candidates if candidate.text.strip())
        if not self._calls_method(count):
            return CallBounds(0, 0)
        fewest, most = self.method.call_bounds(count)
        if self.max_calls is not None:
            fewest, most = min(fewest, self.max_calls), min(most, self.max_calls)
        return CallBounds(fewest, most)

    def _calls_method(self, count: int) -> bool:
        """Whether ``count`` non-empty candidates need the method at all.

        A lone candidate is ranked first whatever the model says, so order-only methods
        skip it (its rank score, 1.0, is what they would give). Every other method scores
        it, since its score is read on its own: a probability to threshold, downstream
        too (the adapters' ``relevance_score``), or a log-likelihood.
        """
        return count >= 2 or (count == 1 and self.method.score_kind != "rank")

    async def _arerank(
        self,
        query: str,
        documents: Iterable[DocumentLike],
        top_n: int | None,
        backend: Backend,
        cache: ResponseCache | None,
        *,
        cache_writes: bool = True,
    ) -> RankedList:
        check_top_n(top_n)
        query = normalise_query(query)
        candidates = normalise_documents(documents)
        if not query.strip():
            raise InputError("query is empty; pass the text to rank documents against")
        started = time.perf_counter()
        context = RankContext(
            backend,
            self.prompts,
            cache,
            max_calls=self.max_calls,
            max_tokens=self.max_tokens,
            cache_writes=cache_writes,
        )
        ranked = [i for i, c in enumerate(candidates) if c.text.strip()]
        empty = [i for i, c in enumerate(candidates) if not c.text.strip()]
        if empty:
            context.trace.record(
                "info",
                f"{len(empty)} empty document(s) placed last without an LLM call",
                positions=empty,
            )
        result = await self._rank_nonempty(query, [candidates[i] for i in ranked], context)
        unscored = [ranked[i] for i in result.order if math.isnan(result.scores[i])]
        if unscored:  # a model with broken numerics: its NaN says nothing, and breaks sorting
            context.trace.record(
                "fallback",
                f"{len(unscored)} document(s) got no usable score from the model (NaN); "
                "placed last",
                positions=unscored,
            )
        unjudged = set(unscored) | set(empty)
        order = [ranked[i] for i in result.order if ranked[i] not in unjudged]
        order += unscored + empty
        scores = dict(zip(ranked, result.scores, strict=True))
        scores.update(dict.fromkeys(unjudged, self.method.empty_score()))
        stopped = context.budget_stopped
        if self.method.score_kind == "rank" or stopped:
            scores = dict(enumerate(rank_scores(order)))
        context.usage.seconds = time.perf_counter() - started
        items = _ranked_items(candidates, order, scores, unjudged)
        abstained, confidence, reason = False, None, None
        if stopped and items and (self.abstain is not None or self.score_threshold is not None):
            # Rank scores say nothing of relevance: nothing is known to pass the rule.
            abstained = self.abstain is not None
            stop = "the rerank stopped before its scores were complete"
            consequences = []
            if abstained:
                reason = stop
                consequences.append("abstention could not judge it (abstained)")
            if self.score_threshold is not None:
                consequences.append("no candidate is known to pass score_threshold (none selected)")
            context.trace.record("info", f"{stop}: " + "; ".join(consequences))
        elif self.abstain is not None:
            judged = judged_scores(items)
            if not judged:  # nothing found, or nothing with text: nothing to pass on
                abstained = True
                reason = (
                    "no document had text to judge" if items else "there were no documents to rank"
                )
                context.trace.record("info", f"abstained: {reason}")
            else:
                abstained, confidence = self.abstain.decide(judged)
                if abstained:
                    reason = f"confidence {confidence:.4g} below {self.abstain.threshold}"
                    context.trace.record(
                        "info",
                        f"abstained: {reason}",
                        confidence=confidence,
                        rule=type(self.abstain).__name__,
                    )
        return RankedList(
            query=query,
            method=self.method.name,
            model=backend.model_name,
            score_kind="rank" if stopped else self.method.score_kind,
            items=items,
            top_n=self.top_n if top_n is None else top_n,
            score_threshold=self.score_threshold,
            usage=context.usage,
            trace=context.trace,
            abstained=abstained,
            confidence=confidence,
            abstain_reason=reason,
        )

    def rerank(
        self, query: str, documents: Iterable[DocumentLike], *, top_n: int | None = None
    ) -> RankedList:
        """Synchronous :meth:`arerank`; safe to call inside a running event loop (Jupyter)."""
        return run_sync(self.arerank(query, documents, top_n=top_n))

    def __repr__(self) -> str:
        if self._backend is not None:
            backend = f"{self._backend.kind}:{self._backend.model_name}"
        else:
            backend = f"local:{self._backend_spec or 'default'} (loads on first use)"
        limits = {
            "top_n": self.top_n,
            "score_threshold": self.score_threshold,
            "abstain": self.abstain,
            "cache": str(self.cache.path) if self.cache is not None else None,
            "deadline": self.deadline,
            "max_calls": self.max_calls,
            "max_tokens": self.max_tokens,
        }
        shown = "".join(
            f", {name}={value!r}" for name, value in limits.items() if value is not None
        )
        return f"Reranker({self.method.name!r}, backend={backend!r}{shown})"

    async def _rank_nonempty(
        self, query: str, candidates: list[Candidate], context: RankContext
    ) -> MethodResult:
        if not self._calls_method(len(candidates)):
            return MethodResult(list(range(len(candidates))), [1.0] * len(candidates))
        try:
            async with asyncio.timeout(self.deadline):
                result = await self._rank_fitted(query, candidates, context)
        except (BudgetExhausted, TimeoutError) as stop:
            known = context.best_order
            order = known or list(range(len(candidates)))
            reason = str(stop) or f"the deadline of {self.deadline} s passed"
            context.trace.record(
                "budget",
                f"{reason}; kept the best order known so far"
                + ("" if known else " (the input order)"),
                calls=context.usage.calls,
            )
            context.budget_stopped = True
            return MethodResult(order, rank_scores(order))
        if sorted(result.order) != list(range(len(candidates))) or len(result.scores) != len(
            candidates
        ):
            raise RuntimeError(
                f"method {self.method.name!r} returned an invalid ranking; please report this bug"
            )
        return result

    async def _rank_fitted(
        self, query: str, candidates: list[Candidate], context: RankContext
    ) -> MethodResult:
        """The method's ranking, run once more if the server refused a prompt as longer
        than the model's context and stated a shorter one than prompts were fitted to: the
        backend then fits them to it (its ``max_context``), so the prompts built again fit."""
        fitted_to = context.backend.capabilities.max_context
        try:
            return await self.method.rank(query, candidates, context)
        except ContextOverflowError as error:
            learned = context.backend.capabilities.max_context
            if learned >= fitted_to:
                raise
            context.trace.record(
                "retry",
                f"the server refused a prompt as longer than the model's context, which it "
                f"stated; prompts had been fitted to {fitted_to} tokens, and the rerank ran "
                f"again with them fitted to {learned}",
                refusal=str(error),
            )
            return await self.method.rank(query, candidates, context)

    async def aclose(self) -> None:
        """Close the backend's clients and threads."""
        if self._backend is not None:
            await self._backend.aclose()


def _ranked_items(
    candidates: list[Candidate], order: list[int], scores: dict[int, float], unjudged: set[int]
) -> list[RankedCandidate]:
    return [
        RankedCandidate(
            id=candidates[position].id,
            text=candidates[position].text,
            metadata=candidates[position].metadata,
            score=scores[position],
            rank=rank,
            input_rank=position + 1,
            input_score=candidates[position].score,
            judged=position not in unjudged,
        )
        for rank, position in enumerate(order, start=1)
    ]
