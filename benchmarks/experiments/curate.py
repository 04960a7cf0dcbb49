"""How well does ``gcv data audit`` find wrong labels? Seeded label flips on the Fashion-MNIST stand-in, offline.

The embedder never sees a target label, clean or noisy: a resnet18 is trained from scratch (AdamW at ``--lr``
0.001: gcv train's 0.01 diverges from random init on so few images) on the seven
Fashion-MNIST classes that are neither blouse nor trousers (``gcv data fashion-mnist --pretraining-set``) and
exported with ``gcv export --embedding``. The bluzy/bryuki training images are embedded once
(:func:`garmentcv.curate.embed.embed_images`); then, for each noise setting and seed, a known share of their labels
is flipped and the audit's label-error step runs on the noisy labels: the out-of-sample probabilities of the K-fold
linear head (:func:`garmentcv.curate.audit.out_of_sample_probs`) and cleanlab's confident learning
(:func:`garmentcv.curate.audit.find_label_errors`). Flagged images are compared with the flipped ones.

Noise settings: ``symmetric`` flips a share of all images, each to the other class; ``one-way`` flips the same
share of all images, drawn from bluzy (shirts and T-shirts) only, to bryuki (trousers). Shares: 5% and 10%.

The cheap method is compared with the textbook one on the first setting (symmetric 5%, seed 0): K fine-tunings of
the embedder's checkpoint, each on K-1 folds of the noisy labels, scoring the fold it did not see
(:func:`garmentcv.curate.kfold.kfold_training_probs`, what ``gcv data audit --probs kfold-training`` runs;
``--kfold-epochs``).

Writes ``OUT/<machine>/curate[-NAME].json`` and ``.md`` (the table) and ``.csv`` (one row per noise setting and
seed: precision, recall, flagged and flipped counts, the head's seconds). ``--tiny`` is a few-minute run of the
same code on fewer images, without the K-fold-training comparison unless ``--kfold-epochs`` is given. Usage::

    python -m benchmarks curate --work experiments/curate
    python -m benchmarks curate --tiny --work experiments/curate-tiny
    python -m benchmarks curate --tiny --kfold-epochs 1 --name tiny-kfold --work experiments/curate-tiny
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from benchmarks import options, results
from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging, verbose_option
from garmentcv.curate.audit import PROBS, find_label_errors, out_of_sample_probs
from garmentcv.curate.embed import embed_images
from garmentcv.curate.kfold import kfold_training_probs
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist
from garmentcv.data.layouts import load_dataset

logger = logging.getLogger(__name__)

#: Noise settings: (kind, share of the training images whose label is flipped).
SETTINGS: tuple[tuple[str, float], ...] = (("symmetric", 0.05), ("symmetric", 0.10), ("one-way", 0.05),
                                           ("one-way", 0.10))
#: How the out-of-sample probabilities are made: the audit's linear head on the embeddings (K-fold
#: ``cross_val_predict``), or K fine-tunings of the whole network, each scoring the fold it did not see
#: (``gcv data audit --probs``).
METHODS = PROBS
#: The one-way flip: shirts and T-shirts (bluzy) labelled as trousers (bryuki).
ONE_WAY = ("bluzy", "bryuki")


@dataclass(frozen=True)
class Row:
    """One noise setting, seed and method of the out-of-sample probabilities (:data:`METHODS`). Precision and recall
    of the flagged images against the flipped ones, 0..1; ``head_seconds``: the probabilities and cleanlab, s."""

    method: str
    noise: str
    share: float
    seed: int
    images: int
    flipped: int
    flagged: int
    precision: float
    recall: float
    out_of_sample_accuracy: float
    head_seconds: float


def flip_labels(labels: np.ndarray, classes: tuple[str, ...], noise: str, share: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(share * N)`` labels, seeded: ``symmetric`` among all images, each to another class drawn
    uniformly; ``one-way`` among :data:`ONE_WAY`'s first class only, to its second. Returns the noisy labels and the
    flipped indices (sorted)."""
    rng = np.random.default_rng(seed)
    count = int(round(share * len(labels)))
    noisy = labels.copy()
    if noise == "symmetric":
        chosen = rng.choice(len(labels), size=count, replace=False)
        shift = rng.integers(1, len(classes), size=count)
        noisy[chosen] = (labels[chosen] + shift) % len(classes)
    else:
        source, target = classes.index(ONE_WAY[0]), classes.index(ONE_WAY[1])
        chosen = rng.choice(np.flatnonzero(labels == source), size=count, replace=False)
        noisy[chosen] = target
    return noisy, np.sort(chosen)


def build_embedder(work: Path, per_class: int, pretrain_per_class: int, epochs: int, image_size: int,
                   source: Path, lr: float = 1e-3) -> tuple[Path, Path]:
    """Write the stand-in (reused when present), train resnet18 from scratch on its seven pretraining classes and
    export it with the embedding output (reused when present); returns the model file and the checkpoint."""
    from garmentcv.export.exporter import ExportConfig, export_checkpoint
    from garmentcv.train.config import TrainConfig
    from garmentcv.train.loop import train

    data = work / "data"
    if not (data / "pretrain").is_dir():
        write_fashion_mnist(data, source, max_per_class=max(per_class, pretrain_per_class), pretraining_set=True)
    model = work / "embedder.onnx"
    checkpoint = work / "runs" / "resnet18" / "best.pt"
    if model.is_file() and checkpoint.is_file():
        return model, checkpoint
    pretrain = load_dataset(data / "pretrain")
    manifest = work / "pretrain.csv"
    kept = [s for c in pretrain.classes for s in [s for s in pretrain.samples if s.label == c][:pretrain_per_class]]
    manifest.write_text("path,label\n" + "".join(f"{s.path.resolve()},{s.label}\n" for s in kept), encoding="utf-8")
    run = train(TrainConfig(data=manifest, out=work / "runs", archs=("resnet18",), weights="none", epochs=epochs,
                            image_size=image_size, batch_size=64, seed=0, lr=lr)).archs[0]
    export_checkpoint(ExportConfig(checkpoint=run.run_dir / "best.pt", out=model, embedding=True, coverage=None,
                                   val_images=200), progress=False)
    return model, run.run_dir / "best.pt"


def _row(method: str, noise: str, share: float, seed: int, noisy: np.ndarray, flipped: np.ndarray,
         probs: np.ndarray, seconds: float) -> Row:
    began = time.perf_counter()
    flagged = find_label_errors(noisy, probs)
    seconds += time.perf_counter() - began
    hits = len(np.intersect1d(flagged, flipped))
    row = Row(method, noise, share, seed, len(noisy), len(flipped), len(flagged),
              hits / len(flagged) if len(flagged) else 0.0, hits / len(flipped) if len(flipped) else 0.0,
              float((probs.argmax(axis=1) == noisy).mean()), seconds)
    logger.info("%s, %s %.0f%% seed %d: precision %.3f, recall %.3f (%d flagged, %d flipped)", method, noise,
                100 * share, seed, row.precision, row.recall, len(flagged), len(flipped))
    return row


def run_experiment(work: Path, per_class: int, pretrain_per_class: int, epochs: int, image_size: int,
                   seeds: int, folds: int, source: Path, kfold_epochs: int = 0,
                   lr: float = 1e-3) -> tuple[list[Row], dict[str, float]]:
    """Build the embedder, embed the target training images once, then audit every noise setting and seed with the
    linear head; with ``kfold_epochs``, also with K fine-tunings of that many epochs (the first setting and seed
    only: it costs K trainings)."""
    started = time.perf_counter()
    model, checkpoint = build_embedder(work, per_class, pretrain_per_class, epochs, image_size, source, lr)
    built = time.perf_counter() - started
    target = load_dataset(work / "data" / "train")
    samples = [s for c in target.classes for s in [s for s in target.samples if s.label == c][:per_class]]
    started = time.perf_counter()
    embedded = embed_images(model, [s.path for s in samples])
    embed_seconds = time.perf_counter() - started
    label_of = {s.path: target.classes.index(s.label) for s in samples}
    labels = np.asarray([label_of[p] for p in embedded.paths])
    rows = []
    for noise, share in SETTINGS:
        for seed in range(seeds):
            noisy, flipped = flip_labels(labels, target.classes, noise, share, seed)
            began = time.perf_counter()
            probs, _ = out_of_sample_probs(embedded.embeddings, noisy, len(target.classes), folds, seed)
            rows.append(_row(METHODS[0], noise, share, seed, noisy, flipped, probs, time.perf_counter() - began))
            if kfold_epochs and (noise, share, seed) == (*SETTINGS[0], 0):
                began = time.perf_counter()
                probs = kfold_training_probs(list(embedded.paths), noisy, target.classes, checkpoint=checkpoint,
                                             folds=folds, seed=seed, epochs=kfold_epochs, work_dir=work,
                                             image_size=image_size, batch_size=64, lr=lr)
                rows.append(_row(METHODS[1], noise, share, seed, noisy, flipped, probs, time.perf_counter() - began))
    return rows, {"embedder_seconds": built, "embed_seconds": embed_seconds, "images": float(len(labels))}


def summary_table(rows: list[Row], timing: dict[str, float]) -> str:
    """Markdown: mean precision and recall per noise setting over the seeds, and the audit's times."""
    lines = ["| method | noise | flipped share | images | seeds | precision | recall | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for method, noise, share in dict.fromkeys((r.method, r.noise, r.share) for r in rows):
        runs = [r for r in rows if (r.method, r.noise, r.share) == (method, noise, share)]
        lines.append(f"| {method} | {noise} | {share:.0%} | {runs[0].images:,} | {len(runs)} | "
                     f"{np.mean([r.precision for r in runs]):.3f} | {np.mean([r.recall for r in runs]):.3f} | "
                     f"{np.mean([r.head_seconds for r in runs]):.1f} |")
    head = np.mean([r.head_seconds for r in rows if r.method == METHODS[0]])
    lines.append("")
    lines.append(f"Writing the data, training and exporting the embedder took {timing['embedder_seconds']:.0f} s (the "
                 "data and embedder are reused from --work when present); "
                 f"embedding {int(timing['images']):,} images {timing['embed_seconds']:.1f} s; the K-fold linear head "
                 f"and cleanlab {head:.1f} s per setting.")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("experiments/curate"),
              help="Folder for the data, the embedder's run and model file (reused when present).")
@click.option("--per-class", type=click.IntRange(min=10), default=3000, help="Target training images per class.")
@click.option("--pretrain-per-class", type=click.IntRange(min=10), default=1000,
              help="Images per class of the embedder's seven classes.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, help="Epochs of the embedder's training.")
@click.option("--image-size", type=click.IntRange(min=16), default=32, help="Model input side in px.")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3,
              help="AdamW learning rate of the embedder and of the K-fold fine-tunings.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, help="Seeds of the flips and folds per setting.")
@click.option("--folds", type=click.IntRange(min=2), default=5, help="K of the out-of-sample probabilities.")
@click.option("--kfold-epochs", type=click.IntRange(min=0), default=None, show_default="3, with --tiny 0",
              help="Epochs of each K-fold fine-tuning compared on the first setting; 0 skips the comparison.")
@click.option("--tiny", is_flag=True, help="A few-minute run: 300 per class, 150 pretraining, 1 epoch, 1 seed.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
              help="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist).")
@options.click_shared(repeats=None, quiet=False)
@quiet_option
@verbose_option
@handle_errors
def main(work: Path, per_class: int, pretrain_per_class: int, epochs: int, image_size: int, lr: float, seeds: int,
         folds: int, kfold_epochs: int | None, tiny: bool, source: Path, out: Path, name: str | None, quiet: bool,
         verbose: bool) -> None:
    """Flip a known share of the stand-in's labels, run the audit's label-error step, report precision and recall."""
    setup_logging(quiet, verbose)
    if tiny:
        per_class, pretrain_per_class, epochs, seeds = 300, 150, 1, 1
        kfold_epochs = 0 if kfold_epochs is None else kfold_epochs
        name = name or "tiny"
    begun = results.start("curate")
    rows, timing = run_experiment(work, per_class, pretrain_per_class, epochs, image_size, seeds, folds, source,
                                  3 if kfold_epochs is None else kfold_epochs, lr)
    text = summary_table(rows, timing)
    results.write(begun, [dataclasses.asdict(r) for r in rows], out, name, markdown=text, with_csv=True)
    if not quiet:
        click.echo(text)


if __name__ == "__main__":
    sys.exit(main())
