"""Abstention: a confidence for a ranked list, and the decision to answer "nothing relevant".

Following Gisserot-Boukhlef et al. (TMLR 2024): reference-free confidence functions of the
top-``n`` scores (max, std, top-1 − top-2 margin, softmax entropy), and the reference-based
:class:`Calibrator` (ridge regression from the sorted score vector to the list's quality),
evaluated with risk–coverage curves and nAUC. They need real-valued scores (``pointwise``,
``pointwise-qlm``, ``icr``, ``prp-allpair``); on rank-only scores they are constants.

A :class:`Calibrator` learns the scale of any such scores. An :class:`Abstention` rule
compares a confidence with a fixed threshold, so a ``Reranker`` takes one only with scores
that mean the same across queries: ``pointwise`` (P(Yes)) or ``pointwise-qlm`` with
``calibrated=True``.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rankwise._checks import check_real, check_whole, is_finite
from rankwise.errors import InputError

ConfidenceName = Literal["max", "std", "margin", "entropy"]


def confidence_max(scores: Sequence[float]) -> float:
    """The best score."""
    return max(scores) if scores else 0.0


def confidence_std(scores: Sequence[float]) -> float:
    """Population standard deviation: spread suggests the ranker separated something."""
    return statistics.pstdev(scores) if len(scores) > 1 else 0.0


def confidence_margin(scores: Sequence[float]) -> float:
    """Top-1 minus top-2."""
    ordered = sorted(scores, reverse=True)
    return ordered[0] - ordered[1] if len(ordered) > 1 else 0.0


def confidence_entropy(scores: Sequence[float]) -> float:
    """One minus the normalised entropy of the softmax of the scores (1 = all mass on one)."""
    if len(scores) < 2:
        return 1.0
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    entropy = -sum((w / total) * math.log(w / total) for w in weights if w > 0)
    return 1.0 - entropy / math.log(len(scores))


CONFIDENCE_FUNCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "max": confidence_max,
    "std": confidence_std,
    "margin": confidence_margin,
    "entropy": confidence_entropy,
}


@dataclass(frozen=True)
class Abstention:
    """Abstain when the confidence of the top ``top_n`` scores is below ``threshold``.

    Example: ``Abstention("max", 0.5)`` with ``pointwise`` abstains when no passage gets
    P(Yes) ≥ 0.5 from the judge. The threshold is fixed, so the scores must mean the same
    across queries: ``pointwise``, or ``pointwise-qlm`` with ``calibrated=True`` (there the
    best passage's gain over a content-free one, in nats per query token).
    """

    confidence: ConfidenceName = "max"
    threshold: float = 0.5
    top_n: int = 10

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCE_FUNCTIONS:
            raise InputError(
                f"unknown confidence {self.confidence!r}; use one of {list(CONFIDENCE_FUNCTIONS)}"
            )
        if not isinstance(self.threshold, int | float) or math.isnan(self.threshold):
            raise InputError(f"threshold must be a number, got {self.threshold!r}")
        if isinstance(self.top_n, bool) or not isinstance(self.top_n, int) or self.top_n < 1:
            raise InputError(f"top_n must be a whole number of at least 1, got {self.top_n!r}")

    def score(self, ranked_scores: Sequence[float]) -> float:
        """The confidence of a list's scores (best first)."""
        return CONFIDENCE_FUNCTIONS[self.confidence](list(ranked_scores)[: self.top_n])

    def decide(self, ranked_scores: Sequence[float]) -> tuple[bool, float]:
        """(abstain?, confidence)."""
        value = self.score(ranked_scores)
        return value < self.threshold, value


# --------------------------------------------------------------------------- calibration


def score_features(scores: Sequence[float], n: int) -> list[float]:
    """The top-``n`` scores sorted ascending, padded with the lowest score to length ``n``."""
    top = sorted(scores, reverse=True)[:n]
    if not top:
        return [0.0] * n
    padded = top + [top[-1]] * (n - len(top))
    return sorted(padded)


def ridge_fit(
    rows: Sequence[Sequence[float]], targets: Sequence[float], alpha: float
) -> list[float]:
    """Closed-form ridge regression with an unpenalised intercept.

    Returns ``[intercept, w1, ..., wd]``. Solves (XᵀX + αI)w = Xᵀy on centred data by
    Gaussian elimination: the systems here are tiny (d ≈ 10), so no numerical library is needed.
    """
    if len(rows) != len(targets) or not rows:
        raise ValueError("ridge_fit needs as many targets as rows, and at least one row")
    d = len(rows[0])
    mean_x = [sum(row[j] for row in rows) / len(rows) for j in range(d)]
    mean_y = sum(targets) / len(targets)
    centred = [[row[j] - mean_x[j] for j in range(d)] for row in rows]
    gram = [
        [sum(r[i] * r[j] for r in centred) + (alpha if i == j else 0.0) for j in range(d)]
        for i in range(d)
    ]
    rhs = [
        sum(r[i] * (y - mean_y) for r, y in zip(centred, targets, strict=True)) for i in range(d)
    ]
    weights = _solve(gram, rhs)
    intercept = mean_y - sum(w * m for w, m in zip(weights, mean_x, strict=True))
    return [intercept, *weights]


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    size = len(rhs)
    augmented = [[*row, value] for row, value in zip(matrix, rhs, strict=True)]
    for column in range(size):
        pivot = max(range(column, size), key=lambda r: abs(augmented[r][column]))
        if abs(augmented[pivot][column]) < 1e-12:
            continue  # singular direction: its weight stays 0
        augmented[column], augmented[pivot] = augmented[pivot], augmented[column]
        for row in range(size):
            if row != column:
                factor = augmented[row][column] / augmented[column][column]
                for k in range(column, size + 1):
                    augmented[row][k] -= factor * augmented[column][k]
    return [
        augmented[i][size] / augmented[i][i] if abs(augmented[i][i]) >= 1e-12 else 0.0
        for i in range(size)
    ]


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _check_reference(score_lists: Sequence[Sequence[float]], metrics: Sequence[float]) -> None:
    """Refuse reference data a fit cannot use: no queries, a score list and metric count
    that differ, or a value that is not a finite number (one NaN makes every weight NaN)."""
    if len(score_lists) != len(metrics) or not metrics:
        raise InputError(
            f"{len(score_lists)} score lists for {len(metrics)} metrics; pass one list of "
            "ranked scores and one measured quality per reference query, at least one query"
        )
    for index, (scores, metric) in enumerate(zip(score_lists, metrics, strict=True)):
        if not all(is_finite(value) for value in [*scores, metric]):
            raise InputError(
                f"reference query {index} has a value that is not a finite number "
                f"(scores {list(scores)[:5]}..., metric {metric!r}); drop it or fix it"
            )


@dataclass
class Calibrator:
    """The reference-based confidence u_lin: ridge regression from a list's sorted top-n scores
    to its quality (nDCG@10 by default), fitted on labelled reference queries.

    The decision threshold comes from a target abstention rate (the rate-quantile of the
    reference predictions) or a minimum predicted quality. ``threshold=None`` never abstains
    (``abstention_rate=0``); it is saved as JSON ``null``, which every JSON parser reads.
    """

    n: int = 10
    alpha: float = 0.1
    weights: list[float] = field(default_factory=list)
    threshold: float | None = None
    method: str = ""
    model: str = ""
    metric: str = "ndcg@10"
    reference_size: int = 0

    def __post_init__(self) -> None:
        """Refuse fields of the wrong kind (as a hand-edited file may hold) now, not as a
        TypeError at the first list it judges."""
        check_whole("n", self.n, 1)
        check_whole("reference_size", self.reference_size, 0)
        check_real("alpha", self.alpha, 0)
        if self.threshold == float("-inf"):  # how files saved before null meant "never"
            self.threshold = None
        if self.threshold is not None and not is_finite(self.threshold):
            raise InputError(
                f"threshold must be a number (null: never abstain), got {self.threshold!r}"
            )
        if not isinstance(self.weights, list) or not all(map(is_finite, self.weights)):
            raise InputError(
                f"weights must be finite numbers, got {self.weights!r:.100}; refit with "
                "`rankwise calibrate`"
            )
        for name in ("method", "model", "metric"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name} must be a string, got {getattr(self, name)!r}")

    def fit(
        self,
        score_lists: Sequence[Sequence[float]],
        metrics: Sequence[float],
        *,
        abstention_rate: float | None = None,
        min_quality: float | None = None,
    ) -> Calibrator:
        """Fit on reference queries: their ranked scores and their measured quality.

        Pass at most one of ``abstention_rate`` (the share of reference queries to abstain
        on) and ``min_quality`` (the predicted quality to abstain at or below)."""
        _check_reference(score_lists, metrics)
        if abstention_rate is not None and min_quality is not None:
            raise InputError("pass abstention_rate or min_quality, not both")
        if abstention_rate is not None and not 0 <= abstention_rate < 1:
            raise InputError(f"abstention_rate must be in [0, 1), got {abstention_rate}")
        rows = [score_features(scores, self.n) for scores in score_lists]
        self.weights = ridge_fit(rows, metrics, self.alpha)
        self.reference_size = len(rows)
        predictions = [self.predict(scores) for scores in score_lists]
        if abstention_rate == 0:  # the lowest prediction would abstain, at or below it
            self.threshold = None
        elif abstention_rate is not None:
            self.threshold = quantile(predictions, abstention_rate)
        elif min_quality is not None:
            if not is_finite(min_quality):
                raise InputError(f"min_quality must be a finite number, got {min_quality!r}")
            self.threshold = min_quality
        return self

    def check_fitted(self) -> None:
        """Raise :class:`InputError` unless the calibrator has been fitted or loaded."""
        if not self.weights:
            raise InputError("the calibrator is not fitted; call fit() or Calibrator.load()")

    def predict(self, scores: Sequence[float]) -> float:
        """Predicted quality of a list with these scores."""
        self.check_fitted()
        features = score_features(scores, self.n)
        return self.weights[0] + sum(w * x for w, x in zip(self.weights[1:], features, strict=True))

    def decide(self, ranked_scores: Sequence[float]) -> tuple[bool, float]:
        """(abstain?, predicted quality)."""
        value = self.predict(ranked_scores)
        return self.abstains_at(value), value

    def abstains_at(self, predicted: float) -> bool:
        """Whether a list of this predicted quality is abstained on."""
        return self.threshold is not None and predicted <= self.threshold

    def save(self, path: str | Path) -> None:
        """Write the calibrator as JSON, with the method and model it was fitted for."""
        Path(path).expanduser().write_text(
            json.dumps(asdict(self), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(
        cls, path: str | Path, *, method: str | None = None, model: str | None = None
    ) -> Calibrator:
        """Read a calibrator; warns when it was fitted for another method or model."""
        try:
            fields = json.loads(Path(path).expanduser().read_text(encoding="utf-8-sig"))
            calibrator = cls(**fields)
        except (OSError, ValueError, TypeError, InputError) as error:
            raise InputError(
                f"cannot read a calibrator from {str(path)!r} ({error}); pass a file written "
                "by Calibrator.save or `rankwise calibrate`"
            ) from error
        if not calibrator.weights or len(calibrator.weights) != calibrator.n + 1:
            raise InputError(
                f"the calibrator in {str(path)!r} has {len(calibrator.weights)} weights for "
                f"n={calibrator.n}; refit it with `rankwise calibrate`"
            )
        for what, used in (("method", method), ("model", model)):
            if used is not None:
                calibrator.warn_if_fitted_for_another(what, used, f"calibrator {path}")
        return calibrator

    def warn_if_fitted_for_another(
        self, what: Literal["method", "model"], used: str, name: str = "the calibrator"
    ) -> None:
        """Warn when the calibrator was fitted for another method or model than ``used``: it
        learnt one method's scores from one model, and with others its confidences are off,
        though nothing fails. The warning points at the caller of the caller."""
        fitted = getattr(self, what)
        if fitted and fitted != used:
            warnings.warn(
                f"{name} was fitted for {what} {fitted!r}, and this run uses {used!r}; its "
                "confidences may be off, so refit it with `rankwise calibrate`",
                stacklevel=3,
            )


# --------------------------------------------------------------------------- evaluation


def risk_coverage(
    confidences: Sequence[float], metrics: Sequence[float], grid: int = 101
) -> dict[str, Any]:
    """Mean quality of the answered queries as the abstention rate grows, for the method,
    an oracle (drops the worst queries first) and random abstention; trapezoid AUCs and
    nAUC = (AUC − AUC_random) / (AUC_oracle − AUC_random) over rates in [0, 1)."""
    if len(confidences) != len(metrics) or not metrics:
        raise InputError("need one confidence per metric, and at least one query")
    rates = [i / grid for i in range(grid)]
    n = len(metrics)
    by_confidence, by_metric = _tied_groups(confidences, metrics), _tied_groups(metrics, metrics)
    method = [_kept_mean(by_confidence, n - round(rate * n)) for rate in rates]
    oracle = [_kept_mean(by_metric, n - round(rate * n)) for rate in rates]
    random_level = statistics.fmean(metrics)
    auc = _trapezoid(rates, method)
    auc_oracle = _trapezoid(rates, oracle)
    auc_random = random_level * (rates[-1] - rates[0])
    spread = auc_oracle - auc_random
    return {
        "rates": rates,
        "method": method,
        "oracle": oracle,
        "random": random_level,
        "auc": auc,
        "auc_oracle": auc_oracle,
        "auc_random": auc_random,
        "nauc": (auc - auc_random) / spread if spread > 0 else 0.0,
    }


def _tied_groups(confidences: Sequence[float], metrics: Sequence[float]) -> list[list[float]]:
    """The metrics grouped by equal confidence, the most confident group first."""
    groups: dict[float, list[float]] = {}
    for confidence, metric in zip(confidences, metrics, strict=True):
        groups.setdefault(confidence, []).append(metric)
    return [groups[confidence] for confidence in sorted(groups, reverse=True)]


def _kept_mean(groups: Sequence[Sequence[float]], keep: int) -> float:
    """Mean metric of the ``keep`` most confident queries (at least one), from
    :func:`_tied_groups`, ties drawn at random: a group of equally confident queries that the
    cut splits keeps, in expectation, its share of its total. Breaking ties by the order the
    queries were listed in would let that order alone score a confidence that tells them
    apart no better than chance."""
    wanted = max(1, keep)
    room, total = wanted, 0.0
    for group in groups:
        taken = min(room, len(group))
        total += statistics.fmean(group) * taken
        room -= taken
        if not room:
            break
    return total / wanted


def _trapezoid(xs: Sequence[float], ys: Sequence[float]) -> float:
    return sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))


def cross_validated_nauc(
    score_lists: Sequence[Sequence[float]],
    metrics: Sequence[float],
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    test_share: float = 0.2,
    n: int = 10,
) -> dict[str, float]:
    """nAUC on held-out test splits, averaged over repeated 80/20 reference/test splits:
    the calibrator (fitted on each reference split) and each reference-free function.

    A test split holds at least two queries. One whose queries all have the same quality
    has no nAUC (abstaining on any of them is as good as on any other), so it is left out
    of the average, with a warning; if every split is like that, :class:`InputError`."""
    import random

    totals: dict[str, list[float]] = {
        "calibrator": [],
        **{name: [] for name in CONFIDENCE_FUNCTIONS},
    }
    indices = list(range(len(metrics)))
    for seed in seeds:
        shuffled = indices[:]
        random.Random(seed).shuffle(shuffled)
        cut = max(2, round(len(shuffled) * test_share))
        test, reference = shuffled[:cut], shuffled[cut:]
        if len(reference) < 2:
            raise InputError(
                f"too few queries for a reference/test split: {len(reference)} left for "
                "reference after the test share (at least two queries each); label more "
                "queries or lower test_share"
            )
        test_metrics = [metrics[i] for i in test]
        if len(set(test_metrics)) == 1:
            continue
        calibrator = Calibrator(n=n).fit(
            [score_lists[i] for i in reference], [metrics[i] for i in reference]
        )
        confidences = [calibrator.predict(score_lists[i]) for i in test]
        totals["calibrator"].append(risk_coverage(confidences, test_metrics)["nauc"])
        for name, function in CONFIDENCE_FUNCTIONS.items():
            values = [function(sorted(score_lists[i], reverse=True)[:n]) for i in test]
            totals[name].append(risk_coverage(values, test_metrics)["nauc"])
    counted = len(totals["calibrator"])
    if not counted:
        raise InputError(
            f"in each of the {len(seeds)} test splits, every query has the same quality, so "
            "no confidence can do better or worse than another; label more queries, of "
            "different quality"
        )
    if counted < len(seeds):
        warnings.warn(
            f"{len(seeds) - counted} of the {len(seeds)} test splits hold queries of one "
            "quality only and have no nAUC; the average is over the other "
            f"{counted}: label more queries for a steadier figure",
            stacklevel=2,
        )
    return {name: round(statistics.fmean(values), 4) for name, values in totals.items()}
