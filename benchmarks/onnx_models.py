"""Checkpoints and ONNX files for the benchmarks.

Every timed or scored model file is written by ``gcv export``'s library function
(:func:`garmentcv.export.exporter.export_checkpoint`), so the figures are those of the files users ship.
:func:`quantize_variant` re-quantizes the library's FP32 file with other onnxruntime settings, only to show
what each setting is worth (the ``int8-settings`` section).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from garmentcv.artifact import INPUT_NAME, ModelInfo
from garmentcv.image import Preprocessing, load_input
from garmentcv.models import build_model, default_preprocessing
from garmentcv.train.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

#: Class names of the random-init speed models (the speed does not depend on them).
SPEED_CLASSES: tuple[str, ...] = ("bluzy", "bryuki")


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


@dataclass(frozen=True)
class Int8Settings:
    """onnxruntime static quantization settings (see ``onnxruntime.quantization.quantize_static``); the
    defaults are gcv export's (``garmentcv.export.convert.to_int8``).

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


#: gcv export's INT8 setting before 3ce6b01 (S8 activations), kept beside the current U8 one to show what the
#: activation type is worth on x86 (VNNI multiplies u8 by s8), and its label in the tables.
VARIANT_INT8 = Int8Settings(activations="s8")
VARIANT_LABEL = "int8-s8s8"


def calibration_batch(paths: Sequence[Path], pp: Preprocessing) -> np.ndarray:
    """Preprocessed images ``float32 (N, 3, crop, crop)`` for INT8 calibration (the shared image contract)."""
    return np.stack([load_input(p, pp) for p in paths])


def quantize_variant(fp32: Path, out: Path, calibration: np.ndarray, settings: Int8Settings) -> Path:
    """Quantize a gcv export FP32 file with ``settings`` (onnxruntime static quantization) to compare settings.

    Args:
        fp32: the FP32 file (with metadata).
        out: the INT8 file to write (metadata copied, precision ``int8``).
        calibration: ``float32 (N, 3, H, W)`` preprocessed images, fed 8 at a time.
        settings: see :class:`Int8Settings`.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calibration[i : i + 8] for i in range(0, len(calibration), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
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
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, dataclasses.replace(info, precision="int8").to_metadata())
    onnx.save(proto, str(out))
    return out


def labelled_photos(folder: Path, photos: Sequence[Path], classes: Sequence[str] = SPEED_CLASSES) -> Path:
    """Hard links ``folder/0001_<class>.jpg`` ... to ``photos``, classes in turn (lamoda layout): the
    validation and calibration images gcv export needs for a random-init speed model."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(photos):
        link = folder / f"{i + 1:04d}_{classes[i % len(classes)]}.jpg"
        if not link.exists():
            os.link(photo, link)
    return folder


def export_model(
    checkpoint: Path, precision: str, out: Path, val_data: Path | None = None, calibration_data: Path | None = None,
    val_images: int = 16, calibration_images: int = 16, max_accuracy_drop: float = 1.0,
    input_format: str = "float32-nchw",
) -> Path:
    """``checkpoint`` -> ``out`` at ``precision`` with gcv export's library function (all its gates).

    Args:
        val_data, calibration_data: labelled images for the parity checks, any images for INT8 calibration;
            ``None`` uses the run's ``val.csv``/``train.csv`` beside the checkpoint.
        val_images, calibration_images: images used for the checks (0: all) and for calibration, at most.
        max_accuracy_drop: the FP16/INT8 accuracy gate, points; random-init speed models pass 100 (their accuracy
            means nothing, their speed is the point).
        input_format: the model input (:data:`garmentcv.artifact.INPUT_FORMATS`); this suite's model-only rows,
            INT8 variants and settings table feed float32 batches, so it keeps format 1 (float32-nchw) unless
            told otherwise (``benchmarks/shared_core.py`` measures both).
    """
    from garmentcv.export.exporter import ExportConfig, export_checkpoint  # noqa: PLC0415 - needs onnx, torch

    cfg = ExportConfig(checkpoint=checkpoint, out=out, precision=precision, val_data=val_data, val_images=val_images,
                       calibration_data=calibration_data, calibration_images=calibration_images,
                       max_accuracy_drop=max_accuracy_drop, input_format=input_format)
    return export_checkpoint(cfg, progress=False).out


def speed_files(arch: str, size: int, photos: Sequence[Path], work: Path, input_format: str = "float32-nchw",
                precisions: Sequence[str] = ("fp32", "int8")) -> tuple[Path, dict[str, Path]]:
    """A random-init ``arch`` checkpoint and its gcv export files for speed figures (speed does not depend on the
    weights), checked and calibrated on the first 16 of ``photos`` (:func:`labelled_photos`), no accuracy gate.

    Returns:
        ``(checkpoint, {precision: ONNX file})``, all in ``work``.
    """
    checkpoint = write_random_checkpoint(arch, size, work / "model.pt")
    labelled = labelled_photos(work / "labelled", list(photos)[:16])
    files = {p: export_model(checkpoint, p, work / f"model.{p}.onnx", val_data=labelled, calibration_data=labelled,
                             max_accuracy_drop=100.0, input_format=input_format)
             for p in precisions}  # fmt: skip
    return checkpoint, files
