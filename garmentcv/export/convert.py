"""Model -> ONNX graph at a precision: torch's exporter, then onnxruntime's FP16 converter or INT8 quantizer.

* FP32: ``torch.onnx.export`` (the torch.export-based exporter, torch's default since 2.9) of the model in
  eval mode with a dynamic batch axis; the requested opset is verified, never assumed.
* FP16: ``onnxruntime.transformers.float16.convert_float_to_float16`` with ``keep_io_types=True``, so the
  file still takes and returns float32 like the others.
* INT8: ``onnxruntime.quantization.quantize_static`` in QDQ format with per-channel signed int8 weights and
  unsigned uint8 activations (U8S8) by default, after ``quant_pre_process`` (shape inference and graph
  optimisation), calibrated with MinMax on real images streamed batch by batch
  (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html). U8S8 is what
  onnxruntime's x86 integer GEMM/conv kernels are fastest at on CPUs with AVX-512 VNNI (S8S8 runs much
  slower there; the measured figures: docs/performance.md). On x86 CPUs
  without VNNI those kernels use ``VPMADDUBSW``, whose 16-bit intermediate sums can saturate; onnxruntime's
  docs recommend ``reduce_range`` or S8S8 there, so ``activations="int8"`` (S8S8) is offered and the CPU the
  calibration and the gate ran on is recorded in the file (:class:`garmentcv.artifact.Quantization`).
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel
from torch import nn

from garmentcv import cpus
from garmentcv.artifact import INPUT_NAME, INT8_ACTIVATIONS, OUTPUT_NAME, ModelInfo
from garmentcv.errors import ExportError, GarmentCVError

logger = logging.getLogger(__name__)

#: The opset written when none is asked for: the lowest torch's exporter implements, run by onnxruntime >= 1.14.
DEFAULT_OPSET = 18

#: The /proc/cpuinfo flags that decide how onnxruntime's integer kernels behave, in the order recorded.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
#: Flags of the instructions that make U8S8 exact and fast (``VPDPBUSD`` and AMX's tiles).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_QUANT_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}

#: Operators that would make outputs random or training-dependent; an exported graph must hold none.
FORBIDDEN_OPS = frozenset(
    {"Dropout", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
)


def default_opset(model: onnx.ModelProto) -> int:
    """The opset version of the default (``ai.onnx``) domain of ``model``; 0 when it has none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_opset(model: onnx.ModelProto, requested: int) -> None:
    """Raise :class:`ExportError` unless the default-domain opset of ``model`` is ``requested``."""
    found = default_opset(model)
    if found != requested:
        raise ExportError(
            f"opset {requested} was asked for but the exporter wrote opset {found}; torch "
            f"{torch.__version__}'s ONNX exporter implements opset {DEFAULT_OPSET} and above (up to "
            f"{onnx.defs.onnx_opset_version()} with onnx {onnx.__version__}); choose --opset in that range"
        )


def check_graph(model: onnx.ModelProto) -> None:
    """Run the ONNX checker (with shape inference) and refuse random or dropout nodes.

    Raises:
        ExportError: the checker fails, or the graph holds a node of :data:`FORBIDDEN_OPS`.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the ONNX checker rejects the exported graph: {exc}") from exc
    bad = sorted({n.op_type for n in model.graph.node if n.op_type in FORBIDDEN_OPS})
    if bad:
        raise ExportError(f"the exported graph holds {bad} nodes; it must be exported from eval mode")


def trace_to_onnx(model: nn.Module, example: torch.Tensor, opset: int,
                  outputs: Sequence[str] = (OUTPUT_NAME,)) -> onnx.ModelProto:
    """Export ``model`` (put in eval mode) to an in-memory ONNX model at ``opset``.

    Args:
        model: a classifier taking float32 ``(N, 3, H, W)`` (or uint8 crops) and returning logits ``(N, C)``, or
            a tuple whose tensors are named by ``outputs`` (logits first).
        example: float32 ``(B, 3, H, W)`` with ``B >= 2``, the traced input; the batch axis is exported
            dynamic (named ``batch``) and callers prove it with other batch sizes.
        opset: default-domain opset to write.
        outputs: the graph's output names, in the order the model returns them.

    Returns:
        The model with input ``input``, the ``outputs`` and every weight inside the proto.

    Raises:
        ExportError: the exporter fails or writes another opset than ``opset``.
    """
    model.eval()
    batch = torch.export.Dim("batch", min=1)
    logger.info("exporting with torch %s's ONNX exporter at opset %d (takes a few seconds)", torch.__version__, opset)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model, (example,), None, input_names=[INPUT_NAME], output_names=list(outputs),
                opset_version=opset, dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
                optimize=True, verbose=False,
            )  # fmt: skip
    except Exception as exc:  # the exporter raises many types; every one means this model cannot be exported
        raise ExportError(f"torch's ONNX exporter failed at opset {opset}: {exc}") from exc
    proto = program.model_proto
    check_opset(proto, opset)
    return proto


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert weights and compute to float16, keeping float32 ``input`` and outputs (Cast nodes at the edges)."""
    converted = convert_float_to_float16(model, keep_io_types=True)
    OnnxModel(converted).topological_sort()  # the converter appends the output Casts last; the checker wants order
    return converted


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, tuple[str, ...]]:
    """``(model name, flags)`` of the first CPU in ``cpuinfo``; flags are those of :data:`CPU_FLAGS` it has.

    Both are empty when unknown (no such file, or a format without ``model name``/``flags`` such as ARM's).
    """
    model, flags = cpus.cpu_info(cpuinfo)
    return model, tuple(f for f in CPU_FLAGS if f in flags)


def has_vnni(flags: Iterable[str]) -> bool:
    """Whether ``flags`` (from :func:`cpu_facts`) name an instruction set with 8-bit dot products (VNNI, AMX)."""
    return bool(VNNI_FLAGS & set(flags))


class _ImageReader(CalibrationDataReader):
    """Feeds calibration batches ``(B, 3, H, W)`` float32 to onnxruntime's calibrator as they come (one batch at a
    time)."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _batches_of(calibration: np.ndarray | Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    if isinstance(calibration, np.ndarray):
        return (calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size))
    return iter(calibration)


def to_int8(
    model: onnx.ModelProto,
    calibration: np.ndarray | Iterable[np.ndarray],
    batch_size: int = 32,
    activations: str = "uint8",
    cpu: tuple[str, tuple[str, ...]] | None = None,
) -> onnx.ModelProto:
    """Static INT8 quantization: QDQ format, per-channel symmetric int8 weights, MinMax-calibrated activations.

    onnxruntime's MinMax calibrator keeps only per-tensor minima and maxima of each batch, so memory does not
    grow with the number of calibration images when they come as an iterable of batches.

    Args:
        model: the FP32 model from :func:`trace_to_onnx`.
        calibration: preprocessed training images that set the activation ranges: float32 ``(N, 3, H, W)``,
            cut into ``batch_size`` rows, or an iterable of float32 ``(B, 3, H, W)`` batches, read once.
        batch_size: images per calibration batch when ``calibration`` is one array.
        activations: ``uint8`` (U8S8, fastest with VNNI) or ``int8`` (S8S8, safe on CPUs without VNNI).
        cpu: ``(model name, flags)`` of :func:`cpu_facts` (read when ``None``); with ``uint8`` on a CPU
            known to lack VNNI a warning recommends ``int8``.

    Raises:
        ValueError: an unknown ``activations``.
        ExportError: no calibration images, or onnxruntime's quantizer fails.
    """
    if activations not in INT8_ACTIVATIONS:
        raise ValueError(f"activations must be one of {INT8_ACTIVATIONS}, got {activations!r}")
    cpu_model, flags = cpu if cpu is not None else cpu_facts()
    if activations == "uint8" and flags and not has_vnni(flags):
        logger.warning(
            "%s has no VNNI (flags %s): uint8 activations (U8S8) may saturate in onnxruntime's integer kernels "
            "here; if INT8 accuracy suffers, export with --int8-activations int8 (S8S8)",
            cpu_model or "this CPU", " ".join(flags),
        )  # fmt: skip
    batches = _batches_of(calibration, batch_size)
    first = next(batches, None)
    if first is None or len(first) == 0:
        raise ExportError("INT8 quantization needs calibration images; none could be read")
    with tempfile.TemporaryDirectory(prefix="gcv-int8-") as tmp:
        fp32, prepared, int8 = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(model, fp32, save_as_external_data=False)
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
            quantize_static(
                str(prepared), str(int8), _ImageReader(itertools.chain([first], batches)), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=_QUANT_TYPES[activations], weight_type=QuantType.QInt8,
                nodes_to_exclude=input_preprocessing_nodes(onnx.load_model(prepared)),
            )  # fmt: skip
        except GarmentCVError:  # e.g. no calibration image after the first batch could be read
            raise
        except Exception as exc:  # the quantizer raises many types; all mean the same to the user
            raise ExportError(f"onnxruntime's static INT8 quantization failed: {exc}") from exc
        return onnx.load_model(int8, load_external_data=True)


#: Element-wise operators of a uint8-input file's in-graph preprocessing (garmentcv.export.uint8_input).
_PREPROCESSING_OPS = frozenset({"Transpose", "Cast", "Mul", "Sub"})


def input_preprocessing_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the chain of :data:`_PREPROCESSING_OPS` nodes from ``input`` to the first other node (none for
    a float32-input graph, whose ``input`` feeds a Conv directly).

    INT8 leaves them in float: quantizing each of them adds a QuantizeLinear/DequantizeLinear pair, two more
    passes over every pixel of the batch (measured: INT8 resnet18 at 224 px ran 20% slower model-only), while
    the first Conv's own input quantization is all the integer kernels need.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chain: list[str] = []
    tensor = INPUT_NAME
    while True:
        users = [n for n in consumers.get(tensor, []) if n.op_type != "Shape"]  # the batch size read off the input
        if len(users) != 1 or users[0].op_type not in _PREPROCESSING_OPS or not users[0].name:
            break
        node = users[0]
        chain.append(node.name)
        tensor = node.output[0]
    return chain


def finalize(model: onnx.ModelProto, info: ModelInfo) -> onnx.ModelProto:
    """Drop opset imports no node uses, write ``info`` into the metadata properties; returns ``model``."""
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, info.to_metadata())
    model.producer_name, model.doc_string = "garmentcv", f"GarmentCV {info.arch} classifier ({info.precision})"
    return model


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` as one self-contained file (no external ``.data`` file)."""
    onnx.save_model(model, path, save_as_external_data=False)


def convert(
    model: onnx.ModelProto,
    precision: str,
    calibration: np.ndarray | Iterable[np.ndarray] | None,
    activations: str = "uint8",
    cpu: tuple[str, tuple[str, ...]] | None = None,
) -> onnx.ModelProto:
    """Return ``model`` (FP32) at ``precision`` (``fp32``, ``fp16`` or ``int8``).

    ``int8`` needs ``calibration``, ``activations`` and ``cpu`` as :func:`to_int8` takes them; the others ignore them.
    """
    if precision == "fp32":
        return model
    if precision == "fp16":
        return to_fp16(model)
    if precision == "int8":
        return to_int8(model, calibration if calibration is not None else [], activations=activations, cpu=cpu)
    raise ExportError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
