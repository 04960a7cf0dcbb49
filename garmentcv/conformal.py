"""Prediction sets with a coverage guarantee: split conformal prediction on calibrated probabilities (numpy only).

Split conformal prediction (Vovk, Gammerman and Shafer, *Algorithmic Learning in a Random World*, 2005; the
form used here follows Angelopoulos and Bates, *A Gentle Introduction to Conformal Prediction and
Distribution-Free Uncertainty Quantification*, 2021, section 1): a score ``s(x, y)`` says how badly label ``y``
fits image ``x``; on ``n`` held-out labelled images not used for anything else, ``qhat`` is the
``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the scores of the true labels; the prediction set of a new
image is every class whose score is at most ``qhat``. When the new image and the held-out ones are exchangeable
(drawn the same way), the set holds the true class with probability at least ``1 - alpha`` (the *coverage*),
whatever the model; with scores without ties, at most ``1 - alpha + 1 / (n + 1)``.

Scores (:data:`METHODS`), on the probabilities ``p = softmax(logits / T)`` consumers use:

* ``lac``, least ambiguous set-valued classifier (Sadinle, Lei and Wasserman, *Least Ambiguous Set-Valued
  Classifiers With Bounded Error Levels*, JASA 2019): ``s(x, y) = 1 - p_y``. The smallest sets on average; they
  can be empty for an image where no class is likely enough.
* ``aps``, adaptive prediction sets (Romano, Sesia and Candès, *Classification with Valid and Adaptive Coverage*,
  NeurIPS 2020), non-randomised: ``s(x, y)`` = the sum of the probabilities of the classes ranked at or above
  ``y`` (ties: the lower class index ranks first). Sets grow with the image's uncertainty; a set is empty only
  when the top class alone is more probable than ``qhat``.

``class_conditional`` fits one ``qhat`` per class on the held-out images of that class (Mondrian conformal
prediction, Vovk et al. 2005, chapter 4.5; Sadinle et al. 2019, section 4.3): coverage then holds for each class
separately, at the price of larger sets for rare classes. It needs enough held-out images of every class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Conformity scores: ``lac`` (Sadinle et al. 2019) and ``aps`` (Romano et al. 2020).
METHODS = ("lac", "aps")
#: Default coverage of the prediction sets, ``1 - alpha``.
DEFAULT_COVERAGE = 0.95
#: Slack subtracted before rounding ``(n + 1)(1 - alpha)`` up, so that float rounding of an exact integer
#: (``20 * 0.95`` is ``19.000000000000004``) does not ask for one more image.
_ROUNDING = 1e-9
#: Slack added to ``qhat`` when scores are compared with it: the probabilities of one image computed again in
#: another process round the last bits differently; the sets must not change with that.
SCORE_SLACK = 1e-9


class ConformalFitError(ValueError):
    """Too few held-out images for the coverage asked (or a class without enough for the class-conditional
    option); the message says how many are needed."""


def min_images(coverage: float) -> int:
    """Smallest ``n`` held-out images whose quantile level ``ceil((n + 1) coverage) / n`` is at most 1 (19 for 0.95,
    9 for 0.9); fewer images cannot give a set smaller than every class.

    Raises:
        ValueError: ``coverage`` outside (0, 1).
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be within (0, 1), got {coverage}")
    n = 1
    while math.ceil((n + 1) * coverage - _ROUNDING) > n:
        n += 1
    return n


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """``qhat``: the ``k``-th smallest of ``n`` held-out scores with ``k = ceil((n + 1) coverage)``, i.e. the
    ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile (Angelopoulos and Bates 2021, eq. 1), without interpolation.

    Args:
        scores: ``(n,)`` scores of the true labels of the held-out images.
        coverage: ``1 - alpha``, within (0, 1).

    Raises:
        ConformalFitError: ``n`` is below :func:`min_images` (the quantile would be above every score).
    """
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(values)
    k = math.ceil((n + 1) * coverage - _ROUNDING)
    if k > n:
        raise ConformalFitError(f"{n} held-out images cannot give coverage {coverage:g}: it needs at least "
                                f"{min_images(coverage)}")
    return float(values[k - 1])


def class_scores(probs: np.ndarray, method: str) -> np.ndarray:
    """The score ``s(x, y)`` of every class of every image, float64 ``(N, C)``, for probabilities ``(N, C)``.

    Raises:
        ValueError: an unknown ``method``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if method == "lac":
        return 1.0 - p
    if method == "aps":
        order = np.argsort(-p, axis=1, kind="stable")  # best first, ties: the lower index first
        cumulative = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
        scores = np.empty_like(p)
        np.put_along_axis(scores, order, cumulative, axis=1)
        return scores
    raise ValueError(f"unknown conformal method {method!r}; choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class ConformalPredictor:
    """A fitted split conformal predictor: which score, the coverage asked and the threshold(s) ``qhat``.

    Attributes:
        method: ``lac`` or ``aps`` (see the module docstring).
        coverage: ``1 - alpha``, the probability that a set holds the true class.
        qhat: one threshold (marginal), or one per class in class order (``class_conditional``).
        class_conditional: one ``qhat`` per class, fitted on that class's held-out images.
        images: held-out images it was fitted on.
    """

    method: str
    coverage: float
    qhat: tuple[float, ...]
    class_conditional: bool = False
    images: int = 0

    def thresholds(self, classes: int) -> np.ndarray:
        """``qhat`` for each of ``classes`` classes, float64 ``(C,)``."""
        return np.asarray(self.qhat if self.class_conditional else self.qhat * classes, dtype=np.float64)

    def contains(self, probs: np.ndarray) -> np.ndarray:
        """Set membership, bool ``(N, C)``: class ``y`` is in image ``x``'s set when ``s(x, y) <= qhat_y``."""
        p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
        return class_scores(p, self.method) <= self.thresholds(p.shape[1]) + SCORE_SLACK

    def sets(self, probs: np.ndarray) -> list[list[int]]:
        """The prediction set of each image: class indices, most probable first (ties: the lower index first)."""
        p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
        inside = self.contains(p)
        order = np.argsort(-p, axis=1, kind="stable")
        return [[int(c) for c in row_order if row_inside[c]] for row_order, row_inside in zip(order, inside,
                                                                                             strict=True)]

    def describe(self) -> str:
        """E.g. ``lac prediction sets at 95% coverage (qhat 0.8123, 120 held-out images)``."""
        qhat = (f"qhat per class {', '.join(f'{q:.4g}' for q in self.qhat)}" if self.class_conditional
                else f"qhat {self.qhat[0]:.4g}")
        return f"{self.method} prediction sets at {self.coverage:.0%} coverage ({qhat}, {self.images} held-out images)"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able types."""
        return {"method": self.method, "coverage": self.coverage, "qhat": list(self.qhat),
                "class_conditional": self.class_conditional, "images": self.images}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], classes: int) -> ConformalPredictor:
        """Inverse of :meth:`to_dict` for a model of ``classes`` classes.

        Raises:
            ValueError: a malformed entry, an unknown method, a coverage outside (0, 1) or a ``qhat`` count that
                does not fit.
        """
        if not isinstance(data, Mapping) or data.get("method") not in METHODS or not isinstance(data.get("qhat"), list):
            raise ValueError(f"bad conformal entry {data!r}")
        conditional = bool(data.get("class_conditional", False))
        qhat = tuple(float(q) for q in data["qhat"])
        coverage = float(data["coverage"])
        if len(qhat) != (classes if conditional else 1) or not all(math.isfinite(q) for q in qhat):
            raise ValueError(f"bad conformal qhat {data['qhat']!r} for {classes} classes")
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"bad conformal coverage {coverage!r}")
        return cls(str(data["method"]), coverage, qhat, conditional, int(data.get("images", 0)))


def fit_conformal(probs: np.ndarray, targets: np.ndarray, coverage: float = DEFAULT_COVERAGE, method: str = "lac",
                  class_conditional: bool = False) -> ConformalPredictor:
    """Fit split conformal prediction on held-out images that nothing else was fitted on.

    Args:
        probs: ``(n, C)`` probabilities of the held-out images, as consumers compute them.
        targets: ``(n,)`` their class indices.
        coverage: ``1 - alpha``.
        method: ``lac`` or ``aps``.
        class_conditional: one ``qhat`` per class (see the module docstring).

    Raises:
        ValueError: an unknown method, shapes that do not fit, a target outside the classes.
        ConformalFitError: too few images (of some class, with ``class_conditional``); the message says how many.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets).astype(np.int64)
    if p.ndim != 2 or y.shape != (len(p),) or (len(y) and (y.min() < 0 or y.max() >= p.shape[1])):
        raise ValueError(f"probs (n, C) and targets (n,) within 0..C-1 expected, got {p.shape} and {y.shape}")
    true_scores = class_scores(p, method)[np.arange(len(y)), y]
    if not class_conditional:
        return ConformalPredictor(method, coverage, (conformal_quantile(true_scores, coverage),), False, len(y))
    qhat = []
    for c in range(p.shape[1]):
        try:
            qhat.append(conformal_quantile(true_scores[y == c], coverage))
        except ConformalFitError as exc:
            raise ConformalFitError(f"class {c}: {exc} (class-conditional sets need that many of every class)") from exc
    return ConformalPredictor(method, coverage, tuple(qhat), True, len(y))


@dataclass(frozen=True)
class SetFigures:
    """How prediction sets did on labelled images.

    Attributes:
        coverage: share of images whose set holds the true class, 0..1.
        mean_size: mean number of classes per set.
        images: images counted.
        empty: images with an empty set; ``ambiguous``: with two or more classes.
    """

    coverage: float
    mean_size: float
    images: int
    empty: int = 0
    ambiguous: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able types."""
        return {"coverage": self.coverage, "mean_size": self.mean_size, "images": self.images, "empty": self.empty,
                "ambiguous": self.ambiguous}  # fmt: skip


def set_figures(contains: np.ndarray, targets: np.ndarray) -> SetFigures:
    """Empirical coverage and set sizes of membership ``(N, C)`` (:meth:`ConformalPredictor.contains`) against
    class indices ``(N,)``; zeros for no image."""
    inside = np.asarray(contains, dtype=bool)
    y = np.asarray(targets).astype(np.int64)
    if not len(y):
        return SetFigures(0.0, 0.0, 0)
    sizes = inside.sum(axis=1)
    return SetFigures(float(inside[np.arange(len(y)), y].mean()), float(sizes.mean()), len(y), int((sizes == 0).sum()),
                      int((sizes >= 2).sum()))


def per_class_figures(contains: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict[str, SetFigures]:
    """:func:`set_figures` of the images of each true class, by class name (classes without images left out)."""
    y = np.asarray(targets).astype(np.int64)
    inside = np.asarray(contains, dtype=bool)
    return {name: set_figures(inside[y == c], y[y == c]) for c, name in enumerate(classes) if (y == c).any()}
