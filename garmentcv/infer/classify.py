"""``gcv-classify`` as a library function: every image below a folder -> one row each, safely.

The folder may also be a manifest or an object-storage prefix (:mod:`garmentcv.infer.sources`); this module
is the local engine, and :class:`ClassifyRun` (partial results, resume, final file, summary) is shared with the
Ray engine (:mod:`garmentcv.infer.ray_engine`), so both write the same rows in the same order.

Streaming: :func:`garmentcv.data.layouts.scan_images` yields files folder by folder in sorted order, rows
are written in that order as batches finish, so memory does not grow with the number of files (only with
the number of entries of the largest single folder, whose names are sorted: about 100 B each).

Nothing lost: rows go, flushed batch by batch, to numbered segment files ``run-NNN.jsonl`` in the folder
``<out>.partial`` (one JSON row per line, a header line first). Only when every file has a row is ``<out>``
written (atomically) from the last segment and the partial folder removed. After Ctrl-C or a kill,
``resume=True`` merges the rows of all segments of a run with the same model, folder and options (each is
sorted), reuses those of files still present and unchanged, and classifies the rest, writing a new complete
segment, so the final file is byte for byte the one an uninterrupted run writes (an image's probabilities do
not depend on its batch).

Unchanged means the same size and modification time (ns) as when the row was made: each partial row stores
them (``size``, ``mtime_ns``; the final output does not), so a file replaced between runs is classified again.
Reused rows flow through the pipeline in batches like new ones, in bounded memory.

A run without ``resume`` never deletes earlier partial results up front: it writes its own segment beside
them, and the whole partial folder is removed only when it completes. Interrupted as well, every segment is
still there for a later ``resume``; segments of a run with another model, folder or options are then ignored
with a warning (and refused when no segment matches).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from garmentcv.artifact import ModelInfo
from garmentcv.cli_utils import plural
from garmentcv.data.layouts import SkippedFile
from garmentcv.errors import GarmentCVError
from garmentcv.fsutil import check_writable_output, sha256_of
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH
from garmentcv.infer.pipeline import Prediction, predict_batches, split_cpus
from garmentcv.infer.rows import OutputFormat, Row, needs_review, require_pyarrow, sort_key, write_output
from garmentcv.infer.runtimes import Model, OpeningModel, open_planned, plan_runtime
from garmentcv.infer.sources import File, Source, open_source

logger = logging.getLogger(__name__)

_PARTIAL_FORMAT = "garmentcv-classify-partial"
_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
#: How many failed files a summary names (the rest are counted).
ERROR_EXAMPLES = 5


@dataclass(frozen=True)
class ClassifyConfig:
    """Settings of one ``gcv-classify`` run.

    Attributes:
        folder: what to classify: a folder of images, a manifest (``.txt``/``.lst``/``.csv``) or an
            object-storage prefix such as ``s3://bucket/photos/`` (see :mod:`garmentcv.infer.sources`).
        out: the results file.
        model: the GarmentCV ONNX file (classes and preprocessing are read from it).
        batch_size: images per model run.
        provider: ``auto``, ``cpu`` or ``cuda`` (see :mod:`garmentcv.infer.session`).
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


#: ``ClassifyConfig.calibration`` values.
CALIBRATIONS = ("temperature", "none")


class ClassifyUsageError(GarmentCVError, ValueError):
    """Options that do not go together (exit code 2, like click's usage errors)."""

    exit_code = 2


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

    @property
    def skipped_total(self) -> int:
        """All files passed over."""
        return sum(self.skipped.values())


class _SkipCounter(list):  # type: ignore[type-arg]
    """A stand-in for scan_images' ``skipped`` list that counts reasons without keeping the paths."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def append(self, item: SkippedFile) -> None:  # type: ignore[override]
        self.counts[item.reason] += 1


class _Partial:
    """The ``<out>.partial`` folder of segment files (see the module docstring)."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        self.dir = out.with_name(out.name + ".partial")
        self.header = header

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("run-*.jsonl")) if self.dir.is_dir() else []

    def discard(self) -> None:
        for segment in self.segments():
            segment.unlink()
        if self.dir.is_dir():
            self.dir.rmdir()

    @staticmethod
    def header_of(segment: Path) -> dict[str, Any] | None:
        """The header of a segment; ``None`` when it is empty or torn (killed as it started)."""
        with segment.open(**_ENCODING) as handle:
            first = handle.readline()
        try:
            header = json.loads(first) if first.endswith("\n") else None
        except json.JSONDecodeError:
            return None
        return header if isinstance(header, dict) else None

    def rows(self, segment: Path) -> Iterator[Row]:
        """Complete rows of one segment, header skipped; stops at a torn last line (a kill mid-write)."""
        with segment.open(**_ENCODING) as handle:
            handle.readline()
            for line in handle:
                if not line.endswith("\n"):
                    return
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return

    def previous_rows(self, segments: list[Path]) -> Iterator[Row]:
        """Rows of ``segments`` merged in row order (duplicates possible, rows of one path adjacent)."""
        return heapq.merge(*(self.rows(s) for s in segments), key=lambda r: sort_key(r["path"]))

    def reusable(self, resume: bool) -> list[Path]:
        """The segments whose rows a run may reuse: with ``resume``, those made with this run's header.

        Raises:
            GarmentCVError: ``resume`` and every segment with rows is of another model, folder or options.
        """
        segments = self.segments()
        if not segments:
            return []
        if not resume:
            logger.warning(
                "%s holds partial results of an earlier run; they are kept until this run completes "
                "(use --resume to reuse them)", self.dir,
            )
            return []
        headers = {s: self.header_of(s) for s in segments}
        matching = [s for s in segments if headers[s] == self.header]
        others = [s for s in segments if headers[s] is not None and headers[s] != self.header]
        if others and not matching:
            raise GarmentCVError(
                f"{others[0]}: partial results of a run with another model, folder or options; run with the "
                f"same ones, or without --resume to start again ({self.dir} is removed when that run completes)"
            )
        if others:
            logger.warning("ignoring %s of a run with another model, folder or options in %s",
                           plural(len(others), "partial segment"), self.dir)
        return matching

    def new_segment(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        segments = self.segments()
        number = int(segments[-1].stem.split("-")[1]) + 1 if segments else 0
        return self.dir / f"run-{number:03d}.jsonl"


class _Reuse:
    """Merge-join of the sorted previous rows against the sorted stream of files."""

    def __init__(self, rows: Iterator[Row]) -> None:
        self.rows = rows
        self.head = next(rows, None)

    def take(self, key: tuple[str, ...]) -> list[Row]:
        """The previous rows of the path with ``key`` (several after repeated interruptions), oldest first."""
        while self.head is not None and sort_key(self.head["path"]) < key:
            self.head = next(self.rows, None)
        found = []
        while self.head is not None and sort_key(self.head["path"]) == key:
            found.append(self.head)
            self.head = next(self.rows, None)
        return found


def _reason_kind(reason: str) -> str:
    """The kind of a decode failure, e.g. ``truncated file`` or ``oversized`` (the text before any colon)."""
    return reason.split(":", 1)[0]


def open_checked_source(cfg: ClassifyConfig) -> Source:
    """The run's source, after the checks every engine makes before any work.

    Raises:
        PathNotFoundError: a local source that does not exist.
        DatasetError: a file that is not a manifest.
        ClassifyUsageError: see :func:`check_options`.
        OutputPathError: ``cfg.out`` cannot be written.
        MissingRuntimeError: parquet or an object store without pyarrow.
    """
    source = open_source(cfg.folder)
    check_options(cfg.format, cfg.min_confidence, cfg.topk, cfg.calibration)
    check_writable_output(cfg.out, "--out")
    return source


class ClassifyRun:
    """One run's bookkeeping, shared by the local engine and the Ray engine (:mod:`garmentcv.infer.ray_engine`):
    the partial results (resume), the stream of files to do, the rows saved, the final file and the summary.

    Use: :meth:`items` gives ``(file or None, row)`` in row order (``None``: a row reused from an interrupted
    run); an engine classifies the files and hands lists of :class:`~garmentcv.infer.pipeline.Prediction`
    (in the same order) to :meth:`save`; :meth:`finish` writes ``cfg.out`` and returns the summary.
    """

    def __init__(self, cfg: ClassifyConfig, source: Source, info: ModelInfo,
                 runtime: tuple[str, str] = ("onnxruntime", "")) -> None:
        """``runtime``: the runtime and inference precision that compute the rows (``("openvino", "bf16")``;
        an empty precision means the file's).

        Raises: ClassifyUsageError (``topk`` above the number of classes); GarmentCVError (``resume`` with
        partial results of another model, source or options)."""
        self.cfg = cfg
        self.runtime = (runtime[0], runtime[1] or info.precision)
        self.source = source
        self.classes = list(info.classes)
        if cfg.topk is not None and cfg.topk > len(self.classes):
            raise ClassifyUsageError(f"--topk {cfg.topk}: the model {cfg.model} has only "
                                     f"{plural(len(self.classes), 'class')}; give at most {len(self.classes)}")
        self.temperature = info.applied_temperature if cfg.calibration == "temperature" else 1.0
        if cfg.calibration == "temperature" and info.temperature is None:
            logger.info("%s has no fitted temperature (%s): using the raw softmax", cfg.model,
                        info.temperature_note or "exported before calibration")
        self.header = {
            "format": _PARTIAL_FORMAT,
            "folder": source.identity,
            "recursive": cfg.recursive,
            "model_sha256": sha256_of(cfg.model),
            "classes": self.classes,
            "temperature": self.temperature,
            # rows of another runtime or inference precision (bf16) differ in the last digits: never mixed by --resume
            "runtime": list(self.runtime),
        }
        self.partial = _Partial(Path(cfg.out), self.header)
        self.reuse: _Reuse | None = None
        reusable = self.partial.reusable(cfg.resume)
        if reusable:
            self.reuse = _Reuse(self.partial.previous_rows(reusable))
            logger.info("resuming from the partial results in %s", self.partial.dir)
        self.skipped = _SkipCounter()
        self.files = self.reused = self.review = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []
        self.segment: Path | None = None

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

        A row is reused when its file is still listed with the same size and modification time (ns).
        """
        reuse = self.reuse
        for entry in self.source.entries(self.cfg.recursive, self.skipped):
            candidates = reuse.take(sort_key(entry.name)) if reuse else []
            previous = next((r for r in candidates if entry.size is not None and r.get("size") == entry.size
                             and r.get("mtime_ns") == entry.mtime_ns), None)
            if previous is not None:
                yield None, previous
            else:
                yield entry.file, {"path": entry.name, "size": entry.size, "mtime_ns": entry.mtime_ns}

    def save(self, batches: Iterable[list[Prediction[Row]]], on_batch: Callable[[int], None] | None = None,
             progress: Callable[[int], None] | None = None) -> None:
        """Write the rows of ``batches`` to a new segment of the partial results, flushed batch by batch.

        Args:
            batches: predictions in row order; ``passed`` ones are reused rows, the others get label, probs, error.
            on_batch: called after each batch with the number of rows saved so far in this run.
            progress: called with the number of rows classified (not reused) in each batch.

        Raises:
            KeyboardInterrupt: passed on after the rows so far are saved.
        """
        classes, min_confidence = self.classes, self.cfg.min_confidence
        self.segment = self.partial.new_segment()
        try:
            with self.segment.open("w", **_ENCODING) as handle:
                handle.write(json.dumps(self.header) + "\n")
                for predictions in batches:
                    lines = []
                    for p in predictions:
                        row = p.item
                        if p.passed:
                            self.reused += 1
                            if row["error"]:
                                self.reasons[_reason_kind(row["error"])] += 1
                        elif p.error is not None:
                            row.update(label=None, probs=None, error=p.error)
                            self.reasons[_reason_kind(p.error)] += 1
                        else:
                            probs = p.probs  # an ndarray whenever error is None and not passed
                            row.update(label=classes[int(probs.argmax())], probs=probs.tolist(), error=None)  # type: ignore[union-attr]
                        if needs_review(row["probs"], min_confidence):
                            self.review += 1
                        if row["error"] and len(self.examples) < ERROR_EXAMPLES:
                            self.examples.append(row["path"])
                        lines.append(json.dumps(row) + "\n")
                    handle.write("".join(lines))
                    handle.flush()
                    self.files += len(predictions)
                    if progress is not None:
                        progress(sum(not p.passed for p in predictions))
                    if on_batch is not None:
                        on_batch(self.files)
        except KeyboardInterrupt:
            logger.warning("interrupted: %d rows saved in %s; run again with --resume to finish", self.files,
                           self.partial.dir)
            raise

    def finish(self, start: float, provider: str, threads: int, workers: int) -> ClassifySummary:
        """Write ``cfg.out`` (atomically) from the segment :meth:`save` wrote, remove the partial results and
        return the summary; ``start`` is the run's :func:`time.perf_counter` at its start."""
        cfg = self.cfg
        assert self.segment is not None, "save() must run first"
        errors = sum(self.reasons.values())
        duplicates: dict[str, list[str]] = {}
        write_output(cfg.out, self.partial.rows(self.segment), self.classes, cfg.format, cfg.min_confidence, cfg.topk,
                     duplicates)
        self.partial.discard()
        seconds = time.perf_counter() - start
        new = self.files - self.reused
        summary = ClassifySummary(
            out=Path(cfg.out), files=self.files, classified=self.files - errors, errors=errors,
            skipped=dict(self.skipped.counts), reused=self.reused, seconds=seconds,
            images_per_second=new / seconds if seconds > 0 else 0.0, provider=provider,
            error_reasons=dict(self.reasons), error_examples=tuple(self.examples), threads=threads, workers=workers,
            temperature=self.temperature, needs_review=self.review, min_confidence=cfg.min_confidence,
            duplicate_indexes=duplicates, runtime=self.runtime[0], inference_precision=self.runtime[1],
        )
        logger.debug(
            "%d image files: %d classified, %d errors, %d other files skipped, %d rows reused; %.1f s, %.1f images/s (%s)",
            summary.files, summary.classified, summary.errors, summary.skipped_total, self.reused, seconds,
            summary.images_per_second, provider,
        )
        return summary


def classify_folder(cfg: ClassifyConfig, on_batch: Callable[[int], None] | None = None) -> ClassifySummary:
    """Classify every image of ``cfg.folder`` (a folder, a manifest or an object-storage prefix,
    :mod:`garmentcv.infer.sources`) into ``cfg.out`` on this machine; see the module docstring.

    Args:
        cfg: the run's settings.
        on_batch: called after each batch is saved to the partial results with the number of rows saved so
            far in this run (progress hooks; tests use it to interrupt a run).

    Raises:
        PathNotFoundError: the source does not exist (exit code 2).
        DatasetError: the source is not a folder or manifest, or cannot be listed.
        OutputPathError: ``cfg.out`` cannot be written (checked before any other work).
        ModelFileNotFoundError: the model file does not exist.
        ModelFileError: the model file is unreadable or lacks GarmentCV metadata.
        ProviderError: ``cuda`` asked for but not usable.
        RuntimeUnavailableError: ``openvino`` asked for but not installed or not able to run the file.
        GarmentCVError: ``resume`` with partial results from another model, folder or options.
        ClassifyUsageError: see :func:`check_options`; ``topk`` above the model's number of classes.
        KeyboardInterrupt: passed on after the partial results are saved.
    """
    start = time.perf_counter()
    source = open_checked_source(cfg)
    threads, workers = split_cpus(cfg.threads, cfg.workers)
    plan = plan_runtime(cfg.model, cfg.runtime, cfg.provider)
    model: Model
    if cfg.resume:  # partial results are matched against the runtime that really runs (auto may fall back)
        model = open_planned(plan, threads)
    else:  # the first batches decode while the model opens (see OpeningModel)
        model = OpeningModel(plan, threads)
    rows_runtime = (model.runtime, model.inference_precision) if cfg.resume else plan.rows_runtime
    run = ClassifyRun(cfg, source, plan.info, rows_runtime)
    bar = tqdm(desc="classify", unit="img", file=sys.stderr, disable=None if cfg.progress else True, dynamic_ncols=True)
    try:
        batches = predict_batches(model, run.items(), cfg.batch_size, workers, temperature=run.temperature)
        first = next(batches, None)  # the model is open after the first batch: errors opening it come before any output
        run.ran_on((model.runtime, model.inference_precision))
        run.save(itertools.chain([] if first is None else [first], batches), on_batch, progress=bar.update)
    finally:
        bar.close()
    return run.finish(start, model.provider, threads, workers)
