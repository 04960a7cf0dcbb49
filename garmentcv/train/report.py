"""Pictures and tables of a run: confusion matrix and learning curves (matplotlib), comparison (markdown)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from garmentcv.fsutil import atomic_path  # noqa: E402
from garmentcv.plots import save_confusion_matrix  # noqa: E402,F401  (re-exported; it lives in plots.py)


def save_curves(history: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Write loss and accuracy per epoch (training and validation) side by side as a PNG."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    acc_ax.plot(epochs, [h["accuracy"] for h in history], "o-", label="validation")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the best validation epoch of each arch.

    Each row needs ``arch``, ``best_epoch``, ``accuracy``, ``precision``, ``recall``, ``f1``, ``params_m``
    (millions of parameters) and ``train_seconds``.
    """
    lines = [
        "| arch | best epoch | accuracy | precision | recall | F1 | params (M) | train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['best_epoch']} | {r['accuracy']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} "
            f"| {r['f1']:.4f} | {r['params_m']:.2f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
