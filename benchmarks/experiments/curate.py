"""How well does ``gcv data audit`` find wrong labels? Seeded label flips on the Fashion-MNIST stand-in, offline.

The embedder never sees a target label, clean or noisy: a resnet18 is trained from scratch (AdamW at ``--lr``
0.001: gcv train's 0.01 diverges from random init on so few images) on the seven
Fashion-MNIST classes that are neither blouse nor trousers (``gcv data fashion-mnist --pretraining-set``) and
exported with ``gcv export --embedding``. The bluzy/bryuki training images are embedded once
(:func:`garmentcv.curate.embed.embed_images`); then, for each noise setting and seed, a known share of their labels
is flipped and the audit's label-error step runs on the noisy labels: the out-of-sample probabilities of the K-fold
linear head (:func:`garmentcv.curate.audit.out_of_sample_probs`) and cleanlab's confident learning
(:func:`garmentcv.curate.audit.find_label_errors`). Flagged images are compared with the flipped ones.

Noise settings: ``symmetric`` flips a share of all images, each to another class; ``one-way`` flips the same
share of all images, drawn from bluzy (shirts and T-shirts) only, to bryuki (trousers). Shares: 5% and 10%. The
same settings run on the ten-class Fashion-MNIST test file (1,000 images per class, none seen by the embedder; the
one-way flip takes shirts to trousers), with the first seed only.

Beyond precision and recall (``--retrain-epochs``): resnet18 is fine-tuned from the embedder's checkpoint on the
2-class images with the noisy labels of each 5% setting, with those labels after the audit's fixes (its flagged
images relabelled to the suggested class through a corrections file, as ``gcv train --corrections`` reads it), and
with the clean labels; each model's last epoch is scored on the stand-in's test file. And (``--copies-per-kind``)
copies of training images, exact, resized, re-encoded and lightly cropped, are planted in another split beside 200
test images; the cosine of each copy's embedding to its original's is measured, then the whole audit (``gcv data
audit DATA --split SPLIT --duplicate-cosine T``) runs at each threshold of :data:`THRESHOLDS` and the copies it paired
with their original are counted, and the other pairs it reported. ``--only duplicates`` runs that section alone (the
embedder is built, or reused from ``--work``), into ``curate-duplicates.json`` unless ``--name`` says otherwise.

The cheap method is compared with the textbook one on the first setting (symmetric 5%, seed 0): K fine-tunings of
the embedder's checkpoint, each on K-1 folds of the noisy labels, scoring the fold it did not see
(:func:`garmentcv.curate.kfold.kfold_training_probs`, what ``gcv data audit --probs kfold-training`` runs;
``--kfold-epochs``).

Writes ``OUT/<machine>/curate[-NAME].json`` (every row: the audits, then ``section`` ``retrain``, ``cosines`` and
``duplicates``: :func:`section_rows`), ``.md`` (the tables) and ``.csv`` (one row per set, noise setting and seed:
precision, recall, flagged and flipped counts, the head's seconds; none with ``--only duplicates``). ``--tiny`` is a
few-minute run of the same code on fewer images, without the K-fold-training comparison unless ``--kfold-epochs``
is given. Usage::

    python -m benchmarks curate --work experiments/curate
    python -m benchmarks curate --only duplicates --work experiments/curate
    python -m benchmarks curate --tiny --work experiments/curate-tiny
    python -m benchmarks curate --tiny --kfold-epochs 1 --name tiny-kfold --work experiments/curate-tiny
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
from typing import Any

import click
import numpy as np

from benchmarks import options, results
from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging, verbose_option
from garmentcv.curate.audit import PROBS, find_label_errors, out_of_sample_probs
from garmentcv.curate.embed import embed_images
from garmentcv.curate.fixes import DEFAULT_DUPLICATE_COSINE
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
#: The audited sets: the 2-class stand-in's training images, and the ten-class Fashion-MNIST test file (which the
#: embedder never saw).
DATASETS = ("two-class", "ten-class")
#: The one-way flip of each set: its first class's images labelled as the second (shirts as trousers).
ONE_WAY: dict[str, tuple[str, str]] = {"two-class": ("bluzy", "bryuki"), "ten-class": ("shirt", "trouser")}
#: Which labels a retrained model learns from: the noisy ones, the noisy ones after the audit's fixes, the clean ones.
RETRAIN_LABELS = ("noisy", "fixed", "clean")


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
    dataset: str = DATASETS[0]


@dataclass(frozen=True)
class RetrainRow:
    """Test accuracy (0..1) of resnet18 fine-tuned from the embedder on the 2-class stand-in's training images with
    the ``labels`` of :data:`RETRAIN_LABELS`, for one noise setting and seed; ``corrected``: images relabelled by
    the audit's fixes (``fixed`` only)."""

    noise: str
    share: float
    seed: int
    labels: str
    corrected: int
    test_accuracy: float
    train_seconds: float


def flip_labels(labels: np.ndarray, classes: tuple[str, ...], noise: str, share: float, seed: int,
                one_way: tuple[str, str] = ONE_WAY["two-class"]) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(share * N)`` labels, seeded: ``symmetric`` among all images, each to another class drawn
    uniformly; ``one-way`` among ``one_way``'s first class only, to its second. Returns the noisy labels and the
    flipped indices (sorted)."""
    rng = np.random.default_rng(seed)
    count = int(round(share * len(labels)))
    noisy = labels.copy()
    if noise == "symmetric":
        chosen = rng.choice(len(labels), size=count, replace=False)
        shift = rng.integers(1, len(classes), size=count)
        noisy[chosen] = (labels[chosen] + shift) % len(classes)
    else:
        source, target = classes.index(one_way[0]), classes.index(one_way[1])
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
         probs: np.ndarray, seconds: float, dataset: str = DATASETS[0]) -> Row:
    began = time.perf_counter()
    flagged = find_label_errors(noisy, probs)
    seconds += time.perf_counter() - began
    hits = len(np.intersect1d(flagged, flipped))
    row = Row(method, noise, share, seed, len(noisy), len(flipped), len(flagged),
              hits / len(flagged) if len(flagged) else 0.0, hits / len(flipped) if len(flipped) else 0.0,
              float((probs.argmax(axis=1) == noisy).mean()), seconds, dataset)
    logger.info("%s %s, %s %.0f%% seed %d: precision %.3f, recall %.3f (%d flagged, %d flipped)", dataset, method,
                noise, 100 * share, seed, row.precision, row.recall, len(flagged), len(flipped))
    return row


def ten_class_test_set(work: Path, source: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """The ten-class Fashion-MNIST test file as images in ``work/ten`` (written once): paths, class indices and
    class names (sorted)."""
    folder = work / "ten"
    if not (folder / "test_labels.csv").is_file():
        write_fashion_mnist(folder, source, max_per_class=1000, all_classes=True)
    return _test_split(folder)


def _test_split(folder: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    with (folder / "test_labels.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = tuple(sorted({r["label"] for r in rows}))
    paths = [folder / "test" / f"{r['index']}.jpg" for r in rows]
    return paths, np.asarray([classes.index(r["label"]) for r in rows]), classes


def _manifest(path: Path, paths: list[Path], labels: np.ndarray, classes: tuple[str, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,label\n" + "".join(f"{p.resolve()},{classes[y]}\n" for p, y in zip(paths, labels,
                                                                                              strict=True)),
                    encoding="utf-8")
    return path


def retrain_after_fixes(work: Path, paths: list[Path], labels: np.ndarray, classes: tuple[str, ...],
                        checkpoint: Path, settings: tuple[tuple[str, float], ...], folds: int, epochs: int,
                        image_size: int, lr: float, embeddings: np.ndarray) -> list[RetrainRow]:
    """For each noise setting (seed 0): fine-tune resnet18 from ``checkpoint`` on the noisy labels, and on the noisy
    labels with the audit's label fixes applied through a corrections file (``gcv train --corrections``, each flagged
    image relabelled to its suggested class); once on the clean labels. Each model's last epoch is scored on the
    2-class stand-in's test file (``work/data/test``)."""
    from garmentcv.curate.audit import suggested_labels
    from garmentcv.curate.fixes import LABEL, Fix, fixes_to_corrections
    from garmentcv.data.corrections import write_corrections
    from garmentcv.train.config import TrainConfig
    from garmentcv.train.loop import train

    folder = work / "retrain"
    shutil.rmtree(folder, ignore_errors=True)
    test_paths, test_labels, test_classes = _test_split(work / "data")
    test = _manifest(folder / "test.csv", test_paths, np.asarray([classes.index(test_classes[y]) for y in test_labels]),
                     classes)

    def accuracy(name: str, given: np.ndarray, corrections: Path | None = None) -> tuple[float, float]:
        run = train(TrainConfig(data=_manifest(folder / f"{name}.csv", paths, given, classes), val_data=test,
                                out=folder / name, archs=("resnet18",), weights=str(checkpoint), epochs=epochs,
                                image_size=image_size, batch_size=64, seed=0, lr=lr, corrections=corrections)).archs[0]
        return float(run.history[-1]["accuracy"]), run.train_seconds

    rows = []
    clean, seconds = accuracy("clean", labels)
    for noise, share in settings:
        noisy, _ = flip_labels(labels, classes, noise, share, 0)
        probs, _ = out_of_sample_probs(embeddings, noisy, len(classes), folds, 0)
        suggested = suggested_labels(noisy, probs)
        fixes = [Fix(str(paths[i].resolve()), classes[noisy[i]], classes[suggested[i]], LABEL,
                     float(1.0 - probs[i, noisy[i]])) for i in find_label_errors(noisy, probs)]
        corrections = folder / f"{noise}-{share:g}-corrections.csv"
        with corrections.open("w", encoding="utf-8", newline="") as handle:
            write_corrections(fixes_to_corrections(fixes, (LABEL,)), handle)
        tag = f"{noise}-{share:g}"
        for name, given, file in (("noisy", noisy, None), ("fixed", noisy, corrections)):
            value, took = accuracy(f"{tag}-{name}", given, file)
            rows.append(RetrainRow(noise, share, 0, name, len(fixes) if file else 0, value, took))
            logger.info("retrained on %s labels (%s %.0f%%): test accuracy %.4f", name, noise, 100 * share, value)
        rows.append(RetrainRow(noise, share, 0, "clean", 0, clean, seconds))
    return rows


#: The copies planted in another split: an exact copy, and copies resized (2x), re-encoded (JPEG quality 60) and
#: lightly cropped (2 px off each side).
COPY_KINDS = ("exact", "resized", "re-encoded", "cropped")
#: The ``--duplicate-cosine`` values the whole audit runs at on the planted copies; the default is among them.
THRESHOLDS: tuple[float, ...] = tuple(sorted({0.95, 0.99, 0.995, 0.998, 0.999, DEFAULT_DUPLICATE_COSINE}))
#: What ``--only`` can run alone: the planted copies (:func:`duplicate_rows`), without the label flips, the K-fold
#: trainings, the ten-class set and the retrained models.
ONLY = ("duplicates",)


@dataclass(frozen=True)
class CopyCosines:
    """Cosine similarity (normalised embeddings) of the planted copies of one kind (:data:`COPY_KINDS`) to their
    originals, over its ``copies``."""

    kind: str
    copies: int
    min: float
    median: float
    max: float


@dataclass(frozen=True)
class DuplicateRow:
    """The whole audit at one ``--duplicate-cosine`` (``threshold``): ``found``, per kind of :data:`COPY_KINDS`, the
    planted copies (``planted`` of each kind) it paired with their original; ``other``: the pairs it reported that
    were not planted (real near-copies in Fashion-MNIST included); ``seconds``: the audit's time, s."""

    threshold: float
    planted: int
    found: dict[str, int]
    other: int
    seconds: float


@dataclass(frozen=True)
class Duplicates:
    """The planted copies' cosines to their originals, and the audit's findings at each threshold."""

    cosines: list[CopyCosines]
    rows: list[DuplicateRow]


def plant_copies(originals: list[Path], folder: Path, per_kind: int, seed: int) -> dict[str, tuple[str, str]]:
    """Write ``per_kind`` copies of each kind of :data:`COPY_KINDS` of seeded, distinct ``originals`` into
    ``folder``; returns ``{copy file name: (kind, original file name)}``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    chosen = np.random.default_rng(seed).choice(len(originals), size=per_kind * len(COPY_KINDS), replace=False)
    planted = {}
    for n, index in enumerate(chosen):
        kind, source = COPY_KINDS[n // per_kind], originals[index]
        name = f"copy-{kind}-{n:04d}.jpg"
        if kind == "exact":
            shutil.copyfile(source, folder / name)
        else:
            with Image.open(source) as image:
                image = image.convert("RGB")
                w, h = image.size
                if kind == "resized":
                    image = image.resize((2 * w, 2 * h), Image.Resampling.BICUBIC)
                elif kind == "cropped":
                    image = image.crop((2, 2, w - 2, h - 2))
                image.save(folder / name, quality=60 if kind == "re-encoded" else 95)
        planted[name] = (kind, source.name)
    return planted


def copy_cosines(copies: np.ndarray, originals: np.ndarray, kinds: Sequence[str]) -> list[CopyCosines]:
    """Per kind of :data:`COPY_KINDS` present in ``kinds``: min, median and max of the cosine of each copy to its
    original, the row-wise dot products of the unit-norm ``copies`` and ``originals`` ``(N, D)``."""
    cosines = np.sum(np.asarray(copies, dtype=np.float64) * np.asarray(originals, dtype=np.float64), axis=1)
    given = np.asarray(kinds)
    return [CopyCosines(kind, int((given == kind).sum()), float(cosines[given == kind].min()),
                        float(np.median(cosines[given == kind])), float(cosines[given == kind].max()))
            for kind in COPY_KINDS if (given == kind).any()]


def found_copies(planted: dict[str, tuple[str, str]], pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, int], int]:
    """How many planted copies of each kind of :data:`COPY_KINDS` the audit's ``pairs`` (file names of copy and
    original, either way round) pair with their original, and how many pairs are not planted ones."""
    given = {frozenset(pair) for pair in pairs}
    found = {name for name, (_, original) in planted.items() if frozenset((name, original)) in given}
    return ({kind: sum(planted[n][0] == kind for n in found) for kind in COPY_KINDS}, len(given) - len(found))


def duplicate_rows(work: Path, model: Path, paths: list[Path], labels: np.ndarray, classes: tuple[str, ...],
                   per_kind: int, thresholds: Sequence[float] = THRESHOLDS, seed: int = 0) -> Duplicates:
    """Plant copies of the training images (:func:`plant_copies`) in a split of their own beside the 2-class
    stand-in's first 200 test images; measure the cosine of each copy to its original (:func:`copy_cosines`), then
    run the whole audit (``gcv data audit DATA --split SPLIT --duplicate-cosine T``) at each of ``thresholds`` and
    count which copies it paired with their original (:func:`found_copies`)."""
    from garmentcv.curate.audit import AuditConfig, audit_dataset

    folder = work / "duplicates"
    shutil.rmtree(folder, ignore_errors=True)
    split = folder / "val"
    planted = plant_copies(paths, split, per_kind, seed)
    for source in _test_split(work / "data")[0][:200]:
        shutil.copyfile(source, split / f"test-{source.name}")
    data = _manifest(folder / "train.csv", paths, labels, classes)
    by_name = {p.name: p for p in paths}
    names = sorted(planted)
    copies = embed_images(model, [split / n for n in names])
    originals = embed_images(model, [by_name[planted[n][1]] for n in names])
    if copies.failed or originals.failed:
        raise RuntimeError(f"planted copies or their originals did not decode: {copies.failed + originals.failed}")
    cosines = copy_cosines(copies.normalised, originals.normalised, [planted[n][0] for n in names])
    for c in cosines:
        logger.info("copies %s: cosine to the original min %.5f, median %.5f", c.kind, c.min, c.median)
    rows = []
    for threshold in thresholds:
        began = time.perf_counter()
        result = audit_dataset(AuditConfig(data=data, model=model, out=folder / f"audit-{threshold:g}",
                                           splits=(split,), duplicate_cosine=threshold, report=False))
        found, other = found_copies(planted, [(Path(d.path).name, Path(d.original).name) for d in result.duplicates])
        rows.append(DuplicateRow(threshold, per_kind, found, other, time.perf_counter() - began))
        logger.info("--duplicate-cosine %g: found %s of %d each, %d other pairs", threshold, found, per_kind, other)
    return Duplicates(cosines, rows)


def run_experiment(work: Path, per_class: int, pretrain_per_class: int, epochs: int, image_size: int,
                   seeds: int, folds: int, source: Path, kfold_epochs: int = 0, lr: float = 1e-3,
                   ten_class: bool = False, retrain_epochs: int = 0, copies_per_kind: int = 0, only: str | None = None
                   ) -> tuple[list[Row], dict[str, float], list[RetrainRow], Duplicates | None]:  # fmt: skip
    """Build the embedder, embed the target training images once, then audit every noise setting and seed with the
    linear head (:func:`label_rows`); with ``kfold_epochs``, also with K fine-tunings of that many epochs (the first
    setting and seed only: it costs K trainings); with ``ten_class``, also the ten-class test file; with
    ``retrain_epochs``, the test accuracy of models retrained on noisy, fixed and clean labels
    (:func:`retrain_after_fixes`, the 5% settings); with ``copies_per_kind``, planted copies found
    (:func:`duplicate_rows`). ``only="duplicates"`` (:data:`ONLY`) builds the embedder and runs the planted copies
    alone."""
    started = time.perf_counter()
    model, checkpoint = build_embedder(work, per_class, pretrain_per_class, epochs, image_size, source, lr)
    timing = {"embedder_seconds": time.perf_counter() - started}
    target = load_dataset(work / "data" / "train")
    samples = [s for c in target.classes for s in [s for s in target.samples if s.label == c][:per_class]]
    paths = [s.path for s in samples]
    labels = np.asarray([target.classes.index(s.label) for s in samples])
    timing["images"] = float(len(paths))
    rows: list[Row] = []
    retrained: list[RetrainRow] = []
    if only is None:
        rows, retrained, timing["embed_seconds"] = label_rows(
            work, model, checkpoint, paths, labels, target.classes, seeds, folds, source, kfold_epochs, lr,
            image_size, ten_class, retrain_epochs)
    copies = duplicate_rows(work, model, paths, labels, target.classes, copies_per_kind) if copies_per_kind else None
    return rows, timing, retrained, copies


def label_rows(work: Path, model: Path, checkpoint: Path, paths: list[Path], labels: np.ndarray,
               classes: tuple[str, ...], seeds: int, folds: int, source: Path, kfold_epochs: int, lr: float,
               image_size: int, ten_class: bool, retrain_epochs: int
               ) -> tuple[list[Row], list[RetrainRow], float]:  # fmt: skip
    """The label flips of :func:`run_experiment` on the 2-class images ``paths`` (and the ten-class test file, the
    K-fold trainings and the retrained models as asked); returns their rows and the seconds of the embedding."""
    started = time.perf_counter()
    embedded = embed_images(model, paths)
    embed_seconds = time.perf_counter() - started
    label_of = dict(zip(paths, labels, strict=True))
    labels = np.asarray([label_of[p] for p in embedded.paths])
    rows = []
    for noise, share in SETTINGS:
        for seed in range(seeds):
            noisy, flipped = flip_labels(labels, classes, noise, share, seed)
            began = time.perf_counter()
            probs, _ = out_of_sample_probs(embedded.embeddings, noisy, len(classes), folds, seed)
            rows.append(_row(METHODS[0], noise, share, seed, noisy, flipped, probs, time.perf_counter() - began))
            if kfold_epochs and (noise, share, seed) == (*SETTINGS[0], 0):
                began = time.perf_counter()
                probs = kfold_training_probs(list(embedded.paths), noisy, classes, checkpoint=checkpoint,
                                             folds=folds, seed=seed, epochs=kfold_epochs, work_dir=work,
                                             image_size=image_size, batch_size=64, lr=lr)
                rows.append(_row(METHODS[1], noise, share, seed, noisy, flipped, probs, time.perf_counter() - began))
    retrained = []
    if retrain_epochs:
        retrained = retrain_after_fixes(work, list(embedded.paths), labels, classes, checkpoint,
                                        tuple(s for s in SETTINGS if s[1] == 0.05), folds, retrain_epochs, image_size,
                                        lr, embedded.embeddings)
    if ten_class:
        ten_paths, ten_labels, ten_classes = ten_class_test_set(work, source)
        ten = embed_images(model, ten_paths)
        index = {p: i for i, p in enumerate(ten_paths)}
        ten_labels = ten_labels[[index[p] for p in ten.paths]]
        for noise, share in SETTINGS:
            for seed in range(1):  # the first seed only: each setting fits ten-class heads on 10,000 images
                noisy, flipped = flip_labels(ten_labels, ten_classes, noise, share, seed, ONE_WAY["ten-class"])
                began = time.perf_counter()
                probs, _ = out_of_sample_probs(ten.embeddings, noisy, len(ten_classes), folds, seed)
                rows.append(_row(METHODS[0], noise, share, seed, noisy, flipped, probs, time.perf_counter() - began,
                                 DATASETS[1]))
    return rows, retrained, embed_seconds


def summary_table(rows: list[Row], timing: dict[str, float], retrained: Sequence[RetrainRow] = (),
                  copies: Duplicates | None = None) -> str:
    """Markdown: mean precision and recall per set and noise setting over the seeds, the audit's times, the
    retrained models' test accuracy, and the planted copies' cosines and the copies found at each threshold."""
    lines = [f"Writing the data, training and exporting the embedder took {timing['embedder_seconds']:.0f} s (the "
             "data and embedder are reused from --work when present)."]
    if rows:
        lines = ["| set | method | noise | flipped share | images | seeds | precision | recall | seconds |",
                 "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for dataset, method, noise, share in dict.fromkeys((r.dataset, r.method, r.noise, r.share) for r in rows):
            runs = [r for r in rows if (r.dataset, r.method, r.noise, r.share) == (dataset, method, noise, share)]
            lines.append(f"| {dataset} | {method} | {noise} | {share:.0%} | {runs[0].images:,} | {len(runs)} | "
                         f"{np.mean([r.precision for r in runs]):.3f} | {np.mean([r.recall for r in runs]):.3f} | "
                         f"{np.mean([r.head_seconds for r in runs]):.1f} |")
        head = np.mean([r.head_seconds for r in rows if r.method == METHODS[0]])
        lines.append("")
        lines.append(f"Writing the data, training and exporting the embedder took {timing['embedder_seconds']:.0f} s "
                     "(the data and embedder are reused from --work when present); "
                     f"embedding {int(timing['images']):,} images {timing['embed_seconds']:.1f} s; the K-fold linear "
                     f"head and cleanlab {head:.1f} s per setting.")
    if retrained:
        lines += ["", "Test accuracy of resnet18 fine-tuned from the embedder on the 2-class training images (seed 0, "
                  "last epoch, the stand-in's test file):", "",
                  "| noise | flipped share | noisy labels | after the audit's fixes (relabelled) | clean labels |",
                  "|---|---:|---:|---:|---:|"]
        for noise, share in dict.fromkeys((r.noise, r.share) for r in retrained):
            got = {r.labels: r for r in retrained if (r.noise, r.share) == (noise, share)}
            lines.append(f"| {noise} | {share:.0%} | {got['noisy'].test_accuracy:.4f} | "
                         f"{got['fixed'].test_accuracy:.4f} ({got['fixed'].corrected}) | "
                         f"{got['clean'].test_accuracy:.4f} |")
    if copies is not None:
        lines += ["", "Cosine of each copy of a 2-class training image, planted in another split (with 200 test "
                  "images), to its original:", "", "| copy | copies | min | median | max |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {c.kind} | {c.copies} | {c.min:.5f} | {c.median:.5f} | {c.max:.5f} |" for c in copies.cosines]
        lines += ["", "Copies the whole audit paired with their original, and other pairs it reported (not planted), "
                  "per --duplicate-cosine:", "",
                  "| --duplicate-cosine | " + " | ".join(COPY_KINDS) + " | other pairs | seconds |",
                  "|---:|" + "---:|" * (len(COPY_KINDS) + 2)]
        for r in copies.rows:
            default = " (default)" if r.threshold == DEFAULT_DUPLICATE_COSINE else ""
            lines.append(f"| {r.threshold:g}{default} | "
                         + " | ".join(f"{r.found[k]} of {r.planted}" for k in COPY_KINDS)
                         + f" | {r.other:,} | {r.seconds:.1f} |")
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
@click.option("--ten-class/--no-ten-class", default=None, show_default="on, with --tiny off",
              help="Also audit the ten-class Fashion-MNIST test file.")
@click.option("--retrain-epochs", type=click.IntRange(min=0), default=None, show_default="3, with --tiny 0",
              help="Epochs of the models retrained on noisy, fixed and clean labels; 0 skips them.")
@click.option("--copies-per-kind", type=click.IntRange(min=0), default=100,
              help="Copies of each kind planted in another split; 0 skips them.")
@click.option("--only", type=click.Choice(ONLY), default=None, show_default="everything",
              help="Run one section alone (the embedder is still built, or reused from --work).")
@click.option("--tiny", is_flag=True, help="A few-minute run: 300 per class, 150 pretraining, 1 epoch, 1 seed.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
              help="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist).")
@options.click_shared(repeats=None, quiet=False)
@quiet_option
@verbose_option
@handle_errors
def main(work: Path, per_class: int, pretrain_per_class: int, epochs: int, image_size: int, lr: float, seeds: int,
         folds: int, kfold_epochs: int | None, ten_class: bool | None, retrain_epochs: int | None,
         copies_per_kind: int, only: str | None, tiny: bool, source: Path, out: Path, name: str | None, quiet: bool,
         verbose: bool) -> None:
    """Flip a known share of the stand-in's labels, run the audit's label-error step, report precision and recall."""
    setup_logging(quiet, verbose)
    if only == "duplicates" and not copies_per_kind:
        raise click.UsageError("--only duplicates plants the copies: give --copies-per-kind of at least 1")
    if tiny:
        per_class, pretrain_per_class, epochs, seeds = 300, 150, 1, 1
        kfold_epochs = 0 if kfold_epochs is None else kfold_epochs
        retrain_epochs = 0 if retrain_epochs is None else retrain_epochs
        ten_class = bool(ten_class)
    name = name or "-".join([*(["tiny"] if tiny else []), *([only] if only else [])]) or None
    begun = results.start("curate")
    rows, timing, retrained, copies = run_experiment(
        work, per_class, pretrain_per_class, epochs, image_size, seeds, folds, source,
        3 if kfold_epochs is None else kfold_epochs, lr, ten_class=ten_class is not False,
        retrain_epochs=3 if retrain_epochs is None else retrain_epochs, copies_per_kind=copies_per_kind, only=only)
    text = summary_table(rows, timing, retrained, copies)
    results.write(begun, [dataclasses.asdict(r) for r in rows] + section_rows(retrained, copies), out, name,
                  markdown=text, csv_rows=[dataclasses.asdict(r) for r in rows])
    if not quiet:
        click.echo(text)


def section_rows(retrained: Sequence[RetrainRow], copies: Duplicates | None) -> list[dict[str, Any]]:
    """The data file's rows after the label flips' own, each named by its ``section``: ``retrain``, ``cosines``
    (the planted copies' cosines to their originals, per kind) and ``duplicates`` (the audit at each threshold,
    ``default`` true at the audit's default)."""
    extra = [{"section": "retrain", **dataclasses.asdict(r)} for r in retrained]
    if copies is not None:
        extra += [{"section": "cosines", **dataclasses.asdict(c)} for c in copies.cosines]
        extra += [{"section": "duplicates", **dataclasses.asdict(r), "default": r.threshold == DEFAULT_DUPLICATE_COSINE}
                  for r in copies.rows]
    return extra


if __name__ == "__main__":
    sys.exit(main())
