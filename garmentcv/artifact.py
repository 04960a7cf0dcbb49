"""What a GarmentCV ONNX file says about itself (standard library, numpy and Pillow only).

``gcv export`` writes a :class:`ModelInfo` into the ONNX file's metadata properties (string key/value
pairs); ``gcv classify`` and ``gcv evaluate`` read it back into the same objects training used, so the
model file is all they need. The ONNX graph has one input ``input`` and one output ``logits``, float32
``(N, C)`` in :attr:`ModelInfo.classes` order. The input is one of :data:`INPUT_FORMATS`:

* format version 1, ``float32-nchw``: float32 ``(N, 3, H, W)`` normalised as :attr:`ModelInfo.preprocessing`
  says (:func:`garmentcv.image.load_input`);
* format version 2, ``uint8-nhwc``: the RGB ``uint8`` crops ``(N, H, W, 3)`` of :func:`garmentcv.image.load_crop`;
  scaling to 0..1, normalisation and the layout change run inside the graph, so decoding threads hand over a
  quarter of the bytes and no float pass runs in Python.

Format version 3 adds outputs after ``logits`` (declared in :attr:`ModelInfo.outputs`): ``embedding``, float32
``(N, D)``, the pooled features the classification head takes (:data:`EMBEDDING_NAME`); ``ood_score``, float32
``(N,)``, the score of an unknown-item detector computed in the graph (:data:`OOD_SCORE_NAME`, higher = more
unknown, with its threshold in :attr:`ModelInfo.unknown`); and ``cam``, float32 ``(N, C, h, w)``, the class
activation maps of each class at the last feature map's resolution (:data:`CAM_NAME`, Zhou et al. 2016), always
with ``embedding``. Releases before version 3 refuse a graph with more than one output, so such files say they
need a newer release rather than fail on the graph.

A file is written at the lowest version that describes it (float32 files stay version 1, readable by older
releases; files without extra outputs stay at 1 or 2); readers accept all of them. Prediction sets
(:attr:`ModelInfo.conformal`) are metadata only: a release that does not read them still classifies the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from garmentcv.conformal import ConformalPredictor
from garmentcv.errors import ModelFileError
from garmentcv.image import Preprocessing

FORMAT = "garmentcv-onnx"
#: The newest metadata format this release reads and writes (2: the input format is recorded; 3: outputs after
#: ``logits``).
FORMAT_VERSION = 3
#: Model inputs: float32 normalised NCHW (format 1) or uint8 pixels NHWC normalised in the graph (format 2).
INPUT_FLOAT32 = "float32-nchw"
INPUT_UINT8 = "uint8-nhwc"
INPUT_FORMATS = (INPUT_FLOAT32, INPUT_UINT8)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: The optional output of pooled penultimate features, float32 ``(N, D)``: the input of the final linear layer.
EMBEDDING_NAME = "embedding"
#: The optional output of an unknown-item detector's score, float32 ``(N,)``, higher = more unknown.
OOD_SCORE_NAME = "ood_score"
#: The optional output of class activation maps, float32 ``(N, C, h, w)`` at the last feature map's resolution
#: (Zhou et al. 2016; :mod:`garmentcv.export.cam`).
CAM_NAME = "cam"
#: Every output a GarmentCV file may have, in graph order (``logits`` always first).
OUTPUT_NAMES = (OUTPUT_NAME, EMBEDDING_NAME, OOD_SCORE_NAME, CAM_NAME)
PRECISIONS = ("fp32", "fp16", "int8")

_PREFIX = "garmentcv."
#: The activation types an INT8 file may use: ``uint8`` (U8S8, onnxruntime's fast x86 kernels) or ``int8`` (S8S8).
INT8_ACTIVATIONS = ("uint8", "int8")


@dataclass(frozen=True)
class Quantization:
    """How an INT8 file was quantized, and on which CPU its calibration and accuracy gate ran.

    Attributes:
        activations: activation type, ``uint8`` (U8S8) or ``int8`` (S8S8).
        weights: weight type, ``int8`` (per-channel, symmetric).
        cpu_model: ``model name`` of ``/proc/cpuinfo`` on the exporting machine; ``""`` when unknown.
        cpu_flags: those of ``avx2``, ``avx512f``, ``avx512_vnni``, ``avx_vnni``, ``amx_int8`` that CPU has (in
            that order); empty when unknown. Without a VNNI flag onnxruntime's U8S8 kernels can saturate.
    """

    activations: str
    weights: str
    cpu_model: str = ""
    cpu_flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able types."""
        return {"activations": self.activations, "weights": self.weights, "cpu_model": self.cpu_model,
                "cpu_flags": list(self.cpu_flags)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quantization:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: an unknown activation type or a malformed entry.
        """
        if not isinstance(data, Mapping) or data.get("activations") not in INT8_ACTIVATIONS:
            raise ValueError(f"bad quantization entry {data!r}")
        flags = data.get("cpu_flags", [])
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise ValueError(f"bad cpu_flags {flags!r}")
        return cls(str(data["activations"]), str(data.get("weights", "int8")), str(data.get("cpu_model", "")),
                   tuple(flags))


@dataclass(frozen=True)
class ReducedPrecisionCheck:
    """Whether a reduced inference precision (bf16 on OpenVINO) matched the file's own logits at export.

    The form of the bf16 gate in files of releases before :class:`RuntimeGate` (and, for FP32 files, of their OpenVINO
    bf16 pair since, for releases that read only this): the file run by OpenVINO at ``precision`` against the file's
    own logits, on the validation images: every image's largest logit difference within ``tolerance``
    x its logit scale ``max(1, largest |logit|)``, the same top-1 class except near ties within it, calibrated
    probabilities within a stated tolerance, and the accuracy at most ``max_accuracy_drop`` points lower. Consumers
    use the precision only when ``passed``.

    Attributes:
        precision: the inference precision checked, ``bf16``.
        passed: whether every condition held.
        images: validation images compared.
        top1_agreement: share of images with the same top-1 class, 0..1.
        max_abs_diff: largest absolute logit difference.
        tolerance: the largest difference allowed per unit of an image's logit scale.
        accuracy_drop: accuracy points lost against the file's own precision.
        note: why it failed (or ``""``).
        runtime: the runtime and version that ran it, e.g. ``openvino 2026.4.1``.
        cpu_model: the CPU it ran on (``model name`` of ``/proc/cpuinfo``; ``""`` when unknown).
        max_probability_diff: largest difference of the calibrated probabilities ``softmax(logits / T)``.
    """

    precision: str
    passed: bool
    images: int
    top1_agreement: float
    max_abs_diff: float
    tolerance: float
    accuracy_drop: float
    note: str = ""
    runtime: str = ""
    cpu_model: str = ""
    max_probability_diff: float = 0.0

    def describe(self) -> str:
        """E.g. ``top-1 agreement 100.00% on 24 images, largest logit difference 0.012 (tolerance 0.1 x scale)``."""
        return (f"top-1 agreement {self.top1_agreement:.2%} on {self.images} images, largest logit difference "
                f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:g} x logit scale), largest probability difference "
                f"{self.max_probability_diff:.3g}, accuracy drop "
                f"{self.accuracy_drop:.2f} points")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able types."""
        return {"precision": self.precision, "passed": self.passed, "images": self.images,
                "top1_agreement": self.top1_agreement, "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance,
                "accuracy_drop": self.accuracy_drop, "note": self.note, "runtime": self.runtime,
                "cpu_model": self.cpu_model, "max_probability_diff": self.max_probability_diff}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReducedPrecisionCheck:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a malformed entry.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("passed"), bool):
            raise ValueError(f"bad reduced-precision check {data!r}")
        return cls(str(data["precision"]), data["passed"], int(data["images"]), float(data["top1_agreement"]),
                   float(data["max_abs_diff"]), float(data["tolerance"]), float(data["accuracy_drop"]),
                   str(data.get("note", "")), str(data.get("runtime", "")), str(data.get("cpu_model", "")),
                   float(data.get("max_probability_diff", 0.0)))


#: The runtimes a :class:`RuntimeGate` names.
GATED_RUNTIMES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class RuntimeGate:
    """One (runtime, inference precision) pair run on the validation images at export and judged against FP32.

    Written by :mod:`garmentcv.export.runtime_gates`: the file run by ``runtime`` at ``precision`` against PyTorch's
    FP32 logits of the same images (the reference of every export gate), by the rule the file's own precision is
    held to: FP32 and FP16 files (and bf16 on them) within ``tolerance`` x each image's logit scale ``max(1,
    largest |logit|)`` with the same top-1 class except near ties and calibrated probabilities within a stated
    tolerance; INT8 files (``tolerance`` ``None``) on their accuracy; every pair with finite logits and an
    accuracy at most ``max_accuracy_drop`` points below FP32's. ``gcv classify --runtime auto`` runs only a pair
    that ``passed``.

    Attributes:
        runtime: ``onnxruntime`` or ``openvino``.
        precision: onnxruntime: the file's ``fp32``, ``fp16`` or ``int8``; OpenVINO: its inference precision
            ``f32`` or ``bf16`` (the float parts of an INT8 file).
        passed: whether every condition held.
        images: validation images compared.
        top1_agreement: share of images with FP32's top-1 class, 0..1.
        max_abs_diff: largest absolute logit difference from FP32.
        tolerance: the largest difference allowed per unit of an image's logit scale; ``None``: judged on accuracy
            (INT8).
        accuracy: top-1 accuracy on the validation images, 0..1.
        accuracy_drop: accuracy points below FP32's.
        max_probability_diff: largest difference from FP32 of the probabilities consumers use (``softmax(logits /
            T)`` with the file's temperature, the raw softmax without one).
        note: why it failed, naming the cause (``""`` when it passed).
        version: the runtime and version that ran it, e.g. ``openvino 2026.4.1``.
        cpu_model: the CPU it ran on (``model name`` of ``/proc/cpuinfo``; ``""`` when unknown).
        embedding_min_cosine: files with an ``embedding`` output: the smallest per-image cosine similarity of the
            pair's embedding to PyTorch's FP32 one (a condition of ``passed``, bound
            :data:`garmentcv.export.checks.EMBEDDING_MIN_COSINE`); ``None`` without one.
        cam_min_cosine: files with a ``cam`` output: the same for each image's class activation maps (all classes,
            flattened; bound :data:`garmentcv.export.checks.CAM_MIN_COSINE`); ``None`` without one.
        ood_score_diff: files with an ``ood_score`` output, OpenVINO pairs: the largest absolute difference of the
            pair's ``ood_score`` from onnxruntime's of the same file on the validation images (a condition of
            ``passed``, bound ``ood_score_bound``, :data:`garmentcv.export.runtime_gates.OOD_SCORE_MAX_SHIFT`);
            ``None`` without one, for onnxruntime and in files of releases before it was measured.
        ood_score_bound: the largest difference accepted, in score units; ``None`` with ``ood_score_diff``.
        unknown_flag_changes: validation images whose unknown flag (``ood_score > threshold``) differs from
            onnxruntime's (reported, not a condition: the threshold is one of onnxruntime's own scores, so the image
            at it can flip by any rounding); ``None`` with ``ood_score_diff``.
    """

    runtime: str
    precision: str
    passed: bool
    images: int
    top1_agreement: float
    max_abs_diff: float
    tolerance: float | None
    accuracy: float
    accuracy_drop: float
    max_probability_diff: float = 0.0
    note: str = ""
    version: str = ""
    cpu_model: str = ""
    embedding_min_cosine: float | None = None
    cam_min_cosine: float | None = None
    ood_score_diff: float | None = None
    ood_score_bound: float | None = None
    unknown_flag_changes: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(runtime, precision)``."""
        return self.runtime, self.precision

    def describe(self) -> str:
        """E.g. ``top-1 agreement 100.00% on 24 images, largest logit difference 0.012 (tolerance 0.05 x logit
        scale), largest probability difference 0.003, accuracy drop 0.00 points``; INT8 pairs name their accuracy."""
        tolerance = ("no logit tolerance: INT8 is judged on accuracy" if self.tolerance is None
                     else f"tolerance {self.tolerance:g} x logit scale")
        text = (f"top-1 agreement {self.top1_agreement:.2%} on {self.images} images, largest logit difference "
                f"{self.max_abs_diff:.3g} ({tolerance}), largest probability difference "
                f"{self.max_probability_diff:.3g}, accuracy drop {self.accuracy_drop:.2f} points")
        if self.embedding_min_cosine is not None:
            text += f", embedding cosine to FP32 at least {self.embedding_min_cosine:.6g}"
        if self.cam_min_cosine is not None:
            text += f", class activation map cosine to FP32 at least {self.cam_min_cosine:.6g}"
        if self.ood_score_diff is not None:
            text += (f", ood_score within {self.ood_score_diff:.3g} of onnxruntime's (bound "
                     f"{self.ood_score_bound:.3g}), {self.unknown_flag_changes} unknown flags changed")
        return text if self.tolerance is not None else f"accuracy {self.accuracy:.2%}, {text}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able types."""
        return {"runtime": self.runtime, "precision": self.precision, "passed": self.passed, "images": self.images,
                "top1_agreement": self.top1_agreement, "max_abs_diff": self.max_abs_diff,
                "tolerance": self.tolerance, "accuracy": self.accuracy, "accuracy_drop": self.accuracy_drop,
                "max_probability_diff": self.max_probability_diff, "note": self.note, "version": self.version,
                "cpu_model": self.cpu_model,
                **({} if self.embedding_min_cosine is None else {"embedding_min_cosine": self.embedding_min_cosine}),
                **({} if self.cam_min_cosine is None else {"cam_min_cosine": self.cam_min_cosine}),
                **({} if self.ood_score_diff is None else {
                    "ood_score_diff": self.ood_score_diff, "ood_score_bound": self.ood_score_bound,
                    "unknown_flag_changes": self.unknown_flag_changes})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeGate:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a malformed entry or an unknown runtime.
        """
        if (not isinstance(data, Mapping) or data.get("runtime") not in GATED_RUNTIMES
                or not isinstance(data.get("passed"), bool)):
            raise ValueError(f"bad runtime gate {data!r}")
        tolerance = data.get("tolerance")
        return cls(str(data["runtime"]), str(data["precision"]), data["passed"], int(data["images"]),
                   float(data["top1_agreement"]), float(data["max_abs_diff"]),
                   None if tolerance is None else float(tolerance), float(data["accuracy"]),
                   float(data["accuracy_drop"]), float(data.get("max_probability_diff", 0.0)),
                   str(data.get("note", "")), str(data.get("version", "")), str(data.get("cpu_model", "")),
                   None if data.get("embedding_min_cosine") is None else float(data["embedding_min_cosine"]),
                   None if data.get("cam_min_cosine") is None else float(data["cam_min_cosine"]),
                   None if data.get("ood_score_diff") is None else float(data["ood_score_diff"]),
                   None if data.get("ood_score_bound") is None else float(data["ood_score_bound"]),
                   None if data.get("unknown_flag_changes") is None else int(data["unknown_flag_changes"]))

    def as_bf16_check(self) -> ReducedPrecisionCheck:
        """The same result in the form releases before per-runtime gates read (``garmentcv.bf16``).

        Raises:
            ValueError: not a pair with a logit tolerance (releases before would not read ``None``).
        """
        if self.tolerance is None:
            raise ValueError("a pair judged on accuracy has no bf16 check form")
        return ReducedPrecisionCheck(
            precision=self.precision, passed=self.passed, images=self.images, top1_agreement=self.top1_agreement,
            max_abs_diff=self.max_abs_diff, tolerance=self.tolerance, accuracy_drop=self.accuracy_drop,
            note=self.note, runtime=self.version, cpu_model=self.cpu_model,
            max_probability_diff=self.max_probability_diff,
        )  # fmt: skip


@dataclass(frozen=True)
class UnknownDetector:
    """The unknown-item detector stored in a file: a score computed in the graph (the ``ood_score`` output) and the
    threshold above which an image is called unknown (none of the model's classes).

    Attributes:
        method: the score's name (e.g. ``energy``, ``knn``), as the code that fitted it names it.
        threshold: images with ``ood_score > threshold`` are unknown.
        recall: the share of in-distribution held-out images at or below the threshold when it was fitted, 0..1.
        reference_size: rows of reference data the score carries in the graph (class means, a bank of
            embeddings; 0 when it needs none).
        images: held-out images the threshold was fitted on.
    """

    method: str
    threshold: float
    recall: float
    reference_size: int = 0
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able types."""
        return {"method": self.method, "threshold": self.threshold, "recall": self.recall,
                "reference_size": self.reference_size, "images": self.images}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnknownDetector:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a malformed entry, a non-finite threshold or a recall outside 0..1.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("method"), str):
            raise ValueError(f"bad unknown detector {data!r}")
        threshold, recall = float(data["threshold"]), float(data["recall"])
        if not math.isfinite(threshold) or not 0.0 <= recall <= 1.0:
            raise ValueError(f"bad unknown detector threshold {threshold!r} or recall {recall!r}")
        return cls(data["method"], threshold, recall, int(data.get("reference_size", 0)), int(data.get("images", 0)))


@dataclass(frozen=True)
class ModelInfo:
    """The self-description of an exported model.

    Attributes:
        arch: torchvision architecture name, e.g. ``resnet18``.
        classes: class names; position = index in the ``logits`` output.
        preprocessing: how images become the ``input`` tensor.
        precision: ``fp32``, ``fp16`` or ``int8`` (inputs and outputs are float32 in all three).
        weights_source: where the backbone weights came from before fine-tuning (file names only, never a
            local path).
        metrics: validation figures (accuracy, precision, recall, F1, ...) recorded at export.
        checkpoint_sha256: SHA-256 of the checkpoint file exported.
        garmentcv_version: version of the garmentcv that exported the file.
        opset: ONNX opset of the default domain.
        quantization: INT8 files: types and the CPU of calibration (``None`` otherwise, and in files of
            releases before it was recorded).
        input_format: :data:`INPUT_FLOAT32` (format 1 files) or :data:`INPUT_UINT8` (format 2).
        temperature: the temperature ``T`` fitted at export on the validation images (minimum NLL of
            ``softmax(logits / T)``, see :mod:`garmentcv.calibration`); ``None`` in files without one, which are
            used uncalibrated (``T = 1``). The ``logits`` output itself is never scaled.
        bf16: the bf16 gate's result (:class:`ReducedPrecisionCheck`); ``None`` when it was not run (files of
            releases before it, exports without OpenVINO or on a CPU without native bf16, INT8 files since
            :attr:`runtime_gates`). Files with :attr:`runtime_gates` carry here their OpenVINO bf16 pair, for releases
            that read only this.
        runtime_gates: each (runtime, inference precision) pair gated at export (:class:`RuntimeGate`); empty in
            files of releases before them, for which :func:`garmentcv.infer.runtimes.openvino_allowed` states the
            fallback.
        outputs: the graph's outputs in order, :data:`OUTPUT_NAME` first, then any of :data:`EMBEDDING_NAME`,
            :data:`OOD_SCORE_NAME` and :data:`CAM_NAME` in that order (format version 3); ``("logits",)`` in files
            without extra outputs.
        embedding_dim: ``D`` of the ``embedding`` output (0 without one).
        conformal: the split conformal predictor fitted at export (:class:`garmentcv.conformal.ConformalPredictor`:
            prediction sets with a coverage guarantee); ``None`` when none was fitted (files of releases before it,
            exports with too few held-out images for the coverage asked).
        unknown: the unknown-item detector whose score is the ``ood_score`` output (:class:`UnknownDetector`);
            ``None`` without one.
    """

    arch: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    precision: str
    weights_source: str
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint_sha256: str = ""
    garmentcv_version: str = ""
    opset: int = 0
    quantization: Quantization | None = None
    temperature: float | None = None
    input_format: str = INPUT_FLOAT32
    bf16: ReducedPrecisionCheck | None = None
    runtime_gates: tuple[RuntimeGate, ...] = ()
    outputs: tuple[str, ...] = (OUTPUT_NAME,)
    embedding_dim: int = 0
    conformal: ConformalPredictor | None = None
    unknown: UnknownDetector | None = None

    @property
    def has_embedding(self) -> bool:
        """Whether the graph has the ``embedding`` output."""
        return EMBEDDING_NAME in self.outputs

    @property
    def has_cam(self) -> bool:
        """Whether the graph has the ``cam`` output (class activation maps)."""
        return CAM_NAME in self.outputs

    @property
    def has_ood_score(self) -> bool:
        """Whether the graph has the ``ood_score`` output (and the file an :attr:`unknown` detector)."""
        return OOD_SCORE_NAME in self.outputs

    def gate(self, runtime: str, precision: str) -> RuntimeGate | None:
        """The :class:`RuntimeGate` of ``(runtime, precision)``, ``None`` when that pair was not gated."""
        return next((g for g in self.runtime_gates if g.key == (runtime, precision)), None)

    @property
    def temperature_note(self) -> str:
        """Why the file has no temperature (``metrics["export"]["temperature_note"]``, written by gcv export); ``""``
        when it has one, or when it was exported before the reason was recorded."""
        export = self.metrics.get("export") if isinstance(self.metrics, Mapping) else None
        note = export.get("temperature_note", "") if isinstance(export, Mapping) else ""
        return "" if self.temperature is not None else str(note or "")

    @property
    def format_version(self) -> int:
        """The metadata format version written for this model: 3 with outputs after ``logits``; otherwise 1 for
        float32 input, 2 for uint8 input."""
        if self.outputs != (OUTPUT_NAME,):
            return 3
        return 1 if self.input_format == INPUT_FLOAT32 else 2

    @property
    def input_dtype(self) -> str:
        """numpy dtype name of the ``input`` tensor: ``float32`` or ``uint8``."""
        return "float32" if self.input_format == INPUT_FLOAT32 else "uint8"

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of ``batch`` images at the ``input``: ``(N, 3, H, W)`` for float32, ``(N, H, W, 3)`` for uint8."""
        size = self.preprocessing.crop
        return (batch, 3, size, size) if self.input_format == INPUT_FLOAT32 else (batch, size, size, 3)

    @property
    def applied_temperature(self) -> float:
        """The temperature consumers divide the logits by: :attr:`temperature`, or 1.0 when the file has none."""
        return 1.0 if self.temperature is None else self.temperature

    def to_metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entries: every value a string, structured ones as JSON."""
        props = {
            f"{_PREFIX}format": FORMAT,
            f"{_PREFIX}format_version": str(self.format_version),
            f"{_PREFIX}arch": self.arch,
            f"{_PREFIX}classes": json.dumps(list(self.classes), ensure_ascii=False),
            f"{_PREFIX}preprocessing": json.dumps(self.preprocessing.to_dict()),
            f"{_PREFIX}precision": self.precision,
            f"{_PREFIX}weights_source": self.weights_source,
            f"{_PREFIX}metrics": json.dumps(self.metrics),
            f"{_PREFIX}checkpoint_sha256": self.checkpoint_sha256,
            f"{_PREFIX}garmentcv_version": self.garmentcv_version,
            f"{_PREFIX}opset": str(self.opset),
        }
        if self.quantization is not None:
            props[f"{_PREFIX}quantization"] = json.dumps(self.quantization.to_dict(), ensure_ascii=False)
        if self.temperature is not None:
            props[f"{_PREFIX}temperature"] = repr(float(self.temperature))
        if self.input_format != INPUT_FLOAT32:
            props[f"{_PREFIX}input"] = self.input_format
        if self.bf16 is not None:
            props[f"{_PREFIX}bf16"] = json.dumps(self.bf16.to_dict(), ensure_ascii=False)
        if self.runtime_gates:
            props[f"{_PREFIX}runtime_gates"] = json.dumps([g.to_dict() for g in self.runtime_gates], ensure_ascii=False)
        if self.outputs != (OUTPUT_NAME,):
            props[f"{_PREFIX}outputs"] = json.dumps(list(self.outputs))
        if self.has_embedding:
            props[f"{_PREFIX}embedding_dim"] = str(self.embedding_dim)
        if self.conformal is not None:
            props[f"{_PREFIX}conformal"] = json.dumps(self.conformal.to_dict())
        if self.unknown is not None:
            props[f"{_PREFIX}unknown"] = json.dumps(self.unknown.to_dict(), ensure_ascii=False)
        return props

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str = "model file") -> ModelInfo:
        """Parse :meth:`to_metadata` output back.

        Raises:
            ModelFileError: the properties are not GarmentCV's, are of a newer format, or are damaged. The
                message names ``source`` and says how to make a usable file.
        """
        if props.get(f"{_PREFIX}format") != FORMAT:
            raise ModelFileError(
                f"{source}: has no GarmentCV metadata, so its classes and preprocessing are unknown; "
                "export the model with 'gcv export CHECKPOINT --out FILE.onnx'"
            )
        try:
            version = int(props[f"{_PREFIX}format_version"])
            if version > FORMAT_VERSION:
                raise ModelFileError(
                    f"{source}: metadata format {version} is newer than this garmentcv reads ({FORMAT_VERSION}); "
                    "upgrade garmentcv"
                )
            precision = props[f"{_PREFIX}precision"]
            if precision not in PRECISIONS:
                raise ValueError(f"unknown precision {precision!r}")
            input_format = props.get(f"{_PREFIX}input", INPUT_FLOAT32) if version >= 2 else INPUT_FLOAT32
            if input_format not in INPUT_FORMATS:
                raise ValueError(f"unknown input format {input_format!r}")
            outputs = _outputs(props.get(f"{_PREFIX}outputs") if version >= 3 else None)
            classes = tuple(json.loads(props[f"{_PREFIX}classes"]))
            if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
                raise ValueError(f"bad class list {classes!r}")
            return cls(
                arch=props[f"{_PREFIX}arch"],
                classes=classes,
                preprocessing=Preprocessing.from_dict(json.loads(props[f"{_PREFIX}preprocessing"])),
                precision=precision,
                weights_source=props.get(f"{_PREFIX}weights_source", ""),
                metrics=json.loads(props.get(f"{_PREFIX}metrics", "{}")),
                checkpoint_sha256=props.get(f"{_PREFIX}checkpoint_sha256", ""),
                garmentcv_version=props.get(f"{_PREFIX}garmentcv_version", ""),
                opset=int(props.get(f"{_PREFIX}opset", "0")),
                quantization=(
                    Quantization.from_dict(json.loads(props[f"{_PREFIX}quantization"]))
                    if f"{_PREFIX}quantization" in props else None
                ),
                temperature=_temperature(props.get(f"{_PREFIX}temperature")),
                input_format=input_format,
                bf16=(
                    ReducedPrecisionCheck.from_dict(json.loads(props[f"{_PREFIX}bf16"]))
                    if f"{_PREFIX}bf16" in props else None
                ),
                runtime_gates=_runtime_gates(props.get(f"{_PREFIX}runtime_gates")),
                outputs=outputs,
                embedding_dim=int(props.get(f"{_PREFIX}embedding_dim", "0")) if EMBEDDING_NAME in outputs else 0,
                conformal=(
                    ConformalPredictor.from_dict(json.loads(props[f"{_PREFIX}conformal"]), len(classes))
                    if f"{_PREFIX}conformal" in props else None
                ),
                unknown=(
                    UnknownDetector.from_dict(json.loads(props[f"{_PREFIX}unknown"]))
                    if f"{_PREFIX}unknown" in props and OOD_SCORE_NAME in outputs else None
                ),
            )
        except ModelFileError:
            raise
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source}: damaged GarmentCV metadata ({exc}); export the model again") from exc


def _runtime_gates(text: str | None) -> tuple[RuntimeGate, ...]:
    """Parse the ``runtime_gates`` property: ``()`` when absent.

    Raises:
        ValueError: not a JSON list of :meth:`RuntimeGate.to_dict` entries.
    """
    if text is None:
        return ()
    entries = json.loads(text)
    if not isinstance(entries, list):
        raise ValueError(f"runtime_gates must be a list, got {type(entries).__name__}")
    return tuple(RuntimeGate.from_dict(e) for e in entries)


def _outputs(text: str | None) -> tuple[str, ...]:
    """Parse the ``outputs`` property: ``("logits",)`` when absent.

    Raises:
        ValueError: not a JSON list starting with ``logits`` of distinct names of :data:`OUTPUT_NAMES`.
    """
    if text is None:
        return (OUTPUT_NAME,)
    names = json.loads(text)
    if (not isinstance(names, list) or not names or names[0] != OUTPUT_NAME or len(set(names)) != len(names)
            or not set(names) <= set(OUTPUT_NAMES)):
        raise ValueError(f"outputs must be a list starting with {OUTPUT_NAME!r} of {list(OUTPUT_NAMES)}, got {text!r}")
    return tuple(names)


def _temperature(text: str | None) -> float | None:
    """Parse the ``temperature`` property: ``None`` when absent; a positive finite float otherwise.

    Raises:
        ValueError: not a positive finite number.
    """
    if text is None:
        return None
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"temperature must be a positive number, got {text!r}")
    return value
