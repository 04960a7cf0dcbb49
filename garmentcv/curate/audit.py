"""``gcv data audit``: likely label errors, duplicates, outliers and images of none of the classes in a labelled
dataset, from a model file's ``embedding`` output (numpy, scikit-learn, cleanlab; torch only for ``--probs
kfold-training``, imported then).

Steps (:func:`audit_dataset`):

1. Embeddings of every image of the dataset and of the compared splits, by one of two routes
   (:attr:`AuditConfig.route`): the model file runs on them (:func:`model_embeddings`, the classify pipeline on either
   runtime), or they are read from the embeddings file of a ``gcv classify --embeddings`` run over a folder holding
   them (:func:`read_run_embeddings`; no model runs, so many machines can embed with ``--engine ray``).
   Every later step works on the ``(N, D)`` embeddings only, so both routes give the same results.
2. Out-of-sample predicted probabilities, by :attr:`AuditConfig.probs`: ``linear-head`` (the default,
   :func:`out_of_sample_probs`), a linear head (scikit-learn's ``LogisticRegression`` on standardised,
   L2-normalised embeddings) fitted in K stratified folds (``cross_val_predict``), so every image is scored by a head
   that never saw its label: one pass of the network over the images, then seconds of CPU; or ``kfold-training``
   (:func:`garmentcv.curate.kfold.kfold_training_probs`, needs torch), K fine-tunings of a gcv train checkpoint,
   each scoring the fold it did not see: K trainings of the network.
3. Label errors (:func:`find_label_errors`): confident learning (Northcutt et al. 2021) with
   ``cleanlab.filter.find_label_issues`` on those probabilities.
4. Duplicates (:func:`find_duplicates`): byte-identical files (SHA-256), and pairs whose normalised embeddings have
   a cosine similarity of at least :attr:`AuditConfig.duplicate_cosine` (scikit-learn ``NearestNeighbors``), within
   the dataset and between it and every compared split (train/validation/test leaks).
5. Outliers (:func:`find_outliers`): the mean cosine distance of each image to its K nearest neighbours in the
   dataset, flagged beyond Tukey's far-out fence ``Q3 + outlier_iqr * IQR``.
6. Unknowns: images whose ``ood_score`` is above the threshold of the model file's unknown-item detector, when
   the file has one; on the embeddings route, the ``unknown`` column of the classify run's rows when they are given
   (:attr:`AuditConfig.rows`), else the check does not run (:data:`UNKNOWN_NOT_RUN`).

Writes, in the ``out`` folder: :data:`FIX_LIST` (:mod:`garmentcv.curate.fixes`), :data:`DUPLICATES`,
:data:`PROBABILITIES`, :data:`SUMMARY` and the report page :data:`REPORT`.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from garmentcv.curate.embed import embed_images, normalise
from garmentcv.curate.fixes import (
    COSINE_TOLERANCE,
    DEFAULT_DUPLICATE_COSINE,
    EXACT_DUPLICATE,
    ISSUES,
    LABEL,
    NEAR_DUPLICATE,
    OUTLIER,
    UNKNOWN,
    Fix,
    sort_fixes,
    write_fix_list,
)
from garmentcv.data.corrections import dataset_base
from garmentcv.data.layouts import Layout, load_dataset, scan_images
from garmentcv.errors import CheckpointError, DatasetError, GarmentCVError
from garmentcv.fsutil import atomic_write, sha256_of, write_json
from garmentcv.installs import pip_install
from garmentcv.train.config import DEFAULT_EPOCHS, DEFAULT_LR

logger = logging.getLogger(__name__)

#: Files the audit writes in its ``out`` folder.
FIX_LIST = "fix_list.csv"
DUPLICATES = "duplicates.csv"
PROBABILITIES = "out_of_sample.csv"
SUMMARY = "audit.json"
REPORT = "audit.html"

#: The name of the audited dataset's split in :data:`DUPLICATES`.
DATA_SPLIT = "data"


#: How the out-of-sample probabilities are made (:attr:`AuditConfig.probs`): a linear head on the embeddings in K
#: folds, or K fine-tunings of a gcv train checkpoint, each scoring the fold it did not see.
LINEAR_HEAD = "linear-head"
KFOLD_TRAINING = "kfold-training"
PROBS = (LINEAR_HEAD, KFOLD_TRAINING)
#: What each method is, as ``audit.json`` describes it.
PROBS_DESCRIPTIONS = {
    LINEAR_HEAD: "linear head on embeddings, stratified K-fold cross_val_predict",
    KFOLD_TRAINING: "K fine-tunings of the checkpoint, each on K-1 stratified folds, scoring the fold it did not see",
}
#: Epochs and AdamW learning rate of each fine-tuning of ``kfold-training``: gcv train's defaults.
DEFAULT_KFOLD_EPOCHS = DEFAULT_EPOCHS
DEFAULT_KFOLD_LR = DEFAULT_LR

#: Where the embeddings come from (:attr:`AuditConfig.route`): the model file run on the images, or the embeddings
#: file of a gcv classify run.
MODEL_ROUTE = "model"
EMBEDDINGS_ROUTE = "embeddings"
#: Where the unknown flags come from (``unknown_check`` in ``audit.json``): the model file's unknown-item detector,
#: the ``unknown`` column of a classify run's rows, or nowhere (the check did not run).
UNKNOWN_FROM_MODEL = "model"
UNKNOWN_FROM_ROWS = "rows"
UNKNOWN_NOT_RUN = "not run"
#: Why the unknown check did not run, by route (the report's unknown gallery and ``audit.json`` say it).
UNKNOWN_NOT_RUN_NOTES = {
    MODEL_ROUTE: "the model file has no unknown-item detector",
    EMBEDDINGS_ROUTE: "no model file to score unknown items: give --rows, the rows of the classify run that wrote "
                      "--embeddings, when its model file has an unknown-item detector (gcv export --unknown-score); "
                      "their unknown and ood_score columns are read",
}


class MissingExtraError(GarmentCVError, ImportError):
    """A package of the ``[curate]`` extra is not installed (the message says what to install)."""


class AuditUsageError(GarmentCVError, ValueError):
    """Audit settings that do not go together (exit code 2, like a usage error); the message names the option."""

    exit_code = 2


@dataclass(frozen=True)
class AuditConfig:
    """Settings of :func:`audit_dataset`.

    The embeddings come from exactly one of ``model`` (the model file runs on the images) and ``embeddings`` (a gcv
    classify run's embeddings file; no model runs): :attr:`route`.

    Attributes:
        data: the labelled dataset (a folder or a ``path,label`` manifest, any layout gcv train reads).
        model: a GarmentCV ONNX file exported with ``--embedding`` (any classes: only its embeddings are used, and
            its unknown-item detector when it has one), or ``None`` with ``embeddings``.
        out: the folder the results are written to (created).
        splits: other splits (folders searched recursively, or ``path,label`` manifests) whose copies of the
            dataset's images are reported, e.g. the validation and test sets.
        layout: the dataset's layout; ``None`` detects it.
        folds: K of the K-fold out-of-sample probabilities (lowered to the smallest class's size).
        seed: the fold split's seed (and, with ``kfold-training``, each training's).
        probs: how the out-of-sample probabilities are made, one of :data:`PROBS`: ``linear-head`` (a linear head on
            the embeddings, :func:`out_of_sample_probs`) or ``kfold-training`` (K fine-tunings of ``checkpoint``,
            :func:`garmentcv.curate.kfold.kfold_training_probs`; needs torch).
        checkpoint: with ``kfold-training``: a gcv train checkpoint (``best.pt``) of the dataset's classes, in the
            same order; its arch, preprocessing and backbone start each fine-tuning.
        kfold_epochs: epochs of each fine-tuning of ``kfold-training``.
        kfold_lr: AdamW learning rate of each fine-tuning of ``kfold-training`` (gcv train's default; lower it for a
            checkpoint whose fine-tuning diverges).
        duplicate_cosine: two images at least this cosine-similar (normalised embeddings) are near-duplicates;
            the default is :data:`garmentcv.curate.fixes.DEFAULT_DUPLICATE_COSINE`, label-next's too.
        neighbours: K of the outliers' K nearest neighbours.
        outlier_iqr: the outliers' fence, in inter-quartile ranges above the third quartile.
        runtime: ``auto``, ``onnxruntime`` or ``openvino`` (``model`` only).
        batch_size: images per model run (``model`` only).
        report: write the report page.
        embeddings: instead of ``model``: the embeddings file of a ``gcv classify --embeddings`` run over a folder
            holding the dataset and the splits (``.npy`` with its ``.paths.csv`` index, or ``.parquet``); it may
            hold other images too.
        embeddings_root: the folder the file's paths are relative to (the folder that run classified); ``None``:
            the dataset's folder (a manifest's folder). An absolute path in the file names itself.
        rows: with ``embeddings``: the rows file of the same classify run (csv, jsonl or parquet, with its
            ``unknown`` and ``ood_score`` columns), whose unknown flags and scores stand in for the model file's
            detector; ``None``: no unknown check.
    """

    data: Path
    model: Path | None = None
    out: Path = Path("audit")
    splits: tuple[Path, ...] = ()
    layout: str | None = None
    folds: int = 5
    seed: int = 0
    duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE
    neighbours: int = 5
    outlier_iqr: float = 3.0
    runtime: str = "auto"
    batch_size: int = 32
    report: bool = True
    probs: str = LINEAR_HEAD
    checkpoint: Path | None = None
    kfold_epochs: int = DEFAULT_KFOLD_EPOCHS
    kfold_lr: float = DEFAULT_KFOLD_LR
    embeddings: Path | None = None
    embeddings_root: Path | None = None
    rows: Path | None = None

    @property
    def route(self) -> str:
        """:data:`MODEL_ROUTE` (``model`` runs on the images) or :data:`EMBEDDINGS_ROUTE` (read from ``embeddings``)."""
        return MODEL_ROUTE if self.model is not None else EMBEDDINGS_ROUTE

    def __post_init__(self) -> None:
        """Refuse settings out of range or that do not go together.

        Raises:
            AuditUsageError: neither or both of ``model`` and ``embeddings``; ``rows`` or ``embeddings_root``
                without ``embeddings``; an unknown ``probs``; ``kfold-training`` without ``checkpoint``, or
                ``checkpoint`` with another method; ``kfold_epochs`` below 1 or ``kfold_lr`` not above 0.
            ValueError: another setting out of range.
        """
        if self.model is None and self.embeddings is None:
            raise AuditUsageError("give the images' embeddings: --model M.onnx (the model file runs on DATA and each "
                                  "--split) or --embeddings EMB (the file of 'gcv classify FOLDER --embeddings EMB', "
                                  "no model run)")
        if self.model is not None and self.embeddings is not None:
            raise AuditUsageError("--model and --embeddings both give the embeddings: give one, --model to run the "
                                  "model file, or --embeddings to read a gcv classify run's file")
        if self.embeddings is None and self.rows is not None:
            raise AuditUsageError("--rows goes with --embeddings (its unknown scores stand in for the model file's); "
                                  "with --model the model file's own unknown-item detector is used: leave --rows out")
        if self.embeddings is None and self.embeddings_root is not None:
            raise AuditUsageError("--embeddings-root goes with --embeddings (the folder its paths are relative to); "
                                  "leave it out with --model")
        if self.probs not in PROBS:
            raise AuditUsageError(f"--probs {self.probs}: choose one of {', '.join(PROBS)}")
        if self.probs == KFOLD_TRAINING and self.checkpoint is None:
            raise AuditUsageError(f"--probs {KFOLD_TRAINING} needs --checkpoint: give a gcv train checkpoint "
                                  "(best.pt) of the same classes as the dataset, or use --probs linear-head")
        if self.probs != KFOLD_TRAINING and self.checkpoint is not None:
            raise AuditUsageError(f"--checkpoint goes with --probs {KFOLD_TRAINING} (the {self.probs} method uses "
                                  "the embeddings only); add --probs kfold-training or leave --checkpoint out")
        if self.kfold_epochs < 1:
            raise AuditUsageError(f"--kfold-epochs {self.kfold_epochs}: give at least 1")
        if not self.kfold_lr > 0:
            raise AuditUsageError(f"--kfold-lr {self.kfold_lr}: give a learning rate above 0")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if not 0.0 < self.duplicate_cosine <= 1.0:
            raise ValueError(f"duplicate_cosine must be in (0, 1], got {self.duplicate_cosine}")
        if self.neighbours < 1 or self.outlier_iqr < 0:
            raise ValueError(f"neighbours must be >= 1 and outlier_iqr >= 0, got {self.neighbours}, "
                             f"{self.outlier_iqr}")


@dataclass(frozen=True)
class Duplicate:
    """A copy: ``path`` (in ``split``) is a copy of ``original`` (in ``original_split``), listed before it.

    Attributes:
        cosine: cosine similarity of the two normalised embeddings.
        exact: the two files are byte-identical.
    """

    path: str
    split: str
    original: str
    original_split: str
    cosine: float
    exact: bool


@dataclass(frozen=True)
class AuditResult:
    """What :func:`audit_dataset` found and wrote.

    Attributes:
        images: images of the dataset scored (decoded).
        not_decoded: ``(path, reason)`` of dataset and split images that could not be decoded.
        classes: the dataset's classes (columns of the probabilities).
        folds: K used.
        out_of_sample_accuracy: accuracy of the out-of-sample probabilities' argmax against the given labels.
        fixes: the fix list's rows, in its order.
        duplicates: every copy found, in the dataset and across splits.
        counts: images flagged per issue (:data:`~garmentcv.curate.fixes.ISSUES` order).
        files: the files written, by name.
        probs: how the out-of-sample probabilities were made (:data:`PROBS`).
        route: where the embeddings came from (:data:`MODEL_ROUTE` or :data:`EMBEDDINGS_ROUTE`).
        unknown_check: where the unknown flags came from (:data:`UNKNOWN_FROM_MODEL`, :data:`UNKNOWN_FROM_ROWS`), or
            :data:`UNKNOWN_NOT_RUN`.
    """

    images: int
    not_decoded: tuple[tuple[str, str], ...]
    classes: tuple[str, ...]
    folds: int
    out_of_sample_accuracy: float
    fixes: tuple[Fix, ...]
    duplicates: tuple[Duplicate, ...]
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    probs: str = LINEAR_HEAD
    route: str = MODEL_ROUTE
    unknown_check: str = UNKNOWN_NOT_RUN


def usable_folds(labels: np.ndarray, folds: int) -> int:
    """K for stratified K-fold out-of-sample probabilities: ``folds`` lowered to the smallest class's count.

    Args:
        labels: ``(N,)`` class indices.
        folds: the K asked for.

    Raises:
        DatasetError: fewer than 2 classes, or a class with a single image (nothing to score it against).
    """
    present, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(present) < 2 or counts.min() < 2:
        raise DatasetError(f"out-of-sample probabilities need at least 2 classes of at least 2 images each, got "
                           f"{dict(zip(present.tolist(), counts.tolist(), strict=True))}; add images")
    return int(min(folds, counts.min()))


def linear_head() -> Any:
    """The audit's linear head, unfitted: scikit-learn's ``StandardScaler`` then ``LogisticRegression`` (L2,
    ``C=1``), for L2-normalised embeddings ``(N, D)`` (:func:`garmentcv.curate.embed.normalise`).

    Raises:
        MissingExtraError: scikit-learn is not installed.
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise MissingExtraError(f"the out-of-sample probabilities need scikit-learn: {pip_install('curate')}") from exc
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def out_of_sample_probs(embeddings: np.ndarray, labels: np.ndarray, classes: int, folds: int = 5,
                        seed: int = 0) -> tuple[np.ndarray, int]:
    """Out-of-sample probabilities of a linear head on embeddings, by stratified K-fold cross-validation.

    The head is scikit-learn's ``LogisticRegression`` (L2, ``C=1``) after ``StandardScaler``, on L2-normalised
    embeddings; ``cross_val_predict`` scores each image with the head fitted on the other folds.

    Args:
        embeddings: ``(N, D)`` embeddings.
        labels: ``(N,)`` class indices in ``0..classes-1``.
        classes: C, the number of classes (columns of the result).
        folds: K; lowered to the smallest class's count.
        seed: the seed of the folds' shuffle.

    Returns:
        ``float64 (N, C)`` probabilities (a class absent from ``labels`` gets 0), and the K used.

    Raises:
        DatasetError: fewer than 2 classes, or a class with a single image (nothing to score it against).
    """
    head = linear_head()
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.asarray(labels)
    k = usable_folds(labels, folds)
    present = np.unique(labels)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    found = cross_val_predict(head, normalise(embeddings), labels, cv=cv, method="predict_proba")
    probs = np.zeros((len(labels), classes), dtype=np.float64)
    probs[:, present] = found
    return probs, k


def find_label_errors(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices of likely label errors, most likely first: ``cleanlab.filter.find_label_issues`` (confident
    learning, ``prune_by_noise_rate``) ranked by self-confidence.

    Args:
        labels: ``(N,)`` given class indices.
        probs: ``(N, C)`` out-of-sample probabilities.
    """
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as exc:
        raise MissingExtraError(f"finding label errors needs cleanlab: {pip_install('curate')}") from exc

    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < probs.shape[1]:  # cleanlab wants every column's class given to some image
        remap = {int(c): i for i, c in enumerate(present)}
        sub = probs[:, present]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        return find_label_issues(np.asarray([remap[int(c)] for c in labels]), sub, filter_by="prune_by_noise_rate",
                                 return_indices_ranked_by="self_confidence")
    return find_label_issues(labels, probs, filter_by="prune_by_noise_rate", return_indices_ranked_by="self_confidence")


def suggested_labels(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """For each image, the most probable class other than its given one, ``(N,)`` class indices."""
    others = np.array(probs, dtype=np.float64, copy=True)
    others[np.arange(len(labels)), labels] = -1.0
    return others.argmax(axis=1)


def find_duplicates(normalised: np.ndarray, hashes: Sequence[str], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs ``(original, copy, cosine)`` with ``original < copy``: byte-identical (same hash) or at least
    ``threshold`` cosine-similar. Each copy is paired with its most similar earlier image.

    Args:
        normalised: ``(N, D)`` unit-norm embeddings, in listing order.
        hashes: the files' SHA-256, in the same order.
        threshold: the cosine similarity from which two images are near-duplicates.
    """
    from sklearn.neighbors import NearestNeighbors

    pairs: dict[int, tuple[int, float]] = {}
    first: dict[str, int] = {}
    for j, digest in enumerate(hashes):
        if digest in first:
            pairs[j] = (first[digest], 1.0)
        else:
            first[digest] = j
    if len(normalised) > 1:
        index = NearestNeighbors(radius=max(0.0, 1.0 - threshold) + COSINE_TOLERANCE, metric="cosine",
                                 algorithm="brute")
        index.fit(normalised)
        distances, neighbours = index.radius_neighbors(normalised, sort_results=True)
        for j, (dist, near) in enumerate(zip(distances, neighbours, strict=True)):
            if j in pairs:
                continue
            earlier = [(int(i), 1.0 - float(d)) for i, d in zip(near, dist, strict=True) if i < j]
            if earlier:
                pairs[j] = earlier[0]
    return sorted(((i, j, cos) for j, (i, cos) in pairs.items()), key=lambda t: (t[1], t[0]))


def find_outliers(normalised: np.ndarray, neighbours: int = 5, iqr: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine distance of each image to its ``neighbours`` nearest others, and which lie beyond Tukey's fence
    ``Q3 + iqr * (Q3 - Q1)`` of those distances.

    Returns:
        ``float64 (N,)`` distances and a ``bool (N,)`` mask of the outliers (none with fewer than 4 images).
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(normalised)
    if n < 4:
        return np.zeros(n), np.zeros(n, dtype=bool)
    k = min(neighbours, n - 1)
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(normalised)
    distances, near = index.kneighbors(normalised)
    own = near == np.arange(n)[:, None]  # drop each image itself (or, among copies, the farthest one)
    keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(k + 1)[None, :] < k)
    mean = np.asarray([d[m][:k].mean() for d, m in zip(distances, keep, strict=True)])
    q1, q3 = np.percentile(mean, [25, 75])
    return mean, mean > q3 + iqr * (q3 - q1)


def _split_files(path: Path) -> list[Path]:
    if path.is_file():
        return [s.path for s in load_dataset(path, Layout.CSV).samples]
    return list(scan_images(path))


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class AuditEmbeddings:
    """The embeddings the audit works on, from either route, for a list of images.

    Attributes:
        paths: the images that have an embedding, in input order (a subsequence of the input).
        normalised: ``float32 (N, D)`` unit-norm embeddings (:func:`garmentcv.curate.embed.normalise`), one per path.
        failed: ``(path, reason)`` of the images without one (not decoded, by the model or by the classify run).
        ood_scores: ``float64 (N,)`` unknown scores, or ``None`` when the unknown check does not run.
        unknown: ``bool (N,)``, the images called unknown, or ``None`` when the check does not run.
        unknown_check: :data:`UNKNOWN_FROM_MODEL`, :data:`UNKNOWN_FROM_ROWS` or :data:`UNKNOWN_NOT_RUN`.
    """

    paths: tuple[Path, ...]
    normalised: np.ndarray
    failed: tuple[tuple[Path, str], ...]
    ood_scores: np.ndarray | None = None
    unknown: np.ndarray | None = None
    unknown_check: str = UNKNOWN_NOT_RUN


def model_embeddings(model: Path, paths: Sequence[Path], *, runtime: str = "auto", batch_size: int = 32,
                     progress: Callable[[int], None] | None = None) -> AuditEmbeddings:
    """The model route: run ``model`` on ``paths`` (:func:`garmentcv.curate.embed.embed_images`); an image is
    unknown when its ``ood_score`` is above the threshold of the file's unknown-item detector (compared in float64,
    as gcv classify's ``unknown`` column is), when the file has one.

    Raises:
        NoEmbeddingError: the file has no ``embedding`` output.
        ModelFileError, RuntimeUnavailableError: the model file cannot be opened.
    """
    embedded = embed_images(model, paths, runtime=runtime, batch_size=batch_size, progress=progress)
    detector = embedded.info.unknown
    if embedded.ood_scores is None or detector is None:
        return AuditEmbeddings(embedded.paths, embedded.normalised, embedded.failed)
    scores = embedded.ood_scores.astype(np.float64)
    return AuditEmbeddings(embedded.paths, embedded.normalised, embedded.failed, scores,
                           scores > detector.threshold, UNKNOWN_FROM_MODEL)


class _Places:
    """Finds the row of a file of a classify run (an embeddings or rows file) that names an image: a row's path is
    relative to ``root`` (the folder the run classified) or absolute, and names the image at that place; an image is
    looked up by its resolved path and by its resolved folder with its own name (a symlinked file in the tree)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._folders: dict[Path, Path] = {}

    def of_row(self, name: str) -> str:
        """The place a row's path names (pure text: no file system call)."""
        return os.path.normpath(os.path.join(self.root, name))

    def of_image(self, path: Path) -> tuple[str, ...]:
        """The places an image may be named by."""
        folder = self._folders.get(path.parent)
        if folder is None:
            folder = self._folders[path.parent] = path.parent.resolve()
        return tuple(dict.fromkeys((str(path.resolve()), str(folder / path.name))))

    def shown(self, path: Path) -> str:
        """How a row would name ``path``: relative to the root when under it, else absolute."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path.resolve())

    def where(self, path: Path) -> str:
        """The row a file needs for ``path``, in words."""
        shown = self.shown(path)
        if Path(shown).is_absolute():
            return f"which lies outside {self.root}, the folder its paths are relative to"
        return f"a row named {shown!r} (relative to {self.root})"

    def wanted(self, paths: Sequence[Path]) -> dict[str, int]:
        """Each place that names one of ``paths``, with its index in ``paths``."""
        wanted: dict[str, int] = {}
        for i, path in enumerate(paths):
            for place in self.of_image(path):
                wanted.setdefault(place, i)
        return wanted

    def find(self, names: Sequence[str], paths: Sequence[Path]) -> list[int | None]:
        """For each of ``paths``, the index of the first of ``names`` naming it, or ``None``."""
        wanted = self.wanted(paths)
        found: list[int | None] = [None] * len(paths)
        for row, name in enumerate(names):
            i = wanted.get(self.of_row(name))
            if i is not None and found[i] is None:
                found[i] = row
        return found


def _flag(value: object) -> bool | None:
    """A rows file's ``unknown`` cell as a bool: csv text, or jsonl and parquet values; ``None`` when empty."""
    if value is None or value == "":
        return None
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def _read_unknowns(rows: Path, places: _Places, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The ``ood_score`` and ``unknown`` of each of ``paths`` in a classify run's rows file (see
    :func:`read_run_embeddings`)."""
    from garmentcv.report.write import ResultsFile

    rows = Path(rows)
    wanted = places.wanted(paths)
    scores = np.full(len(paths), np.nan)
    flags = np.zeros(len(paths), dtype=bool)
    seen = np.zeros(len(paths), dtype=bool)
    with ResultsFile(rows) as reader:
        if not {"unknown", "ood_score"} <= reader.columns:
            raise DatasetError(f"{rows}: the rows have no unknown and ood_score columns (a model file without an "
                               "unknown-item detector, or gcv classify --unknown off); give the rows of a run whose "
                               "model file has one, or leave --rows out to skip the unknown check")
        for record in reader.records():
            i = wanted.get(places.of_row(str(record["path"])))
            if i is None or seen[i]:
                continue
            seen[i] = True
            score, flag = record.get("ood_score"), _flag(record.get("unknown"))
            if score not in (None, "") and flag is not None:
                scores[i], flags[i] = float(score), flag
    for i, path in enumerate(paths):
        if not seen[i]:
            raise DatasetError(f"{rows}: no row for {path}, {places.where(path)}; give the rows file of the same "
                               "gcv classify run as --embeddings")
        if np.isnan(scores[i]):
            raise DatasetError(f"{rows}: the row of {places.shown(path)!r} has no ood_score, though the embeddings "
                               "file has its embedding; give the rows and embeddings files of the same run")
    return scores, flags


def read_run_embeddings(paths: Sequence[Path], embeddings: Path, root: Path, rows: Path | None = None,
                        ) -> AuditEmbeddings:
    """The embeddings route: the embedding of each of ``paths`` from the embeddings file of a ``gcv classify
    --embeddings`` run (:func:`garmentcv.infer.rows.read_embeddings`); no model runs.

    A row's path is relative to ``root``, the folder the run classified (or absolute), and is matched to an image by
    the place it names; the file may hold other images too. An image whose row has no embedding (an error row: the
    run could not decode it) is listed in :attr:`AuditEmbeddings.failed`, as the model route lists the images it
    cannot decode. With ``rows``, the rows file of the same run, each image's ``ood_score`` and ``unknown`` flag come
    from it (the rows round the score to 6 decimals); without, the unknown check does not run.

    Args:
        paths: the images, in the audit's order.
        embeddings: ``.npy`` (with its ``.paths.csv`` index) or ``.parquet``, as gcv classify writes them.
        root: the folder the file's relative paths start from.
        rows: the run's rows file (csv, jsonl or parquet, with ``unknown`` and ``ood_score``), or ``None``.

    Raises:
        DatasetError: the file cannot be read or has no row for one of ``paths`` (the first is named, with what to
            do); ``rows`` lacks the ``unknown`` and ``ood_score`` columns, a row for an image with an embedding, or
            its score.
        GarmentCVError: ``rows`` is not a rows file gcv classify wrote.
        MissingRuntimeError: a parquet file without pyarrow.
    """
    from garmentcv.infer.rows import read_embeddings

    paths = [Path(p) for p in paths]
    try:
        names, array = read_embeddings(embeddings)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    places = _Places(root)
    at = places.find(names, paths)
    missing = next((i for i, row in enumerate(at) if row is None), None)
    if missing is not None:
        path = paths[missing]
        raise DatasetError(
            f"{embeddings}: no embedding for {path}, {places.where(path)}; give --embeddings-root, the folder that "
            "gcv classify run classified, or run gcv classify --embeddings on a folder holding DATA and every --split")
    vectors = np.asarray(array[np.asarray(at, dtype=np.int64)], dtype=np.float32) if paths else np.empty((0, 0))
    usable = np.isfinite(vectors).all(axis=1) & (vectors.shape[1] > 0)
    kept = tuple(p for p, ok in zip(paths, usable, strict=True) if ok)
    failed = tuple((p, f"no embedding in {Path(embeddings).name} (gcv classify could not decode it)")
                   for p, ok in zip(paths, usable, strict=True) if not ok)
    for path, reason in failed:
        logger.warning("%s: %s; left out", path, reason)
    normalised = normalise(vectors[usable])
    if rows is None:
        return AuditEmbeddings(kept, normalised, failed)
    scores, flags = _read_unknowns(Path(rows), places, kept)
    return AuditEmbeddings(kept, normalised, failed, scores, flags, UNKNOWN_FROM_ROWS)


def check_checkpoint_classes(checkpoint: Path, classes: Sequence[str]) -> None:
    """Refuse a checkpoint for ``kfold-training`` whose classes are not ``classes``, in the same order.

    Raises:
        CheckpointError: the checkpoint's classes differ, or it cannot be read
            (:func:`garmentcv.train.checkpoint.load_checkpoint`).
        MissingExtraError: torch is not installed.
    """
    from garmentcv.installs import installed_version

    if installed_version("torch") is None:
        raise MissingExtraError(f"--probs {KFOLD_TRAINING} trains the network and needs torch, which this install "
                                f"lacks: {pip_install('train,cpu')} (or {pip_install('train,gpu')})")
    from garmentcv.curate.kfold import checkpoint_classes

    found = checkpoint_classes(checkpoint)
    if found != tuple(classes):
        raise CheckpointError(f"--checkpoint {checkpoint}: its classes {list(found)} are not the dataset's "
                              f"{list(classes)}; give a gcv train checkpoint trained on the same classes, in the "
                              "same order")


def audit_dataset(cfg: AuditConfig, progress: Callable[[int], None] | None = None,
                  fold_progress: Callable[[int, int], None] | None = None) -> AuditResult:
    """Audit the dataset ``cfg.data`` with the embeddings of the model file ``cfg.model`` or of the file
    ``cfg.embeddings`` (steps: module docstring) and write the results into ``cfg.out``.

    ``progress(n)`` is called with the images embedded since its last call (the model route); ``fold_progress(done,
    K)`` after each fine-tuning of ``kfold-training``.

    Raises:
        DatasetError: the dataset cannot be read, or has a class with fewer than 2 decodable images; on the
            embeddings route, as :func:`read_run_embeddings`.
        NoEmbeddingError: the model file has no ``embedding`` output.
        ModelFileError, RuntimeUnavailableError: the model file cannot be opened.
        CheckpointError: with ``kfold-training``, the checkpoint cannot be read or is of other classes
            (:func:`check_checkpoint_classes`).
        MissingExtraError: with ``kfold-training``, torch is not installed.
    """
    dataset = load_dataset(cfg.data, cfg.layout)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint is not None else None
    if cfg.probs == KFOLD_TRAINING and checkpoint is not None:  # before any work: the checkpoint must fit the data
        check_checkpoint_classes(checkpoint, dataset.classes)
    base = dataset_base(dataset)
    split_names = [DATA_SPLIT] + [p.name for p in cfg.splits]
    listing: list[tuple[int, Path]] = [(0, s.path) for s in dataset.samples]
    seen = {s.path.resolve() for s in dataset.samples}
    for number, split in enumerate(cfg.splits, start=1):
        for path in _split_files(Path(split)):
            if path.resolve() not in seen:  # a split given twice, or the dataset itself, is not its own copy
                seen.add(path.resolve())
                listing.append((number, path))
    label_of = {s.path: dataset.classes.index(s.label) for s in dataset.samples}
    images = [p for _, p in listing]
    if cfg.model is not None:
        logger.info("embedding %d images of %s and %d of the compared splits with %s", len(dataset.samples),
                    cfg.data, len(listing) - len(dataset.samples), cfg.model)
        with _stage("embedding"):
            found = model_embeddings(Path(cfg.model), images, runtime=cfg.runtime, batch_size=cfg.batch_size,
                                     progress=progress)
    else:
        embeddings = Path(cfg.embeddings)  # type: ignore[arg-type]  # AuditConfig gives one route
        root = Path(cfg.embeddings_root) if cfg.embeddings_root is not None else base
        logger.info("reading the embeddings of %d images of %s and %d of the compared splits from %s (paths relative "
                    "to %s)", len(dataset.samples), cfg.data, len(listing) - len(dataset.samples), embeddings, root)
        with _stage("reading embeddings"):
            found = read_run_embeddings(images, embeddings, root, None if cfg.rows is None else Path(cfg.rows))
    split_of = {p: s for s, p in listing}
    kept = list(found.paths)
    in_data = np.asarray([split_of[p] == 0 for p in kept], dtype=bool)
    x_all = found.normalised
    x = x_all[in_data]
    data_paths = [p for p, d in zip(kept, in_data, strict=True) if d]
    labels = np.asarray([label_of[p] for p in data_paths], dtype=np.int64)
    rel = {p: (_relative(p, base) if split_of[p] == 0 else str(p)) for p in kept}

    with _stage("out-of-sample probabilities"):
        if cfg.probs == KFOLD_TRAINING and checkpoint is not None:
            from garmentcv.curate.kfold import kfold_training_probs

            k = usable_folds(labels, cfg.folds)
            logger.info("out-of-sample probabilities: %d fine-tunings of %s, %d epochs each", k, checkpoint,
                        cfg.kfold_epochs)
            probs = kfold_training_probs(data_paths, labels, dataset.classes, checkpoint=checkpoint, folds=k,
                                         seed=cfg.seed, epochs=cfg.kfold_epochs, lr=cfg.kfold_lr,
                                         work_dir=Path(cfg.out), progress=fold_progress)
        else:
            probs, k = out_of_sample_probs(x, labels, len(dataset.classes), cfg.folds, cfg.seed)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    fixes: list[Fix] = []
    suggested = suggested_labels(labels, probs)
    with _stage("label errors"):
        errors = find_label_errors(labels, probs)
    for i in errors:
        fixes.append(Fix(rel[data_paths[i]], dataset.classes[labels[i]], dataset.classes[suggested[i]], LABEL,
                         float(1.0 - probs[i, labels[i]])))

    with _stage("duplicates"):
        hashes = [sha256_of(p) for p in kept]
        pairs = find_duplicates(x_all, hashes, cfg.duplicate_cosine)
    duplicates: list[Duplicate] = []
    for i, j, cosine in pairs:
        exact = hashes[i] == hashes[j]
        a, b = kept[i], kept[j]
        if split_of[a] == 0 and split_of[b] != 0:  # flag the dataset's copy: that is the one a correction can drop
            a, b = b, a
        duplicates.append(Duplicate(rel[b], split_names[split_of[b]], rel[a], split_names[split_of[a]],
                                    float(cosine), exact))
        if split_of[b] == 0:
            fixes.append(Fix(rel[b], dataset.classes[label_of[b]], "", EXACT_DUPLICATE if exact else NEAR_DUPLICATE,
                             float(cosine)))

    with _stage("outliers"):
        distances, outlying = find_outliers(x, cfg.neighbours, cfg.outlier_iqr)
    for i in np.flatnonzero(outlying):
        fixes.append(Fix(rel[data_paths[i]], dataset.classes[labels[i]], "", OUTLIER, float(distances[i])))
    if found.ood_scores is not None and found.unknown is not None:
        scores, unknown = found.ood_scores[in_data], found.unknown[in_data]
        for i in np.flatnonzero(unknown):
            fixes.append(Fix(rel[data_paths[i]], dataset.classes[labels[i]], "", UNKNOWN, float(scores[i])))

    ordered = tuple(sort_fixes(fixes))
    counts = {issue: sum(f.issue == issue for f in ordered) for issue in ISSUES}
    not_decoded = tuple((str(p), reason) for p, reason in found.failed)
    result = AuditResult(len(data_paths), not_decoded, dataset.classes, k, accuracy, ordered, tuple(duplicates),
                         counts, probs=cfg.probs, route=cfg.route, unknown_check=found.unknown_check)
    with _stage("writing"):
        files = _write(cfg, result, data_paths, labels, probs, rel, base)
    return replace(result, files=files)


def unknown_note(result: AuditResult) -> str | None:
    """Why the unknown check did not run (:data:`UNKNOWN_NOT_RUN_NOTES`), or ``None`` when it ran."""
    return UNKNOWN_NOT_RUN_NOTES[result.route] if result.unknown_check == UNKNOWN_NOT_RUN else None


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Log the block's wall time as ``audit stage NAME: SECONDS s`` (info)."""
    started = time.perf_counter()
    yield
    logger.info("audit stage %s: %.1f s", name, time.perf_counter() - started)


def _write(cfg: AuditConfig, result: AuditResult, paths: list[Path], labels: np.ndarray, probs: np.ndarray,
           rel: dict[Path, str], base: Path) -> dict[str, Path]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"fix_list": write_fix_list(out / FIX_LIST, result.fixes)}
    with atomic_write(out / DUPLICATES, newline="", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", "copy_of", "copy_of_split", "cosine", "exact"])
        for d in result.duplicates:
            writer.writerow([d.path, d.split, d.original, d.original_split, f"{d.cosine:.6f}",
                             "true" if d.exact else "false"])
    files["duplicates"] = out / DUPLICATES
    with atomic_write(out / PROBABILITIES, newline="", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "given_label", *(f"prob_{c}" for c in result.classes)])
        for path, label, row in zip(paths, labels, probs, strict=True):
            writer.writerow([rel[path], result.classes[label], *(f"{p:.6f}" for p in row)])
    files["probabilities"] = out / PROBABILITIES
    has_unknown = result.unknown_check != UNKNOWN_NOT_RUN

    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    summary = {
        "data": str(cfg.data), "route": result.route, "model": text(cfg.model), "embeddings": text(cfg.embeddings),
        "embeddings_root": (text(cfg.embeddings_root or base) if result.route == EMBEDDINGS_ROUTE else None),
        "rows": text(cfg.rows), "splits": [str(s) for s in cfg.splits],
        "images": result.images, "not_decoded": len(result.not_decoded), "classes": list(result.classes),
        "method": cfg.probs, "method_description": PROBS_DESCRIPTIONS[cfg.probs],
        "checkpoint": None if cfg.checkpoint is None else str(cfg.checkpoint), "folds": result.folds,
        "out_of_sample_accuracy": result.out_of_sample_accuracy, "flagged": result.counts,
        "duplicates": len(result.duplicates), "unknown_detector": has_unknown,
        "unknown_check": result.unknown_check, "unknown_check_note": unknown_note(result),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                     if k not in ("data", "model", "out", "splits", "probs", "checkpoint", "embeddings",
                                  "embeddings_root", "rows")},
    }
    write_json(out / SUMMARY, summary)
    files["summary"] = out / SUMMARY
    if cfg.report:
        from garmentcv.curate.report import write_audit_report

        files["report"] = write_audit_report(out / REPORT, result, base, has_unknown,
                                             model=None if cfg.model is None else Path(cfg.model),
                                             unknown_note=unknown_note(result))
    return files
