"""Does pretraining pay? Transfer learning shown on real images, offline.

ImageNet weights cannot be downloaded here, so the backbone is pretrained on the seven Fashion-MNIST classes that
are neither blouse nor trousers (pullover, dress, coat, sandal, sneaker, bag, ankle boot: ``gcv data fashion-mnist
--pretraining-set``), then fine-tuned on bluzy/bryuki with ``gcv train --weights RUN/<arch>/best.pt`` and compared
with the same arch trained from scratch (``--weights none``) and with the pretrained backbone fine-tuned at a tenth
of the learning rate (``--backbone-lr-factor 0.1``), for 20, 100 and 1,000 training images per class.

Every run uses the default recipe (AdamW, lr 0.01 x0.8 per epoch) through :func:`garmentcv.train.loop.train`,
the same fixed validation set (``--val-data``, 200 images per class, disjoint from every training subset; the
subsets are nested: the 20 are among the 100, the 100 among the 1,000) and, per epoch, the same test images
(from Fashion-MNIST's test file, never trained or validated on).

Seeds are fixed, but the figures change with the number of torch threads (float sums in another order;
docs/training.md shows by how much).

Writes into OUT: ``data/`` (the images, reused when present), ``sets/`` (the manifests of every image set),
``runs/`` (every gcv train run folder, replaced), ``results.csv`` (one row per arch, training images per class, init
and epoch: validation and test top-1 accuracy), ``summary.md`` (the table docs/training.md shows) and
``transfer.png`` (accuracy per epoch). Usage::

    python -m benchmarks transfer --work experiments/transfer    # wall time: see the report
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from torch.utils.data import DataLoader

from benchmarks import options, results
from garmentcv.cli_utils import (
    handle_errors,
    quiet_option,
    setup_logging,
    verbose_option,
)
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist
from garmentcv.data.layouts import Sample, load_dataset
from garmentcv.fsutil import atomic_write
from garmentcv.models import default_preprocessing
from garmentcv.train.config import ARCHS, TrainConfig
from garmentcv.train.data import EvalImages
from garmentcv.train.loop import evaluate, train

logger = logging.getLogger(__name__)

#: How each run starts: the pretrained backbone (the default recipe), from scratch, or the pretrained backbone with
#: its learning rate x0.1 (``--backbone-lr-factor 0.1``, the recipe option this experiment tests as a default).
INITS: dict[str, dict[str, float]] = {
    "pretrained": {},
    "scratch": {},
    "pretrained-backbone-lr-0.1": {"backbone_lr_factor": 0.1},
}
COLOURS = {"pretrained": "tab:blue", "scratch": "tab:orange", "pretrained-backbone-lr-0.1": "tab:green"}


@dataclass(frozen=True)
class Row:
    """One epoch of one fine-tuning run. Accuracies are top-1, 0..1."""

    arch: str
    per_class: int
    init: str
    epoch: int
    val_accuracy: float
    test_accuracy: float
    train_seconds: float


def write_manifest(path: Path, samples: Sequence[Sample]) -> Path:
    """A ``path,label`` manifest of ``samples`` (absolute paths), written atomically; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode="w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((str(s.path.resolve()), s.label) for s in samples)
    return path


def _first_per_class(samples: tuple[Sample, ...] | list[Sample], n: int, classes: tuple[str, ...],
                     skip: int = 0) -> list[Sample]:
    """The images ``skip .. skip + n - 1`` of each class, in file order (ids follow Fashion-MNIST's order)."""
    out: list[Sample] = []
    for name in classes:
        of_class = [s for s in samples if s.label == name]
        if len(of_class) < skip + n:
            raise click.UsageError(f"class {name} has {len(of_class)} images, fewer than the {skip + n} needed; delete "
                                   "OUT/data to have it rebuilt with enough")
        out += of_class[skip : skip + n]
    return out


def make_sets(data: Path, sizes: list[int], val_per_class: int, test_per_class: int, pretrain_per_class: int,
              out: Path) -> dict[str, Path]:
    """Manifests (``path,label`` CSV) of the experiment's image sets, in ``out``.

    ``train_<n>.csv``: the first n images of each class of ``data/train`` (nested); ``val.csv``: the last
    ``val_per_class`` of each class of the first ``max(sizes) + val_per_class``, so disjoint from every
    ``train_<n>``; ``test.csv``: the first ``test_per_class`` of each class of ``data/test`` (labels from
    ``test_labels.csv``); ``pretrain.csv``: the first ``pretrain_per_class`` of each class of ``data/pretrain``.
    """
    target = load_dataset(data / "train")
    sets = {f"train_{n}": write_manifest(out / f"train_{n}.csv", _first_per_class(target.samples, n, target.classes))
            for n in sizes}  # fmt: skip
    sets["val"] = write_manifest(out / "val.csv", _first_per_class(target.samples, val_per_class, target.classes,
                                                                    skip=max(sizes)))
    with open(data / "test_labels.csv", newline="", encoding="utf-8") as handle:
        test = [Sample(data / "test" / f"{row['index']}.jpg", row["label"]) for row in csv.DictReader(handle)]
    sets["test"] = write_manifest(out / "test.csv", _first_per_class(test, test_per_class, target.classes))
    pretrain = load_dataset(data / "pretrain")
    sets["pretrain"] = write_manifest(out / "pretrain.csv",
                                       _first_per_class(pretrain.samples, pretrain_per_class, pretrain.classes))
    return sets


def _test_scorer(test_csv: Path, image_size: int, scores: dict[tuple[str, int], float]):
    """An ``on_epoch_end`` callback: top-1 accuracy of the model on the test manifest, into ``scores``."""
    test = load_dataset(test_csv)

    def score(arch: str, epoch: int, model: torch.nn.Module) -> None:
        loader = DataLoader(EvalImages(test.samples, test.classes, default_preprocessing(arch, image_size)),
                            batch_size=128)
        device = next(model.parameters()).device
        scores[(arch, epoch)] = evaluate(model, loader, device, len(test.classes))[1].accuracy

    return score


def run_experiment(out: Path, archs: tuple[str, ...], sizes: list[int], inits: tuple[str, ...], epochs: int,
                   pretrain_epochs: int, pretrain_per_class: int, val_per_class: int, test_per_class: int,
                   image_size: int, seed: int, source: Path, progress: bool) -> list[Row]:
    """Build the data, pretrain each arch, fine-tune and train from scratch for every size; returns every epoch's
    figures (also written to ``out/results.csv``)."""
    data = out / "data"
    shutil.rmtree(out / "runs", ignore_errors=True)  # the experiment's own run folders, replaced on each run
    if not (data / "pretrain").is_dir():
        needed = max(max(sizes) + val_per_class, test_per_class, pretrain_per_class)
        write_fashion_mnist(data, source, max_per_class=needed, pretraining_set=True)
    sets = make_sets(data, sizes, val_per_class, test_per_class, pretrain_per_class, out / "sets")
    common = dict(image_size=image_size, seed=seed, batch_size=32)
    rows: list[Row] = []
    for arch in archs:
        started = time.perf_counter()
        pre = train(
            TrainConfig(
                data=sets["pretrain"],
                out=out / "runs" / f"{arch}-pretrain",
                archs=(arch,),
                weights="none",
                epochs=pretrain_epochs,
                **common,
            ),
            progress=progress,
        ).archs[0]
        logger.info("%s pretrained on 7 classes: validation accuracy %.4f (epoch %d), %.0f s", arch,
                    pre.best["accuracy"], pre.best_epoch, time.perf_counter() - started)
        for n in sizes:
            for init in inits:
                scores: dict[tuple[str, int], float] = {}
                weights = "none" if init == "scratch" else str(pre.run_dir / "best.pt")
                result = train(TrainConfig(data=sets[f"train_{n}"], out=out / "runs" / f"{arch}-{n}-{init}",
                                           archs=(arch,), weights=weights, epochs=epochs, val_data=sets["val"],
                                           **common, **INITS[init]),
                               progress=progress, on_epoch_end=_test_scorer(sets["test"], image_size, scores)).archs[0]
                rows += [Row(arch, n, init, h["epoch"], h["accuracy"], scores[(arch, h["epoch"])], h["seconds"])
                         for h in result.history]  # fmt: skip
                last = rows[-1]
                logger.info("%s, %d per class, %s: val %.4f, test %.4f after %d epochs", arch, n, init,
                            last.val_accuracy, last.test_accuracy, last.epoch)
    with atomic_write(out / "results.csv", mode="w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "per_class", "init", "epoch", "val_accuracy", "test_accuracy", "train_seconds"])
        writer.writerows((r.arch, r.per_class, r.init, r.epoch, f"{r.val_accuracy:.4f}", f"{r.test_accuracy:.4f}",
                          f"{r.train_seconds:.1f}") for r in rows)  # fmt: skip
    return rows


def summary_table(rows: list[Row]) -> str:
    """Markdown: per arch and size, epoch-1 and best-validation-epoch accuracies of both inits."""
    lines = ["| arch | train images per class | init | val after epoch 1 | test after epoch 1 | best val (epoch) | "
             "test at best val |", "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    keys = dict.fromkeys((r.arch, r.per_class, r.init) for r in rows)
    for arch, n, init in keys:
        runs = [r for r in rows if (r.arch, r.per_class, r.init) == (arch, n, init)]
        best = max(runs, key=lambda r: (r.val_accuracy, -r.epoch))  # first epoch of the best, as gcv train's best.pt
        lines.append(f"| {arch} | {n} | {init} | {runs[0].val_accuracy:.4f} | {runs[0].test_accuracy:.4f} | "
                     f"{best.val_accuracy:.4f} ({best.epoch}) | {best.test_accuracy:.4f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """Validation (solid) and test (dashed) accuracy per epoch: one panel per arch and size, both inits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r.arch for r in rows))
    sizes = list(dict.fromkeys(r.per_class for r in rows))
    fig, axes = plt.subplots(len(archs), len(sizes), figsize=(4 * len(sizes), 3 * len(archs)), squeeze=False,
                             sharey=True)
    for i, arch in enumerate(archs):
        for j, n in enumerate(sizes):
            ax = axes[i][j]
            for init in dict.fromkeys(r.init for r in rows):
                colour = COLOURS[init]
                runs = [r for r in rows if (r.arch, r.per_class, r.init) == (arch, n, init)]
                epochs = [r.epoch for r in runs]
                ax.plot(epochs, [r.val_accuracy for r in runs], "o-", color=colour, label=f"{init}, validation")
                ax.plot(epochs, [r.test_accuracy for r in runs], "s--", color=colour, label=f"{init}, test")
            ax.set(title=f"{arch}, {n} per class", xlabel="epoch", ylabel="top-1 accuracy")
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Fine-tuned from a backbone pretrained on 7 other Fashion-MNIST classes vs from scratch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 20,100,1000") from None
    if any(s < 1 for s in sizes):
        raise click.BadParameter(f"{value!r}: sizes must be >= 1")
    return sizes


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("experiments/transfer"),
              help="Folder for the data (data/ is reused when present), the runs and every epoch's figures.")
@click.option("--arch", "archs", multiple=True, default=ARCHS, help="Arch(s) to compare; repeat the option.")
@click.option("--sizes", default="20,100,1000", callback=_int_list, help="Training images per class, comma-separated.")
@click.option("--init", "inits", multiple=True, type=click.Choice(list(INITS)), default=tuple(INITS),
              help="How the compared runs start; repeat the option.")
@click.option(
    "--epochs", type=click.IntRange(min=1), default=5, help="Fine-tuning / from-scratch epochs (the recipe's 5)."
)
@click.option(
    "--pretrain-epochs", type=click.IntRange(min=1), default=3, help="Epochs of pretraining on the 7 classes."
)
@click.option("--pretrain-per-class", type=click.IntRange(min=2), default=600, help="Pretraining images per class.")
@click.option("--val-per-class", type=click.IntRange(min=1), default=200, help="Fixed validation images per class.")
@click.option(
    "--test-per-class", type=click.IntRange(min=1), default=400, help="Test images per class, scored every epoch."
)
@click.option("--image-size", type=click.IntRange(min=16), default=32, help="Model input side in px (as the demo).")
@click.option("--seed", type=int, default=0, help="Seed of every run.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
              help="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist).")
@options.click_shared(repeats=None, quiet=False)
@quiet_option
@verbose_option
@handle_errors
def main(
    work: Path,
    archs: tuple[str, ...],
    sizes: list[int],
    inits: tuple[str, ...],
    epochs: int,
    pretrain_epochs: int,
    pretrain_per_class: int,
    val_per_class: int,
    test_per_class: int,
    image_size: int,
    seed: int,
    source: Path,
    out: Path,
    name: str | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Pretrain on 7 Fashion-MNIST classes, fine-tune on bluzy/bryuki vs train from scratch; print the table."""
    setup_logging(quiet, verbose)
    begun = results.start("transfer")
    started = time.perf_counter()
    rows = run_experiment(
        work,
        tuple(archs),
        sizes,
        tuple(inits),
        epochs,
        pretrain_epochs,
        pretrain_per_class,
        val_per_class,
        test_per_class,
        image_size,
        seed,
        source,
        progress=not quiet,
    )
    minutes = (time.perf_counter() - started) / 60
    text = summary_table(rows) + f"\nWall time {minutes:.1f} min ({torch.get_num_threads()} torch threads).\n"
    path = results.write(begun, [dataclasses.asdict(r) for r in rows], out, name, markdown=text)
    plot(rows, path.with_suffix(".png"))
    if not quiet:
        click.echo(text)


if __name__ == "__main__":
    sys.exit(main())
