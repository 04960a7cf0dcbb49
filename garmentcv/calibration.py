"""Calibrated probabilities: temperature scaling, calibration figures and confidence thresholds (numpy only).

Temperature scaling (Guo, Pleiss, Sun and Weinberger 2017, "On Calibration of Modern Neural Networks", ICML,
section 4.2): one scalar ``T > 0`` divides every logit, ``p = softmax(z / T)``. It is fitted on held-out
labelled images by minimising the negative log-likelihood; it never changes the arg-max, so accuracy and the
predicted labels stay as they are, only the confidence moves. ``T > 1`` softens an over-confident model.

Figures (the same paper, section 2):

* expected calibration error (ECE): confidences (the top probability) in ``M`` equal-width bins
  ``((m-1)/M, m/M]``; ``ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|``; 15 bins by default, as in the paper;
* negative log-likelihood (NLL): ``-mean(log p[target])``, natural log;
* Brier score: ``mean over images of sum_c (p_c - 1[c = target])^2`` (0 best, 2 worst).

When a temperature is stored: :func:`decide_temperature` fits one only on a model that beats chance, on enough
images with enough errors, and stores none (consumers then use the raw softmax) when the fit ends at a bound of
its search.

Thresholds: an image is kept (trusted) when its confidence is ``>= threshold``; coverage is the share kept
and their accuracy the share of those that are right.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Guo et al. 2017 use 15 equal-width confidence bins for ECE.
ECE_BINS = 15
#: Range of the temperature search; a fit at either end is not stored (see :func:`decide_temperature`).
T_MIN, T_MAX = 0.01, 100.0
#: A fitted temperature within this relative distance of ``T_MIN`` or ``T_MAX`` is at a bound of the search.
BOUND_MARGIN = 1e-3
#: Fewest validation images a temperature is fitted on.
MIN_FIT_IMAGES = 20
#: Fewest misclassified validation images a temperature is fitted on. Only a wrong prediction bounds the fit from
#: below: the NLL of a right one falls monotonically as ``T`` shrinks, however unsure it is, so with no error the
#: minimum lies at ``T -> 0`` and with one or two the fitted ``T`` is set by those few images alone.
MIN_FIT_ERRORS = 3
#: Least margin (accuracy, 0..1) by which a model must beat chance for a temperature to be fitted.
CHANCE_MARGIN = 0.05
#: Thresholds of :func:`coverage_table`: 0.00, 0.01, ..., 1.00.
COVERAGE_STEPS = 101


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` of ``(N, C)`` logits, float64 (max subtracted first).

    Raises:
        ValueError: ``temperature`` is not a positive finite number.
    """
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _check(probs_or_logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(probs_or_logits, dtype=np.float64)
    targets = np.asarray(targets).astype(np.int64)
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"need a non-empty (N, C) array, got shape {values.shape}: no images")
    if targets.shape != (len(values),) or targets.min() < 0 or targets.max() >= values.shape[1]:
        raise ValueError(f"targets must be N={len(values)} class indices in 0..{values.shape[1] - 1}")
    return values, targets


def negative_log_likelihood(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean ``-ln p[target]`` of ``(N, C)`` probabilities (clipped at 1e-12, so a zero gives 27.6, not inf)."""
    probs, targets = _check(probs, targets)
    return float(-np.log(np.clip(probs[np.arange(len(probs)), targets], 1e-12, None)).mean())


def brier_score(probs: np.ndarray, targets: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of ``sum_c (p_c - onehot_c)^2``, 0..2."""
    probs, targets = _check(probs, targets)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(probs)), targets] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin ``(lower, upper]``: ``count`` images, their mean confidence and accuracy (NaN if empty)."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``None`` for the NaNs of an empty bin)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def reliability_bins(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The reliability diagram's data: ``bins`` equal-width bins ``((m-1)/M, m/M]`` of the top probability."""
    probs, targets = _check(probs, targets)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    # bin m holds (m/M, (m+1)/M]: ceil(conf * M) - 1, with conf 0 in the first bin
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    out = []
    for m in range(bins):
        inside = index == m
        n = int(inside.sum())
        out.append(ReliabilityBin(
            lower=m / bins, upper=(m + 1) / bins, count=n,
            confidence=float(confidence[inside].mean()) if n else math.nan,
            accuracy=float(correct[inside].mean()) if n else math.nan,
        ))  # fmt: skip
    return out


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width confidence bins (Guo et al. 2017, eq. 3), 0..1."""
    total = len(np.asarray(probs))
    binned = reliability_bins(probs, targets, bins)
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in binned if b.count))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, iterations: int = 80) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on labelled ``(N, C)`` logits.

    Golden-section search on ``log T`` over ``[T_MIN, T_MAX]``: the NLL is convex in ``1/T`` (a log-sum-exp
    of a linear function), so unimodal in ``log T``; 80 steps narrow the bracket to below 1e-15 of its width.

    Raises:
        ValueError: no rows, or targets that are not class indices of the logits.
    """
    logits, targets = _check(logits, targets)
    rows = np.arange(len(logits))

    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[rows, targets]).mean())

    lo, hi = math.log(T_MIN), math.log(T_MAX)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(min(max(math.exp((lo + hi) / 2), T_MIN), T_MAX))


def chance_accuracy(targets: np.ndarray, classes: int) -> float:
    """Accuracy of guessing without looking, 0..1: the larger of ``1 / classes`` and the largest class's share of
    ``targets`` (always answering the majority class)."""
    targets = np.asarray(targets).astype(np.int64)
    share = float(np.bincount(targets, minlength=classes).max() / len(targets)) if len(targets) else 0.0
    return max(1.0 / classes, share)


def chance_margin(chance: float, images: int) -> float:
    """How far above ``chance`` an accuracy on ``images`` images must be to count as better than chance: the larger
    of :data:`CHANCE_MARGIN` and two standard errors of a chance-level accuracy, ``2 sqrt(chance (1 - chance) / n)``
    (a one-sided test at about the 2.5% level)."""
    return max(CHANCE_MARGIN, 2.0 * math.sqrt(chance * (1.0 - chance) / max(images, 1)))


@dataclass(frozen=True)
class TemperatureDecision:
    """Whether a temperature is stored, and why (see :func:`decide_temperature`).

    Attributes:
        temperature: the temperature to store; ``None``: none (consumers use the raw softmax).
        fitted: the fit's result where the fit ran (also when it was refused at a bound), else ``None``.
        note: why no temperature is stored (``""`` when one is).
        problem: the reason points at the model, not at the validation set (at or near chance, or the fit at its
            upper bound): callers warn.
    """

    temperature: float | None
    fitted: float | None
    note: str = ""
    problem: bool = False


def decide_temperature(logits: np.ndarray, targets: np.ndarray) -> TemperatureDecision:
    """Fit the temperature of ``(N, C)`` labelled logits, or say why none should be stored.

    The rule, in order:

    1. a model whose accuracy is not above :func:`chance_accuracy` by :func:`chance_margin` has nothing to calibrate
       (it has not learned, or its training diverged): no temperature, a problem;
    2. fewer than :data:`MIN_FIT_IMAGES` images, or fewer than :data:`MIN_FIT_ERRORS` misclassified ones: too few or
       too clean to fit one (see :data:`MIN_FIT_ERRORS`): no temperature;
    3. the fit (:func:`fit_temperature`) ends within :data:`BOUND_MARGIN` of ``T_MIN`` (sharper is always better on
       these images: no temperature) or of ``T_MAX`` (uniform probabilities fit better than any the model gives:
       no temperature, a problem).

    Raises:
        ValueError: no rows, or targets that are not class indices of the logits.
    """
    values, targets = _check(logits, targets)
    n, classes = values.shape
    accuracy = float((values.argmax(axis=1) == targets).mean())
    chance = chance_accuracy(targets, classes)
    margin = chance_margin(chance, n)
    if accuracy <= chance + margin:
        return TemperatureDecision(None, None, (
            f"validation accuracy {accuracy:.2%} on {n} images is not above chance ({chance:.2%}, the larger of "
            f"1/{classes} and the largest class's share) by more than {100 * margin:.1f} points (the larger of "
            f"{100 * CHANCE_MARGIN:g} points and two standard errors of chance accuracy on {n} images): the model has "
            "not learned to tell the classes apart, or its training diverged; its probabilities mean nothing and no "
            "temperature can mend that"), problem=True)  # fmt: skip
    errors = int((values.argmax(axis=1) != targets).sum())
    if n < MIN_FIT_IMAGES:
        return TemperatureDecision(None, None, f"{n} validation images, fewer than the {MIN_FIT_IMAGES} a temperature "
                                               "is fitted on")
    if errors < MIN_FIT_ERRORS:
        return TemperatureDecision(None, None, (
            f"{errors} of {n} validation images misclassified, fewer than the {MIN_FIT_ERRORS} a temperature is fitted "
            "on (only wrong predictions keep the fit from running to its lower bound)"))
    fitted = fit_temperature(values, targets)
    if abs(math.log(fitted / T_MIN)) < BOUND_MARGIN:
        return TemperatureDecision(None, fitted, (
            f"the fit reached the lower bound of its search (T = {T_MIN:g}): sharper probabilities fit these "
            f"validation images ever better, so they cannot set a temperature"))
    if abs(math.log(fitted / T_MAX)) < BOUND_MARGIN:
        return TemperatureDecision(None, fitted, (
            f"the fit reached the upper bound of its search (T = {T_MAX:g}): uniform probabilities fit these "
            "validation images better than any the model gives, so it is confidently wrong; its training may have "
            "diverged"), problem=True)  # fmt: skip
    return TemperatureDecision(fitted, fitted)


@dataclass(frozen=True)
class CalibrationFigures:
    """ECE (15 bins), NLL and Brier score of one set of probabilities, and its reliability bins."""

    ece: float
    nll: float
    brier: float
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the three figures and ``reliability``, a list of bins."""
        return {"ece": self.ece, "nll": self.nll, "brier": self.brier, "reliability": [b.to_dict() for b in self.bins]}


def calibration_figures(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> CalibrationFigures:
    """:class:`CalibrationFigures` of ``(N, C)`` probabilities against class indices ``targets``."""
    return CalibrationFigures(
        ece=expected_calibration_error(probs, targets, bins), nll=negative_log_likelihood(probs, targets),
        brier=brier_score(probs, targets), bins=tuple(reliability_bins(probs, targets, bins)),
    )  # fmt: skip


@dataclass(frozen=True)
class CoverageTable:
    """Coverage against accuracy: at ``thresholds[i]`` the images with confidence ``>=`` it are kept.

    Attributes:
        thresholds: 0.00, 0.01, ..., 1.00.
        kept: share of images kept at each threshold, 0..1.
        accuracy: accuracy of the kept images; ``None`` where none is kept.
    """

    thresholds: tuple[float, ...]
    kept: tuple[float, ...]
    accuracy: tuple[float | None, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: three parallel lists."""
        return {"thresholds": list(self.thresholds), "kept": list(self.kept), "accuracy": list(self.accuracy)}


def coverage_table(confidence: np.ndarray, correct: np.ndarray, steps: int = COVERAGE_STEPS) -> CoverageTable:
    """:class:`CoverageTable` at ``steps`` equal thresholds from 0 to 1 (confidence ``(N,)``, correct ``(N,)`` bool)."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    thresholds = [round(i / (steps - 1), 10) for i in range(steps)]
    kept, accuracy = [], []
    for t in thresholds:
        keep = confidence >= t
        n = int(keep.sum())
        kept.append(n / len(confidence) if len(confidence) else 0.0)
        accuracy.append(float(correct[keep].mean()) if n else None)
    return CoverageTable(tuple(thresholds), tuple(kept), tuple(accuracy))


@dataclass(frozen=True)
class ThresholdChoice:
    """The lowest confidence threshold whose kept images reach ``target`` accuracy.

    Attributes:
        target: the accuracy asked for, 0..1.
        threshold: the lowest threshold that reaches it (a confidence seen in the data); ``None``: unreachable.
        coverage: share of images kept at ``threshold`` (0 when unreachable).
        accuracy: their accuracy (``None`` when unreachable).
        kept: number of images kept.
        best_accuracy: the highest accuracy any threshold reaches (what was reachable).
    """

    target: float
    threshold: float | None
    coverage: float
    accuracy: float | None
    kept: int
    best_accuracy: float

    @property
    def reachable(self) -> bool:
        """Whether some threshold reaches ``target``."""
        return self.threshold is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with ``reachable``."""
        return {**asdict(self), "reachable": self.reachable}


def threshold_for_accuracy(confidence: np.ndarray, correct: np.ndarray, target: float) -> ThresholdChoice:
    """The lowest threshold ``t`` (among the confidences seen) with accuracy of ``{confidence >= t}`` ``>= target``.

    Raises:
        ValueError: no images, or ``target`` outside 0..1.
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target accuracy must be within 0..1, got {target}")
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    if len(confidence) == 0:
        raise ValueError("no images: cannot choose a threshold")
    order = np.argsort(-confidence, kind="stable")
    conf, right = confidence[order], correct[order]
    cum_right = np.cumsum(right)
    counts = np.arange(1, len(conf) + 1)
    # a threshold at conf[i] keeps every image up to the last one with the same confidence
    last = np.r_[conf[1:] != conf[:-1], True]
    acc = cum_right[last] / counts[last]
    thresholds, kept = conf[last], counts[last]
    reach = np.nonzero(acc >= target - 1e-12)[0]
    best = float(acc.max())
    if not len(reach):
        return ThresholdChoice(target, None, 0.0, None, 0, best)
    i = reach[-1]  # thresholds descend: the last reaching one is the lowest
    return ThresholdChoice(target, float(thresholds[i]), float(kept[i] / len(conf)), float(acc[i]), int(kept[i]), best)
