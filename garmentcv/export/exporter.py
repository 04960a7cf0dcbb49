"""``export_checkpoint``: a GarmentCV checkpoint -> one self-describing, parity-checked ONNX file.

Order of work: resolve and validate the checkpoint and the output path (cheap failures first), read the
validation (and for INT8 the calibration) images through the shared preprocessing, trace FP32, check it
against PyTorch, convert to the requested precision, gate it, then write the file atomically and check the
written file (batch sizes, determinism, metadata) before it replaces ``out``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import garmentcv
from garmentcv.artifact import PRECISIONS, ModelInfo
from garmentcv.data.layouts import load_dataset, scan_images
from garmentcv.errors import CheckpointError, ExportError, ImageDecodeError
from garmentcv.export import checks, convert
from garmentcv.fsutil import atomic_path, sha256_of
from garmentcv.image import Preprocessing, load_input
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH, read_model_info
from garmentcv.metrics import classification_metrics
from garmentcv.models.registry import build_model
from garmentcv.train.checkpoint import load_checkpoint
from garmentcv.train.cli import RUNS_DIR

logger = logging.getLogger(__name__)

#: Batch size of the traced example; the checks run other batch sizes to prove the axis dynamic.
TRACE_BATCH = 2
#: Training metrics copied into the file's metadata.
_METRIC_KEYS = ("epoch", "accuracy", "precision", "recall", "f1", "confusion_matrix", "count", "val_loss")


@dataclass(frozen=True)
class ExportConfig:
    """What ``gcv-export`` does.

    Attributes:
        checkpoint: a ``best.pt``/``last.pt``; ``None`` takes the best checkpoint of the newest run under
            ``runs_dir`` (see :func:`find_latest_checkpoint`).
        out: the ``.onnx`` file to write (replaced atomically).
        precision: ``fp32``, ``fp16`` or ``int8``.
        opset: default-domain ONNX opset; the export fails rather than write another.
        val_data: images for parity and accuracy (labelled folder or ``path,label`` CSV); ``None`` uses the
            run's ``val.csv`` beside the checkpoint (``RUN/<arch>/best.pt`` -> ``RUN/val.csv``).
        val_images: at most this many validation images (a seeded random subset); 0 uses all.
        calibration_data: INT8 calibration images (any image folder or ``path,label`` CSV); ``None`` uses
            the run's ``train.csv``.
        calibration_images: at most this many calibration images (a seeded random subset).
        max_accuracy_drop: INT8 may lose at most this many accuracy points (0..100 scale) against FP32.
        batch_size: images per inference batch in the checks.
        runs_dir: where gcv-train's run folders are looked for when ``checkpoint`` is ``None``.
    """

    checkpoint: Path | None = None
    out: Path = DEFAULT_MODEL_PATH
    precision: str = "fp32"
    opset: int = convert.DEFAULT_OPSET
    val_data: Path | None = None
    val_images: int = 0
    calibration_data: Path | None = None
    calibration_images: int = 200
    max_accuracy_drop: float = 1.0
    batch_size: int = 32
    runs_dir: Path = RUNS_DIR


@dataclass(frozen=True)
class ExportResult:
    """What was written and how it measured.

    Attributes:
        out: the file written.
        checkpoint: the checkpoint exported.
        info: the metadata written into the file.
        size_mb: file size in MB (10^6 bytes).
        parity: the written file's logits against PyTorch's on the validation images.
        fp32_parity: the FP32 graph against PyTorch (the same as ``parity`` for an FP32 export).
        fp32_accuracy: top-1 accuracy of the FP32 graph on the validation images, 0..1.
        accuracy: top-1 accuracy of the written file on the same images, 0..1.
        accuracy_drop: ``100 * (fp32_accuracy - accuracy)``, accuracy points.
        val_images: validation images used; ``skipped_images`` could not be decoded.
        calibration_images: calibration images used (INT8), else 0.
        seconds: wall time of the export, s.
    """

    out: Path
    checkpoint: Path
    info: ModelInfo
    size_mb: float
    parity: checks.Parity
    fp32_parity: checks.Parity
    fp32_accuracy: float
    accuracy: float
    accuracy_drop: float
    val_images: int
    calibration_images: int
    skipped_images: int
    seconds: float


@dataclass(frozen=True)
class Images:
    """Preprocessed images: ``inputs`` float32 ``(N, 3, H, W)``, their files and class indices (-1: unlabelled)."""

    inputs: np.ndarray
    files: tuple[str, ...]
    targets: np.ndarray
    skipped: int


def find_latest_checkpoint(runs_dir: Path = RUNS_DIR) -> Path:
    """The ``best.pt`` of the newest run folder under ``runs_dir`` (names are ``YYYYmmdd-HHMMSS``).

    When that run trained several archs, the one with the highest validation accuracy is taken (ties: the
    first in name order) and the choice is logged.

    Raises:
        ExportError: no run folder with a ``<arch>/best.pt`` under ``runs_dir``.
    """
    runs = sorted(d for d in runs_dir.glob("*") if d.is_dir() and any(d.glob("*/best.pt"))) if runs_dir.is_dir() else []
    if not runs:
        raise ExportError(
            f"no checkpoint given and no run folder with <arch>/best.pt under {runs_dir}; train one with "
            "'gcv-train DATA' or pass the checkpoint: 'gcv-export RUN/<arch>/best.pt'"
        )
    candidates = sorted(runs[-1].glob("*/best.pt"))
    if len(candidates) == 1:
        return candidates[0]
    scored = [(float(load_checkpoint(c)["metrics"].get("accuracy", -1.0)), c) for c in candidates]
    best = max(scored, key=lambda item: item[0])  # max keeps the first of equal scores
    logger.info(
        "run %s has %d archs; taking the best validation accuracy: %s",
        runs[-1], len(candidates), ", ".join(f"{c.parent.name} {a:.4f}" for a, c in scored),
    )  # fmt: skip
    return best[1]


def _check_out(out: Path, checkpoint: Path) -> None:
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"--out {out}: give a file name ending in .onnx")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file name ending in .onnx")
    if out.resolve() == checkpoint.resolve():
        raise ExportError(f"--out {out} would overwrite the checkpoint; choose another file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot create folder {out.parent} ({exc.strerror}); choose a writable place") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: folder {out.parent} is not writable; choose a writable place")


def _restore_model(state: dict[str, Any], path: Path) -> nn.Module:
    built = build_model(state["arch"], len(state["classes"]), "none")
    try:
        built.model.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: its weights do not fit {state['arch']} with {len(state['classes'])} classes ({exc})") from exc
    return built.model.eval()


def _source_paths(source: Path, classes: Sequence[str], labelled: bool) -> list[tuple[Path, int]]:
    """``(path, class index)`` pairs of a labelled dataset, or of any image folder when not ``labelled``."""
    if not labelled and source.is_dir():
        return [(p, -1) for p in scan_images(source)]
    dataset = load_dataset(source, "csv" if source.suffix.lower() == ".csv" else None)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({s.label for s in dataset.samples} - set(index))
    if unknown and labelled:
        raise ExportError(f"{source}: labels {unknown} are not among the model's classes {list(classes)}")
    return [(s.path, index.get(s.label, -1)) for s in dataset.samples]


def load_images(
    source: Path, pp: Preprocessing, classes: Sequence[str], limit: int, labelled: bool, what: str, progress: bool = True
) -> Images:
    """Decode and preprocess up to ``limit`` images (0: all; a seeded random subset otherwise) of ``source``.

    Undecodable images are skipped with a warning and counted.

    Raises:
        ExportError: no image could be read; labels outside ``classes`` (when ``labelled``).
        DatasetError: ``source`` is not a readable dataset.
    """
    pairs = _source_paths(source, classes, labelled)
    if limit and len(pairs) > limit:
        keep = np.sort(np.random.default_rng(0).permutation(len(pairs))[:limit])
        pairs = [pairs[i] for i in keep]
    inputs, files, targets, skipped = [], [], [], 0
    for path, target in tqdm(pairs, desc=what, unit="img", leave=False, file=sys.stderr, disable=None if progress else True):
        try:
            inputs.append(load_input(path, pp))
        except ImageDecodeError as exc:
            logger.warning("skipping %s", exc)
            skipped += 1
            continue
        files.append(str(path))
        targets.append(target)
    if not inputs:
        raise ExportError(f"{source}: none of {len(pairs)} {what} image(s) could be read")
    logger.info("%s: %d image(s) from %s%s", what, len(inputs), source, f" ({skipped} unreadable)" if skipped else "")
    return Images(np.stack(inputs), tuple(files), np.asarray(targets), skipped)


def _data_source(given: Path | None, checkpoint: Path, manifest: str, option: str) -> Path:
    if given is not None:
        return given
    source = checkpoint.parent.parent / manifest
    if not source.is_file():
        raise ExportError(
            f"{source} not found: the checkpoint is not inside its gcv-train run folder (RUN/<arch>/best.pt beside "
            f"RUN/{manifest}); pass {option} with a folder or path,label CSV of images"
        )
    return source


@torch.inference_mode()
def torch_logits(model: nn.Module, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """PyTorch logits ``(N, C)`` float32 of ``model`` in eval mode for inputs ``(N, 3, H, W)`` float32."""
    model.eval()
    parts = [model(torch.from_numpy(inputs[i : i + batch_size])).numpy() for i in range(0, len(inputs), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def _accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    return classification_metrics(targets, logits.argmax(axis=1), logits.shape[1]).accuracy


def export_checkpoint(cfg: ExportConfig, progress: bool = True) -> ExportResult:
    """Export a checkpoint to one self-contained ONNX file at ``cfg.precision`` and check it before success.

    Gates, in order: the requested opset; the ONNX checker; no random or dropout nodes; FP32 against PyTorch
    on the validation images (largest logit difference <= :data:`checks.FP32_TOLERANCE`, same top-1 for every
    image); FP16 against PyTorch (<= :data:`checks.FP16_TOLERANCE`); INT8 accuracy at most
    ``cfg.max_accuracy_drop`` points below FP32; then on the written file: batch sizes 1 and 3 (traced at 2),
    two identical runs, rows independent of their batch, metadata read back equal. ``cfg.out`` is replaced
    only when every gate passes.

    Raises:
        CheckpointError: missing, truncated, foreign or newer-format checkpoint; weights that do not fit.
        UnknownArchError: the checkpoint's arch is not registered.
        DatasetError: validation or calibration data cannot be read.
        ExportError: an unwritable output path, or a failed gate (the message gives the figures).
    """
    started = time.perf_counter()
    if cfg.precision not in PRECISIONS:
        raise ExportError(f"unknown precision {cfg.precision!r}; choose one of {', '.join(PRECISIONS)}")
    checkpoint = cfg.checkpoint if cfg.checkpoint is not None else find_latest_checkpoint(cfg.runs_dir)
    if cfg.checkpoint is None:
        logger.info("no checkpoint given; using the newest run's %s", checkpoint)
    _check_out(cfg.out, checkpoint)
    state = load_checkpoint(checkpoint)
    classes = tuple(state["classes"])
    pp = Preprocessing.from_dict(state["preprocessing"])
    model = _restore_model(state, checkpoint)

    val_source = _data_source(cfg.val_data, checkpoint, "val.csv", "--val-data")
    val = load_images(val_source, pp, classes, cfg.val_images, True, "validation", progress)
    calibration: Images | None = None
    if cfg.precision == "int8":
        cal_source = _data_source(cfg.calibration_data, checkpoint, "train.csv", "--calibration-data")
        calibration = load_images(cal_source, pp, classes, cfg.calibration_images, False, "calibration", progress)

    example = torch.from_numpy(np.resize(val.inputs, (TRACE_BATCH, *val.inputs.shape[1:])))
    fp32 = convert.trace_to_onnx(model, example, cfg.opset)
    convert.check_graph(fp32)
    reference = torch_logits(model, val.inputs, cfg.batch_size)
    fp32_logits = checks.run_logits(checks.open_session(fp32.SerializeToString()), val.inputs, cfg.batch_size)
    fp32_parity = checks.compare(reference, fp32_logits, val.files, checks.FP32_TOLERANCE)
    checks.require_parity(fp32_parity, "FP32")
    fp32_accuracy = _accuracy(fp32_logits, val.targets)

    final = convert.convert(fp32, cfg.precision, None if calibration is None else calibration.inputs)
    logits = checks.run_logits(checks.open_session(final.SerializeToString()), val.inputs, cfg.batch_size)
    tolerance = {"fp32": checks.FP32_TOLERANCE, "fp16": checks.FP16_TOLERANCE, "int8": None}[cfg.precision]
    parity = checks.compare(reference, logits, val.files, tolerance)
    checks.require_parity(parity, cfg.precision.upper())
    accuracy = _accuracy(logits, val.targets)
    drop = 100.0 * (fp32_accuracy - accuracy)
    if cfg.precision == "int8":
        drop = checks.require_accuracy_drop(fp32_accuracy, accuracy, cfg.max_accuracy_drop, "INT8")

    trained = {k: state["metrics"][k] for k in _METRIC_KEYS if k in state["metrics"]}
    info = ModelInfo(
        arch=state["arch"], classes=classes, preprocessing=pp, precision=cfg.precision,
        weights_source=str(state["weights_source"]),
        metrics={**trained, "export": {"images": len(val.files), "accuracy": accuracy, "fp32_accuracy": fp32_accuracy,
                                       "max_abs_logit_diff": parity.max_abs_diff}},
        checkpoint_sha256=sha256_of(checkpoint), garmentcv_version=garmentcv.__version__, opset=cfg.opset,
    )  # fmt: skip
    convert.finalize(final, info)
    convert.check_graph(final)
    convert.check_opset(final, cfg.opset)
    try:
        with atomic_path(cfg.out) as tmp:
            convert.save_model(final, tmp)
            session = checks.open_session(tmp)
            check_rows = min(len(val.inputs), 8)
            checks.check_batch_behaviour(
                session, val.inputs[:check_rows], logits[:check_rows], checks.BATCH_TOLERANCE[cfg.precision], TRACE_BATCH
            )
            if read_model_info(tmp) != info:
                raise ExportError(f"the metadata read back from {tmp} differs from what was written")
            size_mb = tmp.stat().st_size / 1e6
    except OSError as exc:
        raise ExportError(f"cannot write {cfg.out}: {exc}") from exc
    logger.info("wrote %s (%.1f MB, %s, opset %d)", cfg.out, size_mb, cfg.precision, cfg.opset)
    return ExportResult(
        out=cfg.out, checkpoint=checkpoint, info=info, size_mb=size_mb, parity=parity, fp32_parity=fp32_parity,
        fp32_accuracy=fp32_accuracy, accuracy=accuracy, accuracy_drop=drop, val_images=len(val.files),
        calibration_images=0 if calibration is None else len(calibration.files),
        skipped_images=val.skipped, seconds=time.perf_counter() - started,
    )  # fmt: skip
