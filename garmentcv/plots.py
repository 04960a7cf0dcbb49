"""Pictures shared by training and evaluation: confusion matrix, reliability diagram, coverage curve (matplotlib
and scikit-learn, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from garmentcv.calibration import CoverageTable, ReliabilityBin, ThresholdChoice  # noqa: E402
from garmentcv.fsutil import atomic_path  # noqa: E402


def save_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str) -> None:
    """Write a confusion matrix PNG (rows true class, columns predicted) with scikit-learn's display."""
    size = max(4.0, 0.6 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(classes)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=45
    )
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_reliability_diagram(
    uncalibrated: Sequence[ReliabilityBin], calibrated: Sequence[ReliabilityBin] | None, path: Path, title: str,
    labels: tuple[str, str] = ("raw softmax", "calibrated"),
) -> None:
    """Write a reliability diagram PNG: accuracy against mean confidence per bin (Guo et al. 2017, fig. 1).

    Bars show each bin's accuracy (empty bins left out), the diagonal is perfect calibration; ``calibrated``
    (``None``: only the raw figures) is drawn beside ``uncalibrated``.
    """
    sets = [(labels[0], uncalibrated, "tab:red")] + ([(labels[1], calibrated, "tab:blue")] if calibrated else [])
    fig, ax = plt.subplots(figsize=(5.5, 6))
    width = (uncalibrated[0].upper - uncalibrated[0].lower) / (len(sets) + 0.5)
    for k, (name, bins, colour) in enumerate(sets):
        full = [b for b in bins if b.count]
        ax.bar([b.lower + (k + 0.25) * width for b in full], [b.accuracy for b in full], width=width, align="edge",
               color=colour, alpha=0.7, edgecolor="black", linewidth=0.4, label=f"{name} (accuracy per bin)")
        ax.plot([b.confidence for b in full], [b.accuracy for b in full], "o", color=colour, markersize=3)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncol=2, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


#: The accuracy axis of the coverage plot spans at least this much (5 percentage points), so that accuracies that
#: hardly change are not drawn as if they swung from bottom to top.
ACCURACY_AXIS_MIN_SPAN = 0.05
#: Space left above and below the accuracy line, as a share of the axis span.
ACCURACY_AXIS_PADDING = 0.05


def accuracy_axis_limits(accuracy: Sequence[float]) -> tuple[float, float]:
    """The range of the coverage plot's accuracy axis: from the lowest to the highest accuracy, widened downwards to
    :data:`ACCURACY_AXIS_MIN_SPAN` when narrower, with :data:`ACCURACY_AXIS_PADDING` of the span on each side,
    never below 0. ``(0, 1)`` without values."""
    if not accuracy:
        return 0.0, 1.0
    low, high = min(accuracy), max(accuracy)
    low = min(low, high - ACCURACY_AXIS_MIN_SPAN)
    pad = (high - low) * ACCURACY_AXIS_PADDING
    return max(0.0, low - pad), high + pad


def save_coverage_curve(table: CoverageTable, path: Path, title: str, choice: ThresholdChoice | None = None) -> None:
    """Write a PNG of coverage (share of images kept) and their accuracy against the confidence threshold.

    Coverage uses the left axis (0 to 1); accuracy the right one, fitted to its values
    (:func:`accuracy_axis_limits`): a model right 97 to 100% of the time shows that change instead of a flat line
    at the top. With ``choice`` (a reachable target), its threshold is marked.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(table.thresholds, table.kept, color="tab:blue", label="coverage (share kept)")
    accuracy = [(t, a) for t, a in zip(table.thresholds, table.accuracy, strict=True) if a is not None]
    right = ax.twinx()
    right.plot([t for t, _ in accuracy], [a for _, a in accuracy], color="tab:green", label="accuracy of the kept")
    right.set_ylim(*accuracy_axis_limits([a for _, a in accuracy]))
    right.set_ylabel("accuracy of the kept", color="tab:green")
    right.tick_params(axis="y", colors="tab:green")
    if choice is not None and choice.reachable:
        ax.axvline(choice.threshold, color="grey", linestyle="--",
                   label=f"target {choice.target:.2%}: >= {choice.threshold:.3f}, keeps {choice.coverage:.1%}")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence threshold (images kept: confidence >= threshold)")
    ax.set_ylabel("coverage (share kept)", color="tab:blue")
    ax.tick_params(axis="y", colors="tab:blue")
    ax.set_title(title, fontsize=9)
    lines = ax.get_lines() + right.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
