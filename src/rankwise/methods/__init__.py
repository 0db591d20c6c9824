"""Ranking methods, by CLI name."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from rankwise._checks import check_flag
from rankwise.backends.base import Capabilities
from rankwise.errors import InputError, UnknownMethodError
from rankwise.methods.attention import InContextReranking
from rankwise.methods.base import MethodResult, RankingMethod
from rankwise.methods.first import First
from rankwise.methods.listwise import ListwiseFull, ListwiseSlidingWindow
from rankwise.methods.pairwise import PairwiseAllPairs, PairwiseHeapsort, PairwiseSliding
from rankwise.methods.pointwise import PointwiseYesNo, QueryLikelihood
from rankwise.methods.setwise import SetwiseHeapsort

METHODS: dict[str, type[RankingMethod]] = {
    cls.name: cls
    for cls in (
        PointwiseYesNo,
        QueryLikelihood,
        PairwiseAllPairs,
        PairwiseHeapsort,
        PairwiseSliding,
        ListwiseSlidingWindow,
        ListwiseFull,
        First,
        SetwiseHeapsort,
        InContextReranking,
    )
}


def method_names() -> list[str]:
    """Every method name rankwise implements."""
    return list(METHODS)


def scoring_method_names() -> list[str]:
    """Methods whose scores say more than the rank: what confidence and abstention read."""
    return [name for name, cls in METHODS.items() if cls.score_kind != "rank"]


WHOLE_NUMBER_OPTIONS: dict[str, int | None] = {
    "max_passage_tokens": 1,
    "max_words": 1,
    "max_new_tokens": 1,
    "reserve_tokens": 0,
    "top_k": None,
    "window": None,
    "step": None,
    "children": None,
}
"""Method options that count something, and the least each may be (None: the method checks
its own range, with a message of its own)."""

FLAG_OPTIONS = ("calibrated",)
"""Method options that are on or off."""


def build_method(name: str, **options: Any) -> RankingMethod:
    """Instantiate the method called ``name`` with its options."""
    cls = METHODS.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownMethodError(f"unknown method {name!r}.{hint} Available: {', '.join(METHODS)}")
    accepted = [
        parameter.name
        for parameter in inspect.signature(cls).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = [option for option in options if option not in accepted]
    if unknown:
        raise UnknownMethodError(
            f"bad options for method {name!r}: {', '.join(map(repr, unknown))}; its options "
            f"are {', '.join(accepted) or 'none'}"
        )
    for option, least in WHOLE_NUMBER_OPTIONS.items():
        value = options.get(option)
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or (least is not None and value < least):
            at_least = "" if least is None else f" of at least {least}"
            no_cut = ", or None for no cut" if option in ("max_passage_tokens", "max_words") else ""
            raise InputError(f"{option} must be a whole number{at_least}{no_cut}; got {value!r}")
    for option in FLAG_OPTIONS:
        if option in options:
            spelling = f" (on the command line: -o {option}=true or -o {option}=false)"
            check_flag(option, options[option], spelling=spelling)
    return cls(**options)


AUTO = "auto"
"""The method name that picks a method for the backend (see :func:`default_method`)."""


def default_method(capabilities: Capabilities, *, absolute_scores: bool = False) -> str:
    """The method ``"auto"`` stands for on a backend with ``capabilities``.

    * ``pointwise`` when ``absolute_scores`` is asked for (a score threshold or an
      ``Abstention`` rule needs scores that mean the same across queries);
    * ``pointwise-qlm`` on local models (prompt log-probs): query likelihood. On the
      embedded 135M model it lifts BM25's nDCG@10 on TREC DL19 from 0.5058 to 0.5743, where
      yes/no judging drops it to 0.4109 (``bench/results/quality_dl19.json``);
    * ``pointwise`` on backends with first-token log-probs (OpenAI-compatible APIs that
      return them): one independent call per document, thresholdable scores;
    * ``listwise`` (RankGPT's sliding window) on backends that only generate text.
    """
    if absolute_scores:
        return PointwiseYesNo.name
    if capabilities.prompt_logprobs:
        return QueryLikelihood.name
    if capabilities.logprobs:
        return PointwiseYesNo.name
    return ListwiseSlidingWindow.name


def methods_supported_by(capabilities: Capabilities) -> list[str]:
    """Names of the methods a backend with ``capabilities`` can run."""
    return [
        name
        for name, cls in METHODS.items()
        if all(capabilities.has(need) for need in cls.requires)
    ]


__all__ = [
    "AUTO",
    "METHODS",
    "MethodResult",
    "RankingMethod",
    "build_method",
    "default_method",
    "method_names",
    "methods_supported_by",
    "scoring_method_names",
]
