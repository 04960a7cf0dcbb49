"""The bf16 gate: may OpenVINO run this file in bf16? Measured at export, kept in the file's metadata.

Like gcv-export's FP16 and INT8 gates (:mod:`garmentcv.export.checks`), on the validation images: the file run
by OpenVINO with ``INFERENCE_PRECISION_HINT=bf16`` against onnxruntime running the same file (the logits every
other gate was judged on). It passes when no logit is NaN or infinite, every image's largest logit difference
is within :data:`BF16_TOLERANCE` x its logit scale ``max(1, largest |logit|)`` (:func:`checks.compare`), the
top-1 class is the same except near ties within that tolerance, the calibrated probabilities
``softmax(logits / T)`` (the file's temperature) differ by at most :data:`BF16_PROBABILITY_TOLERANCE`, and the
accuracy is at most
``max_accuracy_drop`` points lower. A failed gate does not fail the export: the file is written with the result
(:class:`garmentcv.artifact.ReducedPrecisionCheck`) and consumers run it at f32, saying why.

The gate needs OpenVINO (``garmentcv[openvino]``) and a CPU with native bf16 (``avx512_bf16`` or ``amx_bf16``
usable, see :func:`garmentcv.infer.runtimes.effective_flags`); elsewhere OpenVINO would quietly run f32 and the
check would prove nothing, so it is not run and the file carries no result (bf16 is then never used).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from garmentcv.artifact import ReducedPrecisionCheck
from garmentcv.calibration import softmax
from garmentcv.cli_utils import plural
from garmentcv.export import checks
from garmentcv.infer.runtimes import (
    OPENVINO_DIST,
    OPENVINO_INSTALL,
    openvino_installed,
    this_cpu_flags,
)
from garmentcv.installs import installed_version

logger = logging.getLogger(__name__)

#: Largest logit difference accepted for bf16 per unit of an image's logit scale. bf16 keeps 8 significant
#: bits (relative rounding 2^-8 = 0.0039 per value); measured on resnet18 at 224 px (random init, OpenVINO
#: 2026.4 with AMX) 0.0095 of the scale, so 0.05 (FP16's tolerance) leaves a 5x margin.
BF16_TOLERANCE = 5e-2
#: Largest difference accepted between bf16's and the file's calibrated probabilities ``softmax(logits / T)``
#: (confidences feed --min-confidence and the calibration figures; the issue measured at most 0.012 on the
#: demo's trained models).
BF16_PROBABILITY_TOLERANCE = 2e-2
#: ISA flags with which OpenVINO's CPU plugin runs bf16 natively.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class GateInputs:
    """What the gate compares against: the file's own logits ``(N, C)`` float32 from onnxruntime, the image
    names ``files`` row by row and their class indices ``targets`` ``(N,)``."""

    reference: np.ndarray
    files: tuple[str, ...]
    targets: np.ndarray


def can_check(flags: Iterable[str] | None = None) -> str | None:
    """``None`` when the gate can run here, else the reason it cannot (for the log)."""
    if not openvino_installed():
        return f"OpenVINO is not installed ({OPENVINO_INSTALL})"
    usable = this_cpu_flags() if flags is None else frozenset(flags)
    if not BF16_FLAGS & usable:
        return "this CPU has no native bf16 (avx512_bf16 or amx_bf16), where OpenVINO would run f32 instead"
    return None


def check_bf16(
    model: bytes,
    batches: Iterable[np.ndarray],
    seen: GateInputs,
    tolerance: float = BF16_TOLERANCE,
    max_accuracy_drop: float = 1.0,
    cpu_model: str = "",
    temperature: float = 1.0,
    probability_tolerance: float = BF16_PROBABILITY_TOLERANCE,
) -> ReducedPrecisionCheck:
    """Run the gate on the serialized ONNX ``model`` (see the module docstring).

    Args:
        model: the file's bytes, as it will be written.
        batches: the validation inputs ``(B, 3, H, W)`` in the order of ``seen``'s rows.
        seen: onnxruntime's logits of the same file on the same images, their names and targets.
        tolerance: per unit of logit scale.
        max_accuracy_drop: accuracy points bf16 may lose.
        cpu_model: recorded with the result.
        temperature: the file's calibration temperature; probabilities are ``softmax(logits / temperature)``.
        probability_tolerance: the largest probability difference accepted.

    Raises:
        RuntimeUnavailableError: OpenVINO cannot compile the model.
        ExportError: the batches do not give one row per reference row.
    """
    from garmentcv.errors import ExportError
    from garmentcv.infer.openvino_runtime import compile_file

    compiled, used = compile_file(model, "bf16")
    request = compiled.create_infer_request()
    parts = []
    for inputs in batches:
        request.infer({0: inputs})
        parts.append(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))
    logits = np.concatenate(parts) if parts else np.empty((0, seen.reference.shape[1]), np.float32)
    if logits.shape != seen.reference.shape:
        raise ExportError(f"the bf16 gate got logits {logits.shape} for reference logits {seen.reference.shape}")
    runtime = f"openvino {installed_version(OPENVINO_DIST)}"
    parity = checks.compare(seen.reference, logits, seen.files, tolerance)
    labelled = seen.targets >= 0
    correct_ref = float((seen.reference.argmax(1) == seen.targets)[labelled].mean()) if labelled.any() else 0.0
    correct = float((logits.argmax(1) == seen.targets)[labelled].mean()) if labelled.any() else 0.0
    drop = 100.0 * (correct_ref - correct)
    finite = np.isfinite(logits).all(axis=1) & np.isfinite(seen.reference).all(axis=1)
    prob_diff = float(np.abs(softmax(logits[finite], temperature) - softmax(seen.reference[finite], temperature)).max(
        initial=0.0))
    problems = []
    if used != "bf16":
        problems.append(f"OpenVINO ran {used}, not bf16, on this CPU")
    if parity.nonfinite_rows:
        problems.append(f"non-finite logits for {plural(parity.nonfinite_rows, 'image')}, first {parity.nonfinite_file}")
    if parity.rows_over_tolerance:
        problems.append(f"{parity.rows_over_tolerance} of {plural(parity.images, 'image')} differ by more than "
                        f"their tolerance, {parity.describe_tolerance()}")
    if parity.top1_mismatches:
        problems.append(f"{plural(parity.top1_mismatches, 'image')} with another top-1 class beyond a near tie, "
                        f"first {parity.mismatch_file}")
    if prob_diff > probability_tolerance:
        problems.append(f"calibrated probabilities (temperature {temperature:.4g}) differ by up to {prob_diff:.3g}, "
                        f"more than {probability_tolerance:g}")
    if drop > max_accuracy_drop:
        problems.append(f"accuracy {correct:.2%} is {drop:.2f} points below {correct_ref:.2%}, more than "
                        f"{max_accuracy_drop:g}")
    result = ReducedPrecisionCheck(
        precision="bf16", passed=not problems, images=parity.images, top1_agreement=parity.top1_agreement,
        max_abs_diff=parity.max_abs_diff, tolerance=tolerance, accuracy_drop=drop, note="; ".join(problems),
        runtime=runtime, cpu_model=cpu_model, max_probability_diff=prob_diff,
    )  # fmt: skip
    if result.passed:
        logger.info("bf16 gate passed on %s: %s", runtime, result.describe())
    else:
        logger.warning("bf16 gate failed (OpenVINO will run this file at f32): %s", result.note)
    return result


#: ``ExportConfig.bf16_check`` values: ``auto`` runs the gate where it can (see :func:`can_check`), ``off`` never.
BF16_CHECKS = ("auto", "off")


def gate_for_export(
    mode: str, precision: str, model: bytes, batches: Iterable[np.ndarray], seen: GateInputs,
    max_accuracy_drop: float, cpu_model: str = "", temperature: float = 1.0,
) -> ReducedPrecisionCheck | None:
    """The gate as gcv-export runs it: ``None`` (logged) when ``mode`` is ``off``, the file is FP16 (made for
    CUDA) or the gate cannot run here (:func:`can_check`); else :func:`check_bf16`'s result.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode not in BF16_CHECKS:
        raise ValueError(f"bf16 check must be one of {BF16_CHECKS}, got {mode!r}")
    if mode == "off" or precision == "fp16":
        return None
    reason = can_check()
    if reason is not None:
        logger.info("bf16 gate not run: %s; OpenVINO will run this file at f32", reason)
        return None
    return check_bf16(model, batches, seen, BF16_TOLERANCE, max_accuracy_drop, cpu_model, temperature)
