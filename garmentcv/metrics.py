"""Classification metrics from true and predicted class indices (scikit-learn, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class ClassificationMetrics:
    """Top-1 accuracy, macro precision/recall/F1 and the confusion matrix of one evaluation.

    The macro averages run over the classes that have at least one true image (:attr:`macro_classes`): a
    class absent from the evaluated images has no recall to measure, and counting it as 0 would understate
    every figure. Predictions of an absent class still count against the true class.

    Attributes:
        accuracy: share of correct top-1 predictions, 0..1.
        precision: macro-averaged precision over :attr:`macro_classes`, 0..1 (a class never predicted counts 0).
        recall: macro-averaged recall over :attr:`macro_classes`, 0..1.
        f1: macro-averaged F1 over :attr:`macro_classes`, 0..1.
        confusion_matrix: ``C x C`` counts, row = true class, column = predicted class, class index order.
        count: number of images evaluated.
        macro_classes: indices of the classes averaged (those with at least one true image), ascending.
        absent_classes: indices of the classes without any true image, left out of the averages, ascending.
    """

    accuracy: float
    precision: float
    recall: float
    f1: float
    confusion_matrix: list[list[int]]
    count: int
    macro_classes: list[int] = field(default_factory=list)
    absent_classes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return asdict(self)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> ClassificationMetrics:
    """Compute :class:`ClassificationMetrics` with scikit-learn over class indices ``0..num_classes-1``.

    Macro precision, recall and F1 average the classes present in ``y_true`` only; the result names them
    (``macro_classes``) and the ones left out (``absent_classes``).

    Raises:
        ValueError: ``y_true`` and ``y_pred`` differ in length or are empty.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"need equal, non-zero numbers of labels, got {len(y_true)} and {len(y_pred)}")
    labels = list(range(num_classes))
    present = sorted({int(v) for v in y_true})
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average="macro", zero_division=0
    )
    return ClassificationMetrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        count=int(len(y_true)),
        macro_classes=present,
        absent_classes=[c for c in labels if c not in set(present)],
    )
