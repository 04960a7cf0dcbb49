"""``gcv data label-next``: the unlabelled images whose labels would teach the model most, and Label Studio files
(numpy; no torch).

Each pool image gets an uncertainty in 0..1 (:func:`uncertainty`): the mean of ``1 - margin`` (top probability
minus the second), the entropy over ``log C``, and, when the model file has them, the prediction set's size over
``C`` and the rank of the unknown score. The choice (:func:`choose`) is diverse mini-batch active learning
(Zhdanov 2019, "Diverse mini-batch Active Learning"): the ``prefilter * n`` most uncertain images are clustered
into ``n`` by k-means on the normalised embeddings, each image weighted by its uncertainty, and the image nearest
each centre is picked, so the picks are uncertain and unlike each other. An image at least ``duplicate_cosine``
similar to a more uncertain candidate or to a labelled one is left out before the clustering, so no two picks are
near-duplicates and none copies a labelled image. The picks are ranked by uncertainty-weighted k-center greedy (Sener
& Savarese 2018): the most uncertain and furthest from the labelled images first. Ties are broken by a seeded
permutation and k-means starts from the same seed: the same inputs and seed give the same picks.

The pool comes by one of two routes (:func:`check_route`): a folder of images and a model file with the
``embedding`` output, which :func:`label_next` runs on them; or the rows and embeddings files of a ``gcv classify``
run over that folder (``--embeddings``, :func:`read_classify_run`), which need no model run. Both score the
probabilities at the 6 decimals the rows files hold (:func:`as_written`), so for the same images, model and seed they
choose the same picks and write the same files.

Label Studio: :func:`write_label_studio_tasks` writes an import file (a JSON list of tasks whose ``data.image`` is
the image's URL, with the model's guess as a prediction) and a labelling config for the classes;
:func:`label_studio_to_manifest` reads Label Studio's JSON export back as a ``path,label`` manifest, the csv
layout of :mod:`garmentcv.data.layouts` that gcv train reads.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from garmentcv.curate.embed import embed_images, normalise
from garmentcv.curate.fixes import COSINE_TOLERANCE, DEFAULT_DUPLICATE_COSINE
from garmentcv.data.layouts import CLASS_NAME_PATTERN, MANIFEST_ENCODING, load_dataset, scan_images
from garmentcv.errors import DatasetError, GarmentCVError
from garmentcv.fsutil import atomic_write
from garmentcv.installs import pip_install

logger = logging.getLogger(__name__)

#: Files ``gcv data label-next`` writes in its ``--out`` folder.
CHOICE = "label_next.csv"
TASKS = "label_studio_tasks.json"
LABEL_CONFIG = "label_studio_config.xml"

#: The columns of :data:`CHOICE`, in this order.
CHOICE_COLUMNS: tuple[str, ...] = ("rank", "path", "score", "uncertainty", "distance", "predicted", "confidence",
                                   "margin", "entropy", "set_size", "ood_score")

#: Label Studio serves files of its local storage under this URL, the path relative to its document root after it.
DEFAULT_URL_PREFIX = "/data/local-files/?d="

#: Zhdanov's beta: the diverse picks are chosen among the ``prefilter * n`` most uncertain images.
DEFAULT_PREFILTER = 10.0


#: The two routes of :class:`LabelNextConfig`: run the model on a folder, or read a gcv classify run's files.
POOL_ROUTE = "pool"
ROWS_ROUTE = "rows"


class LabelNextUsageError(GarmentCVError, ValueError):
    """The settings name neither or both of the pool's routes, or half of one (the message says what to give)."""


def check_route(pool: Path | None, model: Path | None, rows: Path | None, embeddings: Path | None,
                labelled: Path | None = None) -> str:
    """Which route the settings name: :data:`POOL_ROUTE` (``pool`` and ``model``: the model is run on the pool) or
    :data:`ROWS_ROUTE` (``rows`` and ``embeddings`` of a gcv classify run; ``model`` only to embed ``labelled``).

    Raises:
        LabelNextUsageError: neither route, both (``pool`` with ``rows`` or ``embeddings``), half of one (``pool``
            without ``model``, ``rows`` without ``embeddings`` or the other way), or, on the rows route, ``model``
            without ``labelled`` or ``labelled`` without ``model``. The message names the command's options.
    """
    from_run = rows is not None or embeddings is not None
    if pool is not None and from_run:
        raise LabelNextUsageError(
            "give either POOL with --model (the model runs on the folder) or --rows with --embeddings (a gcv classify "
            "run's files, no model run), not both")
    if pool is None and not from_run:
        raise LabelNextUsageError(
            "give the images to choose from: POOL with --model (the model runs on the folder), or --rows with "
            "--embeddings (the files of 'gcv classify FOLDER --model M.onnx --out ROWS --embeddings EMB')")
    if pool is not None:
        if model is None:
            raise LabelNextUsageError("POOL needs --model, the model file (exported with --embedding) to run on it")
        return POOL_ROUTE
    if rows is None or embeddings is None:
        given, missing = ("--rows", "--embeddings") if rows is not None else ("--embeddings", "--rows")
        raise LabelNextUsageError(f"{given} needs {missing}: the rows and the embeddings files of the same gcv "
                                  "classify run")
    if model is not None and labelled is None:
        raise LabelNextUsageError("--model with --rows is used only to embed --labelled: the rows and embeddings "
                                  "already hold the pool's scores; leave --model out or add --labelled")
    if labelled is not None and model is None:
        raise LabelNextUsageError("--labelled with --rows needs --model, the model file of the classify run, to "
                                  "embed the labelled images")
    return ROWS_ROUTE


@dataclass(frozen=True)
class LabelNextConfig:
    """Settings of :func:`label_next`. The pool comes from ``pool`` and ``model``, or from ``rows`` and
    ``embeddings`` (:func:`check_route`).

    Attributes:
        pool: the folder of unlabelled images (searched recursively), or ``None`` on the rows route.
        model: a GarmentCV ONNX file exported with ``--embedding``: run on ``pool``, and on ``labelled``; on the
            rows route only to embed ``labelled`` (the model of the classify run).
        n: how many images to choose.
        out: the folder :data:`CHOICE`, :data:`TASKS` and :data:`LABEL_CONFIG` are written to (created).
        labelled: a labelled dataset already in hand (any layout): picks keep away from it, and never copy it.
        seed: the seed of the tie-breaking permutation.
        duplicate_cosine: images at least this cosine-similar are near-duplicates; never two among the picks, and
            none of a labelled image.
        prefilter: Zhdanov's beta: the picks are chosen among the ``prefilter * n`` most uncertain images
            (:func:`choose`); at least 1.
        url_prefix: what goes before an image's path (relative to ``pool``, or as the rows give it) in the tasks'
            URLs.
        runtime: ``auto``, ``onnxruntime`` or ``openvino``.
        batch_size: images per model run.
        rows: the rows file of a ``gcv classify`` run over the pool (csv, jsonl or parquet, one probability per
            class: not ``--topk``, not kaggle).
        embeddings: the ``--embeddings`` file of that run (``.npy`` with its ``.paths.csv`` index, or
            ``.parquet``).

    Raises (on creation):
        ValueError: ``n`` below 1, ``duplicate_cosine`` outside (0, 1] or ``prefilter`` below 1.
        LabelNextUsageError: as :func:`check_route`.
    """

    pool: Path | None
    model: Path | None
    n: int
    out: Path
    labelled: Path | None = None
    seed: int = 0
    duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE
    prefilter: float = DEFAULT_PREFILTER
    url_prefix: str = DEFAULT_URL_PREFIX
    runtime: str = "auto"
    batch_size: int = 32
    rows: Path | None = None
    embeddings: Path | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if not 0.0 < self.duplicate_cosine <= 1.0:
            raise ValueError(f"duplicate_cosine must be in (0, 1], got {self.duplicate_cosine}")
        if self.prefilter < 1.0:
            raise ValueError(f"prefilter must be at least 1, got {self.prefilter}")
        check_route(self.pool, self.model, self.rows, self.embeddings, self.labelled)

    @property
    def route(self) -> str:
        """:data:`POOL_ROUTE` or :data:`ROWS_ROUTE` (see :func:`check_route`)."""
        return POOL_ROUTE if self.pool is not None else ROWS_ROUTE


@dataclass(frozen=True)
class Pick:
    """One chosen image: its path relative to the pool, the ``score`` it was ranked by (``uncertainty *
    distance``), its ``uncertainty`` and cosine ``distance`` to the nearest image ranked before it or labelled, and
    the model's guess."""

    rank: int
    path: str
    score: float
    uncertainty: float
    distance: float
    predicted: str
    confidence: float
    margin: float
    entropy: float
    set_size: int | None = None
    ood_score: float | None = None


@dataclass(frozen=True)
class LabelNextResult:
    """The picks, in order, the pool's size (images scored) and the files written; ``skipped``: the images left out
    as not decoded (error rows of a classify run, or images the model could not decode)."""

    picks: tuple[Pick, ...]
    pool_images: int
    files: dict[str, Path] = field(default_factory=dict)
    skipped: int = 0


@dataclass(frozen=True)
class ScoredPool:
    """What the choice needs of each pool image, by either route, in the pool's order (the order gcv classify writes
    rows in).

    Attributes:
        paths: the images' paths as the picks name them (relative to the pool, ``/``-separated).
        classes: the model's classes, in its order.
        probs: float64 ``(N, C)`` probabilities at the 6 decimals of the rows files (:func:`as_written`).
        predicted: the model's class of each image (its most probable before rounding, as gcv classify's ``label``).
        normalised: float32 ``(N, D)`` unit-norm embeddings.
        set_sizes: ``(N,)`` sizes of the prediction sets, or ``None`` without sets.
        ood_scores: float64 ``(N,)`` unknown scores at 6 decimals, or ``None`` without an unknown-item detector.
        skipped: images left out as not decoded.
    """

    paths: tuple[str, ...]
    classes: tuple[str, ...]
    probs: np.ndarray
    predicted: tuple[str, ...]
    normalised: np.ndarray
    set_sizes: np.ndarray | None
    ood_scores: np.ndarray | None
    skipped: int = 0


def as_written(values: np.ndarray) -> np.ndarray:
    """``values`` as the rows files of gcv classify hold them and read back: each rounded to 6 decimals
    (``float(f"{v:.6f}")``, the csv text; the jsonl and parquet ``round(v, 6)`` is the same number), float64 of the
    same shape."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    return np.asarray([float(f"{v:.6f}") for v in flat.tolist()], dtype=np.float64).reshape(np.shape(values))


def uncertainty(probs: np.ndarray, set_sizes: np.ndarray | None = None,
                ood_scores: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Uncertainty measures of each row of ``probs`` ``(N, C)``, each in 0..1 (1 = most uncertain).

    Returns:
        ``margin`` (top minus second probability), ``entropy`` (natural log, over ``log C``), and ``combined``:
        the mean of ``1 - margin``, ``entropy``, ``set_sizes / C`` (when given) and the rank of ``ood_scores``
        scaled to 0..1 (when given).
    """
    probs = np.asarray(probs, dtype=np.float64)
    n, c = probs.shape
    top2 = -np.sort(-probs, axis=1)[:, :2] if c > 1 else np.hstack([probs, np.zeros((n, 1))])
    margin = top2[:, 0] - top2[:, 1]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1) / np.log(max(c, 2))
    parts = [1.0 - margin, entropy]
    if set_sizes is not None:
        parts.append(np.asarray(set_sizes, dtype=np.float64) / c)
    if ood_scores is not None and n > 1:
        order = np.argsort(np.argsort(np.asarray(ood_scores, dtype=np.float64), kind="stable"), kind="stable")
        parts.append(order / (n - 1))
    return {"margin": margin, "entropy": entropy, "combined": np.mean(parts, axis=0)}


def _near_copies(x: np.ndarray, rows: np.ndarray, others: np.ndarray, duplicate_cosine: float) -> np.ndarray:
    """Which of ``x[rows]`` are at least ``duplicate_cosine`` similar to one of ``others`` ``(M, D)``."""
    near = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(others), 4096):
        sims = x[rows] @ np.asarray(others[start:start + 4096], dtype=np.float32).T
        near |= sims.max(axis=1) >= duplicate_cosine - COSINE_TOLERANCE
    return near


def prefiltered(normalised: np.ndarray, scores: np.ndarray, size: int, labelled: np.ndarray | None = None,
                duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE, seed: int = 0) -> np.ndarray:
    """The ``size`` most uncertain images of the pool, none a near-duplicate of another or of a labelled image:
    Zhdanov's pre-filter with the duplicates left out.

    Images are taken in descending ``scores`` (ties broken by a permutation drawn with ``seed``); one at least
    ``duplicate_cosine`` similar to a labelled image, or to one taken before it, is skipped.

    Returns:
        The indices taken, most uncertain first (fewer than ``size`` when the pool runs out).
    """
    x = np.asarray(normalised, dtype=np.float32)
    tie = np.random.default_rng(seed).permutation(len(x))  # lower value wins a tie
    order = np.lexsort((tie, -np.asarray(scores, dtype=np.float64)))
    if labelled is not None and len(labelled):
        order = order[~_near_copies(x, order, labelled, duplicate_cosine)]
    kept: list[int] = []
    start, block = 0, max(2 * size, 256)
    while len(kept) < size and start < len(order):
        rows = order[start:start + block]
        start += block
        if kept:
            rows = rows[~_near_copies(x, rows, x[kept], duplicate_cosine)]
        sims = x[rows] @ x[rows].T
        blocked = np.zeros(len(rows), dtype=bool)
        for j in range(len(rows)):
            if blocked[j]:
                continue
            kept.append(int(rows[j]))
            if len(kept) == size:
                break
            blocked |= sims[j] >= duplicate_cosine - COSINE_TOLERANCE
    return np.asarray(kept, dtype=np.int64)


def _kmeans_picks(x: np.ndarray, candidates: np.ndarray, weights: np.ndarray, n: int, seed: int) -> list[int]:
    """The candidate nearest each centre of a k-means of ``x[candidates]`` into ``n`` clusters weighted by
    ``weights`` (Zhdanov 2019); fewer when a cluster ends up empty."""
    import warnings

    try:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning
    except ImportError as exc:
        from garmentcv.curate.audit import MissingExtraError

        raise MissingExtraError(f"label-next's clustering needs scikit-learn: {pip_install('curate')}") from exc

    points = np.asarray(x[candidates], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(points, sample_weight=weights)
    picks = []
    for c in range(n):
        members = np.flatnonzero(fitted.labels_ == c)
        if len(members):
            far = ((points[members] - fitted.cluster_centers_[c]) ** 2).sum(axis=1)
            picks.append(int(candidates[members[np.argmin(far)]]))
    return picks


def choose(normalised: np.ndarray, scores: np.ndarray, n: int, labelled: np.ndarray | None = None,
           duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE, seed: int = 0,
           prefilter: float = DEFAULT_PREFILTER) -> list[tuple[int, float]]:
    """Diverse mini-batch active learning (Zhdanov 2019, "Diverse mini-batch Active Learning", arXiv:1901.05954)
    without near-duplicates: pre-filter the ``prefilter * n`` most uncertain images (:func:`prefiltered`: none a
    near-duplicate of another or of a labelled image), cluster them into ``n`` clusters by k-means on the
    normalised embeddings weighted by the uncertainty (scikit-learn's ``KMeans``, k-means++ seeded with ``seed``),
    and pick the image nearest each cluster's centre. A cluster left empty gives its place to the most uncertain
    candidate not picked.

    The picks are returned in the order of uncertainty-weighted k-center greedy over them (Sener & Savarese 2018,
    "Active learning for convolutional neural networks: a core-set approach"): each next one is the pick with the
    largest ``uncertainty * cosine distance to the nearest earlier pick or labelled image``, so the first of the
    list are the most uncertain and the furthest from what is labelled.

    Args:
        normalised: ``(N, D)`` unit-norm embeddings of the pool.
        scores: ``(N,)`` uncertainties in 0..1.
        n: how many to choose (fewer when the pool has fewer images that are not near-duplicates).
        labelled: ``(M, D)`` unit-norm embeddings of images already labelled, or ``None``.
        duplicate_cosine: two images at least this cosine-similar are near-duplicates; no pick is one of another
            pick or of a labelled image.
        seed: the seed of the tie-breaking permutation and of k-means' initialisation.
        prefilter: Zhdanov's beta, at least 1: how many times ``n`` uncertain images the clusters are made of
            (1: uncertainty alone).

    Returns:
        ``(index, distance)`` of each pick in rank order; ``distance`` is the cosine distance to the nearest earlier
        pick or labelled image (1.0 for a first pick without labelled images).

    Raises:
        ValueError: ``prefilter`` below 1.
        MissingExtraError: scikit-learn is not installed.
    """
    if prefilter < 1.0:
        raise ValueError(f"prefilter must be at least 1, got {prefilter}")
    x = np.asarray(normalised, dtype=np.float32)
    weights = np.asarray(scores, dtype=np.float64)
    candidates = prefiltered(x, weights, max(n, int(np.ceil(prefilter * n))), labelled, duplicate_cosine, seed)
    if len(candidates) <= n:
        chosen = candidates.tolist()
    else:
        chosen = _kmeans_picks(x, candidates, np.maximum(weights[candidates], 1e-6), n, seed)  # no zero weights
        taken = set(chosen)
        chosen += [int(i) for i in candidates if int(i) not in taken][:n - len(chosen)]
    return _ranked(x, weights, np.asarray(chosen, dtype=np.int64), labelled, seed)


def _ranked(x: np.ndarray, weights: np.ndarray, chosen: np.ndarray, labelled: np.ndarray | None,
            seed: int) -> list[tuple[int, float]]:
    """``chosen`` in the order of uncertainty-weighted k-center greedy (each next pick the one of largest
    ``uncertainty * cosine distance to the nearest earlier pick or labelled image``), with that distance."""
    nearest = np.ones(len(chosen), dtype=np.float64)
    if labelled is not None and len(labelled) and len(chosen):
        for start in range(0, len(labelled), 4096):
            sims = x[chosen] @ np.asarray(labelled[start:start + 4096], dtype=np.float32).T
            nearest = np.minimum(nearest, 1.0 - sims.max(axis=1))
    tie = np.random.default_rng(seed).permutation(len(x))[chosen]
    left = np.ones(len(chosen), dtype=bool)
    ranked: list[tuple[int, float]] = []
    while left.any():
        gain = np.where(left, weights[chosen] * np.maximum(nearest, 0.0), -np.inf)
        candidates = np.flatnonzero(gain == gain.max())
        j = int(candidates[np.argmin(tie[candidates])])
        ranked.append((int(chosen[j]), float(nearest[j])))
        left[j] = False
        nearest = np.minimum(nearest, 1.0 - x[chosen] @ x[chosen[j]])
    return ranked


def _score_pool(pool: Path, model: Path, cfg: LabelNextConfig, progress: Callable[[int], None] | None) -> ScoredPool:
    """The pool route: run ``model`` on the images of ``pool``."""
    paths = list(scan_images(pool))
    embedded = embed_images(model, paths, runtime=cfg.runtime, batch_size=cfg.batch_size, progress=progress)
    if not embedded.paths:
        raise DatasetError(f"{pool}: no image could be decoded; give a folder of images")
    info = embedded.info
    sets = None
    if info.conformal is not None:  # the sets of the probabilities before rounding, as gcv classify writes them
        sets = np.asarray([len(s) for s in info.conformal.sets(embedded.probs)])
    return ScoredPool(
        tuple(p.relative_to(pool).as_posix() for p in embedded.paths), tuple(info.classes), as_written(embedded.probs),
        tuple(info.classes[i] for i in embedded.probs.argmax(axis=1)), embedded.normalised, sets,
        None if embedded.ood_scores is None else as_written(embedded.ood_scores), len(embedded.failed))


def _row_probs(record: dict, classes: Sequence[str]) -> list[float] | None:
    """A record's probabilities in class order (jsonl ``probs`` object, or ``prob_<class>`` cells); ``None`` when
    it has none (an error row)."""
    probs = record.get("probs")
    if isinstance(probs, dict):
        return [float(probs[c]) for c in classes]
    cells = [record.get(f"prob_{c}") for c in classes]
    if any(cell is None or cell == "" for cell in cells):
        return None
    return [float(cell) for cell in cells]  # type: ignore[arg-type]


def _set_size(value: object) -> int:
    """The size of a ``prediction_set`` cell: a list (jsonl, parquet) or labels joined with ``|`` (csv, empty for
    an empty set)."""
    if isinstance(value, list):
        return len(value)
    return len(str(value).split("|")) if value not in (None, "") else 0


def read_classify_run(rows: Path, embeddings: Path) -> ScoredPool:
    """The rows route: the pool as a ``gcv classify`` run over it scored it, read from its rows file (read by
    :class:`garmentcv.report.write.ResultsFile`) and its embeddings file (:func:`garmentcv.infer.rows.read_embeddings`),
    matched by path. Error rows (an ``error``, no probabilities) are skipped and counted. The prediction set's size
    is used when the rows have ``prediction_set``, the unknown score when they have ``ood_score``.

    Raises:
        DatasetError: the rows have no probability per class (``--topk`` or kaggle rows), no row that was
            classified, or a row whose path the embeddings file lacks (the first is named) or has no embedding for;
            the embeddings file cannot be read.
        GarmentCVError: the rows file is not one gcv classify wrote (see ``ResultsFile``).
        MissingRuntimeError: a parquet file without pyarrow.
    """
    from garmentcv.infer.rows import read_embeddings
    from garmentcv.report.write import ResultsFile

    rows, embeddings = Path(rows), Path(embeddings)
    paths: list[str] = []
    probs: list[list[float]] = []
    predicted: list[str] = []
    sizes: list[int] = []
    ood: list[float] = []
    skipped = 0
    with ResultsFile(rows) as reader:
        has_sets, has_ood = "prediction_set" in reader.columns, "ood_score" in reader.columns
        per_class = reader.format == "jsonl" and "probs" in reader.columns or bool(reader.classes)
        if not per_class:
            raise DatasetError(f"{rows}: the rows carry no probability per class (written with --topk?); give the "
                               "rows of a gcv classify run without --topk, as csv, jsonl or parquet")
        for record in reader.records():
            row_probs = _row_probs(record, reader.classes) if reader.classes else None
            if record.get("error") or row_probs is None:
                skipped += 1
                continue
            paths.append(str(record["path"]))
            probs.append(row_probs)
            top = int(np.argmax(row_probs))
            predicted.append(str(record.get("label") or reader.classes[top]))
            if has_sets:
                sizes.append(_set_size(record.get("prediction_set")))
            if has_ood:
                ood.append(float(record["ood_score"]))
        classes = tuple(reader.classes)
    if not paths:
        raise DatasetError(f"{rows}: no row has probabilities ({skipped} error rows); give the rows of a gcv classify "
                           "run that classified images")
    try:
        index, array = read_embeddings(embeddings)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    position: dict[str, int] = {}
    for i, path in enumerate(index):
        position.setdefault(path, i)
    at = []
    for path in paths:
        if path not in position:
            raise DatasetError(f"{embeddings}: no embedding for {path!r}, a row of {rows.name}; give the embeddings "
                               "file of the same gcv classify run (--embeddings)")
        at.append(position[path])
    vectors = np.asarray(array[np.asarray(at)], dtype=np.float32)
    unusable = ~np.isfinite(vectors).all(axis=1)
    if unusable.any():
        raise DatasetError(f"{embeddings}: the embedding of {paths[int(np.flatnonzero(unusable)[0])]!r} is not "
                           f"finite, though {rows.name} has its probabilities; give the files of the same run")
    if skipped:
        logger.info("%s: %d error rows skipped", rows, skipped)
    return ScoredPool(tuple(paths), classes, np.asarray(probs, dtype=np.float64), tuple(predicted), normalise(vectors),
                      np.asarray(sizes) if has_sets else None, np.asarray(ood, dtype=np.float64) if has_ood else None,
                      skipped)


def label_next(cfg: LabelNextConfig, progress: Callable[[int], None] | None = None) -> LabelNextResult:
    """Choose ``cfg.n`` images of the pool to label next and write the choice and the Label Studio files.

    The pool is ``cfg.pool`` run through ``cfg.model``, or the rows and embeddings of a gcv classify run
    (:func:`read_classify_run`); the same images give the same picks and files either way.

    Raises:
        DatasetError: the pool has no image that decodes, the labelled dataset cannot be read, or (rows route) as
            :func:`read_classify_run`, or the labelled images' embeddings are not as wide as the pool's.
        NoEmbeddingError: the model file has no ``embedding`` output.
        ModelFileError, RuntimeUnavailableError: the model file cannot be opened.
    """
    if cfg.pool is not None and cfg.model is not None:
        scored = _score_pool(Path(cfg.pool), Path(cfg.model), cfg, progress)
        where = str(cfg.pool)
    elif cfg.rows is not None and cfg.embeddings is not None:
        scored = read_classify_run(Path(cfg.rows), Path(cfg.embeddings))
        where = str(cfg.rows)
    else:  # LabelNextConfig refuses this on creation
        raise LabelNextUsageError("give POOL with --model, or --rows with --embeddings")
    known = None
    if cfg.labelled is not None and cfg.model is not None:  # the config refuses labelled images without a model
        dataset = load_dataset(cfg.labelled)
        known = embed_images(cfg.model, [s.path for s in dataset.samples], runtime=cfg.runtime,
                             batch_size=cfg.batch_size).normalised
        if known.shape[1] != scored.normalised.shape[1]:
            raise DatasetError(f"{cfg.model}: embeddings of {known.shape[1]} values, the pool's have "
                               f"{scored.normalised.shape[1]}; give the model file of the classify run")
    measures = uncertainty(scored.probs, scored.set_sizes, scored.ood_scores)
    chosen = choose(scored.normalised, measures["combined"], cfg.n, known, cfg.duplicate_cosine, cfg.seed,
                    cfg.prefilter)
    picks = []
    for rank, (i, distance) in enumerate(chosen, start=1):
        top = scored.classes.index(scored.predicted[i]) if scored.predicted[i] in scored.classes else int(
            scored.probs[i].argmax())
        picks.append(Pick(
            rank, scored.paths[i], float(measures["combined"][i] * distance), float(measures["combined"][i]),
            distance, scored.predicted[i], float(scored.probs[i, top]), float(measures["margin"][i]),
            float(measures["entropy"][i]), None if scored.set_sizes is None else int(scored.set_sizes[i]),
            None if scored.ood_scores is None else float(scored.ood_scores[i]),
        ))
    if len(picks) < cfg.n:
        logger.warning("%s: only %d images are not near-duplicates of each other or of the labelled set; chose %d",
                       where, len(picks), len(picks))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"choice": write_choice(out / CHOICE, picks),
             "tasks": write_label_studio_tasks(out / TASKS, picks, cfg.url_prefix),
             "config": write_label_config(out / LABEL_CONFIG, scored.classes)}
    return LabelNextResult(tuple(picks), len(scored.paths), files, scored.skipped)


def _number(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6f}"


def write_choice(path: Path, picks: Sequence[Pick]) -> Path:
    """Write the picks as a CSV with :data:`CHOICE_COLUMNS` (empty ``set_size``/``ood_score`` without them)."""
    with atomic_write(path, newline="", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(CHOICE_COLUMNS)
        for p in picks:
            writer.writerow([p.rank, p.path, _number(p.score), _number(p.uncertainty), _number(p.distance), p.predicted,
                             _number(p.confidence), _number(p.margin), _number(p.entropy), _number(p.set_size),
                             _number(p.ood_score)])
    return path


def write_label_studio_tasks(path: Path, picks: Sequence[Pick], url_prefix: str = DEFAULT_URL_PREFIX) -> Path:
    """Write a Label Studio import file: one task per pick, in rank order.

    Each task is ``{"data": {"image": url_prefix + path, "gcv_path": path}, "predictions": [...]}``, the prediction
    being the model's guess as a ``choices`` result of :func:`write_label_config`'s config (``from_name``
    ``label``, ``to_name`` ``image``) with its confidence as the score.
    """
    tasks = [{
        "data": {"image": url_prefix + p.path, "gcv_path": p.path, "gcv_rank": p.rank},
        "predictions": [{"model_version": "garmentcv", "score": round(p.confidence, 6), "result": [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [p.predicted]}}]}],
    } for p in picks]
    with atomic_write(path, errors="surrogateescape") as handle:
        json.dump(tasks, handle, ensure_ascii=False, indent=1)
    return path


def write_label_config(path: Path, classes: Sequence[str]) -> Path:
    """Write the Label Studio labelling config: an image and one choice per class (single choice)."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    with atomic_write(path) as handle:
        handle.write(f'<View>\n  <Image name="image" value="$image"/>\n  <Choices name="label" toName="image" '
                     f'choice="single" showInline="true">\n{choices}\n  </Choices>\n</View>\n')
    return path


def _task_path(task: dict, url_prefix: str) -> str | None:
    data = task.get("data") or {}
    if data.get("gcv_path"):
        return str(data["gcv_path"])
    image = str(data.get("image") or "")
    if image.startswith(url_prefix):
        return unquote(image[len(url_prefix):])
    return None


def _task_label(task: dict) -> str | None:
    for annotation in reversed(task.get("annotations") or []):  # the latest annotation wins
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            choices = (result.get("value") or {}).get("choices")
            if result.get("type") == "choices" and choices:
                return str(choices[0])
    return None


@dataclass(frozen=True)
class ManifestSummary:
    """What :func:`label_studio_to_manifest` wrote: rows, and tasks left out (no annotation, cancelled or a path
    it could not find)."""

    rows: int
    unlabelled: int
    unmatched: int


def label_studio_to_manifest(export: Path, pool: Path, out: Path,
                             url_prefix: str = DEFAULT_URL_PREFIX) -> ManifestSummary:
    """Read a Label Studio JSON export of tasks made by :func:`write_label_studio_tasks` and write a ``path,label``
    manifest (gcv's csv layout; paths relative to the manifest's folder) of the annotated ones.

    A task's image is its ``data.gcv_path`` (relative to ``pool``), or its ``data.image`` URL after ``url_prefix``.
    Its label is the first choice of its latest annotation that was not cancelled; a task without one is left
    out and counted.

    Raises:
        DatasetError: the export is not a JSON list of tasks, or a label is not a valid class name.
    """
    try:
        tasks = json.loads(Path(export).read_text(**MANIFEST_ENCODING))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{export}: cannot read a Label Studio JSON export ({exc}); export the project as "
                           "JSON") from exc
    if not isinstance(tasks, list):
        raise DatasetError(f"{export}: expected a JSON list of tasks (Label Studio's JSON export)")
    out = Path(out)
    base = out.parent.resolve()
    rows: list[tuple[str, str]] = []
    unlabelled = unmatched = 0
    for task in tasks:
        relative, label = _task_path(task, url_prefix), _task_label(task)
        if label is None:
            unlabelled += 1
            continue
        if relative is None or not (Path(pool) / relative).is_file():
            unmatched += 1
            logger.warning("%s: task %s names no image of %s; left out", export, task.get("id", "?"), pool)
            continue
        if not CLASS_NAME_PATTERN.match(label):
            raise DatasetError(f"{export}: task {task.get('id', '?')} has label {label!r}, not a class name; fix "
                               "the labelling config's choices")
        rows.append((Path(os.path.relpath((Path(pool) / relative).resolve(), base)).as_posix(), label))
    with atomic_write(out, newline="", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return ManifestSummary(len(rows), unlabelled, unmatched)
