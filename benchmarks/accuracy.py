"""INT8 against FP32 top-1 accuracy on the real Fashion-MNIST test split (trousers vs shirts/T-shirts).

Models are trained here, quickly and from scratch (``gcv train``'s library function, ``weights="none"``), on
the first ``train_per_class`` training images of each class, then exported to FP32 and INT8 (calibrated on
training images, never on test images) and scored on every test image of the two classes (3 000: 1 000
``bryuki``, 2 000 ``bluzy``). Both precisions see the same files through the same preprocessing, so the
difference is the quantization's alone. Random-init models are never used for accuracy figures.
"""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.onnx_models import VARIANT_INT8, calibration_batch, export_model, quantize_variant
from garmentcv.data.fashion_mnist import write_fashion_mnist
from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model
from garmentcv.models import default_preprocessing
from garmentcv.train.config import TrainConfig
from garmentcv.train.loop import train

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyPlan:
    """How the accuracy models are made.

    Attributes:
        train_per_class: training images per class (the first in file order; 80% train, 20% validation).
        epochs: training epochs (gcv train's recipe otherwise: AdamW lr 0.01 x0.8 per epoch, batch 32).
        image_size: model input, px (the demo's 32).
        calibration_images: training images (of the run's train.csv) gcv export calibrates INT8 on.
        source_per_class: write only this many images per class and split of Fashion-MNIST (``None``: all;
            for the smoke test).
    """

    train_per_class: int = 400
    epochs: int = 3
    image_size: int = 32
    calibration_images: int = 200
    source_per_class: int | None = None


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 accuracy (0..1) of one arch at FP32, gcv export's INT8 (U8 activations) and the S8-activation variant on
    ``count`` test images."""

    arch: str
    fp32: float
    int8: float
    int8_variant: float
    count: int
    val_accuracy: float
    train_images: int

    @property
    def drop_points(self) -> float:
        """FP32 minus INT8 accuracy, percentage points."""
        return (self.fp32 - self.int8) * 100


def _train_manifest(data: Path, per_class: int) -> tuple[Path, int]:
    """``data/train_subset.csv``: the first ``per_class`` training files of each class (path,label); its rows."""
    taken: dict[str, int] = {}
    rows = []
    for path in sorted((data / "train").glob("*.jpg")):
        label = path.stem.rsplit("_", 1)[1]
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            rows.append((f"train/{path.name}", label))
    manifest = data / "train_subset.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows])
    return manifest, len(rows)


def score_onnx(model: Path, data: Path, out: Path) -> tuple[float, int]:
    """Top-1 accuracy (0..1) and image count of an ONNX file on ``data/test`` with ``data/test_labels.csv``,
    scored by gcv evaluate's library function (reports written to ``out``)."""
    result = evaluate_model(EvaluateConfig(data=data / "test", labels=data / "test_labels.csv", model=model, out=out,
                                           provider="cpu", progress=False))
    return result.accuracy, result.count


def _manifest_paths(manifest: Path, limit: int) -> list[Path]:
    """Up to ``limit`` image paths of a ``path,label`` manifest, evenly spread over it."""
    with manifest.open(newline="") as handle:
        paths = [Path(row["path"]) for row in csv.DictReader(handle)]
    paths = [p if p.is_absolute() else manifest.parent / p for p in paths]
    return paths[:: max(1, len(paths) // limit)][:limit]


def measure_accuracy(archs: Sequence[str], work: Path, plan: AccuracyPlan) -> list[AccuracyResult]:
    """Train each arch on real data, export FP32 and INT8, score both on the test split (see module doc).

    Raises:
        DatasetError: Fashion-MNIST is not installed (Debian package ``dataset-fashion-mnist``).
    """
    data = work / "fashion-mnist"
    if not (data / "test_labels.csv").is_file():
        write_fashion_mnist(data, max_per_class=plan.source_per_class)
    manifest, train_images = _train_manifest(data, plan.train_per_class)
    cfg = TrainConfig(data=manifest, out=work / "train", archs=tuple(archs), weights="none", epochs=plan.epochs,
                      image_size=plan.image_size, device="cpu")
    result = train(cfg, progress=False)
    out = []
    for arch_result in result.archs:
        checkpoint = arch_result.run_dir / "best.pt"
        # the run's val.csv for the export checks, its train.csv for calibration; no accuracy gate (we measure)
        export = functools.partial(export_model, checkpoint, val_images=0, calibration_images=plan.calibration_images,
                                   max_accuracy_drop=100.0)
        fp32 = export("fp32", work / f"{arch_result.arch}-acc.fp32.onnx")
        int8_path = export("int8", work / f"{arch_result.arch}-acc.int8.onnx")
        calibration = calibration_batch(
            _manifest_paths(arch_result.run_dir.parent / "train.csv", plan.calibration_images),
            default_preprocessing(arch_result.arch, plan.image_size),
        )
        variant = quantize_variant(fp32, work / f"{arch_result.arch}-acc.int8-variant.onnx", calibration, VARIANT_INT8)
        fp32_accuracy, count = score_onnx(fp32, data, work / f"{arch_result.arch}-eval-fp32")
        int8_accuracy, _ = score_onnx(int8_path, data, work / f"{arch_result.arch}-eval-int8")
        variant_accuracy, _ = score_onnx(variant, data, work / f"{arch_result.arch}-eval-int8-variant")
        out.append(AccuracyResult(
            arch=arch_result.arch, fp32=fp32_accuracy, int8=int8_accuracy, int8_variant=variant_accuracy, count=count,
            val_accuracy=float(arch_result.best["accuracy"]), train_images=train_images,
        ))
        logger.info(
            "accuracy %s: fp32 %.4f int8 %.4f on %d test images", arch_result.arch, out[-1].fp32, out[-1].int8, count
        )
    return out
