"""``gcv classify`` as a library: the run's settings, their checks, and the bookkeeping both engines share.

:class:`ClassifyConfig` holds a run's settings and :func:`check_config` checks them before any work;
:class:`ClassifyRun` is one run (the stream of files, the rows saved to the partial results, the final file, the
summary), shared by the local engine (:func:`garmentcv.infer.engines.local.classify_folder`, also importable from
here) and the Ray engine (:mod:`garmentcv.infer.engines.ray`), so both write the same rows in the same order. The
partial results, the run lock and resuming are :mod:`garmentcv.infer.partial`.

The folder may also be a manifest or an object-storage prefix (:mod:`garmentcv.infer.sources`).

A completing run removes only its own segment and those present when it started (earlier runs, all ended), then the
folder if nothing else is left; a run that stops early removes only what holds nothing (its segment without rows).
A full, read-only or failing disk stops the run with :class:`ClassifyStorageError` (Ctrl-C with
:class:`RunInterrupted`), saying how many rows are saved for ``resume``.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from garmentcv.artifact import EMBEDDING_NAME, OOD_SCORE_NAME, ModelInfo
from garmentcv.data.layouts import SkippedFile
from garmentcv.errors import GarmentCVError
from garmentcv.fsutil import AtomicFile, check_writable_output, sha256_of, storage_problem
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH
from garmentcv.infer.partial import (
    IN_FLIGHT_FILE,
    LOCK_FILE,
    PARTIAL_FORMAT,
    WORKER_DIED,
    InFlight,
    PartialResults,
    Reuse,
    RunLock,
    RunLockedError,
    decodes_alone,
    partial_dir,
)
from garmentcv.infer.pipeline import Prediction
from garmentcv.infer.rows import (
    OutputFormat,
    Row,
    is_unknown,
    kaggle_empty_labels_message,
    prediction_set,
    require_pyarrow,
    review_needed,
    sort_key,
    write_embeddings,
    write_output,
)
from garmentcv.infer.runtimes import RUNTIMES
from garmentcv.infer.sources import (
    DEFAULT_READ_RETRY,
    File,
    ManifestSource,
    ReadRetry,
    Source,
    StorageReadError,
    is_read_error,
    is_uri,
    open_source,
)
from garmentcv.text import plural

if TYPE_CHECKING:
    from garmentcv.conformal import ConformalPredictor
    from garmentcv.infer.engines.local import classify_folder as classify_folder
    from garmentcv.infer.engines.ray import RayOptions

__all__ = [
    "CALIBRATIONS", "ENGINES", "ERROR_EXAMPLES", "IN_FLIGHT_FILE", "LOCK_FILE", "ON_ERROR", "WORKER_DIED",
    "ClassifyConfig", "ClassifyRun", "ClassifyStorageError", "ClassifySummary", "ClassifyUsageError",
    "EmptySourceError", "ErrorRowsError", "RunInterrupted", "RunLockedError", "check_config", "check_error_policy",
    "check_options", "check_output_apart", "check_topk", "classify_folder", "open_checked_source", "partial_dir",
]

logger = logging.getLogger(__name__)

#: How many failed files a summary names (the rest are counted).
ERROR_EXAMPLES = 5


@dataclass(frozen=True)
class ClassifyConfig:
    """Settings of one ``gcv classify`` run.

    Attributes:
        folder: what to classify: a folder of images, a manifest (``.txt``/``.lst``/``.csv``) or an
            object-storage prefix such as ``s3://bucket/photos/`` (see :mod:`garmentcv.infer.sources`).
        out: the results file.
        model: the GarmentCV ONNX file (classes and preprocessing are read from it).
        batch_size: images per model run.
        provider: ``auto``, ``cpu`` or ``cuda`` (see :mod:`garmentcv.infer.runtimes.onnxruntime`).
        threads: onnxruntime intra-op threads; ``None``: see :func:`garmentcv.infer.pipeline.split_cpus`.
        workers: image decoding threads; ``None``: see :func:`~garmentcv.infer.pipeline.split_cpus`.
        recursive: also classify images in sub-folders.
        format: ``csv``, ``jsonl``, ``kaggle`` or ``parquet`` (see :mod:`garmentcv.infer.rows`).
        resume: reuse the rows of an interrupted run with the same model, folder and options.
        progress: show a progress bar on stderr (only on a terminal).
        calibration: ``temperature`` divides the logits by the temperature stored in the model file (files
            without one: 1) before the softmax; ``none`` keeps the raw softmax.
        min_confidence: rows whose confidence is below it get ``needs_review`` true (csv and jsonl only).
        topk: write the K most probable classes instead of one probability per class (csv and jsonl only).
        runtime: ``auto``, ``onnxruntime`` or ``openvino`` (see :mod:`garmentcv.infer.runtimes`).
        fetch_threads: threads fetching objects of an object-storage source, apart from the decoding ``workers``;
            ``None``: :data:`garmentcv.infer.pipeline.DEFAULT_FETCH_THREADS`.
        read_retry: how a failed object read is tried again before its row gets a ``cannot read`` error.
        max_consecutive_read_errors: stop the run (rows saved, :class:`~garmentcv.infer.sources.StorageReadError`)
            after this many objects in a row, in row order, could not be read: the storage is failing, and the rest
            would only become error rows. ``None``: never stop.
        allow_empty: a source without image files gives a results file without rows (with a warning) instead of
            :class:`EmptySourceError`.
        list_skipped: also write this CSV file (``path,reason``, paths as in the rows) naming every file or folder
            passed over (hidden, not an image, ...), written as the source is listed and renamed into place at the end.
        prediction_sets: ``auto`` writes each row's prediction set when the model file has them
            (:mod:`garmentcv.conformal`; rows whose set holds other than one label need review); ``off`` never.
        unknown: ``auto`` adds ``unknown`` and ``ood_score`` to every row when the model file has an unknown-item
            detector; ``off`` keeps the rows without them.
        exclude_unknown: the kaggle format gives rows called unknown an empty label.
        embeddings: also write every row's ``embedding`` output to this file (:func:`write_embeddings`:
            ``.npy`` with a ``.paths.csv`` index beside it, or ``.parquet``); the model file must have that output.
    """

    folder: Path | str
    out: Path
    model: Path = DEFAULT_MODEL_PATH
    batch_size: int = 32
    provider: str = "auto"
    threads: int | None = None
    workers: int | None = None
    recursive: bool = True
    format: OutputFormat = OutputFormat.CSV
    resume: bool = False
    progress: bool = True
    calibration: str = "temperature"
    min_confidence: float | None = None
    topk: int | None = None
    runtime: str = "auto"
    fetch_threads: int | None = None
    read_retry: ReadRetry = DEFAULT_READ_RETRY
    max_consecutive_read_errors: int | None = 20
    allow_empty: bool = False
    list_skipped: Path | None = None
    prediction_sets: str = "auto"
    unknown: str = "auto"
    exclude_unknown: bool = False
    embeddings: Path | None = None


#: ``ClassifyConfig.calibration`` values.
CALIBRATIONS = ("temperature", "none")
#: ``ClassifyConfig.prediction_sets`` and ``ClassifyConfig.unknown`` values.
AUTO_OFF = ("auto", "off")
#: File name endings ``--embeddings`` writes: a numpy array (with a row index beside it) or a parquet table.
EMBEDDING_SUFFIXES = (".npy", ".parquet")


class ClassifyUsageError(GarmentCVError, ValueError):
    """Options that do not go together, or an output that would overwrite an input (exit code 2, like click's
    usage errors)."""

    exit_code = 2


class EmptySourceError(GarmentCVError, ValueError):
    """The source holds no image file (exit code 1) and an empty result was not asked for."""


class ClassifyStorageError(GarmentCVError, OSError):
    """The storage of the partial results or the output is full, read-only, forbidden or failing (exit code 1);
    the message names the file, what to do, and the rows kept for ``--resume``."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C after a run saved its rows so far; the message says how many and that ``--resume`` finishes."""


def check_options(fmt: OutputFormat, min_confidence: float | None, topk: int | None, calibration: str) -> None:
    """Refuse option combinations before any work.

    Raises:
        ClassifyUsageError: ``min_confidence`` or ``topk`` with the kaggle format (it must carry a plain label
            for every row), ``min_confidence`` outside 0..1, ``topk`` below 1, an unknown ``calibration``.
        MissingRuntimeError: the parquet format without pyarrow installed.
    """
    if calibration not in CALIBRATIONS:
        raise ClassifyUsageError(f"--calibration {calibration!r}: choose one of {', '.join(CALIBRATIONS)}")
    for option, value in (("--min-confidence", min_confidence), ("--topk", topk)):
        if value is not None and OutputFormat(fmt) is OutputFormat.KAGGLE:
            raise ClassifyUsageError(
                f"{option} cannot be used with --format kaggle: a kaggle file has a label for every row and no room "
                "to mark rows needing review or to list other labels; use --format csv or jsonl"
            )
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ClassifyUsageError(f"--min-confidence {min_confidence}: give a probability within 0..1")
    if topk is not None and topk < 1:
        raise ClassifyUsageError(f"--topk {topk}: give at least 1")
    if OutputFormat(fmt) is OutputFormat.PARQUET:
        require_pyarrow()


#: The engines that run a classification: this process, or a pool of Ray worker actors.
ENGINES = ("local", "ray")
#: ``check_error_policy`` values: exit 1 on error rows with kaggle only (``auto``), always (``fail``) or never.
ON_ERROR = ("auto", "fail", "continue")
#: Output formats a report page can be made from: they carry the confidence and error columns.
_REPORT_FORMATS = (OutputFormat.CSV, OutputFormat.JSONL)


def _choose(option: str, value: object, choices: Iterable[str]) -> None:
    """Refuse ``value`` of ``option`` unless it is one of ``choices``.

    Raises:
        ClassifyUsageError: it is not.
    """
    choices = tuple(choices)
    if value not in choices:
        raise ClassifyUsageError(f"{option} {value!r}: choose {', '.join(choices[:-1])} or {choices[-1]}")


def _at_least_one(option: str, value: int | None) -> None:
    """Refuse a count below 1 (``None``, not given, passes).

    Raises:
        ClassifyUsageError: it is below 1.
    """
    if value is not None and value < 1:
        raise ClassifyUsageError(f"{option} {value}: give at least 1")


def check_config(cfg: ClassifyConfig, engine: str = "local", ray: RayOptions | None = None,
                 report: Path | None = None) -> None:
    """Refuse settings of a run that are out of range or do not go together, before any work.

    :func:`classify_folder` calls it (the local engine); a command calls it with everything it was given. Messages
    name the command's options (``--device`` is ``cfg.provider``, ``--decode-threads`` ``cfg.workers``).

    Args:
        cfg: the run's settings.
        engine: ``local`` or ``ray`` (:func:`garmentcv.infer.engines.ray.classify_ray`).
        ray: the Ray engine's options, or ``None``; with ``engine="local"``, any that differs from its default is
            refused.
        report: the report page to write after the run (:func:`garmentcv.report.write_classify_report`), or
            ``None``; it is checked like ``cfg.out`` (:func:`check_output_apart`) and must be writable.

    Raises:
        ClassifyUsageError: an unknown engine, device or runtime; a batch size or thread count below 1; Ray options
            with the local engine, or with the Ray engine ``cfg.threads``/``cfg.workers`` (each worker gets
            ``cpus_per_worker`` of both), ``runtime="openvino"`` or ``provider="cuda"`` (its workers run onnxruntime on
            CPUs); see :func:`check_options`; a report whose source is not a local folder, whose format has no
            confidence and error columns (kaggle, parquet), that is ``cfg.out``, the model or the manifest, or lies
            inside the source folder.
        PathNotFoundError, DatasetError: with ``report``, the source cannot be opened (:func:`open_source`).
        OutputPathError: ``report`` or its thumbnails folder cannot be written.
        MissingRuntimeError: the parquet format without pyarrow installed.
    """
    from garmentcv.infer.runtimes.onnxruntime import (
        PROVIDERS,  # imports onnxruntime, which importing this module does not
    )

    _choose("--engine", engine, ENGINES)
    _choose("--device", cfg.provider, PROVIDERS)
    _choose("--runtime", cfg.runtime, RUNTIMES)
    _at_least_one("--batch-size", cfg.batch_size)
    _at_least_one("--threads", cfg.threads)
    _at_least_one("--decode-threads", cfg.workers)
    if engine == "local":
        if ray is not None:
            given = [name for name, value in (("--address", ray.address), ("--num-workers", ray.num_workers),
                                              ("--cpus-per-worker", ray.cpus_per_worker if ray.cpus_per_worker != 1
                                               else None)) if value is not None]
            if given:
                raise ClassifyUsageError(f"{', '.join(given)} only go with --engine ray")
    else:
        if cfg.threads is not None or cfg.workers is not None:
            raise ClassifyUsageError("--threads and --decode-threads are for --engine local; with --engine ray each "
                                     "worker gets --cpus-per-worker threads of both")
        if cfg.runtime == "openvino":
            raise ClassifyUsageError("--engine ray runs onnxruntime in its workers; --runtime openvino works with the "
                                     "local engine")
        if cfg.provider == "cuda":
            raise ClassifyUsageError("--engine ray runs its workers on CPUs; use --device auto or cpu")
        if ray is not None and (ray.cpus_per_worker < 1 or (ray.num_workers is not None and ray.num_workers < 1)):
            raise ClassifyUsageError("--num-workers and --cpus-per-worker must be at least 1")
    check_options(cfg.format, cfg.min_confidence, cfg.topk, cfg.calibration)
    _choose("--prediction-sets", cfg.prediction_sets, AUTO_OFF)
    _choose("--unknown", cfg.unknown, AUTO_OFF)
    if cfg.exclude_unknown and OutputFormat(cfg.format) is not OutputFormat.KAGGLE:
        raise ClassifyUsageError("--exclude-unknown empties the labels of unknown rows in --format kaggle; other "
                                 "formats keep the label and say unknown in a column of their own")
    if cfg.embeddings is not None:
        if Path(cfg.embeddings).suffix.lower() not in EMBEDDING_SUFFIXES:
            raise ClassifyUsageError(f"--embeddings {cfg.embeddings}: give a file name ending in .npy (an array, with "
                                     "a .paths.csv row index beside it) or .parquet (path and embedding columns)")
        if Path(cfg.embeddings).suffix.lower() == ".parquet":
            require_pyarrow()
    if report is not None:
        _check_report(cfg, Path(report))


def _check_report(cfg: ClassifyConfig, report: Path) -> None:
    """The checks of :func:`check_config` for a report page (see there)."""
    from garmentcv.report import check_report_output, files_folder  # the report package is needed only here

    if is_uri(cfg.folder) or not Path(cfg.folder).is_dir():
        raise ClassifyUsageError("--report shows the images of a local folder; SOURCE is not one")
    if OutputFormat(cfg.format) not in _REPORT_FORMATS:
        raise ClassifyUsageError(f"--report needs the confidence and error columns of --format csv or jsonl, not "
                                 f"{OutputFormat(cfg.format).value}")
    if report.resolve() == Path(cfg.out).resolve():
        raise ClassifyUsageError(f"--report {report} is the results file --out; give the page another name")
    check_output_apart(report, "--report", Path(cfg.model), open_source(cfg.folder), thumbnails=files_folder(report))
    check_report_output(report, "--report")


class ErrorRowsError(GarmentCVError):
    """The results file is written, but some rows have an error (or, with kaggle, share an index) and the error
    policy does not accept it (exit code 1).

    Attributes:
        summary: the run's :class:`ClassifySummary`.
    """

    def __init__(self, message: str, summary: ClassifySummary) -> None:
        super().__init__(message)
        self.summary = summary


def check_error_policy(summary: ClassifySummary, fmt: OutputFormat | str, on_error: str = "auto") -> None:
    """Decide whether a finished run counts as failed because of its error rows.

    ``auto``: a kaggle file with an empty label (an image that could not be decoded) or an index shared by several
    files (``10.jpg``, ``10.png``) fails, as the submission would be refused or scored wrong; other formats keep the
    error in a column and pass. ``fail``: any error row fails (and a shared kaggle index). ``continue``: nothing
    fails. Rows of objects that could not be read are not decided here: :func:`classify_folder` raises
    :class:`~garmentcv.infer.sources.StorageReadError` for them whatever the policy.

    Raises:
        ClassifyUsageError: ``on_error`` is not one of :data:`ON_ERROR`.
        ErrorRowsError: the run fails; the message names the files (a few) and what to do.
    """
    _choose("--on-error", on_error, ON_ERROR)
    kaggle = OutputFormat(fmt) is OutputFormat.KAGGLE
    if on_error == "continue":
        return
    shared = summary.duplicate_indexes
    if shared:
        shown = "; ".join(f"{index} ({', '.join(paths)})" for index, paths in list(shared.items())[:ERROR_EXAMPLES])
        more = len(shared) - ERROR_EXAMPLES
        raise ErrorRowsError(
            f"{'1 index is' if len(shared) == 1 else f'{len(shared)} indexes are'} shared by several files: "
            f"{shown}{f' and {more} more' if more > 0 else ''}; the kaggle file {summary.out} has a row for each, so "
            "its index column is not unique. Rename or remove the extra files, or pass --on-error continue to accept "
            "it", summary,
        )
    if not summary.errors:
        return
    failed = ", ".join(summary.error_examples) + (f" and {summary.errors - len(summary.error_examples)} more"
                                                  if summary.errors > len(summary.error_examples) else "")
    if on_error == "fail":
        raise ErrorRowsError(f"{plural(summary.errors, 'image')} could not be decoded: {failed} (see the error column "
                             f"of {summary.out})", summary)
    if kaggle:
        raise ErrorRowsError(kaggle_empty_labels_message(summary.errors, failed, summary.out), summary)


def check_model_outputs(cfg: ClassifyConfig, info: ModelInfo) -> None:
    """Refuse options that need an output the model file lacks (read from its metadata, before it is opened).

    Raises:
        ClassifyUsageError: ``cfg.embeddings`` for a file without the ``embedding`` output.
    """
    if cfg.embeddings is not None and not info.has_embedding:
        raise ClassifyUsageError(f"--embeddings: the model {cfg.model} has no embedding output; export it again with "
                                 "'gcv export CHECKPOINT --embedding'")


def check_topk(topk: int | None, info: ModelInfo, model: Path) -> None:
    """Refuse ``topk`` above the number of classes of the model ``info`` describes (read from its metadata, before
    the model is opened).

    Raises:
        ClassifyUsageError: ``topk`` is above the number of classes.
    """
    if topk is not None and topk > len(info.classes):
        raise ClassifyUsageError(f"--topk {topk}: the model {model} has only {plural(len(info.classes), 'class')}; "
                                 f"give at most {len(info.classes)}")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links and hard links followed; a missing path: by its resolved name)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it, symbolic links resolved."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


_WHAT = {"--out": "results", "--report": "page", "--list-skipped": "list", "--embeddings": "embeddings file"}


def check_output_apart(path: Path, option: str, model: Path, source: Source, thumbnails: Path | None = None) -> None:
    """Refuse an output that would overwrite an input of the run or be classified by the next one.

    Args:
        path: the output file (``--out``, ``--report``, ``--list-skipped``).
        option: the option that named it, for the message.
        model: the model file.
        source: the run's source.
        thumbnails: a folder written with ``path`` (the report's ``NAME_files``), or ``None``.

    Raises:
        ClassifyUsageError: ``path`` is the model file or the manifest, or lies inside the local source folder;
            ``thumbnails`` is the source folder or holds it (symbolic links resolved).
    """
    what = _WHAT.get(option, "file")
    if _same_file(path, model):
        raise ClassifyUsageError(f"{option} {path} is the model file --model; give the {what} another name")
    if isinstance(source, ManifestSource) and _same_file(path, source.manifest):
        raise ClassifyUsageError(
            f"{option} {path} is the manifest SOURCE {source.manifest}; give the {what} another name"
        )
    folder = source.folder
    if folder is None:
        return
    if _within(path, folder):
        raise ClassifyUsageError(f"{option} {path} lies inside SOURCE {folder}; the next run would classify what is "
                                 "written there: write it outside SOURCE")
    if thumbnails is not None and _within(folder, thumbnails):
        raise ClassifyUsageError(f"{option} {path}: its thumbnails folder {thumbnails} is SOURCE or holds it; give "
                                 f"the {what} another name")


def rows_prediction_sets(info: ModelInfo, prediction_sets: str, calibration: str,
                         model: Path | str) -> ConformalPredictor | None:
    """The prediction sets rows get (``gcv classify``, ``gcv serve``): the file's, unless ``prediction_sets`` is
    ``off`` or the probabilities are not the ones they were fitted on (``calibration`` ``none`` on a file with a
    temperature); the reason is logged."""
    if prediction_sets == "off" or info.conformal is None:
        if prediction_sets == "auto" and info.conformal is None:
            export = info.metrics.get("export", {}) if isinstance(info.metrics, dict) else {}
            note = export.get("conformal_note", "") if isinstance(export, dict) else ""
            logger.info("%s has no prediction sets%s", model, f" ({note})" if note else "")
        return None
    if calibration == "none" and info.temperature is not None:
        logger.warning("no prediction sets: they were fitted on the probabilities with the file's temperature, "
                       "not the raw softmax of --calibration none")
        return None
    return info.conformal


def rows_unknown_threshold(info: ModelInfo, unknown: str, model: Path | str) -> float | None:
    """The ``ood_score`` threshold above which rows are called unknown (``gcv classify``, ``gcv serve``): the
    file's detector's with ``unknown`` ``auto``; ``None`` with ``off`` or a file without one (logged)."""
    if unknown == "auto" and info.unknown is not None and info.has_ood_score:
        return info.unknown.threshold
    if unknown == "auto":
        logger.info("%s has no unknown-item detector: the rows say nothing about unknown items (export one with "
                    "gcv export --unknown-score)", model)
    return None


@dataclass(frozen=True)
class ClassifySummary:
    """What a run did.

    Attributes:
        out: the results file written.
        files: image files found (= rows written).
        classified: images given a label (this run and reused).
        errors: image files that could not be decoded (rows with an error).
        skipped: other files passed over (hidden or not an image), by reason.
        reused: rows taken from an interrupted run (``resume``).
        seconds: wall time of the run, s.
        images_per_second: images decoded or attempted by this run (not reused) per second of wall time.
        provider: ``cpu`` or ``cuda``.
        error_reasons: error rows by kind of failure (e.g. ``truncated file``).
        error_examples: paths (relative to the folder) of the first error rows, at most :data:`ERROR_EXAMPLES`.
        threads: onnxruntime intra-op threads used.
        workers: decoding threads used.
        temperature: the logits were divided by it before the softmax (1.0: raw softmax).
        needs_review: classified rows whose confidence is below ``min_confidence`` (0 without it).
        duplicate_indexes: kaggle format only: index -> the files that share it (``10.jpg``, ``10.png``).
        min_confidence: the threshold used, or ``None``.
        runtime: ``onnxruntime`` or ``openvino``, the runtime that ran the model (on ``provider``).
        inference_precision: what it computed in: onnxruntime's file precision (``fp32``, ``fp16``, ``int8``)
            or OpenVINO's ``f32``/``bf16``.
        read_errors: error rows whose object could not be read (``cannot read``; counted in ``errors`` too). A run
            with any raises :class:`~garmentcv.infer.sources.StorageReadError` carrying this summary.
        skipped_list: the file naming every skipped file (``list_skipped``), or ``None``.
        coverage: the coverage of the prediction sets written (``None``: no sets).
        unclear_sets: classified rows whose prediction set holds other than one label (counted in
            ``needs_review`` too).
        unknown: classified rows called unknown (``ood_score`` above the file's threshold).
        unknown_checked: whether the rows carry ``unknown`` (the file has a detector and ``unknown`` is ``auto``).
        embeddings: the embeddings file written, or ``None``.
    """

    out: Path
    files: int
    classified: int
    errors: int
    skipped: dict[str, int]
    reused: int
    seconds: float
    images_per_second: float
    provider: str
    error_reasons: dict[str, int] = field(default_factory=dict)
    error_examples: tuple[str, ...] = ()
    threads: int = 1
    workers: int = 1
    temperature: float = 1.0
    needs_review: int = 0
    duplicate_indexes: dict[str, list[str]] = field(default_factory=dict)
    min_confidence: float | None = None
    runtime: str = "onnxruntime"
    inference_precision: str = "fp32"
    read_errors: int = 0
    skipped_list: Path | None = None
    coverage: float | None = None
    unclear_sets: int = 0
    unknown: int = 0
    unknown_checked: bool = False
    embeddings: Path | None = None

    @property
    def skipped_total(self) -> int:
        """All files passed over."""
        return sum(self.skipped.values())


class _SkipCounter(list):  # type: ignore[type-arg]
    """A stand-in for scan_images' ``skipped`` list that counts reasons without keeping the paths; with ``write``,
    each skipped file is also handed to it as it comes (the ``list_skipped`` file)."""

    def __init__(self, write: Callable[[SkippedFile], None] | None = None) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.write = write

    def append(self, item: SkippedFile) -> None:  # type: ignore[override]
        self.counts[item.reason] += 1
        if self.write is not None:
            self.write(item)


def _reason_kind(reason: str) -> str:
    """The kind of a decode failure, e.g. ``truncated file`` or ``oversized`` (the text before any colon)."""
    return reason.split(":", 1)[0]


def open_checked_source(cfg: ClassifyConfig) -> Source:
    """The run's source, after the checks every engine makes before any work.

    Raises:
        PathNotFoundError: a local source that does not exist.
        DatasetError: a file that is not a manifest.
        ClassifyUsageError: see :func:`check_config` (the local engine's checks); ``cfg.out`` or ``cfg.list_skipped``
            is the model or the manifest, or lies inside the source folder (:func:`check_output_apart`); the two are
            one file.
        OutputPathError: ``cfg.out`` or ``cfg.list_skipped`` cannot be written.
        MissingRuntimeError: parquet or an object store without pyarrow.
    """
    source = open_source(cfg.folder)
    check_config(cfg)
    outputs = [("--out", Path(cfg.out))] + ([("--list-skipped", Path(cfg.list_skipped))] if cfg.list_skipped else [])
    outputs += [("--embeddings", Path(cfg.embeddings))] if cfg.embeddings is not None else []
    for option, path in outputs:
        check_output_apart(path, option, Path(cfg.model), source)
    if cfg.list_skipped is not None and _same_file(Path(cfg.list_skipped), Path(cfg.out)):
        raise ClassifyUsageError(f"--list-skipped {cfg.list_skipped} is the results file --out; give the list "
                                 "another name")
    if cfg.embeddings is not None and _same_file(Path(cfg.embeddings), Path(cfg.out)):
        raise ClassifyUsageError(f"--embeddings {cfg.embeddings} is the results file --out; give it another name")
    for option, path in outputs:
        check_writable_output(path, option)
    return source


class ClassifyRun:
    """One run's bookkeeping, shared by the local engine and the Ray engine (:mod:`garmentcv.infer.engines.ray`):
    the partial results (resume), the stream of files to do, the rows saved, the final file and the summary.

    Use: :meth:`items` gives ``(file or None, row)`` in row order (``None``: a row reused from an interrupted
    run); an engine classifies the files and hands lists of :class:`~garmentcv.infer.pipeline.Prediction`
    (in the same order) to :meth:`save`; :meth:`finish` writes ``cfg.out`` and returns the summary. A run holds
    the lock of ``cfg.out`` (:class:`RunLock`) from its start to :meth:`finish`; an engine that stops it
    otherwise calls :meth:`close` (:meth:`save` and :meth:`finish` do on their own failures).
    """

    def __init__(self, cfg: ClassifyConfig, source: Source, info: ModelInfo,
                 runtime: tuple[str, str] = ("onnxruntime", ""), lock: RunLock | None = None) -> None:
        """``runtime``: the runtime and inference precision that compute the rows (``("openvino", "bf16")``;
        an empty precision means the file's). ``lock``: the run's :class:`RunLock` when the engine took it
        before any work; ``None`` takes it here. The run holds it until :meth:`finish` or :meth:`close`.

        Raises: ClassifyUsageError (``topk`` above the number of classes); RunLockedError (another run writes
        ``cfg.out``); GarmentCVError (``resume`` with partial results of another model, source or options)."""
        check_topk(cfg.topk, info, cfg.model)
        check_model_outputs(cfg, info)
        self.lock = lock if lock is not None else RunLock(Path(cfg.out))
        try:
            self._start(cfg, source, info, runtime)
        except BaseException:
            self.lock.release()
            raise

    def _start(self, cfg: ClassifyConfig, source: Source, info: ModelInfo, runtime: tuple[str, str]) -> None:
        self.cfg = cfg
        self.info = info
        self.runtime = (runtime[0], runtime[1] or info.precision)
        self.source = source
        self.classes = list(info.classes)
        self.temperature = info.applied_temperature if cfg.calibration == "temperature" else 1.0
        if cfg.calibration == "temperature" and info.temperature is None:
            logger.info("%s has no fitted temperature (%s): using the raw softmax", cfg.model,
                        info.temperature_note or "exported before calibration")
        self.header = {
            "format": PARTIAL_FORMAT,
            "folder": source.identity,
            "recursive": cfg.recursive,
            "model_sha256": sha256_of(cfg.model),
            "classes": self.classes,
            "temperature": self.temperature,
            # rows of another runtime or inference precision (bf16) differ in the last digits: never mixed by --resume
            "runtime": list(self.runtime),
        }
        self.sets = rows_prediction_sets(info, cfg.prediction_sets, cfg.calibration, cfg.model)
        self.unknown_threshold = rows_unknown_threshold(info, cfg.unknown, cfg.model)
        #: the extra outputs kept in each row (the partial results too), by name
        self.kept = tuple(name for name, wanted in ((EMBEDDING_NAME, cfg.embeddings is not None),
                                                    (OOD_SCORE_NAME, self.unknown_threshold is not None)) if wanted)
        for name in self.kept:  # rows without them cannot be reused
            self.header[name] = True
        self.partial = PartialResults(Path(cfg.out), self.header)
        #: The segments of earlier runs, all ended (this run holds the lock): removed when this run completes.
        self.earlier = self.partial.segments()
        self.in_flight = InFlight(self.partial.dir)
        self.died: dict[int, Row] = {}  # id -> row of the files that killed the child decoding them
        self.reuse: Reuse | None = None
        reusable = self.partial.reusable(cfg.resume)
        if reusable:
            self.reuse = Reuse(self.partial.previous_rows(reusable))
            logger.info("resuming from the partial results in %s", self.partial.dir)
        self.skip_list: AtomicFile | None = None
        if cfg.list_skipped is not None:
            self.skip_list = AtomicFile(cfg.list_skipped, newline="", encoding="utf-8", errors="surrogateescape")
            self.skip_writer = csv.writer(self.skip_list.handle)
            self.skip_writer.writerow(["path", "reason"])
        self.skipped = _SkipCounter(self._list_skipped if self.skip_list is not None else None)
        self.files = self.reused = self.review = self.unclear = self.unknown = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []
        self.unread: list[str] = []  # paths of the rows whose object could not be read, at most ERROR_EXAMPLES
        self.unread_count = 0
        self.segment: Path | None = None
        self.closed = False

    def _list_skipped(self, item: SkippedFile) -> None:
        """One line of the ``list_skipped`` file: the path named as rows name files (relative to a source folder,
        ``/``-separated) and the reason."""
        path = item.path
        if self.source.folder is not None:
            with contextlib.suppress(ValueError):
                path = path.relative_to(self.source.folder)
        self.skip_writer.writerow([path.as_posix(), item.reason])

    def ran_on(self, runtime: tuple[str, str]) -> None:
        """Record the runtime that computed the rows, when it is not the planned one (``auto`` fell back to
        onnxruntime after OpenVINO failed to compile the file); only before :meth:`save` and without reused rows.

        Raises:
            RuntimeError: called too late, or on a run reusing rows of another runtime (a bug in the engine).
        """
        if runtime == self.runtime:
            return
        if self.segment is not None or self.reuse is not None:
            raise RuntimeError(f"rows of {self.runtime} cannot become rows of {runtime} after saving or reusing rows")
        self.runtime = runtime
        self.header["runtime"] = list(runtime)  # the same dict as the partial results' header

    def items(self) -> Iterator[tuple[File | None, Row]]:
        """``(file, {"path", "size", "mtime_ns"})`` to classify, or ``(None, row)`` for a reusable row, in row order.

        A row is reused when its file is still listed with the same size and modification time (ns), unless its
        object could not be read (a ``cannot read`` error: the storage failed, so it is read again).
        """
        reuse = self.reuse
        for entry in self.source.entries(self.cfg.recursive, self.skipped):
            candidates = reuse.take(sort_key(entry.name)) if reuse else []
            previous = next((r for r in candidates if entry.size is not None and r.get("size") == entry.size
                             and r.get("mtime_ns") == entry.mtime_ns and not is_read_error(r.get("error"))), None)
            if previous is not None:
                yield None, previous
            else:
                yield entry.file, {"path": entry.name, "size": entry.size, "mtime_ns": entry.mtime_ns}

    def decoding(self, items: Iterable[tuple[File | None, Row]], batch_size: int) -> Iterator[tuple[File | None, Row]]:
        """The local engine's ``items``, guarded against files that kill the process decoding them.

        Items pass in groups of ``batch_size``, as :func:`~garmentcv.infer.pipeline.predict_batches` makes its
        batches, so the files of each batch are recorded (:class:`~garmentcv.infer.partial.InFlight`) before the
        decoders get them. A file of a dead run's record that must be classified is first decoded alone in a child
        process (:func:`decodes_alone`); if the child dies, the file is passed on as done and :meth:`save` gives it the
        error row :data:`WORKER_DIED`.
        """
        flight = self.in_flight
        window: deque[tuple[int, list[str]]] = deque()  # (items up to the end of the batch, its files) not saved yet
        done = 0
        source = iter(items)
        while batch := list(itertools.islice(source, batch_size)):
            for i, (file, row) in enumerate(batch):
                if row["path"] not in flight.suspects:
                    continue
                flight.suspects.discard(row["path"])
                if file is not None and not decodes_alone(file, self.info):
                    logger.warning("%s: the process decoding it died; it gets an error row (%s)", row["path"],
                                   WORKER_DIED)
                    self.died[id(row)] = row
                    batch[i] = (None, row)
            done += len(batch)
            names = [row["path"] for file, row in batch if file is not None]
            while window and window[0][0] <= self.files:
                window.popleft()
            if names:
                window.append((done, names))
                flight.write(itertools.chain.from_iterable(n for _, n in window))
            yield from batch

    def save(self, batches: Iterable[list[Prediction[Row]]], on_batch: Callable[[int], None] | None = None,
             progress: Callable[[int], None] | None = None) -> None:
        """Write the rows of ``batches`` to a new segment of the partial results, flushed batch by batch.

        Args:
            batches: predictions in row order; ``passed`` ones are reused rows, the others get label, probs, error.
            on_batch: called after each batch with the number of rows saved so far in this run.
            progress: called with the number of rows classified (not reused) in each batch.

        On any failure the run is closed (:meth:`close`): the rows saved so far stay for ``--resume``.

        Raises:
            RunInterrupted: Ctrl-C (a :class:`KeyboardInterrupt`), after the rows so far are saved.
            ClassifyStorageError: the storage failed (full, read-only, forbidden, failing: an ``OSError`` of
                :data:`garmentcv.fsutil.STORAGE_ERRNOS`), naming the file, what to do and the rows saved.
            StorageReadError: ``cfg.max_consecutive_read_errors`` objects in a row could not be read; raised after
                the batch holding the last of them is saved.
        """
        classes, min_confidence = self.classes, self.cfg.min_confidence
        limit = self.cfg.max_consecutive_read_errors
        unread_in_a_row = 0
        failing: Row | None = None  # the row that made limit objects in a row unread: stop after its batch
        try:
            self.segment, handle = self.partial.new_segment()
            try:
                self._write(handle, json.dumps(self.header) + "\n")
                for predictions in batches:
                    lines = []
                    for p in predictions:
                        row = p.item
                        passed, error = p.passed, p.error
                        if passed and self.died.pop(id(row), None) is not None:
                            passed, error = False, WORKER_DIED
                        if passed:
                            self.reused += 1
                            if row["error"]:
                                self.reasons[_reason_kind(row["error"])] += 1
                        elif error is not None:
                            row.update(label=None, probs=None, error=error, **dict.fromkeys(self.kept))
                            self.reasons[_reason_kind(error)] += 1
                            unread_in_a_row = unread_in_a_row + 1 if is_read_error(error) else 0
                            if is_read_error(error):
                                self.unread_count += 1
                                if len(self.unread) < ERROR_EXAMPLES:
                                    self.unread.append(row["path"])
                                if limit is not None and unread_in_a_row >= limit and failing is None:
                                    failing = row
                        else:
                            unread_in_a_row = 0
                            probs = p.probs  # an ndarray whenever error is None and not passed
                            row.update(label=classes[int(probs.argmax())], probs=probs.tolist(), error=None)  # type: ignore[union-attr]
                            for name in self.kept:
                                row[name] = p.extras[name].tolist()
                        if review_needed(row["probs"], min_confidence, self.sets):
                            self.review += 1
                        chosen = prediction_set(row["probs"], self.sets)
                        if chosen is not None and len(chosen) != 1:
                            self.unclear += 1
                        if is_unknown(row, self.unknown_threshold):
                            self.unknown += 1
                        if row["error"] and len(self.examples) < ERROR_EXAMPLES:
                            self.examples.append(row["path"])
                        lines.append(json.dumps(row) + "\n")
                    self._write(handle, "".join(lines))
                    self.files += len(predictions)
                    if progress is not None:
                        progress(sum(not p.passed for p in predictions))
                    if on_batch is not None:
                        on_batch(self.files)
                    if failing is not None:
                        raise StorageReadError(
                            f"the storage is failing: {limit} objects in a row could not be read (the last, "
                            f"{failing['path']}: {failing['error']}); {plural(self.files, 'row')} "
                            f"{'is' if self.files == 1 else 'are'} saved in {self.partial.dir}; when it works again, "
                            "run the same command with --resume to finish"
                        )
            except BaseException:
                with contextlib.suppress(OSError):  # a tail that a full disk refused is lost with the run
                    handle.close()
                raise
            handle.close()
        except BaseException as exc:
            stopped = self._stopped(exc, "continue")
            if stopped is exc:
                raise
            raise stopped from exc

    def _write(self, handle: IO[str], text: str) -> None:
        """Write and flush ``text`` to the segment; an ``OSError`` without a file name gets the segment's."""
        try:
            handle.write(text)
            handle.flush()
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(self.segment)
            raise

    def _saved(self) -> str:
        """``"4 rows are saved in OUT.partial"``: this run's rows kept for ``--resume``."""
        verb = "is" if self.files == 1 else "are"
        return f"{plural(self.files, 'row')} {verb} saved in {self.partial.dir}"

    def _stopped(self, exc: BaseException, then: str) -> BaseException:
        """Close the run stopped by ``exc`` and return what to raise: ``exc`` itself, or for Ctrl-C and a storage
        failure an error that says how many rows are saved and that ``--resume`` continues (``then``: what it does)."""
        self.close()
        if isinstance(exc, (RunInterrupted, GarmentCVError)):
            return exc
        if isinstance(exc, KeyboardInterrupt):
            return RunInterrupted(f"{self._saved()}; run the same command with --resume to {then}"
                                  if self.files else "no row was saved yet")
        problem = storage_problem(exc)
        if problem is not None:
            rows = f"{self._saved()}: then run the same command with --resume to {then}" if self.files else (
                "no row was saved yet: then run the same command again")
            return ClassifyStorageError(f"{problem}; {rows}")
        return exc

    def close(self) -> None:
        """End a run that stops before :meth:`finish` (an error, Ctrl-C): keep the rows saved for ``--resume`` and
        remove only what holds nothing (its segment without rows, the record of files being decoded, which did not
        kill it, the unfinished skip list), then release the lock. Idempotent; a cleanup that fails is logged."""
        if self.closed:
            return
        self.closed = True
        steps: list[Callable[[], None]] = [self.in_flight.settle]
        if self.segment is not None and self.files == 0:
            steps.append(lambda: self.segment.unlink(missing_ok=True))  # type: ignore[union-attr]
        if self.skip_list is not None:
            steps.append(self.skip_list.abort)
        steps.append(self.lock.release)
        for step in steps:
            try:
                step()
            except OSError as exc:
                logger.warning("cleaning up after the run stopped: %s", exc)

    def finish(self, start: float, provider: str, threads: int, workers: int) -> ClassifySummary:
        """Write ``cfg.out`` (atomically) from the segment :meth:`save` wrote (and the ``list_skipped`` file),
        remove the partial results this run wrote or merged, release the lock and return the summary; ``start`` is
        the run's :func:`time.perf_counter` at its start.

        Raises:
            EmptySourceError: no image file was found and ``cfg.allow_empty`` is false (nothing is written).
            RunInterrupted, ClassifyStorageError: as :meth:`save`; every row is then saved for ``--resume``.
            StorageReadError: some objects could not be read (``cannot read`` rows): ``cfg.out`` is written, the
                partial results are kept for ``--resume``, which reads those objects again; the summary is the
                exception's ``summary``.
        """
        cfg = self.cfg
        assert self.segment is not None, "save() must run first"
        errors = sum(self.reasons.values())
        duplicates: dict[str, list[str]] = {}
        try:
            self._check_found()
            if self.skip_list is not None:
                self.skip_list.commit()
            write_output(cfg.out, self.partial.rows(self.segment), self.classes, cfg.format, cfg.min_confidence,
                         cfg.topk, duplicates, sets=self.sets, unknown_threshold=self.unknown_threshold,
                         exclude_unknown=cfg.exclude_unknown)
            if cfg.embeddings is not None:
                write_embeddings(Path(cfg.embeddings), self.partial.rows(self.segment), self.files,
                                 self.info.embedding_dim)
        except BaseException as exc:
            stopped = self._stopped(exc, f"write {cfg.out} from them")
            if stopped is exc:
                raise
            raise stopped from exc
        if self.unread_count:  # kept: --resume reuses the other rows and reads the unread objects again
            self.close()
        else:
            self._discard()
        seconds = time.perf_counter() - start
        new = self.files - self.reused
        summary = ClassifySummary(
            out=Path(cfg.out), files=self.files, classified=self.files - errors, errors=errors,
            skipped=dict(self.skipped.counts), reused=self.reused, seconds=seconds,
            images_per_second=new / seconds if seconds > 0 else 0.0, provider=provider,
            error_reasons=dict(self.reasons), error_examples=tuple(self.examples), threads=threads, workers=workers,
            temperature=self.temperature, needs_review=self.review, min_confidence=cfg.min_confidence,
            duplicate_indexes=duplicates, runtime=self.runtime[0], inference_precision=self.runtime[1],
            read_errors=self.unread_count,
            skipped_list=Path(cfg.list_skipped) if cfg.list_skipped is not None else None,
            coverage=None if self.sets is None else self.sets.coverage, unclear_sets=self.unclear,
            unknown=self.unknown, unknown_checked=self.unknown_threshold is not None,
            embeddings=None if cfg.embeddings is None else Path(cfg.embeddings),
        )
        logger.debug(
            "%d image files: %d classified, %d errors, %d other files skipped, %d rows reused; "
            "%.1f s, %.1f images/s (%s)",
            summary.files,
            summary.classified,
            summary.errors,
            summary.skipped_total,
            self.reused,
            seconds,
            summary.images_per_second,
            provider,
        )
        if self.unread_count:
            n = self.unread_count
            shown = ", ".join(self.unread) + (f" and {n - len(self.unread)} more" if n > len(self.unread) else "")
            raise StorageReadError(
                f"{plural(n, 'object')} could not be read: {shown}; {'its row' if n == 1 else 'their rows'} in "
                f"{cfg.out} {'has' if n == 1 else 'have'} the error 'cannot read: ...'. When the storage works again, "
                f"run the same command with --resume to read {'it' if n == 1 else 'them'} again (the other rows are "
                "reused)", summary,
            )
        return summary



    def _check_found(self) -> None:
        """Refuse (or, with ``allow_empty``, warn about) a run that found no image file.

        Raises:
            EmptySourceError: no row and ``cfg.allow_empty`` is false.
        """
        if self.files:
            return
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.counts.items()))
        if not self.cfg.allow_empty:
            raise EmptySourceError(
                f"{self.cfg.folder}: no image files found{f' (skipped {skipped})' if skipped else ''}; nothing written "
                f"to {self.cfg.out}. Check SOURCE and --recursive, or pass --allow-empty to accept a results file "
                "without rows"
            )
        logger.warning("%s: no image files found; %s has no rows", self.cfg.folder, self.cfg.out)

    def _discard(self) -> None:
        """After the output is written: remove the segments of this run and of the earlier ones it superseded (a
        segment that appeared since this run started is another process's and stays), the record of files being
        decoded, the lock, and the partial folder when nothing else is left in it."""
        self.closed = True
        paths = [*self.earlier, self.segment, self.in_flight.path]
        try:
            for path in paths:
                path.unlink(missing_ok=True)  # type: ignore[union-attr]
        except OSError as exc:  # the output is complete: what is left only takes room
            logger.warning("%s is written, but its partial results could not all be removed: %s", self.cfg.out, exc)
        self.lock.release()


def __getattr__(name: str) -> Any:
    """``classify_folder``: the local engine (:func:`garmentcv.infer.engines.local.classify_folder`), imported from
    here as before; loaded on first use, as the engine imports this module."""
    if name == "classify_folder":
        from garmentcv.infer.engines.local import classify_folder

        return classify_folder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
