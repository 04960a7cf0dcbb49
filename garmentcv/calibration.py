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
#: Range of the fitted temperature; a fit at either end is clipped there (logged by the caller).
T_MIN, T_MAX = 0.01, 100.0
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
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in reliability_bins(probs, targets, bins) if b.count))


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
