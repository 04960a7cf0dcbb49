"""``gcv evaluate`` as a library function: an ONNX model against labelled images (no torch).

Images go through the same :func:`garmentcv.image.load_input` and batched onnxruntime pipeline as
``gcv classify``, and the figures come from :func:`garmentcv.metrics.classification_metrics` like training's
validation, so on the same split the two agree. Calibration figures, the coverage table and thresholds come
from :mod:`garmentcv.calibration` (numpy only). scikit-learn and matplotlib are needed (``pip install
'garmentcv[eval]'``); they are imported only when an evaluation runs.

File names that are not valid UTF-8 are written to the CSV reports as their original bytes
(``surrogateescape``, as ``gcv classify`` does) and matched byte for byte against an ``index,label`` file, which
may start with a UTF-8 byte-order mark ("CSV UTF-8" of spreadsheet programs).
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from garmentcv.artifact import OOD_SCORE_NAME
from garmentcv.calibration import (
    CalibrationFigures,
    CoverageTable,
    ThresholdChoice,
    calibration_figures,
    coverage_table,
    softmax,
    threshold_for_accuracy,
)
from garmentcv.conformal import SetFigures, per_class_figures, set_figures
from garmentcv.data.layouts import Sample, load_dataset, scan_images
from garmentcv.errors import DatasetError, GarmentCVError
from garmentcv.fsutil import atomic_write, check_writable_output, write_json
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH
from garmentcv.infer.pipeline import predict_batches, split_cpus
from garmentcv.infer.runtimes import Model, open_runtime
from garmentcv.installs import pip_install
from garmentcv.report import EVALUATE_PAGE, check_report_output, write_evaluate_page

logger = logging.getLogger(__name__)

#: Text files of paths: UTF-8, with the bytes of file names that are not valid UTF-8 kept as they are.
_PATHS = {"encoding": "utf-8", "errors": "surrogateescape"}


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of one ``gcv evaluate`` run.

    Attributes:
        data: labelled images in a layout ``gcv train`` reads (lamoda folder, class folders, ``path,label``
            CSV), or, with ``labels``, a folder of ``<index>.<ext>`` images.
        labels: an ``index,label`` CSV naming the label of each image in ``data`` by file stem.
        layout: force the layout of ``data`` (``lamoda``, ``folders``, ``csv``); detected when ``None``.
        out: folder receiving the reports.
        model, batch_size, provider, threads, workers, progress: as for
            :class:`~garmentcv.infer.classify.ClassifyConfig`.
        calibration: ``temperature``: predicted confidences (``predictions.csv``, ``misclassified.csv``, the
            coverage table) are ``softmax(logits / T)`` with the model file's temperature; ``none``: the raw
            softmax. The calibration figures are reported for both either way.
        target_accuracy: also report the lowest confidence threshold whose kept images reach this accuracy.
        runtime: ``auto``, ``onnxruntime`` or ``openvino`` (see :mod:`garmentcv.infer.runtimes`).
        other_data: a folder of images of none of the model's classes: with a model file that has an unknown-item
            detector, report how well its score separates them from ``data`` (AUROC) and the share of them its
            threshold lets through.
    """

    data: Path
    out: Path
    model: Path = DEFAULT_MODEL_PATH
    labels: Path | None = None
    layout: str | None = None
    batch_size: int = 32
    provider: str = "auto"
    threads: int | None = None
    workers: int | None = None
    progress: bool = True
    calibration: str = "temperature"
    target_accuracy: float | None = None
    runtime: str = "auto"
    other_data: Path | None = None


@dataclass(frozen=True)
class ImagePrediction:
    """One evaluated image: ``path``, true ``label``, ``predicted`` label, ``confidence`` (its probability,
    calibrated as :attr:`EvaluateConfig.calibration` says) and the raw ``logits`` ``float32 (C,)``."""

    path: Path
    label: str
    predicted: str
    confidence: float
    logits: np.ndarray

    @property
    def correct(self) -> bool:
        """Whether the prediction is the true label."""
        return self.label == self.predicted


@dataclass(frozen=True)
class EvaluateResult:
    """Headline figures of an evaluation (all 0..1) and where the reports went.

    ``count`` images were decoded and scored; ``errors`` could not be decoded and are left out of the figures.
    Macro precision/recall/F1 average the classes with at least one image; ``absent_classes`` names the others.

    Calibration: ``temperature`` is the model file's (1.0 without one), ``applied`` says whether confidences use it
    (``temperature``) or the raw softmax (``none``); ``uncalibrated`` and ``calibrated`` hold ECE, NLL, Brier and
    reliability bins of ``softmax(logits)`` and ``softmax(logits / temperature)``. ``coverage`` is on the applied
    confidences; ``target`` is set with :attr:`EvaluateConfig.target_accuracy`. ``predictions`` has every scored
    image in data order and ``failures`` ``(path, label, reason)`` of those that could not be decoded (the
    galleries of a report page). ``runtime``, ``device`` and ``inference_precision`` say what ran the model (see
    :class:`~garmentcv.infer.classify.ClassifySummary`).

    Prediction sets (a model file with them, :mod:`garmentcv.conformal`): ``prediction_sets`` holds the empirical
    coverage (share of images whose set holds the true class) and the mean set size over every image, and
    ``prediction_sets_per_class`` the same over the images of each true class; both ``None``/empty without sets.
    They always use the file's temperature, which the sets were fitted with, whatever ``applied`` says.

    ``unknown`` (with :attr:`EvaluateConfig.other_data`): the detector's method and threshold, ``auroc`` (its score
    separating the other images from ``data``'s), ``let_through`` (share of other images at or below the threshold,
    so kept as one of the classes), ``recall`` (share of ``data``'s images kept) and both image counts.
    """

    out: Path
    count: int
    errors: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    misclassified: int
    confusion_matrix: list[list[int]]
    classes: tuple[str, ...]
    absent_classes: tuple[str, ...] = ()
    temperature: float = 1.0
    applied: str = "temperature"
    uncalibrated: CalibrationFigures | None = None
    calibrated: CalibrationFigures | None = None
    coverage: CoverageTable | None = None
    target: ThresholdChoice | None = None
    predictions: tuple[ImagePrediction, ...] = ()
    failures: tuple[tuple[str, str, str], ...] = ()
    runtime: str = "onnxruntime"
    device: str = "cpu"
    inference_precision: str = "fp32"
    prediction_sets: SetFigures | None = None
    prediction_sets_per_class: dict[str, SetFigures] = field(default_factory=dict)
    sets_coverage: float | None = None
    unknown: dict[str, Any] | None = None


class EvaluateUsageError(GarmentCVError, ValueError):
    """Settings that are out of range or do not go together (exit code 2, like click's usage errors)."""

    exit_code = 2


def _refuse_unless(ok: bool, message: str) -> None:
    if not ok:
        raise EvaluateUsageError(message)


def check_config(cfg: EvaluateConfig) -> None:
    """Refuse settings that are out of range or do not go together, before any work (:func:`evaluate_model` calls
    it first). Messages name the command's options (``--device`` is ``cfg.provider``, ``--decode-threads``
    ``cfg.workers``).

    Raises:
        EvaluateUsageError: an unknown calibration, device, runtime or layout; a batch size or thread count below 1;
            a target accuracy outside 0..1; a layout with ``labels`` (the labels file then names the images).
    """
    from garmentcv.data.layouts import Layout
    from garmentcv.infer.runtimes import RUNTIMES
    from garmentcv.infer.runtimes.onnxruntime import PROVIDERS

    for option, value, choices in (("--calibration", cfg.calibration, ("temperature", "none")),
                                   ("--device", cfg.provider, PROVIDERS), ("--runtime", cfg.runtime, RUNTIMES),
                                   ("--layout", cfg.layout, (None, *(m.value for m in Layout)))):
        shown = [c for c in choices if c is not None]
        _refuse_unless(value in choices, f"{option} {value!r}: choose {', '.join(shown[:-1])} or {shown[-1]}")
    for option, count in (("--batch-size", cfg.batch_size), ("--threads", cfg.threads),
                          ("--decode-threads", cfg.workers)):
        _refuse_unless(count is None or count >= 1, f"{option} {count}: give at least 1")
    _refuse_unless(cfg.target_accuracy is None or 0.0 <= cfg.target_accuracy <= 1.0,
                   f"--target-accuracy {cfg.target_accuracy}: give an accuracy within 0..1")
    _refuse_unless(cfg.layout is None or cfg.labels is None,
                   "--layout is for labelled data; with --labels DATA is a folder of <index>.<ext> images named in "
                   "the labels file: leave --layout out")


def samples_from_labels(folder: Path, labels: Path) -> list[Sample]:
    """Pair the rows of an ``index,label`` CSV with the images ``<index>.<ext>`` directly in ``folder``.

    Images without a row are ignored (and counted in the log). The CSV is UTF-8, with or without a byte-order
    mark; an index that is not valid UTF-8 matches the file stem of the same bytes.

    Raises:
        DatasetError: the CSV lacks the columns, an index has no image or several, or it is listed twice.
    """
    by_stem: dict[str, list[Path]] = {}
    for path in scan_images(folder, recursive=False):
        by_stem.setdefault(path.stem, []).append(path)
    samples: list[Sample] = []
    seen: set[str] = set()
    missing: list[str] = []
    with labels.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"index", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{labels}: expected an index,label header, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            index, label = (row["index"] or "").strip(), (row["label"] or "").strip()
            if index in seen:
                raise DatasetError(f"{labels}, line {line}: index {index!r} is listed twice")
            seen.add(index)
            found = by_stem.get(index, [])
            if len(found) > 1:
                names = ", ".join(sorted(p.name for p in found))
                raise DatasetError(
                    f"{labels}, line {line}: index {index!r} matches several files: {names}; keep one of them in "
                    f"{folder} (the index names one image)"
                )
            if not found:
                missing.append(index)
            else:
                samples.append(Sample(found[0], label))
    if missing:
        raise DatasetError(
            f"{labels}: {'1 index has' if len(missing) == 1 else f'{len(missing)} indexes have'} no image "
            f"<index>.<ext> in {folder}, e.g. {missing[:5]}; add the images or remove those rows"
        )
    unlabelled = sum(len(v) for k, v in by_stem.items() if k not in seen)
    if unlabelled:
        logger.info("%d image(s) in %s have no row in %s and are not evaluated", unlabelled, folder, labels)
    samples.sort(key=lambda s: str(s.path))
    return samples


def _json_text(path: Path | str) -> str:
    """A path as JSON-safe text: bytes that are not valid UTF-8 become ``\\xNN`` escapes."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def evaluate_model(cfg: EvaluateConfig) -> EvaluateResult:
    """Run the model over ``cfg.data`` and write to ``cfg.out``:

    * ``metrics.json``: accuracy, macro precision/recall/F1, count, errors, per-class precision, recall, F1
      and support (scikit-learn ``classification_report``);
    * ``confusion_matrix.json`` (rows true class, columns predicted, model class order) and ``.png``;
    * ``misclassified.csv``: ``path,label,predicted,confidence`` for every wrong prediction;
    * ``predictions.csv``: ``path,label,predicted,confidence`` for every image scored, in data order;
    * ``errors.csv``: ``path,label,error`` for images that could not be decoded;
    * in ``metrics.json`` also ``calibration`` (temperature, ECE with 15 bins, NLL, Brier and reliability bins,
      raw and calibrated), ``coverage`` (thresholds 0, 0.01, ..., 1: share kept and their accuracy) and
      ``target_accuracy`` (see :func:`garmentcv.calibration.threshold_for_accuracy`; ``null`` without one) and
      ``runtime`` (``name``, ``device``, ``inference_precision``: what ran the model);
    * ``reliability.png`` (raw and calibrated) and ``coverage.png``;
    * ``report.html`` and ``report_files/``: the page of :func:`garmentcv.report.write_evaluate_page`.

    An ``--out`` folder that this call created is removed again when the call fails before writing to it.

    Raises:
        GarmentCVError: scikit-learn or matplotlib is not installed.
        OutputPathError: ``cfg.out`` cannot be written (checked before the model is opened).
        DatasetError: unreadable data, or labels that are not classes of the model.
        ModelFileError, ProviderError: as :func:`garmentcv.infer.runtimes.onnxruntime.open_model`.
        RuntimeUnavailableError: as :func:`garmentcv.infer.runtimes.open_runtime`.
        EvaluateUsageError: see :func:`check_config` (before anything is written).
    """
    check_config(cfg)
    out = Path(cfg.out)
    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        return _evaluate(cfg)
    except BaseException:
        for folder in missing:  # deepest first; only folders this call created and left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """The work of :func:`evaluate_model`."""
    try:
        from sklearn.metrics import classification_report

        from garmentcv.metrics import classification_metrics
        from garmentcv.plots import (
            save_confusion_matrix,
            save_coverage_curve,
            save_reliability_diagram,
        )
    except ImportError as exc:
        raise GarmentCVError(
            f"gcv evaluate needs scikit-learn and matplotlib ({exc}); install them with {pip_install('eval')}"
        ) from exc

    start = time.perf_counter()
    out = Path(cfg.out)
    check_writable_output(out / "metrics.json", "--out")
    check_report_output(out / EVALUATE_PAGE, "--out")
    threads, workers = split_cpus(cfg.threads, cfg.workers)
    model = open_runtime(cfg.model, cfg.runtime, cfg.provider, threads)
    classes = model.info.classes
    if cfg.other_data is not None and model.info.unknown is None:
        raise EvaluateUsageError(f"--other-data: the model {cfg.model} has no unknown-item detector; export one with "
                                 "'gcv export CHECKPOINT --unknown-score METHOD'")
    if cfg.labels is not None:
        if not Path(cfg.data).is_dir():
            raise DatasetError(f"{cfg.data}: with --labels, --data must be the folder of <index>.<ext> images")
        samples = samples_from_labels(Path(cfg.data), Path(cfg.labels))
    else:
        try:
            samples = list(load_dataset(cfg.data, cfg.layout).samples)
        except DatasetError as exc:
            raise DatasetError(
                f"{exc}. To evaluate an unlabelled folder (such as Kaggle's images/test), give its index,label file "
                "with --labels"
            ) from exc
    if not samples:
        raise DatasetError(f"{cfg.data}: no labelled images to evaluate")
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DatasetError(
            f"{cfg.data}: label(s) {unknown[:5]} are not classes of the model {list(classes)}; evaluate with data "
            "labelled in the model's classes"
        )
    index = {name: i for i, name in enumerate(classes)}
    temperature = model.info.applied_temperature
    applied = temperature if cfg.calibration == "temperature" else 1.0

    y_true: list[int] = []
    y_pred: list[int] = []
    in_scores: list[float] = []
    scored: list[ImagePrediction] = []
    failed: list[list[str]] = []
    bar = tqdm(total=len(samples), desc="evaluate", unit="img", file=sys.stderr, disable=None if cfg.progress else True)
    batches = predict_batches(model, ((s.path, s) for s in samples), cfg.batch_size, workers, temperature=applied)
    for predictions in batches:
        for p in predictions:
            sample = p.item
            if p.probs is None:
                failed.append([str(sample.path), sample.label, p.error or ""])
                continue
            predicted = int(p.probs.argmax())
            y_true.append(index[sample.label])
            y_pred.append(predicted)
            if OOD_SCORE_NAME in p.extras:
                in_scores.append(float(p.extras[OOD_SCORE_NAME]))
            scored.append(ImagePrediction(sample.path, sample.label, classes[predicted], float(p.probs[predicted]),
                                          p.logits))  # type: ignore[arg-type]
        bar.update(len(predictions))
    bar.close()
    if not y_true:
        raise DatasetError(f"{cfg.data}: none of the {len(samples)} images could be decoded; see the log")
    wrong = [[str(r.path), r.label, r.predicted, f"{r.confidence:.6f}"] for r in scored if not r.correct]
    logits, targets = np.stack([r.logits for r in scored]), np.asarray(y_true)
    uncalibrated = calibration_figures(softmax(logits), targets)
    calibrated = calibration_figures(softmax(logits, temperature), targets)
    confidence = np.array([r.confidence for r in scored])
    correct = np.array([r.correct for r in scored])
    coverage = coverage_table(confidence, correct)
    target = None if cfg.target_accuracy is None else threshold_for_accuracy(confidence, correct, cfg.target_accuracy)

    sets = model.info.conformal
    set_overall, set_per_class = None, {}
    if sets is not None:
        inside = sets.contains(softmax(logits, temperature))
        set_overall, set_per_class = set_figures(inside, targets), per_class_figures(inside, targets, classes)
        logger.info("prediction sets at %.0f%% coverage: empirical coverage %.4f, mean size %.3f on %d images",
                    100 * sets.coverage, set_overall.coverage, set_overall.mean_size, set_overall.images)
    unknown = None if cfg.other_data is None else _unknown_figures(model, cfg, workers, in_scores)
    metrics = classification_metrics(y_true, y_pred, len(classes))
    report = classification_report(
        y_true, y_pred, labels=list(range(len(classes))), target_names=list(classes), output_dict=True, zero_division=0
    )
    per_class = {
        name: {k: (int(v) if k == "support" else float(v)) for k, v in report[name].items()} for name in classes
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {
        "model": _json_text(cfg.model), "data": _json_text(cfg.data),
        "labels": _json_text(cfg.labels) if cfg.labels else None,
        "classes": list(classes), "count": metrics.count, "errors": len(failed),
        "accuracy": metrics.accuracy, "precision": metrics.precision, "recall": metrics.recall, "f1": metrics.f1,
        "macro_classes": [classes[i] for i in metrics.macro_classes],
        "absent_classes": [classes[i] for i in metrics.absent_classes],
        "per_class": per_class,
        "calibration": {
            "temperature": model.info.temperature, "applied": cfg.calibration, "bins": len(calibrated.bins),
            "uncalibrated": uncalibrated.to_dict(), "calibrated": calibrated.to_dict(),
        },
        "coverage": coverage.to_dict(),
        "target_accuracy": None if target is None else target.to_dict(),
        **({} if sets is None or set_overall is None else {"prediction_sets": {
            "method": sets.method, "target_coverage": sets.coverage, "class_conditional": sets.class_conditional,
            **set_overall.to_dict(), "per_class": {c: f.to_dict() for c, f in set_per_class.items()}}}),
        **({} if unknown is None else {"unknown": unknown}),
        "seconds": round(time.perf_counter() - start, 3),
        "runtime": {"name": model.runtime, "device": model.device, "inference_precision": model.inference_precision},
    })
    write_json(out / "confusion_matrix.json", {
        "classes": list(classes), "rows": "true class", "columns": "predicted class",
        "matrix": metrics.confusion_matrix,
    })
    save_confusion_matrix(metrics.confusion_matrix, classes, out / "confusion_matrix.png",
                          f"{model.info.arch}: accuracy {metrics.accuracy:.4f}")
    save_reliability_diagram(
        uncalibrated.bins, calibrated.bins if model.info.temperature is not None else None, out / "reliability.png",
        f"{model.info.arch}: ECE raw {uncalibrated.ece:.4f}"
        + (f", calibrated (T = {temperature:.3g}) {calibrated.ece:.4f}" if model.info.temperature is not None
           else " (the model file has no temperature)"),
    )  # fmt: skip
    save_coverage_curve(coverage, out / "coverage.png",
                        f"{model.info.arch}: coverage and accuracy by confidence threshold "
                        f"({'calibrated' if applied != 1.0 else 'raw softmax'})", target)
    all_rows = [[str(r.path), r.label, r.predicted, f"{r.confidence:.6f}"] for r in scored]
    columns = ["path", "label", "predicted", "confidence"]
    for name, header, rows in (("misclassified.csv", columns, wrong), ("predictions.csv", columns, all_rows),
                               ("errors.csv", ["path", "label", "error"], failed)):
        with atomic_write(out / name, newline="", **_PATHS) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    write_evaluate_page(out, Path(cfg.data), [(r.path, r.label, r.predicted, r.confidence) for r in scored], failed,
                        model=Path(cfg.model))
    logger.info("accuracy %.4f, macro F1 %.4f on %d images (%d not decoded)", metrics.accuracy, metrics.f1,
                metrics.count, len(failed))
    return EvaluateResult(
        out=out, count=metrics.count, errors=len(failed), accuracy=metrics.accuracy, precision=metrics.precision,
        recall=metrics.recall, f1=metrics.f1, misclassified=len(wrong), confusion_matrix=metrics.confusion_matrix,
        classes=tuple(classes), absent_classes=tuple(classes[i] for i in metrics.absent_classes),
        temperature=temperature, applied=cfg.calibration, uncalibrated=uncalibrated,
        calibrated=calibrated, coverage=coverage, target=target, predictions=tuple(scored),
        failures=tuple((a, b, c) for a, b, c in failed), runtime=model.runtime, device=model.device,
        inference_precision=model.inference_precision, prediction_sets=set_overall,
        prediction_sets_per_class=set_per_class, sets_coverage=None if sets is None else sets.coverage,
        unknown=unknown,
    )


def _unknown_figures(model: Model, cfg: EvaluateConfig, workers: int, in_scores: list[float]) -> dict[str, Any]:
    """The detector's figures on ``cfg.other_data`` against the evaluated images' scores ``in_scores`` (see
    :attr:`EvaluateResult.unknown`).

    Raises:
        DatasetError: the folder holds no image that could be decoded.
    """
    from garmentcv.unknowns.scores import auroc, let_through

    detector = model.info.unknown
    assert detector is not None  # checked before any work
    files = list(scan_images(Path(cfg.other_data)))  # type: ignore[arg-type]
    out_scores = [float(p.extras[OOD_SCORE_NAME]) for batch in predict_batches(model, ((f, f) for f in files),
                                                                               cfg.batch_size, workers)
                  for p in batch if p.error is None]
    if not out_scores:
        raise DatasetError(f"{cfg.other_data}: no image of other items could be decoded (of {len(files)} files)")
    figures = {"method": detector.method, "threshold": detector.threshold,
               "auroc": auroc(np.asarray(in_scores), np.asarray(out_scores)),
               "let_through": let_through(np.asarray(out_scores), detector.threshold),
               "recall": float((np.asarray(in_scores) <= detector.threshold).mean()),
               "images": len(in_scores), "other_images": len(out_scores)}
    logger.info("unknown items (%s): AUROC %.4f, %.2f%% of %d other images let through at %.2f%% recall",
                detector.method, figures["auroc"], 100 * figures["let_through"], len(out_scores),
                100 * figures["recall"])
    return figures
