"""Checkpoints and ONNX files for the benchmarks.

TEMPORARY: :func:`export_temporary` and :func:`quantize_int8_temporary` stand in for ``garmentcv.export``
(branch ``export``) until it is merged; then :func:`export_model` calls the library and these two go. They
follow the artifact contract (:mod:`garmentcv.artifact`: input ``input`` float32 (N, 3, H, W), output
``logits``, the ModelInfo metadata), so ``gcv-classify`` reads the files they write.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

import garmentcv
from garmentcv.artifact import INPUT_NAME, OUTPUT_NAME, ModelInfo
from garmentcv.image import Preprocessing, load_input
from garmentcv.models import build_model, default_preprocessing
from garmentcv.train.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

#: Class names of the random-init speed models (the speed does not depend on them).
SPEED_CLASSES: tuple[str, ...] = ("bluzy", "bryuki")
OPSET = 17


def write_random_checkpoint(arch: str, image_size: int, path: Path, seed: int = 0) -> Path:
    """Save a random-init ``arch`` at ``image_size`` px as a GarmentCV checkpoint (for speed figures only)."""
    torch.manual_seed(seed)
    built = build_model(arch, len(SPEED_CLASSES), weights="none")
    save_checkpoint(path, {
        "arch": arch, "classes": list(SPEED_CLASSES), "weights_source": built.weights_source,
        "preprocessing": default_preprocessing(arch, image_size).to_dict(),
        "state_dict": built.model.state_dict(), "epoch": 0, "metrics": {}, "config": {"benchmark": True},
    })
    return path


def load_eager(checkpoint: Path) -> tuple[torch.nn.Module, Preprocessing, tuple[str, ...]]:
    """The checkpoint's model in eval mode on the CPU, its preprocessing and its classes."""
    data = load_checkpoint(checkpoint)
    model = build_model(data["arch"], len(data["classes"]), weights="none").model
    model.load_state_dict(data["state_dict"])
    return model.eval(), Preprocessing.from_dict(data["preprocessing"]), tuple(data["classes"])


def _info(data: dict, precision: str) -> ModelInfo:  # type: ignore[type-arg]
    return ModelInfo(
        arch=data["arch"], classes=tuple(data["classes"]), preprocessing=Preprocessing.from_dict(data["preprocessing"]),
        precision=precision, weights_source=data["weights_source"], metrics={}, garmentcv_version=garmentcv.__version__,
        opset=OPSET,
    )


def _set_metadata(model: onnx.ModelProto, info: ModelInfo) -> None:
    del model.metadata_props[:]
    for key, value in info.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def export_temporary(checkpoint: Path, out: Path) -> Path:
    """TEMPORARY stand-in for gcv-export FP32: legacy ``torch.onnx.export`` with a dynamic batch, plus metadata."""
    data = load_checkpoint(checkpoint)
    model, pp, _ = load_eager(checkpoint)
    dummy = torch.zeros(2, 3, pp.crop, pp.crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, opset_version=OPSET, dynamo=False,
        )
    proto = onnx.load(str(out))
    _set_metadata(proto, _info(data, "fp32"))
    onnx.save(proto, str(out))
    return out


@dataclass(frozen=True)
class Int8Settings:
    """onnxruntime static quantization settings (see ``onnxruntime.quantization.quantize_static``).

    Attributes:
        quant_format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs, fused by onnxruntime) or ``qoperator``
            (QLinearConv etc. written directly).
        per_channel: one scale per output channel of each weight (more accurate for convolutions).
        reduce_range: 7-bit weights, for CPUs without VNNI whose 16-bit accumulators can saturate.
        activations: ``u8`` or ``s8``.
        calibration: ``minmax``, ``entropy`` or ``percentile``.
    """

    quant_format: str = "qdq"
    per_channel: bool = True
    reduce_range: bool = False
    activations: str = "u8"
    calibration: str = "minmax"

    def label(self) -> str:
        """Short description for tables, e.g. ``qdq/per-channel/u8s8/minmax``."""
        return "/".join([
            self.quant_format, "per-channel" if self.per_channel else "per-tensor",
            f"{self.activations}s8" + ("/reduce-range" if self.reduce_range else ""), self.calibration,
        ])


def calibration_batch(paths: Sequence[Path], pp: Preprocessing) -> np.ndarray:
    """Preprocessed images ``float32 (N, 3, crop, crop)`` for INT8 calibration (the shared image contract)."""
    return np.stack([load_input(p, pp) for p in paths])


def quantize_int8_temporary(fp32: Path, out: Path, calibration: np.ndarray, settings: Int8Settings = Int8Settings()) -> Path:
    """TEMPORARY stand-in for gcv-export INT8: onnxruntime static quantization calibrated on ``calibration``.

    Args:
        fp32: the FP32 file (with metadata).
        out: the INT8 file to write (metadata copied, precision ``int8``).
        calibration: ``float32 (N, 3, H, W)`` preprocessed images, fed 8 at a time.
        settings: see :class:`Int8Settings`.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calibration[i : i + 8] for i in range(0, len(calibration), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    quantize_static(
        str(pre), str(out), Reader(),
        quant_format=QuantFormat.QDQ if settings.quant_format == "qdq" else QuantFormat.QOperator,
        per_channel=settings.per_channel, reduce_range=settings.reduce_range,
        activation_type=QuantType.QUInt8 if settings.activations == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8, calibrate_method=methods[settings.calibration],
    )
    pre.unlink()
    proto = onnx.load(str(out))
    info = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(str(fp32)).metadata_props})
    _set_metadata(proto, ModelInfo(**{**info.__dict__, "precision": "int8"}))
    onnx.save(proto, str(out))
    return out


def convert_fp16(fp32: Path, out: Path) -> Path:
    """FP16 weights and activations, float32 input/output (for the CUDA provider; slow on CPUs)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    info = ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props})
    _set_metadata(proto, ModelInfo(**{**info.__dict__, "precision": "fp16"}))
    onnx.save(proto, str(out))
    return out


def export_model(
    checkpoint: Path, precision: str, out: Path, calibration: np.ndarray | None = None,
    int8: Int8Settings = Int8Settings(),
) -> Path:
    """``checkpoint`` -> ONNX file ``out`` at ``precision`` (``fp32``, ``fp16``, ``int8``; int8 needs ``calibration``)."""
    if precision == "fp32":
        return export_temporary(checkpoint, out)
    fp32 = out.with_name(out.stem + ".fp32-src.onnx")
    export_temporary(checkpoint, fp32)
    try:
        if precision == "fp16":
            return convert_fp16(fp32, out)
        if precision == "int8":
            if calibration is None:
                raise ValueError("INT8 export needs calibration images")
            return quantize_int8_temporary(fp32, out, calibration, int8)
        raise ValueError(f"unknown precision {precision!r}")
    finally:
        fp32.unlink(missing_ok=True)
