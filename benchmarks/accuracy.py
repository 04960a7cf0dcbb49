"""INT8 against FP32 top-1 accuracy on the real Fashion-MNIST test split (trousers vs shirts/T-shirts).

Models are trained here, quickly and from scratch (``gcv-train``'s library function, ``weights="none"``), on
the first ``train_per_class`` training images of each class, then exported to FP32 and INT8 (calibrated on
training images, never on test images) and scored on every test image of the two classes (3 000: 1 000
``bryuki``, 2 000 ``bluzy``). Both precisions see the same files through the same preprocessing, so the
difference is the quantization's alone. Random-init models are never used for accuracy figures.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.model_only import open_session
from benchmarks.onnx_models import Int8Settings, calibration_batch, export_model
from garmentcv.artifact import INPUT_NAME, OUTPUT_NAME
from garmentcv.data.fashion_mnist import write_fashion_mnist
from garmentcv.image import Preprocessing, load_input
from garmentcv.metrics import classification_metrics
from garmentcv.train.checkpoint import load_checkpoint
from garmentcv.train.config import TrainConfig
from garmentcv.train.loop import train

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyPlan:
    """How the accuracy models are made.

    Attributes:
        train_per_class: training images per class (the first in file order; 80% train, 20% validation).
        epochs: training epochs (gcv-train's recipe otherwise: AdamW lr 0.01 x0.8 per epoch, batch 32).
        image_size: model input, px (the demo's 32).
        calibration_images: training images used to calibrate INT8.
        test_limit: score only the first N test images (``None``: all; the tiny smoke test uses a few).
        source_per_class: write only this many images per class and split of Fashion-MNIST (``None``: all;
            for the smoke test).
    """

    train_per_class: int = 400
    epochs: int = 3
    image_size: int = 32
    calibration_images: int = 64
    test_limit: int | None = None
    source_per_class: int | None = None


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 accuracy (0..1) of one arch at FP32 and INT8 on ``count`` test images."""

    arch: str
    fp32: float
    int8: float
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


def _test_set(data: Path, limit: int | None) -> tuple[list[Path], list[str]]:
    with (data / "test_labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [data / "test" / f"{r['index']}.jpg" for r in rows], [r["label"] for r in rows]


def score_onnx(model: Path, paths: Sequence[Path], labels: Sequence[str], classes: Sequence[str], pp: Preprocessing,
               batch_size: int = 64) -> float:
    """Top-1 accuracy (0..1, scikit-learn) of an ONNX file on ``paths`` with true ``labels``.

    TEMPORARY: to be replaced by ``garmentcv.infer.evaluate.evaluate_model`` (gcv-evaluate) once merged.
    """
    session = open_session(model)
    predicted: list[int] = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([load_input(p, pp) for p in paths[start : start + batch_size]])
        predicted.extend(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0].argmax(axis=1).tolist())
    index = {name: i for i, name in enumerate(classes)}
    return classification_metrics([index[label] for label in labels], predicted, len(classes)).accuracy


def measure_accuracy(archs: Sequence[str], work: Path, plan: AccuracyPlan, int8: Int8Settings = Int8Settings()) -> list[AccuracyResult]:
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
    paths, labels = _test_set(data, plan.test_limit)
    train_files = sorted((data / "train").glob("*.jpg"))
    calibration_files = train_files[:: max(1, len(train_files) // plan.calibration_images)][: plan.calibration_images]
    out = []
    for arch_result in result.archs:
        checkpoint = arch_result.run_dir / "best.pt"
        ck = load_checkpoint(checkpoint)
        pp, classes = Preprocessing.from_dict(ck["preprocessing"]), ck["classes"]
        fp32 = export_model(checkpoint, "fp32", work / f"{arch_result.arch}-acc.fp32.onnx")
        int8_path = export_model(checkpoint, "int8", work / f"{arch_result.arch}-acc.int8.onnx",
                                 calibration_batch(calibration_files, pp), int8)
        out.append(AccuracyResult(
            arch=arch_result.arch, fp32=score_onnx(fp32, paths, labels, classes, pp),
            int8=score_onnx(int8_path, paths, labels, classes, pp), count=len(paths),
            val_accuracy=float(arch_result.best["accuracy"]), train_images=train_images,
        ))
        logger.info("accuracy %s: fp32 %.4f int8 %.4f on %d test images", arch_result.arch, out[-1].fp32, out[-1].int8, len(paths))
    return out
