"""Whether a training run learned anything: the checks behind the warnings of a run's summary and metrics.json.

Each check reads one epoch's validation figures (an entry of ``metrics.json``'s ``history``: ``accuracy``,
``val_loss``, ``count`` and the ``confusion_matrix``, row = true class) of a model with ``C`` classes:

- ``at_chance``: the validation accuracy is at most ``p + max(0.05, sqrt(p (1 - p) / n))``, where ``p`` is the
  share of the most common class among the ``n`` validation images (what answering that class for every image
  scores; never below ``1 / C``). The margin is one standard error of such a guesser's accuracy on ``n`` images,
  and at least 5 points: an accuracy that close to ``p`` cannot be told from guessing.
- ``diverged``: the validation loss is not finite, or above ``10 x ln C``, ten times the loss of a uniform guess
  (where a fresh head starts): the model puts on average less than ``C ** -10`` of its probability on the true
  class. The limit is absolute, not relative to the first epoch, because a run can diverge within its first epoch.

:func:`run_warnings` judges the best epoch (the model in ``best.pt``, the one gcv export reads) on both and the last
epoch on divergence; each checkpoint records the checks of its own epoch in ``metrics["warnings"]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Smallest margin above the guessing share within which a validation accuracy counts as at chance (0..1).
CHANCE_MIN_MARGIN = 0.05
#: A validation loss above this many times ``ln C`` (a uniform guess's) counts as diverged.
DIVERGED_FACTOR = 10.0

AT_CHANCE = "at_chance"
DIVERGED = "diverged"


@dataclass(frozen=True)
class TrainingWarning:
    """One failed check of one epoch.

    Attributes:
        code: ``"at_chance"`` or ``"diverged"``.
        epoch: the epoch judged (1-based).
        value: the figure judged: the validation accuracy (0..1) or the validation loss (mean cross-entropy).
        limit: what it had to exceed (accuracy) or stay at or below (loss) to pass.
        message: one sentence for the run's summary: the figures, the rule and what to do.
    """

    code: str
    epoch: int
    value: float
    limit: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (a non-finite loss stays a float: Python's json writes NaN/Infinity)."""
        return asdict(self)


def chance_level(confusion_matrix: Sequence[Sequence[int]]) -> tuple[float, int]:
    """``(p, index)``: the share of the most common true class among the images counted, and that class.

    ``p`` is at least ``1 / C``: the shares of the classes present add up to 1.

    Raises:
        ValueError: the matrix counts no image.
    """
    counts = [sum(row) for row in confusion_matrix]
    total = sum(counts)
    if total <= 0:
        raise ValueError("the confusion matrix counts no image")
    top = max(range(len(counts)), key=counts.__getitem__)
    return counts[top] / total, top


def epoch_warnings(entry: dict[str, Any], classes: Sequence[str]) -> list[TrainingWarning]:
    """The checks of the module docstring on one epoch's figures ``entry`` (a ``history`` item); [] when it passes."""
    epoch, matrix, n = int(entry["epoch"]), entry["confusion_matrix"], int(entry["count"])
    found: list[TrainingWarning] = []
    loss, limit = float(entry["val_loss"]), DIVERGED_FACTOR * math.log(max(len(classes), 2))
    if not math.isfinite(loss) or loss > limit:
        found.append(TrainingWarning(
            DIVERGED, epoch, loss, limit,
            f"epoch {epoch}: validation loss {loss:.4g} is above {limit:.3g} ({DIVERGED_FACTOR:g} x ln {len(classes)}, "
            "ten times a uniform guess's): training diverged; lower --lr (e.g. ten times lower) or start from "
            "--weights imagenet",
        ))  # fmt: skip
    p, top = chance_level(matrix)
    margin = max(CHANCE_MIN_MARGIN, math.sqrt(p * (1 - p) / n))
    accuracy = float(entry["accuracy"])
    if accuracy <= p + margin:
        predicted = [c for c in range(len(matrix)) if any(row[c] for row in matrix)]
        only = f"; it answers '{classes[predicted[0]]}' for every image" if len(predicted) == 1 else ""
        found.append(TrainingWarning(
            AT_CHANCE, epoch, accuracy, p + margin,
            f"epoch {epoch}: validation accuracy {accuracy:.3f} is within {margin:.3f} of {p:.3f}, what answering "
            f"'{classes[top]}' for all {n} validation images scores: the model is at chance{only}. Check the "
            "labels, add images (tens per class at least), lower --lr or start from --weights imagenet",
        ))  # fmt: skip
    return found


def run_warnings(history: Sequence[dict[str, Any]], best_epoch: int, classes: Sequence[str]) -> list[TrainingWarning]:
    """The warnings of a finished run: every check of its best epoch, and divergence of its last epoch.

    ``history`` is ``metrics.json``'s (epoch 1 first), ``best_epoch`` 1-based.
    """
    found = epoch_warnings(history[best_epoch - 1], classes)
    last = history[-1]
    if int(last["epoch"]) != best_epoch:
        found += [w for w in epoch_warnings(last, classes) if w.code == DIVERGED]
    return found
