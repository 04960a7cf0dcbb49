"""The runtime gates: at which (runtime, inference precision) may this file run? Measured at export, kept in the file.

Every pair that ``gcv classify --runtime auto`` may run a file at is run on the validation images and judged
against PyTorch's FP32 logits of the same images (the reference of every export gate,
:mod:`garmentcv.export.checks`) by the rule the file's own precision is held to:

* FP32 and FP16 files: every image's largest logit difference within the pair's tolerance x its logit scale
  ``max(1, largest |logit|)`` (:func:`checks.compare`): :data:`checks.FP32_TOLERANCE` at f32,
  :data:`BF16_TOLERANCE` at bf16, :data:`checks.FP16_TOLERANCE` for FP16; the same top-1 class except near ties
  within it; for OpenVINO also the probabilities consumers use (``softmax(logits / T)`` with the file's
  temperature, the raw softmax without one) within :data:`PROBABILITY_TOLERANCE` of FP32's;
* INT8 files, at any runtime and inference precision: the accuracy, as the INT8 file itself (an INT8 file's
  logits differ from FP32's by more than any float tolerance, whichever runtime's integer kernels run it);
* every pair: finite logits and an accuracy at most ``max_accuracy_drop`` points below FP32's.

The pairs: onnxruntime at the file's precision (the export's own gate, which fails the export when it fails);
OpenVINO at f32 (with ``garmentcv[openvino]``) and at bf16 (also a CPU with native bf16, ``avx512_bf16`` or
``amx_bf16``: elsewhere OpenVINO quietly runs f32 and the check would prove nothing). FP16 files are made for CUDA
and gated on onnxruntime only. A failed pair does not fail the export: each result is written into the file
(:class:`garmentcv.artifact.RuntimeGate`), ``auto`` runs only a pair that passed, and the note of a failed pair
names its cause: when OpenVINO fails at f32 as well as at bf16, bf16 is not the cause (for INT8 files, OpenVINO's
integer kernels differ from onnxruntime's).

A file with an unknown-item detector (the ``ood_score`` output) is gated once more after the score is joined to the
graph (:func:`gate_openvino_scores`): each OpenVINO pair runs the joined graph on the validation images and its
``ood_score`` must stay within :data:`OOD_SCORE_MAX_SHIFT` of the spread of onnxruntime's scores of the same file;
a pair that drifts further fails like any other, naming the score's method.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from garmentcv.artifact import CAM_NAME, EMBEDDING_NAME, OOD_SCORE_NAME, OUTPUT_NAME, RuntimeGate
from garmentcv.calibration import softmax
from garmentcv.export import checks
from garmentcv.infer.runtimes import (
    OPENVINO_DIST,
    OPENVINO_INSTALL,
    openvino_installed,
    this_cpu_flags,
)
from garmentcv.installs import installed_version
from garmentcv.text import plural

logger = logging.getLogger(__name__)

#: Largest logit difference accepted for bf16 per unit of an image's logit scale. bf16 keeps 8 significant
#: bits (relative rounding 2^-8 = 0.0039 per value); measured on resnet18 at 224 px (random init, OpenVINO
#: 2026.4 with AMX) 0.0095 of the scale, so 0.05 (FP16's tolerance) leaves a 5x margin.
BF16_TOLERANCE = 5e-2
#: Largest difference accepted between an OpenVINO pair's and FP32's probabilities (confidences feed
#: --min-confidence and the calibration figures; measured at most 0.012 for bf16 on the demo's trained
#: models). Not applied to INT8 files, which are judged on accuracy.
PROBABILITY_TOLERANCE = 2e-2
#: Largest difference accepted between an OpenVINO pair's ``ood_score`` and onnxruntime's of the same file, per unit
#: of the spread (standard deviation) of onnxruntime's scores of the validation images: by the pair's inference
#: precision (``f32``, ``bf16``) on FP32 files, ``int8`` for every pair on INT8 files. The flags users act on compare
#: the score with a threshold placed at a quantile of those scores: moving every score by at most ``s`` standard
#: deviations moves the share kept by at most ``s x pdf`` at the threshold, for normally distributed scores at 95%
#: recall ``0.25 x 0.103 = 2.6`` points, the bound at bf16 and INT8. At f32 the score is the same float32
#: arithmetic in another order: 1e-3 catches a graph OpenVINO computes otherwise. The differences each file
#: measured are in its gates (``ood_score_diff``). Differences within float32 rounding,
#: :data:`~garmentcv.export.unknown_output.SCORE_TOLERANCE` x
#: ``max(1, largest |score|)``, always pass (scores whose spread is near 0).
OOD_SCORE_MAX_SHIFT = {"f32": 1e-3, "bf16": 0.25, "int8": 0.25}
#: ISA flags with which OpenVINO's CPU plugin runs bf16 natively.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: ``ExportConfig.bf16_check`` values: ``auto`` gates OpenVINO's bf16 where it can (see :func:`can_check`), ``off``
#: never.
BF16_CHECKS = ("auto", "off")


@dataclass(frozen=True)
class GateInputs:
    """What every pair is judged against: PyTorch's FP32 logits ``reference`` ``(N, C)`` float32 of the validation
    images, their names ``files`` row by row, their class indices ``targets`` ``(N,)``, the FP32 accuracy the
    accuracy gates use (``None``: the reference's own) and, for files with an ``embedding`` output, PyTorch's FP32
    embeddings ``(N, D)`` (``None`` without), for files with a ``cam`` output its class activation maps
    ``(N, C, h, w)`` (``None`` without)."""

    reference: np.ndarray
    files: tuple[str, ...]
    targets: np.ndarray
    reference_accuracy: float | None = None
    reference_embedding: np.ndarray | None = None
    reference_cam: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        """FP32 accuracy, 0..1 (0 when no image is labelled)."""
        if self.reference_accuracy is not None:
            return self.reference_accuracy
        return _accuracy(self.reference, self.targets)


def _accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    labelled = targets >= 0
    return float((logits.argmax(axis=1) == targets)[labelled].mean()) if labelled.any() else 0.0


def can_check(flags: Iterable[str] | None = None) -> str | None:
    """``None`` when OpenVINO's bf16 can be gated here, else the reason it cannot (for the log)."""
    if not openvino_installed():
        return f"OpenVINO is not installed ({OPENVINO_INSTALL})"
    usable = this_cpu_flags() if flags is None else frozenset(flags)
    if not BF16_FLAGS & usable:
        return "this CPU has no native bf16 (avx512_bf16 or amx_bf16), where OpenVINO would run f32 instead"
    return None


def tolerance_for(file_precision: str, precision: str) -> float | None:
    """The logit tolerance (per unit of logit scale) of a pair running a ``file_precision`` file at inference
    ``precision`` (onnxruntime's ``fp32``/``fp16``/``int8``, OpenVINO's ``f32``/``bf16``); ``None`` for INT8 files.

    Raises:
        ValueError: an unknown precision.
    """
    if file_precision == "int8":
        return None
    if file_precision == "fp16":
        return checks.FP16_TOLERANCE
    tolerances = {"fp32": checks.FP32_TOLERANCE, "f32": checks.FP32_TOLERANCE, "bf16": BF16_TOLERANCE}
    if file_precision != "fp32" or precision not in tolerances:
        raise ValueError(f"no tolerance for a {file_precision} file at {precision}")
    return tolerances[precision]


def judge(
    runtime: str, precision: str, logits: np.ndarray, seen: GateInputs, tolerance: float | None,
    max_accuracy_drop: float, temperature: float | None = None, probability_tolerance: float | None = None,
    version: str = "", cpu_model: str = "", problems: Sequence[str] = (), embedding: np.ndarray | None = None,
    cam: np.ndarray | None = None,
) -> RuntimeGate:
    """Judge one pair's logits ``(N, C)`` against ``seen`` (see the module docstring); pure numpy.

    Args:
        runtime, precision: the pair.
        logits: its logits of the images of ``seen``, row by row.
        tolerance: per unit of logit scale; ``None``: judged on accuracy only (INT8).
        max_accuracy_drop: accuracy points the pair may lose against FP32.
        temperature: the file's temperature (``None``: none, the raw softmax).
        probability_tolerance: the largest probability difference accepted; ``None``: not a condition.
        version, cpu_model: recorded.
        problems: problems found before judging (e.g. OpenVINO ran another precision), listed first.
        embedding: the pair's ``embedding`` output ``(N, D)`` for a file with one, judged against
            ``seen.reference_embedding`` by per-image cosine similarity at least
            :data:`checks.EMBEDDING_MIN_COSINE` of ``precision``; ``None``: not a condition.
        cam: the pair's ``cam`` output ``(N, C, h, w)`` for a file with one, judged against ``seen.reference_cam``
            likewise (each image's maps flattened) with :data:`checks.CAM_MIN_COSINE`; ``None``: not a condition.

    Raises:
        ExportError: ``logits`` (or ``embedding``, ``cam``) are not the shape of the reference.
    """
    parity = checks.compare(seen.reference, logits, seen.files, tolerance)
    accuracy = _accuracy(logits, seen.targets)
    drop = 100.0 * (seen.accuracy - accuracy)
    finite = np.isfinite(logits).all(axis=1) & np.isfinite(seen.reference).all(axis=1)
    t = 1.0 if temperature is None else temperature
    prob_diff = float(np.abs(softmax(logits[finite], t) - softmax(seen.reference[finite], t)).max(initial=0.0))
    found = list(problems)
    if parity.nonfinite_rows:
        found.append(f"non-finite logits for {plural(parity.nonfinite_rows, 'image')}, first {parity.nonfinite_file}")
    if parity.rows_over_tolerance:
        found.append(f"{parity.rows_over_tolerance} of {plural(parity.images, 'image')} differ from FP32 by more than "
                     f"their tolerance, {parity.describe_tolerance()}")
    if tolerance is not None and parity.top1_mismatches:
        found.append(f"{plural(parity.top1_mismatches, 'image')} with another top-1 class than FP32 beyond a near "
                     f"tie, first {parity.mismatch_file}")
    if probability_tolerance is not None and prob_diff > probability_tolerance:
        what = "raw softmax" if temperature is None else f"calibrated probabilities (temperature {temperature:.4g})"
        found.append(f"{what} differ from FP32's by up to {prob_diff:.3g}, more than {probability_tolerance:g}")
    if drop > max_accuracy_drop:
        found.append(f"accuracy {accuracy:.2%} is {drop:.2f} points below FP32's {seen.accuracy:.2%}, more than "
                     f"{max_accuracy_drop:g}")
    cosines: dict[str, float | None] = {}
    for name, got, want, bounds, what in (
        (EMBEDDING_NAME, embedding, seen.reference_embedding, checks.EMBEDDING_MIN_COSINE, "embedding"),
        (CAM_NAME, cam, seen.reference_cam, checks.CAM_MIN_COSINE, "class activation map"),
    ):  # fmt: skip
        if got is None or want is None:
            continue
        bound = bounds.get(precision, bounds["fp32"])
        if tolerance is None:  # an INT8 file: its integer parts set the bound, whatever the float precision
            bound = min(bound, bounds["int8"])
        compared = checks.compare_embeddings(want, got, seen.files, bound, what)
        cosines[name] = compared.min_cosine
        if not compared.passed:
            found.append(compared.describe())
    return RuntimeGate(
        runtime=runtime, precision=precision, passed=not found, images=parity.images,
        top1_agreement=parity.top1_agreement, max_abs_diff=parity.max_abs_diff, tolerance=tolerance,
        accuracy=accuracy, accuracy_drop=drop, max_probability_diff=prob_diff, note="; ".join(found),
        version=version, cpu_model=cpu_model, embedding_min_cosine=cosines.get(EMBEDDING_NAME),
        cam_min_cosine=cosines.get(CAM_NAME),
    )  # fmt: skip


@dataclass(frozen=True)
class OpenVINORun:
    """OpenVINO's logits ``(N, C)`` of the validation images at one inference precision, the precision the compiled
    model reported (``used``), or why it could not run (``error``, with ``logits`` ``None``); ``embedding``
    ``(N, D)``, ``cam`` ``(N, C, h, w)`` and ``ood_score`` ``(N,)`` for a file with those outputs (else ``None``)."""

    precision: str
    logits: np.ndarray | None
    used: str = ""
    error: str = ""
    embedding: np.ndarray | None = None
    cam: np.ndarray | None = None
    ood_score: np.ndarray | None = None


def run_openvino(
    model: bytes, precisions: Sequence[str], batches: Iterable[np.ndarray], classes: int, embeds: bool = False,
    cams: bool = False, scores: bool = False,
) -> dict[str, OpenVINORun]:
    """Compile the serialized ONNX ``model`` once per inference precision and run every batch through each, in one
    pass over ``batches`` (the file's inputs, in the order of the reference's rows); with ``embeds``, the
    ``embedding`` output too, with ``cams`` the ``cam`` output, with ``scores`` the ``ood_score`` output.

    A model OpenVINO cannot compile or run gives that precision an :class:`OpenVINORun` with the error, not an
    exception.
    """
    from garmentcv.infer.runtimes import RuntimeUnavailableError
    from garmentcv.infer.runtimes.openvino import compile_file

    requests: dict[str, object] = {}
    runs: dict[str, OpenVINORun] = {}
    for precision in precisions:
        try:
            compiled, used = compile_file(model, precision)
        except RuntimeUnavailableError as exc:
            runs[precision] = OpenVINORun(precision, None, error=str(exc).removesuffix("; use --runtime onnxruntime"))
            continue
        requests[precision] = compiled.create_infer_request()
        runs[precision] = OpenVINORun(precision, None, used)
    parts: dict[str, list[np.ndarray]] = {p: [] for p in requests}
    embedded: dict[str, list[np.ndarray]] = {p: [] for p in requests}
    mapped: dict[str, list[np.ndarray]] = {p: [] for p in requests}
    scored: dict[str, list[np.ndarray]] = {p: [] for p in requests}
    if requests:
        for inputs in batches:
            for precision, request in list(requests.items()):
                try:
                    request.infer({0: inputs})  # type: ignore[attr-defined]
                except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
                    runs[precision] = OpenVINORun(precision, None,
                                                  error=f"OpenVINO cannot run this file at {precision}: {exc}")
                    del requests[precision], parts[precision]
                    continue
                parts[precision].append(np.array(request.get_tensor(OUTPUT_NAME).data, dtype=np.float32, copy=True))  # type: ignore[attr-defined]
                if embeds:
                    embedded[precision].append(np.array(request.get_tensor(EMBEDDING_NAME).data,  # type: ignore[attr-defined]
                                                        dtype=np.float32, copy=True))
                if cams:
                    mapped[precision].append(np.array(request.get_tensor(CAM_NAME).data,  # type: ignore[attr-defined]
                                                      dtype=np.float32, copy=True))
                if scores:
                    ood = request.get_tensor(OOD_SCORE_NAME).data  # type: ignore[attr-defined]
                    scored[precision].append(np.array(ood, dtype=np.float32, copy=True))
    for precision, chunks in parts.items():
        logits = np.concatenate(chunks) if chunks else np.empty((0, classes), np.float32)
        embedding = np.concatenate(embedded[precision]) if embedded.get(precision) else None
        cam = np.concatenate(mapped[precision]) if mapped.get(precision) else None
        ood = np.concatenate(scored[precision]) if scored.get(precision) else None
        runs[precision] = OpenVINORun(precision, logits, runs[precision].used, embedding=embedding, cam=cam,
                                      ood_score=ood)
    return runs


def _name_causes(file_precision: str, gates: dict[str, RuntimeGate], ran: set[str]) -> dict[str, RuntimeGate]:
    """The failed OpenVINO pairs among ``gates`` (by inference precision) with notes that name the cause; ``ran``:
    the precisions OpenVINO compiled and ran as asked (the others' notes already say what went wrong)."""
    named = dict(gates)
    f32, bf16 = gates.get("f32"), gates.get("bf16")
    kernels = ("OpenVINO's INT8 kernels differ from onnxruntime's, which passed the same gate"
               if file_precision == "int8" else "OpenVINO's f32 kernels differ from PyTorch's")
    if f32 is not None and not f32.passed and "f32" in ran:
        named["f32"] = dataclasses.replace(f32, note=f"{kernels}: {f32.note}")
    if bf16 is not None and not bf16.passed and "bf16" in ran:
        if f32 is not None and not f32.passed and "f32" in ran:
            cause = f"not bf16: OpenVINO fails at f32 too ({kernels})"
        elif file_precision == "int8":
            cause = "bf16 in the float parts of this INT8 file (OpenVINO passed at f32)"
        else:
            cause = "bf16 rounding (OpenVINO passed at f32)"
        named["bf16"] = dataclasses.replace(bf16, note=f"{cause}: {bf16.note}")
    return named


def gate_openvino(
    model: bytes, file_precision: str, precisions: Sequence[str], batches: Iterable[np.ndarray], seen: GateInputs,
    max_accuracy_drop: float, cpu_model: str = "", temperature: float | None = None,
) -> tuple[RuntimeGate, ...]:
    """Gate OpenVINO at each inference precision of ``precisions`` (``f32``, ``bf16``) on a ``file_precision`` file:
    run (:func:`run_openvino`, one pass over ``batches``), judge (:func:`judge`, with :func:`tolerance_for` and, for
    FP32 and FP16 files, :data:`PROBABILITY_TOLERANCE`), and name the cause of each failure. A precision OpenVINO
    cannot compile, or runs at another precision, fails saying so.

    Raises:
        ExportError: OpenVINO's logits are not the shape of the reference.
    """
    runs = run_openvino(model, precisions, batches, seen.reference.shape[1], seen.reference_embedding is not None,
                        seen.reference_cam is not None)
    version = f"openvino {installed_version(OPENVINO_DIST) or '?'}"
    judged: dict[str, RuntimeGate] = {}
    for precision, ran in runs.items():
        tolerance = tolerance_for(file_precision, precision)
        if ran.logits is None:
            judged[precision] = RuntimeGate("openvino", precision, False, 0, 0.0, 0.0, tolerance, 0.0, 0.0, 0.0,
                                            ran.error, version, cpu_model)
            continue
        problems = [f"OpenVINO ran {ran.used}, not {precision}, on this CPU"] if ran.used != precision else []
        judged[precision] = judge(
            "openvino", precision, ran.logits, seen, tolerance, max_accuracy_drop, temperature,
            None if file_precision == "int8" else PROBABILITY_TOLERANCE, version, cpu_model, problems, ran.embedding,
            ran.cam,
        )  # fmt: skip
    ran_as_asked = {p for p, r in runs.items() if r.logits is not None and r.used == p}
    return tuple(_name_causes(file_precision, judged, ran_as_asked).values())


def gate_runtimes(
    mode: str, file_precision: str, model: bytes, batches: Iterable[np.ndarray], seen: GateInputs,
    own_logits: np.ndarray, max_accuracy_drop: float, cpu_model: str = "", temperature: float | None = None,
    own_embedding: np.ndarray | None = None, own_cam: np.ndarray | None = None,
) -> tuple[RuntimeGate, ...]:
    """The gates as gcv export runs them: onnxruntime at ``file_precision`` from its logits ``own_logits``, then
    OpenVINO at f32 and (``mode`` ``auto``, a CPU with native bf16) at bf16 on ``batches``, each judged against
    ``seen`` (with ``own_embedding``, the file's ``embedding`` output, and OpenVINO's, by cosine similarity to
    ``seen.reference_embedding``; with ``own_cam`` its ``cam`` output likewise against ``seen.reference_cam``);
    each result logged at INFO (a failed OpenVINO pair only keeps ``auto`` from
    running the file there).

    ``batches`` (the file's inputs in the order of ``seen``'s rows) is iterated at most once, and not at all for
    FP16 files or without OpenVINO.

    Raises:
        ValueError: an unknown ``mode``.
        ExportError: OpenVINO's logits are not the shape of the reference.
    """
    if mode not in BF16_CHECKS:
        raise ValueError(f"bf16 check must be one of {BF16_CHECKS}, got {mode!r}")
    ort_version = f"onnxruntime {installed_version('onnxruntime') or '?'}"
    own = judge("onnxruntime", file_precision, own_logits, seen, tolerance_for(file_precision, file_precision),
                max_accuracy_drop, temperature, None, ort_version, cpu_model, embedding=own_embedding, cam=own_cam)
    gates = [own]
    if file_precision == "fp16":
        logger.info("OpenVINO not gated: FP16 files are made for CUDA, where onnxruntime runs them")
    elif not openvino_installed():
        logger.info("OpenVINO not gated: it is not installed (%s); gcv classify will not choose it for this file",
                    OPENVINO_INSTALL)
    else:
        precisions = ["f32"]
        reason = "--bf16-check off" if mode == "off" else can_check()
        if reason is None:
            precisions.append("bf16")
        else:
            logger.info("OpenVINO's bf16 not gated: %s; gcv classify will not run this file in bf16", reason)
        gates.extend(gate_openvino(model, file_precision, precisions, batches, seen, max_accuracy_drop, cpu_model,
                                   temperature))
    for gate in gates:
        if gate.passed:
            logger.info("runtime gate %s at %s: passed, %s", gate.version, gate.precision, gate.describe())
        else:
            logger.info("runtime gate %s at %s: not passed, so gcv classify --runtime auto will not run this file "
                        "there: %s", gate.version, gate.precision, gate.note)
    return tuple(gates)


def score_bound(file_precision: str, precision: str, want: np.ndarray) -> float:
    """The largest ``ood_score`` difference (score units) accepted for OpenVINO at inference ``precision`` on a
    ``file_precision`` file, from onnxruntime's scores ``want`` ``(N,)`` of the validation images: the larger of
    :data:`OOD_SCORE_MAX_SHIFT` x their standard deviation and float32 rounding,
    :data:`~garmentcv.export.unknown_output.SCORE_TOLERANCE` x ``max(1, largest |score|)``.

    Raises:
        ValueError: an unknown precision, or no scores.
    """
    from garmentcv.export.unknown_output import SCORE_TOLERANCE

    key = "int8" if file_precision == "int8" else precision
    if key not in OOD_SCORE_MAX_SHIFT:
        raise ValueError(f"no ood_score bound for OpenVINO at {precision} on a {file_precision} file")
    scores = np.asarray(want, dtype=np.float64).ravel()
    if not len(scores):
        raise ValueError("need onnxruntime's scores of at least one image")
    floor = SCORE_TOLERANCE * max(1.0, float(np.abs(scores).max()))
    return max(OOD_SCORE_MAX_SHIFT[key] * float(scores.std()), floor)


def judge_score(
    gate: RuntimeGate, method: str, got: np.ndarray | None, want: np.ndarray, threshold: float, file_precision: str,
    error: str = "",
) -> RuntimeGate:
    """``gate`` (an OpenVINO pair) with its ``ood_score`` ``got`` ``(N,)`` judged against onnxruntime's ``want``
    ``(N,)`` of the same file and images (pure numpy): the largest absolute difference within :func:`score_bound`,
    every score finite; the images whose unknown flag (``score > threshold``) differs are counted. ``got`` ``None``:
    OpenVINO could not run the joined graph, ``error`` says why, and the pair fails.

    Raises:
        ValueError: ``got`` is not the shape of ``want``.
    """
    want = np.asarray(want, dtype=np.float64).ravel()
    bound = score_bound(file_precision, gate.precision, want)
    what = f"the {method} ood_score"
    if got is None:
        problem = f"OpenVINO cannot run the file with {what} at {gate.precision}: {error}"
        return dataclasses.replace(gate, passed=False, note="; ".join(n for n in (gate.note, problem) if n))
    scores = np.asarray(got, dtype=np.float64).ravel()
    if scores.shape != want.shape:
        raise ValueError(f"OpenVINO's ood_score has {scores.shape} values, onnxruntime's {want.shape}")
    finite = np.isfinite(scores)
    diff = float(np.abs(scores[finite] - want[finite]).max(initial=0.0))
    flips = int(((scores > threshold) != (want > threshold)).sum())
    problems = []
    if not finite.all():
        problems.append(f"{what} is not finite for {plural(int((~finite).sum()), 'image')}")
    if diff > bound:
        problems.append(
            f"{what} differs from onnxruntime's by up to {diff:.3g}, more than {bound:.3g} "
            f"({OOD_SCORE_MAX_SHIFT['int8' if file_precision == 'int8' else gate.precision]:g} x the spread of the "
            f"validation images' scores), changing the unknown flag of {plural(flips, 'image')}; run the file on "
            "onnxruntime or export it with another --unknown-score method"
        )  # fmt: skip
    note = "; ".join(n for n in (gate.note, *problems) if n)
    return dataclasses.replace(gate, passed=gate.passed and not problems, note=note, ood_score_diff=diff,
                               ood_score_bound=bound, unknown_flag_changes=flips)


def gate_openvino_scores(
    model: bytes, file_precision: str, gates: Sequence[RuntimeGate], batches: Iterable[np.ndarray],
    want: np.ndarray, method: str, threshold: float, classes: int,
) -> tuple[RuntimeGate, ...]:
    """``gates`` with each OpenVINO pair that ran (:func:`gate_openvino`) judged once more on the file with its
    unknown-item detector joined: the serialized ``model`` is run at each of those inference precisions in one pass
    over ``batches`` (:func:`run_openvino`; the file's inputs in the order of ``want``) and its ``ood_score`` judged
    against onnxruntime's ``want`` ``(N,)`` (:func:`judge_score`, with the detector's ``method`` and ``threshold``);
    each result logged at INFO. Other pairs, and all of them without OpenVINO pairs, are returned unchanged and
    ``batches`` is not iterated.

    Raises:
        ValueError: OpenVINO's ``ood_score`` is not the shape of ``want``.
    """
    ran = [g.precision for g in gates if g.runtime == "openvino" and g.images]
    if not ran:
        return tuple(gates)
    runs = run_openvino(model, ran, batches, classes, scores=True)
    judged = []
    for gate in gates:
        if gate.runtime != "openvino" or gate.precision not in runs:
            judged.append(gate)
            continue
        run = runs[gate.precision]
        result = judge_score(gate, method, run.ood_score if run.logits is not None else None, want, threshold,
                             file_precision, run.error)
        if result.ood_score_diff is not None:
            logger.info("%s ood_score on %s at %s: largest difference from onnxruntime's %.3g (bound %.3g), unknown "
                        "flag changed for %s", method, result.version, result.precision, result.ood_score_diff,
                        result.ood_score_bound, plural(result.unknown_flag_changes or 0, "validation image"))
        if gate.passed and not result.passed:
            logger.info("runtime gate %s at %s: not passed with the %s unknown score, so gcv classify --runtime auto "
                        "will not run this file there: %s", result.version, result.precision, method, result.note)
        judged.append(result)
    return tuple(judged)
