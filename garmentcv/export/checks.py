"""The gates an exported file passes before export reports success (onnxruntime and numpy).

Parity follows Hugging Face's ONNX exporter (``validate_model_outputs``): run onnxruntime and PyTorch on the
same inputs, take the largest absolute logit difference, compare it with a stated tolerance, and also
demand the same top-1 class. Tolerances are stated per row (image) in units of that row's logit scale
``max(1, largest |logit| of the row)`` of the reference, as float rounding errors grow with the magnitude of
the values (a model trained briefly from scratch can have logits in the thousands, where float32 reorderings
alone differ by more than 1e-3), while one image with large logits must not loosen the check of the others.
Non-finite logits always fail, whatever the precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from garmentcv.artifact import INPUT_NAME
from garmentcv.errors import ExportError
from garmentcv.text import plural

#: Largest absolute logit difference accepted between an FP32 file and PyTorch, per unit of logit scale
#: (float32 reorderings differ by about 1e-6 of the scale; 1e-3 leaves a wide margin).
FP32_TOLERANCE = 1e-3
#: Largest absolute logit difference accepted for an FP16 file, per unit of logit scale (float16 keeps
#: ~3 significant digits of every weight and activation; an untrained network can amplify those errors, e.g. a
#: random-init regnet_x_400mf through batch-norm channels of near-zero variance: the gate then refuses, saying so,
#: rather than widen the tolerance to pass such models).
FP16_TOLERANCE = 5e-2
#: Largest difference accepted between a row run alone and inside a batch, same file, per unit of the row's
#: logit scale (kernels may
#: block a batch differently). INT8: onnxruntime's integer kernels may round an intermediate activation one
#: quantization step differently at another batch size; measured up to 0.047 on a random-init resnet18 and
#: under 1e-4 on the trained models, so 0.1 (the accuracy gate is INT8's real check).
BATCH_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-1}
#: Smallest cosine similarity accepted between an image's ``embedding`` output and PyTorch's FP32 one, by the
#: precision it was computed at (the file's ``fp32``/``fp16``/``int8``, OpenVINO's ``f32``/``bf16``). Uses of the
#: embedding (nearest neighbours, distances to class means, unknown-item scores) depend on its direction, and a
#: cosine bound is independent of the features' scale. float32 reorderings change the direction by about 1e-12
#: (bound 1 - 1e-5); FP16 and bf16 keep about 3 and 2 significant digits of every activation, each a
#: relative error of 1e-3 and 4e-3 that moves the cosine by about half its square (bounds 0.999 and 0.99, wide
#: margins for networks that amplify rounding); INT8 rounds every activation to one of 256 levels (0.95).
EMBEDDING_MIN_COSINE = {"fp32": 1 - 1e-5, "f32": 1 - 1e-5, "fp16": 0.999, "bf16": 0.99, "int8": 0.95}
#: Smallest cosine similarity accepted between an image's class activation maps (the ``cam`` output ``(C, h, w)``,
#: every class's map flattened into one vector) and PyTorch's FP32 ones, by precision as for
#: :data:`EMBEDDING_MIN_COSINE`. A map is the head's weights applied to the last feature map position by position
#: (Zhou et al. 2016), so its rounding is that of the features before pooling, which averaging no longer shrinks:
#: float32 reorderings stay near 1e-12 (bound 1 - 1e-5), FP16 and bf16 relative errors of 1e-3 and 4e-3 per
#: position (0.999 and 0.99); INT8 rounds each position's activations to one of 256 levels without the pooling's
#: averaging (0.9). A cosine judges the maps' shape (where the network looked) independently of the logit scale.
CAM_MIN_COSINE = {"fp32": 1 - 1e-5, "f32": 1 - 1e-5, "fp16": 0.999, "bf16": 0.99, "int8": 0.9}


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


def run_outputs(session: ort.InferenceSession, inputs: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Every output of the session by name (``logits`` ``(N, C)``, ``embedding`` ``(N, D)``, ...), float32, run
    ``batch_size`` rows at a time.

    Raises:
        ExportError: an output is not float32 or not one row per input.
    """
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i in range(0, len(inputs), batch_size):
        for name, out in zip(names, session.run(names, {INPUT_NAME: inputs[i : i + batch_size]}), strict=True):
            parts[name].append(out)
    result = {name: np.concatenate(chunks, axis=0) for name, chunks in parts.items()}
    for name, out in result.items():
        if out.dtype != np.float32 or out.shape[0] != len(inputs):
            raise ExportError(f"the model's {name} output is {out.dtype} {out.shape} for {inputs.shape}; expected "
                              "float32 with one row per image")
    return result


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per row of ``(N, D)`` arrays: the cosine similarity, float64 ``(N,)``; 1 where both rows are zero, 0 where
    one is; NaN where a row is not finite."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.abs(a).max(axis=1, initial=0.0) == 0) & (np.abs(b).max(axis=1, initial=0.0) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    cosine = np.where(both_zero, 1.0, cosine)
    return np.where(np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1), cosine, np.nan)


@dataclass(frozen=True)
class EmbeddingParity:
    """How a file's ``embedding`` (or ``cam``) output compares with PyTorch's FP32 one, image by image.

    Attributes:
        min_cosine: the smallest cosine similarity over the finite rows (1.0 for no row).
        bound: the smallest accepted (:data:`EMBEDDING_MIN_COSINE`).
        images: images compared.
        rows_below: rows under the bound.
        worst_file: the row with the smallest cosine (``""`` for none).
        nonfinite_rows: rows with a NaN or infinite value.
        output: what was compared, for messages: ``embedding`` or ``class activation map``.
    """

    min_cosine: float
    bound: float
    images: int
    rows_below: int
    worst_file: str
    nonfinite_rows: int = 0
    output: str = "embedding"

    @property
    def passed(self) -> bool:
        """No row under the bound and none non-finite."""
        return not self.rows_below and not self.nonfinite_rows

    def describe(self) -> str:
        """E.g. ``embedding cosine similarity to FP32 at least 0.9991 (bound 0.999) on 24 images``, or the
        failures."""
        text = f"{self.output} cosine similarity to FP32 at least {self.min_cosine:.6g} (bound {self.bound:g})"
        if self.rows_below:
            text += f", {self.rows_below} of {plural(self.images, 'image')} below it, worst {self.worst_file}"
        else:
            text += f" on {plural(self.images, 'image')}"
        if self.nonfinite_rows:
            text += f", {plural(self.nonfinite_rows, 'image')} with non-finite values"
        return text


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray, files: Sequence[str],
                       bound: float, output: str = "embedding") -> EmbeddingParity:
    """Compare embeddings ``(N, D)`` (or class activation maps ``(N, C, h, w)``, each image's flattened) of PyTorch
    FP32 (``reference``) and a file (``candidate``), row ``i`` from ``files[i]``, by per-row cosine similarity
    against ``bound``; ``output`` names them in messages.

    Raises:
        ExportError: the shapes differ.
    """
    if np.shape(reference) != np.shape(candidate) or np.ndim(reference) < 2 or len(reference) != len(files):
        raise ExportError(f"cannot compare {output}s {np.shape(candidate)} with PyTorch's {np.shape(reference)} "
                          f"for {plural(len(files), 'image')}")
    cosine = cosine_similarity(np.reshape(reference, (len(files), -1)), np.reshape(candidate, (len(files), -1)))
    finite = np.isfinite(cosine)
    shown = np.where(finite, cosine, np.inf)
    worst = int(shown.argmin()) if finite.any() else -1
    return EmbeddingParity(
        min_cosine=float(cosine[worst]) if worst >= 0 else 1.0, bound=bound, images=len(files),
        rows_below=int((finite & (cosine < bound)).sum()), worst_file=files[worst] if worst >= 0 else "",
        nonfinite_rows=int((~finite).sum()), output=output,
    )  # fmt: skip


def require_embedding(parity: EmbeddingParity, what: str, option: str = "--embedding") -> None:
    """Raise :class:`ExportError` when the embedding (or class activation maps) of the ``what`` (``FP16``) file
    drift past their bound; ``option`` is the export option that asked for the output.

    Raises:
        ExportError: the message gives the smallest cosine, the bound and the worst image; nothing is written.
    """
    if not parity.passed:
        raise ExportError(f"{what} {parity.output} parity failed: {parity.describe()}; export it in another "
                          f"precision, or without {option}. The file was not written")


@dataclass(frozen=True)
class Parity:
    """How an ONNX file's logits compare with PyTorch's on the same inputs, row by row.

    Each row (image) has its own logit scale ``max(1, largest |reference logit| of the row)`` and may differ by
    at most ``tolerance x`` that scale, so one image with large logits does not loosen the others.

    Attributes:
        max_abs_diff: largest absolute logit difference over every finite row and class.
        tolerance: the largest difference accepted per unit of a row's logit scale (``None`` when the gate is
            accuracy, as for INT8).
        images: images compared.
        rows_over_tolerance: rows whose largest difference exceeds their tolerance (0 without a tolerance).
        worst_file: the row with the largest difference relative to its logit scale ("" when none is finite).
        worst_diff: that row's largest absolute difference.
        worst_scale: that row's logit scale.
        top1_mismatches: rows whose top-1 class differs where it must not: PyTorch's logit of its top-1 class
            exceeds its logit of the ONNX top-1 class by more than the row's tolerance (every flip without a
            tolerance).
        top1_tie_flips: rows whose top-1 class differs within a near tie (allowed).
        mismatch_file: the first row counted in ``top1_mismatches`` ("" when none).
        nonfinite_rows: rows with a NaN or infinite logit, in the ONNX output or in PyTorch's.
        nonfinite_file: the first of them ("" when none).
    """

    max_abs_diff: float
    tolerance: float | None
    images: int
    rows_over_tolerance: int
    worst_file: str
    worst_diff: float
    worst_scale: float
    top1_mismatches: int
    top1_tie_flips: int = 0
    mismatch_file: str = ""
    nonfinite_rows: int = 0
    nonfinite_file: str = ""

    @property
    def worst_allowed(self) -> float | None:
        """The largest difference the worst row was allowed (``tolerance x worst_scale``); ``None`` without a
        tolerance."""
        return None if self.tolerance is None else self.tolerance * self.worst_scale

    def describe_tolerance(self) -> str:
        """E.g. ``worst row 0.002 at a.jpg (tolerance 0.004 = 0.001 x its logit scale 4)``; ``no tolerance`` for
        INT8."""
        if self.tolerance is None:
            return "no tolerance"
        return (
            f"worst row {self.worst_diff:.3g} at {self.worst_file} (tolerance {self.worst_allowed:.3g} = "
            f"{self.tolerance:g} x its logit scale {self.worst_scale:.3g})"
        )

    @property
    def top1_agreement(self) -> float:
        """Share of images with the same top-1 class (near-tie flips count as disagreements), 0..1."""
        return 1.0 - (self.top1_mismatches + self.top1_tie_flips) / max(self.images, 1)


def logit_scale(reference: np.ndarray) -> np.ndarray:
    """Per row of logits ``(N, C)``: ``max(1, largest |logit| of the row)``, float64 ``(N,)``; the unit of
    tolerances."""
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape[-1] == 0:
        return np.ones(reference.shape[:-1])
    return np.maximum(1.0, np.abs(reference).max(axis=-1))


def compare(reference: np.ndarray, candidate: np.ndarray, files: Sequence[str], tolerance: float | None) -> Parity:
    """Compare logits ``(N, C)`` of PyTorch (``reference``) and ONNX (``candidate``), row ``i`` from ``files[i]``.

    ``tolerance`` is per unit of each row's :func:`logit_scale`. A top-1 flip is allowed only as a near tie:
    where PyTorch's logit of its top-1 class exceeds its logit of the class ONNX chose (for a flip to the
    runner-up: the top-2 gap) by at most the row's tolerance; without a ``tolerance`` every flip counts.
    Rows with a NaN or infinite logit are counted apart and left out of the differences.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2 or len(ref) != len(files):
        raise ExportError(f"cannot compare logits {cand.shape} with PyTorch's {ref.shape} "
                          f"for {plural(len(files), 'image')}")
    finite = np.isfinite(ref).all(axis=1) & np.isfinite(cand).all(axis=1)
    nonfinite = np.flatnonzero(~finite)
    scale = logit_scale(np.where(np.isfinite(ref), ref, 0.0))
    per_row = np.where(finite, np.abs(np.where(finite[:, None], ref - cand, 0.0)).max(axis=1, initial=0.0), 0.0)
    relative = np.where(finite, per_row / scale, -1.0)
    worst = int(relative.argmax()) if finite.any() else -1
    ref_top, cand_top = ref.argmax(axis=1), cand.argmax(axis=1)
    flipped = finite & (ref_top != cand_top)
    if tolerance is None:
        over, ties, mismatches = 0, 0, flipped
    else:
        allowed = tolerance * scale
        over = int((per_row > allowed).sum())
        rows = np.arange(len(ref))
        gap = ref[rows, ref_top] - ref[rows, cand_top]
        mismatches = flipped & (gap > allowed)
        ties = int((flipped & ~mismatches).sum())
    first_mismatch = np.flatnonzero(mismatches)
    return Parity(
        max_abs_diff=float(per_row.max(initial=0.0)), tolerance=tolerance, images=len(ref), rows_over_tolerance=over,
        worst_file=files[worst] if worst >= 0 else "", worst_diff=float(per_row[worst]) if worst >= 0 else 0.0,
        worst_scale=float(scale[worst]) if worst >= 0 else 1.0, top1_mismatches=int(mismatches.sum()),
        top1_tie_flips=ties, mismatch_file=files[first_mismatch[0]] if len(first_mismatch) else "",
        nonfinite_rows=len(nonfinite), nonfinite_file=files[nonfinite[0]] if len(nonfinite) else "",
    )  # fmt: skip


def require_parity(parity: Parity, what: str) -> None:
    """Raise :class:`ExportError` on non-finite logits (always), and with a tolerance on a row over it or a top-1
    mismatch.

    ``what`` names the precision gated (``FP32``, ``FP16``); FP16's message also says what its tolerance is relative
    to and why an untrained model can exceed it.

    Raises:
        ExportError: the message names the file and gives the figures; nothing has been written.
    """
    if parity.nonfinite_rows:
        raise ExportError(
            f"{what} model gave non-finite logits (NaN or Inf) for {parity.nonfinite_rows} of "
            f"{plural(parity.images, 'image')}, first {parity.nonfinite_file}; the conversion is broken "
            "(try another --precision or --opset). The file was not written"
        )
    if parity.tolerance is None:
        return
    problems = []
    if parity.rows_over_tolerance:
        problems.append(
            f"{parity.rows_over_tolerance} of {plural(parity.images, 'image')} differ by more than their tolerance, "
            f"worst at {parity.worst_file}: logit difference {parity.worst_diff:.3g} (tolerance "
            f"{parity.worst_allowed:.3g} = {parity.tolerance:g} x its logit scale {parity.worst_scale:.3g}); largest "
            f"difference overall {parity.max_abs_diff:.3g}"
        )
    if parity.top1_mismatches:
        problems.append(
            f"{plural(parity.top1_mismatches, 'image')} with another top-1 class beyond a near tie, first "
            f"{parity.mismatch_file}"
        )
    if problems:
        why = ""
        if what.upper() == "FP16":
            why = (f" (top-1 agreement with PyTorch {parity.top1_agreement:.2%}). The tolerance is relative to each "
                   "image's logit scale, max(1, its largest |logit|): float16 rounds every weight and activation to "
                   "about 3 significant digits, and a network can amplify those errors layer by layer, an untrained or "
                   "briefly trained one especially (batch-norm channels of near-zero variance, logits small next to "
                   "the values inside the network). Check the model's accuracy, or export it in fp32 or int8")
        raise ExportError(f"{what} parity failed: {'; '.join(problems)}{why}. The file was not written")


def check_batch_behaviour(
    session: ort.InferenceSession, inputs: np.ndarray, reference: np.ndarray, tolerance: float, traced_batch: int
) -> None:
    """Prove the dynamic batch axis, determinism and row independence of one session.

    Runs batch sizes 1 and ``traced_batch + 1`` (both differ from the traced one) and the whole of ``inputs``
    twice: the two whole runs must be bitwise identical, and each row's logits must match ``reference``
    (the same file's logits for that row in other batches) within ``tolerance`` per unit of that row's
    :func:`logit_scale`.

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
            raise ExportError(f"the exported model refuses batch size {size}; "
                              f"its batch axis is not dynamic ({exc})") from exc
        relative = np.abs(out - reference).max(axis=1) / logit_scale(reference)
        row = int(relative.argmax())
        if relative[row] > tolerance:
            raise ExportError(
                f"logits at batch size {size} differ from other batch sizes by "
                f"{relative[row] * logit_scale(reference)[row]:.3g} in row {row} "
                f"(tolerance {tolerance:g} x its logit scale {logit_scale(reference)[row]:.3g}); "
                "a row's output depends on its batch"
            )


def require_accuracy_drop(reference_accuracy: float, accuracy: float, max_drop_points: float, what: str) -> float:
    """Return the accuracy drop in points (``100 * (reference - accuracy)``); raise when over ``max_drop_points``.

    ``what`` names the precision gated (``FP16``, ``INT8``); the message's remedy depends on it.

    Raises:
        ExportError: the drop exceeds ``max_drop_points``; the message gives both accuracies.
    """
    drop = 100.0 * (reference_accuracy - accuracy)
    if drop > max_drop_points:
        if what.upper() == "INT8":
            remedy = ("set the INT8 ranges on more or more representative images (--quantization-data, "
                      "--quantization-images), "
                      "try --int8-activations int8, or export fp32/fp16")  # fmt: skip
        else:
            remedy = "export fp32, or allow a larger drop with --max-accuracy-drop"
        raise ExportError(
            f"{what} accuracy {accuracy:.2%} is {drop:.2f} points below FP32's {reference_accuracy:.2%} on the "
            f"validation images, more than --max-accuracy-drop {max_drop_points:g}; {remedy}"
        )
    return drop
