"""``export_checkpoint``: a GarmentCV checkpoint -> one self-describing, parity-checked ONNX file.

Order of work: resolve and validate the checkpoint and the output path (cheap failures first), trace FP32,
convert to the requested precision (INT8: calibration images streamed batch by batch), then one pass over
the validation images through the shared preprocessing that keeps only logits (PyTorch, the FP32 graph, the
converted graph: ``N x C`` each), file names and targets, never the images; gate both graphs, fit the
temperature of calibrated probabilities on the written graph's logits of the same images (minimum NLL, where the
images can fit one: :func:`garmentcv.calibration.decide_temperature`; stored in the metadata, the logits output
unchanged), gate each (runtime, inference precision) pair the file may run at against FP32
(:mod:`garmentcv.export.runtime_gates`), join an unknown-item detector when asked (and gate OpenVINO's ``ood_score``
of the joined graph against onnxruntime's), then write the file atomically and check the written file (batch sizes,
determinism, metadata) before it replaces ``out``.
Memory therefore grows with the number of validation images only by ``3 x C`` floats per image (``3 x (C + D)``
with the ``embedding`` output of ``D`` features, and ``3 x C x h x w`` more with the ``cam`` output's maps).

Prediction sets (:mod:`garmentcv.conformal`) need held-out images that nothing else was fitted on: the temperature
is a parameter fitted on the validation images, and scores computed with it on those same images are no longer
exchangeable with a new image's. So when ``coverage`` is set and the validation images are enough, they are split
deterministically (:func:`split_held_out`: within each class, alternate images in file order): the temperature is
fitted on one part, the conformal threshold on the other. With too few images for the coverage asked, no sets are
fitted, the temperature uses every image as before, and the metadata says why.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

import garmentcv
from garmentcv.artifact import (
    CAM_NAME,
    EMBEDDING_NAME,
    INPUT_FORMATS,
    INPUT_UINT8,
    INT8_ACTIVATIONS,
    OOD_SCORE_NAME,
    OUTPUT_NAME,
    PRECISIONS,
    ModelInfo,
    Quantization,
    ReducedPrecisionCheck,
    RuntimeGate,
    UnknownDetector,
)
from garmentcv.calibration import (
    CalibrationFigures,
    calibration_figures,
    decide_temperature,
    softmax,
)
from garmentcv.conformal import (
    DEFAULT_COVERAGE,
    METHODS,
    ConformalFitError,
    ConformalPredictor,
    fit_conformal,
    min_images,
)
from garmentcv.data.layouts import load_dataset, scan_images
from garmentcv.errors import (
    CheckpointError,
    ExportError,
    ImageDecodeError,
    PathNotFoundError,
)
from garmentcv.export import checks, convert, runtime_gates, unknown_output
from garmentcv.export.cam import WithCam, check_cam
from garmentcv.export.embedding import WithEmbedding, check_same_logits
from garmentcv.export.uint8_input import Uint8Input
from garmentcv.fsutil import atomic_path, check_writable_output, sha256_of
from garmentcv.image import Preprocessing, load_crop, load_input
from garmentcv.infer import runtimes
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH, read_model_info
from garmentcv.metrics import classification_metrics
from garmentcv.models.registry import build_model, get_spec
from garmentcv.paths import RUNS_DIR
from garmentcv.text import plural
from garmentcv.train.checkpoint import load_checkpoint
from garmentcv.unknowns import scores as unknown_scores

logger = logging.getLogger(__name__)

#: Batch size of the traced example; the checks run other batch sizes to prove the axis dynamic.
TRACE_BATCH = 2
#: Rows of the validation set kept (as inputs) for the written file's batch-size and determinism checks.
CHECK_ROWS = 8
#: Training metrics copied into the file's metadata.
_METRIC_KEYS = ("epoch", "accuracy", "precision", "recall", "f1", "confusion_matrix", "count", "val_loss")


@dataclass(frozen=True)
class ExportConfig:
    """What ``gcv export`` does.

    Attributes:
        checkpoint: a ``best.pt``/``last.pt``; ``None`` takes the best checkpoint of the newest run under
            ``runs_dir`` (see :func:`find_latest_checkpoint`).
        out: the ``.onnx`` file to write (replaced atomically).
        precision: ``fp32``, ``fp16`` or ``int8``.
        opset: default-domain ONNX opset; the export fails rather than write another.
        val_data: images for parity and accuracy (labelled folder or ``path,label`` CSV); ``None`` uses the
            run's ``val.csv`` beside the checkpoint (``RUN/<arch>/best.pt`` -> ``RUN/val.csv``).
        val_images: at most this many validation images (a seeded random subset); 0 uses all.
        calibration_data: INT8 only: the images that set the activation ranges (onnxruntime's MinMax
            calibrator; any image folder or ``path,label`` CSV; gcv export's ``--quantization-data``); ``None``
            uses the run's ``train.csv``. Not the temperature, which is fitted on the validation images.
        calibration_images: at most this many of those images (a seeded random subset;
            ``--quantization-images``).
        max_accuracy_drop: FP16 and INT8 may lose at most this many accuracy points (0..100 scale) against
            FP32 on the validation images.
        int8_activations: INT8 activation type: ``uint8`` (U8S8, fastest on CPUs with VNNI) or ``int8``
            (S8S8, safe on CPUs without VNNI).
        batch_size: images decoded and run at a time, in the checks and the INT8 ranges; bounds memory.
        runs_dir: where gcv train's run folders are looked for when ``checkpoint`` is ``None``.
        input_format: ``uint8-nhwc`` (format 2: uint8 crops in, normalisation in the graph; the default) or
            ``float32-nchw`` (format 1: normalised float32, readable by releases before format 2); see
            :mod:`garmentcv.artifact`.
        bf16_check: ``auto`` gates OpenVINO's bf16 (:mod:`garmentcv.export.runtime_gates`) where OpenVINO and a
            CPU with native bf16 are present; ``off`` skips that pair (OpenVINO at f32 is gated whenever OpenVINO
            is installed). Each result is recorded in the file.
        embedding: add the ``embedding`` output (the pooled features the head takes, float32 ``(N, D)``), gated
            like the logits by cosine similarity (:data:`garmentcv.export.checks.EMBEDDING_MIN_COSINE`).
        cam: add the ``cam`` output, class activation maps float32 ``(N, C, h, w)`` (Zhou et al. 2016,
            :mod:`garmentcv.export.cam`), and with it the ``embedding`` output; gated like the embedding by per-image
            cosine similarity (:data:`garmentcv.export.checks.CAM_MIN_COSINE`). Only for networks that end in global
            average pooling and one linear head; others are refused with the reason.
        coverage: fit prediction sets with this coverage (``1 - alpha``, :mod:`garmentcv.conformal`) on held-out
            validation images the temperature is not fitted on; ``None``: no sets.
        conformal_method: the sets' score, ``lac`` or ``aps``.
        class_conditional: one threshold per class (coverage per class; needs enough images of every class).
        unknown_score: add an unknown-item detector with this score method (:data:`garmentcv.unknowns.scores.METHODS`)
            as the ``ood_score`` output, computed in the graph (:mod:`garmentcv.export.unknown_output`); ``None``:
            none.
        unknown_recall: the detector's threshold keeps this share of the validation images (in-distribution
            recall).
        unknown_data: images of the classes its reference data (class means, a bank of embeddings) is fitted on
            (folder or ``path,label`` CSV); ``None`` uses the run's ``train.csv``.
        unknown_images: at most this many of those images (a seeded random subset).
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
    int8_activations: str = "uint8"
    batch_size: int = 32
    runs_dir: Path = RUNS_DIR
    input_format: str = INPUT_UINT8
    bf16_check: str = "auto"
    embedding: bool = False
    cam: bool = False
    coverage: float | None = DEFAULT_COVERAGE
    conformal_method: str = "lac"
    class_conditional: bool = False
    unknown_score: str | None = None
    unknown_recall: float = 0.95
    unknown_data: Path | None = None
    unknown_images: int = 2000


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
        calibration_images: images that set the INT8 activation ranges, else 0.
        seconds: wall time of the export, s.
        temperature: the temperature fitted on the validation images and stored in the file (see
            :mod:`garmentcv.calibration`); ``None``: none stored (consumers use the raw softmax), see
            ``temperature_note``.
        uncalibrated: ECE, NLL and Brier score of the written file's raw softmax on the validation images.
        calibrated: the same with ``softmax(logits / temperature)`` (fitted on these very images, so an
            optimistic figure; ``gcv evaluate`` on other images gives the honest one); ``None`` without a temperature.
        temperature_note: why no temperature is stored (``""`` when one is).
        runs_on: what ``gcv classify --runtime auto`` chooses for the file on this machine's CPU, and why.
        embedding_parity: the written file's ``embedding`` against PyTorch's (``None`` without one).
        cam_parity: the written file's ``cam`` against PyTorch's (``None`` without one).
        conformal: the prediction sets fitted (``None``: none, see ``conformal_note``).
        conformal_note: why none were fitted (``""`` when they were, or were not asked for).
        unknown_score_diff: with a detector: the largest difference of the file's ``ood_score`` from the numpy
            score of its own outputs, per unit of ``max(1, |score|)``; ``None`` without one.
        openvino_score_diff: with a detector and OpenVINO: by OpenVINO inference precision (``f32``, ``bf16``), the
            largest absolute difference of OpenVINO's ``ood_score`` from onnxruntime's of the written file on the
            validation images (also in that pair's :class:`~garmentcv.artifact.RuntimeGate`, which fails past
            :func:`garmentcv.export.runtime_gates.score_bound`); empty otherwise.
        unknown_flag_changes: by the same precisions, the validation images whose unknown flag OpenVINO's score
            changes from onnxruntime's.
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
    temperature: float | None = None
    uncalibrated: CalibrationFigures | None = None
    calibrated: CalibrationFigures | None = None
    temperature_note: str = ""
    runs_on: runtimes.RuntimeChoice | None = None
    embedding_parity: checks.EmbeddingParity | None = None
    cam_parity: checks.EmbeddingParity | None = None
    conformal: ConformalPredictor | None = None
    conformal_note: str = ""
    unknown_score_diff: float | None = None
    openvino_score_diff: dict[str, float] = field(default_factory=dict)
    unknown_flag_changes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSet:
    """Images to read, not yet decoded: ``(path, class index)`` pairs (-1: unlabelled) of ``source``."""

    source: Path
    pairs: tuple[tuple[Path, int], ...]
    what: str


@dataclass(frozen=True)
class Batch:
    """Model inputs, their files and class indices (-1: unlabelled).

    ``inputs`` are float32 ``(B, 3, H, W)`` (:func:`garmentcv.image.load_input`) or, for a uint8-input file, the
    uint8 crops ``(B, H, W, 3)`` (:func:`garmentcv.image.load_crop`).
    """

    inputs: np.ndarray
    files: tuple[str, ...]
    targets: np.ndarray


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
            "'gcv train DATA' or pass the checkpoint: 'gcv export RUN/<arch>/best.pt'"
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


def _check_checkpoint_exists(checkpoint: Path, runs_dir: Path) -> None:
    if not checkpoint.exists():
        raise PathNotFoundError(
            f"{checkpoint}: checkpoint not found; give a best.pt or last.pt of a gcv train run (RUN/<arch>/best.pt), "
            f"or no CHECKPOINT to take the newest run under {runs_dir}"
        )


def _check_out(out: Path, checkpoint: Path) -> None:
    """Refuse an unusable ``--out`` before any work (creates its missing folders).

    Raises:
        ExportError: not a ``.onnx`` name, or the checkpoint itself.
        OutputPathError: a folder, under a file, or not writable.
    """
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"--out {out}: give a file name ending in .onnx")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file name ending in .onnx")
    if out.resolve() == checkpoint.resolve():
        raise ExportError(f"--out {out} would overwrite the checkpoint; choose another file")
    check_writable_output(out, "--out")


#: A path inside a weights source: after ``file:`` or inside parentheses, holding a ``/`` or ``\``.
_SOURCE_PATH = re.compile(r"(?<=[:(])([^()]*[\\/][^()]*)")


def public_weights_source(source: str) -> str:
    """``source`` with every local path cut to its file name, for metadata that travels with the model file.

    ``"imagenet:ResNet18_Weights.IMAGENET1K_V1 (/home/u/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth)"``
    becomes ``"imagenet:ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)"``, ``"file:/data/w.pth"``
    becomes ``"file:w.pth"``; sources without a path are kept.
    """
    return _SOURCE_PATH.sub(lambda m: re.split(r"[\\/]", m.group(1).strip())[-1], source)


def _restore_model(state: dict[str, Any], path: Path) -> nn.Module:
    built = build_model(state["arch"], len(state["classes"]), "none")
    try:
        built.model.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: its weights do not fit {state['arch']} "
                              f"with {len(state['classes'])} classes ({exc})") from exc
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


def select_images(source: Path, classes: Sequence[str], limit: int, labelled: bool, what: str) -> ImageSet:
    """The images of ``source`` to use, up to ``limit`` (0: all; a seeded random subset otherwise), not decoded.

    Raises:
        ExportError: labels outside ``classes`` (when ``labelled``).
        DatasetError: ``source`` is not a readable dataset.
    """
    pairs = _source_paths(source, classes, labelled)
    if limit and len(pairs) > limit:
        keep = np.sort(np.random.default_rng(0).permutation(len(pairs))[:limit])
        pairs = [pairs[i] for i in keep]
    return ImageSet(source, tuple(pairs), what)


class ImageStream:
    """Decode and preprocess an :class:`ImageSet` one batch at a time; iterate for :class:`Batch` es.

    At most ``batch_size`` decoded images are held at once, whatever the number of images. Undecodable
    images are skipped with a warning and counted in :attr:`skipped`; :attr:`decoded` counts the others.
    Each iteration decodes the files again (and recounts).
    """

    def __init__(self, images: ImageSet, pp: Preprocessing, batch_size: int, progress: bool = True, warn: bool = True,
                 uint8: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.pp, self.batch_size, self.progress, self.warn = images, pp, batch_size, progress, warn
        self.load = load_crop if uint8 else load_input
        self.decoded = 0
        self.skipped = 0

    def __iter__(self) -> Iterator[Batch]:
        """Yield batches of ``batch_size`` images (the last may be smaller).

        Raises:
            ExportError: at the end, when none of the images could be read.
        """
        self.decoded = self.skipped = 0
        inputs: list[np.ndarray] = []
        files: list[str] = []
        targets: list[int] = []
        what = self.images.what
        bar = tqdm(self.images.pairs, desc=what, unit="img", leave=False, file=sys.stderr,
                   disable=None if self.progress else True)
        for path, target in bar:
            try:
                inputs.append(self.load(path, self.pp))
            except ImageDecodeError as exc:
                if self.warn:
                    logger.warning("skipping %s", exc)
                self.skipped += 1
                continue
            files.append(str(path))
            targets.append(target)
            if len(inputs) == self.batch_size:
                yield self._flush(inputs, files, targets)
        if inputs:
            yield self._flush(inputs, files, targets)
        if not self.decoded:
            raise ExportError(f"{self.images.source}: none of {plural(len(self.images.pairs), what + ' image')} "
                              "could be read")
        if self.warn:
            unreadable = f" ({self.skipped} unreadable)" if self.skipped else ""
            logger.info("%s: %s from %s%s", what, plural(self.decoded, "image"), self.images.source, unreadable)

    def _flush(self, inputs: list[np.ndarray], files: list[str], targets: list[int]) -> Batch:
        """Stack and empty the buffers (so the decoded images are freed before the next batch is decoded)."""
        batch = Batch(np.stack(inputs), tuple(files), np.asarray(targets))
        self.decoded += len(inputs)
        inputs.clear(), files.clear(), targets.clear()
        return batch

    def inputs(self) -> Iterator[np.ndarray]:
        """Only the input arrays of the batches (for the INT8 calibrator)."""
        return (batch.inputs for batch in self)


@dataclass(frozen=True)
class ValidationLogits:
    """What one pass over the validation images keeps: logits ``(N, C)`` float32, never the images.

    Attributes:
        reference: PyTorch's logits.
        fp32: the FP32 graph's logits.
        final: the converted graph's logits (``fp32`` itself for an FP32 export).
        files: the images, row by row; ``targets`` their class indices.
        head_inputs: the first (at most :data:`CHECK_ROWS`) inputs, for the written file's batch checks.
        skipped: undecodable images left out.
        embeddings: with the ``embedding`` output: ``(N, D)`` float32 of PyTorch, the FP32 graph and the converted
            graph under the same keys (``reference``, ``fp32``, ``final``); empty without it.
        cams: with the ``cam`` output: its maps ``(N, C, h, w)`` float32, keyed like ``embeddings``; empty without.
    """

    reference: np.ndarray
    fp32: np.ndarray
    final: np.ndarray
    files: tuple[str, ...]
    targets: np.ndarray
    head_inputs: np.ndarray
    skipped: int
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    cams: dict[str, np.ndarray] = field(default_factory=dict)


def validation_logits(
    model: nn.Module, fp32: ort.InferenceSession, final: ort.InferenceSession | None, stream: ImageStream
) -> ValidationLogits:
    """Run PyTorch, the FP32 session and the converted session (``None``: the FP32 one) batch by batch.

    Raises:
        ExportError: no image could be read; a session returned the wrong shape or type.
    """
    parts: dict[str, list[np.ndarray]] = {"reference": [], "fp32": [], "final": []}
    embedded: dict[str, list[np.ndarray]] = {"reference": [], "fp32": [], "final": []}
    mapped: dict[str, list[np.ndarray]] = {"reference": [], "fp32": [], "final": []}
    files: list[str] = []
    targets: list[np.ndarray] = []
    head: list[np.ndarray] = []
    kept = 0
    for batch in stream:
        runs = {"reference": torch_outputs(model, batch.inputs, len(batch.inputs)),
                "fp32": checks.run_outputs(fp32, batch.inputs, len(batch.inputs))}
        if final is not None:
            runs["final"] = checks.run_outputs(final, batch.inputs, len(batch.inputs))
        for key, out in runs.items():
            parts[key].append(out[OUTPUT_NAME])
            if EMBEDDING_NAME in out:
                embedded[key].append(out[EMBEDDING_NAME])
            if CAM_NAME in out:
                mapped[key].append(out[CAM_NAME])
        files.extend(batch.files)
        targets.append(batch.targets)
        if kept < CHECK_ROWS:
            head.append(batch.inputs[: CHECK_ROWS - kept].copy())
            kept += len(head[-1])
    reference, fp32_logits = np.concatenate(parts["reference"]), np.concatenate(parts["fp32"])
    embeddings = {key: np.concatenate(chunks) for key, chunks in embedded.items() if chunks}
    if embeddings and "final" not in embeddings:
        embeddings["final"] = embeddings["fp32"]
    cams = {key: np.concatenate(chunks) for key, chunks in mapped.items() if chunks}
    if cams and "final" not in cams:
        cams["final"] = cams["fp32"]
    return ValidationLogits(
        reference=reference, fp32=fp32_logits,
        final=np.concatenate(parts["final"]) if final is not None else fp32_logits,
        files=tuple(files), targets=np.concatenate(targets), head_inputs=np.concatenate(head), skipped=stream.skipped,
        embeddings=embeddings, cams=cams,
    )  # fmt: skip


def _data_source(given: Path | None, checkpoint: Path, manifest: str, option: str) -> Path:
    if given is not None:
        return given
    source = checkpoint.parent.parent / manifest
    if not source.is_file():
        raise ExportError(
            f"{source} not found: the checkpoint is not inside its gcv train run folder (RUN/<arch>/best.pt beside "
            f"RUN/{manifest}); pass {option} with a folder or path,label CSV of images"
        )
    return source


@torch.inference_mode()
def torch_outputs(model: nn.Module, inputs: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """PyTorch outputs of ``model`` in eval mode for its inputs (float32 ``(N, 3, H, W)``, or uint8 ``(N, H, W, 3)``
    for a :class:`~garmentcv.export.uint8_input.Uint8Input`), float32 by name: ``logits`` ``(N, C)`` and, for a
    :class:`~garmentcv.export.embedding.WithEmbedding` inside, ``embedding`` ``(N, D)``; for a
    :class:`~garmentcv.export.cam.WithCam`, ``cam`` ``(N, C, h, w)`` too."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(inputs), batch_size):
        out = model(torch.from_numpy(inputs[i : i + batch_size]))
        names = (OUTPUT_NAME, EMBEDDING_NAME, CAM_NAME)[: len(out) if isinstance(out, tuple) else 1]
        named = dict(zip(names, out, strict=True)) if isinstance(out, tuple) else {OUTPUT_NAME: out}
        for name, tensor in named.items():
            parts.setdefault(name, []).append(tensor.numpy())
    return {name: np.concatenate(chunks).astype(np.float32) for name, chunks in parts.items()}


def torch_logits(model: nn.Module, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """PyTorch logits ``(N, C)`` float32 of ``model`` (see :func:`torch_outputs`)."""
    return torch_outputs(model, inputs, batch_size)[OUTPUT_NAME]


def _accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    return classification_metrics(targets, logits.argmax(axis=1), logits.shape[1]).accuracy


def split_held_out(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split validation rows into two disjoint parts, deterministically and stratified: within each class, the
    rows in file order alternate (first, third, ... to the temperature; second, fourth, ... to the prediction
    sets). Returns the two index arrays, each in row order."""
    y = np.asarray(targets)
    second = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        second[rows[1::2]] = True
    return np.flatnonzero(~second), np.flatnonzero(second)


def plan_conformal(cfg: ExportConfig, targets: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(temperature rows, conformal rows or None, note)``: the split of :func:`split_held_out` when ``cfg.coverage``
    is set and the conformal part has enough images (of every class, with ``cfg.class_conditional``); otherwise all
    rows for the temperature, no conformal rows, and why (``""`` when sets were not asked for)."""
    every = np.arange(len(targets))
    if cfg.coverage is None:
        return every, None, ""
    first, second = split_held_out(targets)
    need = min_images(cfg.coverage)
    y = np.asarray(targets)[second]
    counts = [int((y == c).sum()) for c in range(classes)] if cfg.class_conditional else [len(y)]
    if min(counts) < need:
        which = "of some class " if cfg.class_conditional else ""
        note = (f"no prediction sets: coverage {cfg.coverage:g} needs at least {need} held-out images {which}apart "
                f"from the temperature's, and half of the {len(targets)} validation images give {min(counts)}; "
                "give more validation images (--val-data) or a lower --coverage")
        return every, None, note
    return first, second, ""


def _attach_detector(
    cfg: ExportConfig, checkpoint: Path, final: onnx.ModelProto, final_session: ort.InferenceSession | None,
    network: nn.Module, head: str, seen: ValidationLogits, val: ImageSet, pp: Preprocessing, uint8: bool,
    temperature: float | None, progress: bool, classes: Sequence[str],
) -> tuple[onnx.ModelProto, UnknownDetector, float, np.ndarray]:
    """Fit ``cfg.unknown_score``'s reference on the reference images from the converted graph's own outputs, join
    the score to ``final``, check the joined graph's ``ood_score`` against the numpy score of its own outputs on the
    validation images, and fit the threshold on those ``ood_score`` values (what consumers compare with it).

    Returns:
        The joined graph, the detector for the metadata, the largest relative score difference, and the joined
        graph's onnxruntime ``ood_score`` ``(N,)`` float64 of the validation images (rows of ``seen``).

    Raises:
        ExportError: the score cannot be fitted, exported or joined, or differs by more than
            :data:`~garmentcv.export.unknown_output.SCORE_TOLERANCE`.
    """
    method, t = str(cfg.unknown_score), 1.0 if temperature is None else temperature
    session = final_session if final_session is not None else checks.open_session(final.SerializeToString())
    source = _data_source(cfg.unknown_data, checkpoint, "train.csv", "--unknown-data")
    images = select_images(source, classes, cfg.unknown_images, True, "unknown reference")
    stream = ImageStream(images, pp, cfg.batch_size, progress, uint8=uint8)
    parts: dict[str, list[np.ndarray]] = {OUTPUT_NAME: [], EMBEDDING_NAME: []}
    labels: list[np.ndarray] = []
    for batch in stream:
        out = checks.run_outputs(session, batch.inputs, len(batch.inputs))
        parts[OUTPUT_NAME].append(out[OUTPUT_NAME])
        parts[EMBEDDING_NAME].append(out[EMBEDDING_NAME])
        labels.append(batch.targets)
    linear = network.get_submodule(head)
    try:
        reference = unknown_scores.fit_reference(
            method, np.concatenate(parts[EMBEDDING_NAME]), np.concatenate(labels), np.concatenate(parts[OUTPUT_NAME]),
            linear.weight.detach().numpy().astype(np.float32), linear.bias.detach().numpy().astype(np.float32))
    except ValueError as exc:
        raise ExportError(f"cannot fit the {method} unknown score: {exc}") from exc
    fitted, dim = sum(len(batch) for batch in labels), parts[EMBEDDING_NAME][0].shape[1]
    if method in unknown_scores.COVARIANCE_METHODS and fitted <= dim:
        logger.warning("the %s unknown score was fitted on %d reference images, no more than the embedding's %d "
                       "dimensions: the covariance it rests on is singular, so its scores are unreliable; give more "
                       "reference images (--unknown-data, --unknown-images) or use knn", method, fitted, dim)
    score = unknown_output.score_graph(method, reference, t, seen.reference.shape[1],
                                       seen.embeddings["final"].shape[1], cfg.opset)
    keep = bool(cfg.embedding or cfg.cam)
    joined = unknown_output.attach_score(final, score, keep, cfg.cam)
    convert.check_graph(joined)
    joined_session = checks.open_session(joined.SerializeToString())
    # The score's arithmetic is judged on the logits and embedding of the run that computed it: another session of
    # the same network may differ in the last float32 digits, which vim and mahalanobis amplify.
    checked_session = joined_session if keep else checks.open_session(
        unknown_output.attach_score(final, score, True, cfg.cam).SerializeToString())
    worst = 0.0
    file_scores: list[np.ndarray] = []
    for batch in ImageStream(val, pp, cfg.batch_size, progress=False, warn=False, uint8=uint8):
        out = checks.run_outputs(checked_session, batch.inputs, len(batch.inputs))
        expected = unknown_scores.score(method, out[OUTPUT_NAME], out[EMBEDDING_NAME], reference, t)
        got = out[OOD_SCORE_NAME].astype(np.float64)
        # the scores of the file as written: what gcv classify compares with the threshold
        written = got if keep else checks.run_outputs(joined_session, batch.inputs, len(batch.inputs))[
            OOD_SCORE_NAME].astype(np.float64)
        for values in (got, written):
            if values.shape != expected.shape or not np.isfinite(values).all():
                raise ExportError(f"the {method} ood_score output is {values.shape} or not finite; expected "
                                  f"{expected.shape}")
        worst = max(worst, float((np.abs(got - expected) / np.maximum(1.0, np.abs(expected))).max(initial=0.0)))
        file_scores.append(written)
    if worst > unknown_output.SCORE_TOLERANCE:
        raise ExportError(f"the {method} ood_score output differs from the score of the file's own outputs by "
                          f"{worst:.3g} x max(1, |score|), more than {unknown_output.SCORE_TOLERANCE:g}; choose "
                          "another --unknown-score method. The file was not written")
    in_scores = np.concatenate(file_scores)  # the file's own float32 scores: what classify compares with
    try:
        threshold = unknown_scores.fit_threshold(in_scores, cfg.unknown_recall)
    except ValueError as exc:
        raise ExportError(f"cannot fit the {method} unknown threshold: {exc}") from exc
    sizes = [len(v) for v in reference.values() if np.ndim(v) >= 2]
    recall = float((in_scores <= threshold).mean())
    detector = UnknownDetector(method, threshold, recall, max(sizes, default=0), len(in_scores))
    logger.info("%s unknown score in the graph: threshold %.6g keeps %.2f%% of %s; reference fitted on %s from %s",
                method, threshold, 100 * recall, plural(len(in_scores), "validation image"),
                plural(stream.decoded, "image"), source)
    return joined, detector, worst, in_scores


def _bf16_check(gates: Sequence[RuntimeGate]) -> ReducedPrecisionCheck | None:
    """The OpenVINO bf16 pair of ``gates`` in the form releases before per-runtime gates read (``None``: not gated,
    or an INT8 file's pair, judged on accuracy)."""
    pair = next((g for g in gates if g.key == ("openvino", "bf16")), None)
    return pair.as_bf16_check() if pair is not None and pair.tolerance is not None else None


def export_checkpoint(cfg: ExportConfig, progress: bool = True) -> ExportResult:
    """Export a checkpoint to one self-contained ONNX file at ``cfg.precision`` and check it before success.

    Gates: the requested opset; the ONNX checker; no random or dropout nodes; finite logits; FP32 against
    PyTorch on the validation images (each image's largest logit difference <= :data:`checks.FP32_TOLERANCE`
    x its own logit scale ``max(1, largest |logit| of the image)``, the same top-1 class except near ties
    within that tolerance); FP16 likewise within :data:`checks.FP16_TOLERANCE`; FP16 and INT8 accuracy at
    most ``cfg.max_accuracy_drop`` points below FP32; then on the written file: batch sizes 1 and 3 (traced
    at 2), two identical runs, rows independent of their batch, metadata read back equal. ``cfg.out`` is
    replaced only when every gate passes. The temperature of calibrated probabilities is then fitted on the
    written graph's validation logits (minimum NLL) and stored in the metadata, unless the model is at or near
    chance, the images are too few or too clean, or the fit ends at a bound of its search
    (:func:`garmentcv.calibration.decide_temperature`: then none is stored, and the metadata says why); the logits
    output is unchanged. Each (runtime, inference precision) pair the file may run at is gated against FP32
    (:func:`garmentcv.export.runtime_gates.gate_runtimes`) and its result stored; a failed OpenVINO pair does not
    fail the export, it only keeps ``gcv classify --runtime auto`` from running the file there. Images are decoded
    ``cfg.batch_size`` at a time and only logits are kept, so memory does not grow with the images' size or
    (beyond ``3 x C`` floats each) their number. With ``cfg.embedding`` or ``cfg.cam`` the extra outputs pass the
    same gates by per-image cosine similarity to PyTorch's (:data:`checks.EMBEDDING_MIN_COSINE`,
    :data:`checks.CAM_MIN_COSINE`). With ``cfg.unknown_score`` and OpenVINO installed, each OpenVINO pair runs the
    joined file once more and fails (as above, without failing the export) when its ``ood_score`` drifts from
    onnxruntime's past :func:`garmentcv.export.runtime_gates.score_bound`.

    Raises:
        PathNotFoundError: ``cfg.checkpoint`` does not exist.
        CheckpointError: truncated, foreign or newer-format checkpoint; weights that do not fit.
        UnknownArchError: the checkpoint's arch is not registered.
        DatasetError: validation or calibration data cannot be read.
        OutputPathError: ``cfg.out`` cannot be written (a folder, under a file, read-only).
        ExportError: a wrong output name, or a failed gate (the message gives the figures); ``cfg.cam`` for a
            network without class activation maps (the message says why).
    """
    started = time.perf_counter()
    if cfg.precision not in PRECISIONS:
        raise ExportError(f"unknown precision {cfg.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if cfg.input_format not in INPUT_FORMATS:
        raise ExportError(f"unknown input format {cfg.input_format!r}; choose one of {', '.join(INPUT_FORMATS)}")
    if cfg.conformal_method not in METHODS:
        raise ExportError(f"unknown conformal method {cfg.conformal_method!r}; choose one of {', '.join(METHODS)}")
    if cfg.coverage is not None and not 0.0 < cfg.coverage < 1.0:
        raise ExportError(f"--coverage {cfg.coverage}: give a probability strictly between 0 and 1, e.g. 0.95")
    if cfg.unknown_score is not None and cfg.unknown_score not in unknown_scores.METHODS:
        raise ExportError(f"unknown score method {cfg.unknown_score!r}; choose one of "
                          f"{', '.join(unknown_scores.METHODS)}")
    if not 0.0 < cfg.unknown_recall <= 1.0:
        raise ExportError(f"--unknown-recall {cfg.unknown_recall}: give a share within (0, 1], e.g. 0.95")
    if cfg.int8_activations not in INT8_ACTIVATIONS:
        raise ExportError(f"unknown INT8 activation type {cfg.int8_activations!r}; "
                          f"choose one of {', '.join(INT8_ACTIVATIONS)}")
    if cfg.checkpoint is not None:
        _check_checkpoint_exists(cfg.checkpoint, cfg.runs_dir)
    checkpoint = cfg.checkpoint if cfg.checkpoint is not None else find_latest_checkpoint(cfg.runs_dir)
    if cfg.checkpoint is None:
        logger.info("no checkpoint given; using the newest run's %s", checkpoint)
    _check_out(cfg.out, checkpoint)
    state = load_checkpoint(checkpoint)
    classes = tuple(state["classes"])
    pp = Preprocessing.from_dict(state["preprocessing"])
    model = network = _restore_model(state, checkpoint)
    embeds = cfg.embedding or cfg.cam or cfg.unknown_score is not None  # the score reads the embedding inside the graph
    head = get_spec(state["arch"]).head
    if cfg.cam:  # the maps' network yields the embedding too
        try:
            model = WithCam(network, head, pp.crop).eval()
        except ExportError as exc:
            raise ExportError(f"--cam: {state['arch']} has no class activation maps: {exc}; export without --cam") \
                from exc
    elif embeds:
        model = WithEmbedding(network, head).eval()
    uint8 = cfg.input_format == INPUT_UINT8
    if uint8:
        model, network = Uint8Input(model, pp).eval(), Uint8Input(network, pp).eval()
    outputs = (OUTPUT_NAME, EMBEDDING_NAME, *([CAM_NAME] if cfg.cam else [])) if embeds else (OUTPUT_NAME,)

    val_source = _data_source(cfg.val_data, checkpoint, "val.csv", "--val-data")
    val = select_images(val_source, classes, cfg.val_images, True, "validation")
    calibration: ImageStream | None = None
    if cfg.precision == "int8":
        cal_source = _data_source(cfg.calibration_data, checkpoint, "train.csv", "--quantization-data")
        cal = select_images(cal_source, classes, cfg.calibration_images, False, "quantization")
        calibration = ImageStream(cal, pp, cfg.batch_size, progress, uint8=uint8)

    first = next(iter(ImageStream(val, pp, TRACE_BATCH, progress=False, warn=False, uint8=uint8)))  # the traced example
    example = torch.from_numpy(np.resize(first.inputs, (TRACE_BATCH, *first.inputs.shape[1:])))
    if cfg.cam:  # on the float input the network itself takes
        plain = example
        if uint8:
            plain = example.permute(0, 3, 1, 2).to(torch.float32) * model.scale - model.offset
        check_cam(network.network if uint8 else network, model.network if uint8 else model, plain, state["arch"])
    elif embeds:
        check_same_logits(network, model, example, state["arch"])
    fp32 = convert.trace_to_onnx(model, example, cfg.opset, outputs)
    convert.check_graph(fp32)
    cpu = convert.cpu_facts() if cfg.precision == "int8" else None
    calibration_inputs = None if calibration is None else calibration.inputs()
    final = convert.convert(fp32, cfg.precision, calibration_inputs, cfg.int8_activations, cpu)
    fp32_session = checks.open_session(fp32.SerializeToString())
    final_session = None if cfg.precision == "fp32" else checks.open_session(final.SerializeToString())
    seen = validation_logits(model, fp32_session, final_session,
                             ImageStream(val, pp, cfg.batch_size, progress, uint8=uint8))

    fp32_parity = checks.compare(seen.reference, seen.fp32, seen.files, checks.FP32_TOLERANCE)
    checks.require_parity(fp32_parity, "FP32")
    fp32_accuracy = _accuracy(seen.fp32, seen.targets)
    tolerance = {"fp32": checks.FP32_TOLERANCE, "fp16": checks.FP16_TOLERANCE, "int8": None}[cfg.precision]
    parity = checks.compare(seen.reference, seen.final, seen.files, tolerance)
    checks.require_parity(parity, cfg.precision.upper())
    accuracy = _accuracy(seen.final, seen.targets)
    drop = 100.0 * (fp32_accuracy - accuracy)
    if cfg.precision != "fp32":
        drop = checks.require_accuracy_drop(fp32_accuracy, accuracy, cfg.max_accuracy_drop, cfg.precision.upper())
    embedding_parity = cam_parity = None
    if cfg.cam:
        checks.require_embedding(checks.compare_embeddings(
            seen.cams["reference"], seen.cams["fp32"], seen.files, checks.CAM_MIN_COSINE["fp32"],
            "class activation map"), "FP32", "--cam")
        cam_parity = checks.compare_embeddings(seen.cams["reference"], seen.cams["final"], seen.files,
                                               checks.CAM_MIN_COSINE[cfg.precision], "class activation map")
        checks.require_embedding(cam_parity, cfg.precision.upper(), "--cam")
        logger.info("%s", cam_parity.describe())
    if embeds:
        fp32_embedding = checks.compare_embeddings(seen.embeddings["reference"], seen.embeddings["fp32"], seen.files,
                                                   checks.EMBEDDING_MIN_COSINE["fp32"])
        checks.require_embedding(fp32_embedding, "FP32")
        embedding_parity = checks.compare_embeddings(seen.embeddings["reference"], seen.embeddings["final"],
                                                     seen.files, checks.EMBEDDING_MIN_COSINE[cfg.precision])
        checks.require_embedding(embedding_parity, cfg.precision.upper())
        logger.info("%s", embedding_parity.describe())

    fit_rows, conformal_rows, conformal_note = plan_conformal(cfg, seen.targets, len(classes))
    decision = decide_temperature(seen.final[fit_rows], seen.targets[fit_rows])
    temperature = decision.temperature
    uncalibrated = calibration_figures(softmax(seen.final), seen.targets)
    calibrated = None if temperature is None else calibration_figures(softmax(seen.final, temperature), seen.targets)
    if calibrated is not None:
        logger.info("temperature %.4g fitted on %s: NLL %.4f -> %.4f, ECE %.4f -> %.4f", temperature,
                    plural(len(fit_rows), "validation image"), uncalibrated.nll, calibrated.nll, uncalibrated.ece,
                    calibrated.ece)
    else:
        (logger.warning if decision.problem else logger.info)(
            "no temperature stored (gcv classify and gcv evaluate will use the raw softmax): %s", decision.note)
    conformal = None
    if conformal_rows is not None:
        held = softmax(seen.final[conformal_rows], 1.0 if temperature is None else temperature)
        try:
            conformal = fit_conformal(held, seen.targets[conformal_rows], cfg.coverage, cfg.conformal_method,
                                      cfg.class_conditional)  # type: ignore[arg-type]
        except ConformalFitError as exc:  # plan_conformal counted the images; kept for safety of the message
            conformal_note = f"no prediction sets: {exc}"
        else:
            logger.info("%s", conformal.describe())
    if conformal_note:  # the summary says it too; too few images is not a fault of the model
        logger.info("%s", conformal_note)
    gates = runtime_gates.gate_runtimes(
        cfg.bf16_check, cfg.precision, final.SerializeToString(),
        (b.inputs for b in ImageStream(val, pp, cfg.batch_size, progress=False, warn=False, uint8=uint8)),
        runtime_gates.GateInputs(seen.reference, tuple(Path(f).name for f in seen.files), seen.targets, fp32_accuracy,
                                 seen.embeddings.get("reference"), seen.cams.get("reference")),
        seen.final, cfg.max_accuracy_drop, convert.cpu_facts()[0], temperature, seen.embeddings.get("final"),
        seen.cams.get("final"),
    )  # fmt: skip
    applied = uncalibrated if calibrated is None else calibrated
    calibration_metrics: dict[str, Any] = {
        "temperature": temperature, "ece": applied.ece, "ece_uncalibrated": uncalibrated.ece,
        "nll": applied.nll, "nll_uncalibrated": uncalibrated.nll,
    }
    if len(fit_rows) != len(seen.files):
        calibration_metrics["temperature_images"] = len(fit_rows)
    if conformal_note:
        calibration_metrics["conformal_note"] = conformal_note
    if embedding_parity is not None:
        calibration_metrics["embedding_min_cosine"] = embedding_parity.min_cosine
    if cam_parity is not None:
        calibration_metrics["cam_min_cosine"] = cam_parity.min_cosine
    if temperature is None:
        calibration_metrics["temperature_note"] = decision.note
        if decision.fitted is not None:
            calibration_metrics["temperature_fit"] = decision.fitted
    trained = {k: state["metrics"][k] for k in _METRIC_KEYS if k in state["metrics"]}
    quantization = None if cpu is None else Quantization(cfg.int8_activations, "int8", cpu[0], cpu[1])
    info = ModelInfo(
        arch=state["arch"], classes=classes, preprocessing=pp, precision=cfg.precision,
        weights_source=public_weights_source(str(state["weights_source"])),
        metrics={**trained, "export": {"images": len(seen.files), "accuracy": accuracy, "fp32_accuracy": fp32_accuracy,
                                       "max_abs_logit_diff": parity.max_abs_diff, **calibration_metrics}},
        checkpoint_sha256=sha256_of(checkpoint), garmentcv_version=garmentcv.__version__, opset=cfg.opset,
        quantization=quantization, temperature=temperature, input_format=cfg.input_format,
        bf16=_bf16_check(gates),
        runtime_gates=gates, outputs=outputs,
        embedding_dim=int(seen.embeddings["final"].shape[1]) if embeds else 0, conformal=conformal,
    )  # fmt: skip
    detector, score_diff = None, None
    openvino_score_diff: dict[str, float] = {}
    unknown_flag_changes: dict[str, int] = {}
    if cfg.unknown_score is not None:
        final, detector, score_diff, file_scores = _attach_detector(
            cfg, checkpoint, final, final_session, network if not uint8 else network.network, head, seen, val, pp,
            uint8, temperature, progress, classes)
        kept = cfg.embedding or cfg.cam
        if runtimes.openvino_installed():  # the pairs OpenVINO was gated at, now with the score in the graph
            gates = runtime_gates.gate_openvino_scores(
                final.SerializeToString(), cfg.precision, gates,
                (b.inputs for b in ImageStream(val, pp, cfg.batch_size, progress=False, warn=False, uint8=uint8)),
                file_scores, detector.method, detector.threshold, len(classes))
            openvino_score_diff = {g.precision: g.ood_score_diff for g in gates if g.ood_score_diff is not None}
            unknown_flag_changes = {g.precision: g.unknown_flag_changes for g in gates
                                    if g.unknown_flag_changes is not None}
        info = dataclasses.replace(info, outputs=(*outputs[: 2 if kept else 1], OOD_SCORE_NAME, *outputs[2:]),
                                   unknown=detector, embedding_dim=info.embedding_dim if kept else 0,
                                   runtime_gates=gates, bf16=_bf16_check(gates))
    runs_on, _ = runtimes.choose_for_file(info, "auto")
    logger.info("on this machine's CPU, gcv classify --runtime auto will run this file on %s at %s: %s",
                runs_on.runtime, runs_on.inference_precision or cfg.precision, runs_on.reason)
    convert.finalize(final, info)
    convert.check_graph(final)
    convert.check_opset(final, cfg.opset)
    try:
        with atomic_path(cfg.out) as tmp:
            convert.save_model(final, tmp)
            session = checks.open_session(tmp)
            rows = len(seen.head_inputs)
            checks.check_batch_behaviour(
                session, seen.head_inputs, seen.final[:rows], checks.BATCH_TOLERANCE[cfg.precision], TRACE_BATCH
            )
            if read_model_info(tmp) != info:
                raise ExportError(f"the metadata read back from {tmp} differs from what was written")
            size_mb = tmp.stat().st_size / 1e6
    except OSError as exc:
        raise ExportError(f"cannot write {cfg.out}: {exc}") from exc
    logger.info("wrote %s (%.1f MB, %s, opset %d)", cfg.out, size_mb, cfg.precision, cfg.opset)
    return ExportResult(
        out=cfg.out, checkpoint=checkpoint, info=info, size_mb=size_mb, parity=parity, fp32_parity=fp32_parity,
        fp32_accuracy=fp32_accuracy, accuracy=accuracy, accuracy_drop=drop, val_images=len(seen.files),
        calibration_images=0 if calibration is None else calibration.decoded,
        skipped_images=seen.skipped, seconds=time.perf_counter() - started, temperature=temperature,
        uncalibrated=uncalibrated, calibrated=calibrated, temperature_note=decision.note, runs_on=runs_on,
        embedding_parity=embedding_parity, cam_parity=cam_parity, conformal=conformal, conformal_note=conformal_note,
        unknown_score_diff=score_diff, openvino_score_diff=openvino_score_diff,
        unknown_flag_changes=unknown_flag_changes,
    )  # fmt: skip
