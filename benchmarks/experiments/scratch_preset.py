"""How ``gcv train --preset scratch`` was chosen: candidate settings compared on the validation split only.

Without ImageNet weights, training from scratch is what users here get, and the defaults (built for fine-tuning:
5 epochs, strong augmentation) underfit a harder task: on the ten-class Fashion-MNIST stand-in, training accuracy
stays below validation accuracy. Each candidate trains resnet18 from scratch at 32 px on the ten classes
(``gcv data fashion-mnist --all-classes --max-per-class N``, 80/20 split, seed 0) for ``--epochs`` epochs. The
learning rate decays per epoch (``lr x gamma^(e-1)``) whatever the number of epochs, so epoch k of a long run is the
run of k epochs, and one curve per candidate also chooses the number of epochs. No test image is read here: the
chosen preset's test accuracy is measured once, afterwards, on the full data (docs/training.md, "Training from
scratch").

Writes OUT/data, OUT/runs/<candidate>/ (gcv train run folders), OUT/selection.csv (every epoch of every candidate)
and OUT/selection.md. Usage::

    python -m benchmarks scratch_preset --work experiments/scratch-selection
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from benchmarks import options, results
from garmentcv.cli_utils import (
    handle_errors,
    quiet_option,
    setup_logging,
    verbose_option,
)
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist
from garmentcv.train.config import TrainConfig
from garmentcv.train.loop import train

#: The candidates: the fine-tuning defaults and milder augmentation (no rotation or colour jitter, crops of at least
#: 85% of the image), each for ``--epochs`` epochs (the curve also chooses the number of epochs).
CANDIDATES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "mild-augmentation": {"rotation": 0.0, "jitter": 0.0, "crop_scale": 0.85},
}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("experiments/scratch-selection"),
              help="Folder for the data (reused when present) and the runs (replaced).")
@click.option("--per-class", type=click.IntRange(min=10), default=1000,
              help="Fashion-MNIST training images per class (80% train, 20% validation).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, help="Epochs of each candidate's curve.")
@click.option("--candidate", "candidates", multiple=True, type=click.Choice(list(CANDIDATES)),
              default=tuple(CANDIDATES), help="Candidates to run; repeat the option.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
              help="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist).")
@options.click_shared(repeats=None, quiet=False)
@quiet_option
@verbose_option
@handle_errors
def main(
    work: Path,
    per_class: int,
    epochs: int,
    candidates: tuple[str, ...],
    source: Path,
    out: Path,
    name: str | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Train each candidate from scratch on ten Fashion-MNIST classes; print validation accuracy per candidate."""
    setup_logging(quiet, verbose)
    begun = results.start("scratch_preset")
    data = work / "data"
    if not (data / "train").is_dir():
        write_fashion_mnist(data, source, max_per_class=per_class, all_classes=True)
    shutil.rmtree(work / "runs", ignore_errors=True)
    rows, lines = [], ["| candidate | settings | best val accuracy (epoch) | train accuracy then | val at epoch 5 | "
                       "seconds per epoch |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for candidate in candidates:
        started = time.perf_counter()
        cfg = TrainConfig(data=data / "train", out=work / "runs" / candidate, archs=("resnet18",), weights="none",
                          image_size=32, epochs=epochs, **CANDIDATES[candidate])
        result = train(cfg, progress=not quiet).archs[0]
        history = result.history
        rows += [{"candidate": candidate, "epoch": h["epoch"], "train_accuracy": round(h["train_accuracy"], 4),
                  "val_accuracy": round(h["accuracy"], 4), "seconds": round(h["seconds"], 1)} for h in history]
        best = history[result.best_epoch - 1]
        at5 = f"{history[4]['accuracy']:.4f}" if len(history) >= 5 else "-"
        settings = ", ".join(f"{k}={v}" for k, v in CANDIDATES[candidate].items()) or "gcv-train's defaults"
        lines.append(f"| {candidate} | {settings} | {best['accuracy']:.4f} ({result.best_epoch}) | "
                     f"{best['train_accuracy']:.4f} | {at5} | {result.train_seconds / len(history):.0f} |")
        click.echo(f"{candidate}: best validation accuracy {best['accuracy']:.4f} at epoch {result.best_epoch} "
                   f"({time.perf_counter() - started:.0f} s)", err=True)
    text = "\n".join(lines) + "\n"
    results.write(begun, rows, out, name, markdown=text, with_csv=True)
    if not quiet:
        click.echo(text)


if __name__ == "__main__":
    sys.exit(main())
