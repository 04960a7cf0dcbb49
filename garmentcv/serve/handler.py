"""One model file, opened once, turning image bytes into the rows ``gcv classify`` writes (no web framework here).

:class:`ModelHandler` is what every way of serving shares: the local ASGI app (:mod:`garmentcv.serve.app`), the Ray
Serve deployment (:mod:`garmentcv.serve.ray_serve`) and any program that holds photos in memory (the review page).
It opens the file with the runtime ``gcv classify`` would choose (:func:`garmentcv.infer.runtimes.plan_runtime`,
:func:`~garmentcv.infer.runtimes.open_planned`), decodes bytes through the one image contract
(:func:`garmentcv.image.load_crop`, or :func:`~garmentcv.image.load_input` for float32 files), divides the logits by
the file's temperature before the softmax (:attr:`garmentcv.artifact.ModelInfo.applied_temperature`) and writes
each row with :func:`garmentcv.infer.rows.json_record`, the function behind ``gcv classify --format jsonl``. So a
photo gets the same row here as in a classify run (its ``path`` is the name the caller gave).

The three steps are also separate methods (:meth:`ModelHandler.decode`, :meth:`~ModelHandler.probabilities`,
:meth:`~ModelHandler.row`), so a server can decode requests in parallel and run the images of several requests in
one model call (:class:`garmentcv.serve.batching.MicroBatcher`).

A row is a plain dict of JSON types. Fields may be added in later versions (new keys, never a changed meaning), so
readers ignore keys they do not know.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from garmentcv import calibration
from garmentcv.artifact import INPUT_UINT8, OOD_SCORE_NAME, OUTPUT_NAME, ModelInfo
from garmentcv.errors import GarmentCVError, ImageDecodeError
from garmentcv.image import load_crop, load_input
from garmentcv.infer.classify import rows_prediction_sets, rows_unknown_threshold
from garmentcv.infer.rows import Row, json_record

__all__ = ["CALIBRATIONS", "HandlerSettings", "ModelHandler", "RowClassifier", "Scores", "ServeUsageError",
           "open_handler", "reason_kind"]

logger = logging.getLogger(__name__)

#: ``HandlerSettings.calibration`` values (as ``gcv classify --calibration``).
CALIBRATIONS = ("temperature", "none")


class ServeUsageError(GarmentCVError, ValueError):
    """Settings of the service that are out of range or do not go together (exit code 2, like a usage error)."""

    exit_code = 2


@runtime_checkable
class RowClassifier(Protocol):
    """What a program needs to classify photos it holds in memory: the model's classes and self-description, and
    rows for ``(name, bytes)`` pairs. :class:`ModelHandler` implements it."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def info(self) -> ModelInfo: ...

    def classify_bytes(self, items: list[tuple[str, bytes]]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Scores:
    """One classified image's model results: ``probs``, float64 ``(C,)`` after the temperature, and the
    ``ood_score`` output (``None`` when rows do not say which images are unknown)."""

    probs: np.ndarray
    ood_score: float | None = None


@dataclass(frozen=True)
class HandlerSettings:
    """How a model file is opened and what its rows carry (the options of ``gcv classify`` that shape rows).

    Attributes:
        model: the GarmentCV ONNX file written by ``gcv export``.
        runtime: ``auto``, ``onnxruntime`` or ``openvino`` (:mod:`garmentcv.infer.runtimes`).
        provider: onnxruntime's ``auto``, ``cpu`` or ``cuda``.
        threads: runtime CPU threads; ``None``: every CPU this process may use.
        calibration: ``temperature`` divides the logits by the file's temperature before the softmax; ``none``
            keeps the raw softmax.
        min_confidence: rows get ``needs_review`` (true below it); ``None``: no such field.
        topk: rows list the K most probable classes (``top_labels``, ``top_probs``) instead of ``probs``.
        prediction_sets: ``auto`` gives each row its prediction set when the file has them (``gcv classify
            --prediction-sets``); ``off`` never.
        unknown: ``auto`` adds ``unknown`` and ``ood_score`` when the file has an unknown-item detector (``gcv
            classify --unknown``); ``off`` never.
    """

    model: Path
    runtime: str = "auto"
    provider: str = "auto"
    threads: int | None = None
    calibration: str = "temperature"
    min_confidence: float | None = None
    topk: int | None = None
    prediction_sets: str = "auto"
    unknown: str = "auto"


def check_handler_settings(settings: HandlerSettings) -> None:
    """Refuse settings out of range before the model is read.

    Raises:
        ServeUsageError: an unknown runtime, device or calibration; ``threads`` or ``topk`` below 1;
            ``min_confidence`` outside 0..1.
    """
    from garmentcv.infer.classify import AUTO_OFF
    from garmentcv.infer.runtimes import RUNTIMES
    from garmentcv.infer.runtimes.onnxruntime import PROVIDERS

    for option, value, choices in (("--runtime", settings.runtime, RUNTIMES), ("--device", settings.provider,
                                   PROVIDERS), ("--calibration", settings.calibration, CALIBRATIONS),
                                   ("--prediction-sets", settings.prediction_sets, AUTO_OFF),
                                   ("--unknown", settings.unknown, AUTO_OFF)):  # fmt: skip
        if value not in choices:
            raise ServeUsageError(f"{option} {value!r}: choose one of {', '.join(choices)}")
    for option, number in (("--threads", settings.threads), ("--topk", settings.topk)):
        if number is not None and number < 1:
            raise ServeUsageError(f"{option} {number}: give at least 1")
    if settings.min_confidence is not None and not 0.0 <= settings.min_confidence <= 1.0:
        raise ServeUsageError(f"--min-confidence {settings.min_confidence}: give a probability within 0..1")


#: Kinds of decode failure (:func:`reason_kind`), for metrics and HTTP statuses.
REASON_KINDS = ("empty", "unsupported_format", "oversized", "truncated", "not_an_image", "corrupt")


def reason_kind(reason: str) -> str:
    """The kind of a decode failure reason of :mod:`garmentcv.image` (one of :data:`REASON_KINDS`)."""
    if reason.startswith("empty file"):
        return "empty"
    if reason.startswith("format ") and "GarmentCV decodes" in reason:
        return "unsupported_format"
    if reason.startswith("oversized"):
        return "oversized"
    if reason.startswith("truncated"):
        return "truncated"
    if reason.startswith("not a recognised image format"):
        return "not_an_image"
    return "corrupt"


class ModelHandler:
    """An open model file and the rows it gives; see the module docstring. Thread-safe: decoding runs in any
    thread, the runtime's sessions accept concurrent calls.

    Attributes:
        settings: what it was opened with.
        info: the file's self-description (classes, preprocessing, temperature, ...).
        model: the open runtime model (:class:`garmentcv.infer.runtimes.Model`).
        temperature: the logits are divided by it before the softmax (1.0: the raw softmax).
    """

    def __init__(self, settings: HandlerSettings, model: Any) -> None:
        """Wrap an open ``model`` (from :func:`garmentcv.infer.runtimes.open_planned`); :func:`open_handler` opens one.

        Raises:
            ServeUsageError: ``settings.topk`` is above the model's number of classes.
        """
        self.settings = settings
        self.model = model
        self.info: ModelInfo = model.info
        if settings.topk is not None and settings.topk > len(self.info.classes):
            raise ServeUsageError(f"--topk {settings.topk}: the model {settings.model} has only "
                                  f"{len(self.info.classes)} classes; give at most {len(self.info.classes)}")
        self.temperature = self.info.applied_temperature if settings.calibration == "temperature" else 1.0
        self.sets = rows_prediction_sets(self.info, settings.prediction_sets, settings.calibration, settings.model)
        self.unknown_threshold = rows_unknown_threshold(self.info, settings.unknown, settings.model)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes in index order."""
        return tuple(self.info.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One decoded image's shape: ``(H, W, 3)`` uint8 for format-2 files, ``(3, H, W)`` float32 otherwise."""
        return self.info.input_shape(1)[1:]

    def describe(self) -> dict[str, Any]:
        """What serves the rows, for logs and the service's model route: file name, classes, runtime, device,
        precision, temperature and image size (px)."""
        return {
            "model": Path(self.settings.model).name,
            "arch": self.info.arch,
            "classes": list(self.class_names),
            "runtime": self.model.runtime,
            "device": self.model.device,
            "inference_precision": self.model.inference_precision,
            "temperature": self.temperature,
            "image_size": self.info.preprocessing.crop,
        }

    def decode(self, name: str, data: bytes) -> np.ndarray:
        """Decode and preprocess one image's bytes into the model's input for one image (:attr:`input_shape`),
        exactly as ``gcv classify`` decodes the file.

        Raises:
            ImageDecodeError: not a decodable image (empty, another format, truncated, corrupt, over
                :data:`garmentcv.image.MAX_IMAGE_PIXELS`); ``.reason`` says which.
        """
        pp = self.info.preprocessing
        try:
            if self.info.input_format == INPUT_UINT8:
                return np.ascontiguousarray(load_crop(name, pp, data=data))
            return load_input(name, pp, data=data)
        except ImageDecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one odd file costs one row, as in gcv classify
            logger.warning("%s: unexpected %s while decoding: %s", name, type(exc).__name__, exc)
            raise ImageDecodeError(name, f"cannot decode: {type(exc).__name__}: {exc}") from exc

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``softmax(logits / temperature)`` of a batch of decoded images: float64 ``(N, C)``, class order.

        Args:
            batch: ``(N, *input_shape)`` of the model's input dtype, N >= 1.
        """
        return calibration.softmax(self.model.logits(batch), self.temperature)

    def predict(self, batch: np.ndarray) -> list[Scores]:
        """What the rows of a batch of decoded images need, per image: the probabilities (as
        :meth:`probabilities`) and, when rows say which images are unknown, the ``ood_score`` output.

        Args:
            batch: ``(N, *input_shape)`` of the model's input dtype, N >= 1.
        """
        if self.unknown_threshold is None:
            return [Scores(p) for p in self.probabilities(batch)]
        outputs = self.model.outputs(batch)
        probs = calibration.softmax(outputs[OUTPUT_NAME], self.temperature)
        return [Scores(p, float(score)) for p, score in zip(probs, outputs[OOD_SCORE_NAME], strict=True)]

    def row(self, name: str, scores: Scores | Sequence[float] | np.ndarray | None,
            error: str | None = None) -> dict[str, Any]:  # fmt: skip
        """The JSON row of one image: its :class:`Scores` (or probabilities, float64 ``(C,)``) when it was
        classified, else ``error``."""
        if scores is None:
            raw: Row = {"path": name, "label": None, "probs": None, "error": error or "cannot decode"}
            if self.unknown_threshold is not None:
                raw["ood_score"] = None
        else:
            if not isinstance(scores, Scores):
                scores = Scores(np.asarray(scores, dtype=np.float64))
            values = np.asarray(scores.probs, dtype=np.float64)
            raw = {"path": name, "label": self.info.classes[int(values.argmax())], "probs": values.tolist(),
                   "error": None}
            if self.unknown_threshold is not None:
                raw["ood_score"] = scores.ood_score
        return json_record(raw, self.info.classes, self.settings.min_confidence, self.settings.topk, sets=self.sets,
                           unknown_threshold=self.unknown_threshold)

    def classify_bytes(self, items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Rows for ``(name, bytes)`` pairs, in order, in one model call; an image that cannot be decoded gets an
        error row with the reason (as in ``gcv classify``), the others their label and probabilities."""
        decoded: list[np.ndarray | None] = []
        reasons: list[str | None] = []
        for name, data in items:
            try:
                decoded.append(self.decode(name, data))
                reasons.append(None)
            except ImageDecodeError as exc:
                decoded.append(None)
                reasons.append(exc.reason)
        good = [array for array in decoded if array is not None]
        probs = self.predict(np.stack(good)) if good else []
        rows, slot = [], 0
        for (name, _), array, reason in zip(items, decoded, reasons, strict=True):
            if array is None:
                rows.append(self.row(name, None, reason))
            else:
                rows.append(self.row(name, probs[slot]))
                slot += 1
        return rows

    def warm_up(self) -> None:
        """Run one batch of a blank image, so the first request does not pay the runtime's first-call costs."""
        self.probabilities(np.zeros(self.info.input_shape(1), dtype=self.info.input_dtype))


def open_handler(settings: HandlerSettings, warm: bool = True) -> ModelHandler:
    """Open ``settings.model`` on the runtime ``gcv classify`` would choose (or the one asked for) and warm it up.

    Raises:
        ServeUsageError: see :func:`check_handler_settings`; ``topk`` above the number of classes.
        ModelFileNotFoundError, ModelFileError: the file is missing or not a GarmentCV ONNX file.
        ProviderError: ``cuda`` asked for but not usable.
        RuntimeUnavailableError: ``openvino`` asked for but not installed or not able to run the file.
    """
    from garmentcv.infer.runtimes import open_planned, plan_runtime

    check_handler_settings(settings)
    plan = plan_runtime(Path(settings.model), settings.runtime, settings.provider)
    handler = ModelHandler(settings, open_planned(plan, settings.threads))
    if warm:
        handler.warm_up()
    logger.info("serving %s: %s", settings.model, handler.describe())
    return handler
