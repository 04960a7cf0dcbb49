"""Pictures shared by training and evaluation (matplotlib and scikit-learn, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

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
