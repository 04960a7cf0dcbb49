"""The gates an exported file passes before export reports success (onnxruntime and numpy).

Parity follows Hugging Face's ONNX exporter (``validate_model_outputs``): run onnxruntime and PyTorch on the
same inputs, take the largest absolute logit difference, compare it with a stated tolerance, and also
demand the same top-1 class. Tolerances are stated per unit of the logit scale ``max(1, largest |logit|)``
of the reference, as float rounding errors grow with the magnitude of the values: a model trained briefly
from scratch can have logits in the thousands, where float32 reorderings alone differ by more than 1e-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from garmentcv.artifact import INPUT_NAME
from garmentcv.errors import ExportError

#: Largest absolute logit difference accepted between an FP32 file and PyTorch, per unit of logit scale
#: (float32 reorderings differ by about 1e-6 of the scale; 1e-3 leaves a wide margin).
FP32_TOLERANCE = 1e-3
#: Largest absolute logit difference accepted for an FP16 file, per unit of logit scale (float16 keeps
#: ~3 significant digits).
FP16_TOLERANCE = 5e-2
#: Largest difference accepted between a row run alone and inside a batch, same file, per unit of logit
#: scale (kernels may
#: block a batch differently). INT8: onnxruntime's integer kernels may round an intermediate activation one
#: quantization step differently at another batch size; measured up to 0.047 on a random-init resnet18 and
#: under 1e-4 on the trained models, so 0.1 (the accuracy gate is INT8's real check).
BATCH_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-1}


def open_session(model: str | Path | bytes) -> ort.InferenceSession:
    """A CPU onnxruntime session on a file path or serialized model bytes."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 0
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise ExportError(f"onnxruntime {ort.__version__} cannot load the exported model: {exc}") from exc


def run_logits(session: ort.InferenceSession, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Logits ``(N, C)`` float32 for inputs ``(N, 3, H, W)`` float32, run ``batch_size`` rows at a time."""
    parts = [session.run(None, {INPUT_NAME: inputs[i : i + batch_size]})[0] for i in range(0, len(inputs), batch_size)]
    out = np.concatenate(parts, axis=0)
    if out.dtype != np.float32 or out.shape[0] != len(inputs):
        raise ExportError(f"the model returned {out.dtype} {out.shape} for {inputs.shape}; expected float32 (N, C)")
    return out


@dataclass(frozen=True)
class Parity:
    """How an ONNX file's logits compare with PyTorch's on the same inputs.

    Attributes:
        max_abs_diff: largest absolute logit difference over every image and class.
        tolerance: the largest difference accepted, already multiplied by ``scale`` (``None`` when the gate
            is accuracy, as for INT8).
        scale: the logit scale ``max(1, largest |reference logit|)`` the stated tolerance was multiplied by.
        images: images compared.
        top1_mismatches: images whose top-1 class differs.
        worst_file: the image with the largest difference.
    """

    max_abs_diff: float
    tolerance: float | None
    scale: float
    images: int
    top1_mismatches: int
    worst_file: str

    def describe_tolerance(self) -> str:
        """E.g. ``tolerance 0.004 = 0.001 x logit scale 4``; ``no tolerance`` when the gate is accuracy."""
        if self.tolerance is None:
            return "no tolerance"
        return f"tolerance {self.tolerance:.3g} = {self.tolerance / self.scale:g} x logit scale {self.scale:.3g}"

    @property
    def top1_agreement(self) -> float:
        """Share of images with the same top-1 class, 0..1."""
        return 1.0 - self.top1_mismatches / max(self.images, 1)


def logit_scale(reference: np.ndarray) -> float:
    """``max(1, largest |logit|)`` of ``reference``: the unit in which tolerances are stated."""
    return max(1.0, float(np.abs(reference).max())) if reference.size else 1.0


def compare(reference: np.ndarray, candidate: np.ndarray, files: Sequence[str], tolerance: float | None) -> Parity:
    """Compare logits ``(N, C)`` of PyTorch (``reference``) and ONNX (``candidate``), row ``i`` from ``files[i]``.

    ``tolerance`` is per unit of :func:`logit_scale`. With a ``tolerance``, a top-1 mismatch counts only where PyTorch's top-2 margin exceeds ``2 * tolerance``
    (a closer tie may legitimately flip within the tolerance); without, every mismatch counts.
    """
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    per_row = diff.max(axis=1)
    worst = int(per_row.argmax())
    mismatch = reference.argmax(axis=1) != candidate.argmax(axis=1)
    scale = logit_scale(reference)
    if tolerance is not None:
        tolerance *= scale
        top2 = np.sort(reference, axis=1)[:, -2:]
        mismatch &= (top2[:, 1] - top2[:, 0]) > 2 * tolerance
    return Parity(float(per_row[worst]), tolerance, scale, len(reference), int(mismatch.sum()), files[worst])


def require_parity(parity: Parity, what: str) -> None:
    """Raise :class:`ExportError` when ``parity`` exceeds its tolerance or has a top-1 mismatch."""
    if parity.tolerance is None:
        return
    if parity.max_abs_diff > parity.tolerance or parity.top1_mismatches:
        raise ExportError(
            f"{what} parity failed on {parity.images} image(s): largest logit difference "
            f"{parity.max_abs_diff:.3g} ({parity.describe_tolerance()}) at {parity.worst_file}; "
            f"{parity.top1_mismatches} image(s) with another top-1 class. The file was not written"
        )


def check_batch_behaviour(
    session: ort.InferenceSession, inputs: np.ndarray, reference: np.ndarray, tolerance: float, traced_batch: int
) -> None:
    """Prove the dynamic batch axis, determinism and row independence of one session.

    Runs batch sizes 1 and ``traced_batch + 1`` (both differ from the traced one) and the whole of ``inputs``
    twice: the two whole runs must be bitwise identical, and each row's logits must match ``reference``
    (the same file's logits for that row in other batches) within ``tolerance`` per unit of logit scale.

    Raises:
        ExportError: a batch size is refused, two runs differ, or a row depends on its batch.
    """
    sizes = sorted({1, traced_batch + 1})
    first, second = run_logits(session, inputs, 64), run_logits(session, inputs, 64)
    if not np.array_equal(first, second):
        raise ExportError("two runs on the same input gave different logits; the model is not deterministic")
    for size in sizes:
        try:
            out = run_logits(session, inputs, size)
        except Exception as exc:  # onnxruntime's own types when a shape is refused
            raise ExportError(f"the exported model refuses batch size {size}; its batch axis is not dynamic ({exc})") from exc
        worst = float(np.abs(out - reference).max())
        allowed = tolerance * logit_scale(reference)
        if worst > allowed:
            raise ExportError(
                f"logits at batch size {size} differ from other batch sizes by {worst:.3g} (tolerance {allowed:.3g}); "
                "a row's output depends on its batch"
            )


def require_accuracy_drop(reference_accuracy: float, accuracy: float, max_drop_points: float, what: str) -> float:
    """Return the accuracy drop in points (``100 * (reference - accuracy)``); raise when over ``max_drop_points``.

    Raises:
        ExportError: the drop exceeds ``max_drop_points``; the message gives both accuracies.
    """
    drop = 100.0 * (reference_accuracy - accuracy)
    if drop > max_drop_points:
        raise ExportError(
            f"{what} accuracy {accuracy:.2%} is {drop:.2f} points below FP32's {reference_accuracy:.2%} on the "
            f"validation images, more than --max-accuracy-drop {max_drop_points:g}; calibrate with more or more "
            "representative images (--calibration-data, --calibration-images) or export fp32/fp16"
        )
    return drop
