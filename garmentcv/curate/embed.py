"""Embeddings of a list of images from a model file's ``embedding`` output (the classify pipeline; no torch).

The images go through :func:`garmentcv.infer.pipeline.predict_batches`, the pipeline ``gcv classify`` uses, so they
are decoded and preprocessed by the shared image contract (:mod:`garmentcv.image`) exactly as when classifying, on
whichever runtime :func:`garmentcv.infer.runtimes.open_runtime` picks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from garmentcv.artifact import EMBEDDING_NAME, OOD_SCORE_NAME, ModelInfo
from garmentcv.errors import ModelFileError
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.pipeline import predict_batches
from garmentcv.infer.runtimes import open_runtime

logger = logging.getLogger(__name__)


class NoEmbeddingError(ModelFileError):
    """The model file has no ``embedding`` output."""


@dataclass(frozen=True)
class Embedded:
    """What the model file gives for a list of images; arrays hold the decoded images only, in input order.

    Attributes:
        info: the model file's metadata.
        paths: the images that decoded, in input order (a subsequence of the input).
        embeddings: ``float32 (N, D)``, the ``embedding`` output, as the file gives it (not normalised).
        probs: ``float64 (N, C)``, the file's probabilities (``softmax(logits / T)`` with its temperature).
        ood_scores: ``float32 (N,)``, the ``ood_score`` output, or ``None`` when the file has no unknown detector.
        failed: ``(path, reason)`` of the images that could not be decoded.
    """

    info: ModelInfo
    paths: tuple[Path, ...]
    embeddings: np.ndarray
    probs: np.ndarray
    ood_scores: np.ndarray | None
    failed: tuple[tuple[Path, str], ...]

    @property
    def normalised(self) -> np.ndarray:
        """``float32 (N, D)`` embeddings scaled to unit L2 norm (a zero vector stays zero)."""
        return normalise(self.embeddings)


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows of ``embeddings`` ``(N, D)`` scaled to unit L2 norm, float32 (a zero row stays zero)."""
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def check_embedding_model(model: Path) -> ModelInfo:
    """Read ``model``'s metadata and refuse a file without the ``embedding`` output.

    Raises:
        ModelFileNotFoundError, ModelFileError: as :func:`garmentcv.infer.model_file.read_model_info`.
        NoEmbeddingError: the file has no ``embedding`` output.
    """
    info = read_model_info(Path(model))
    if not info.has_embedding:
        raise NoEmbeddingError(
            f"{model}: the model file has no embedding output (its outputs: {', '.join(info.outputs)}); export the "
            "checkpoint again with 'gcv export --embedding'"
        )
    return info


def embed_images(model: Path, paths: Sequence[Path], *, runtime: str = "auto", batch_size: int = 32,
                 threads: int | None = None, workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Embedded:
    """Run ``model`` on ``paths`` and keep its embeddings, probabilities and unknown scores.

    Args:
        model: a GarmentCV ONNX file exported with ``--embedding``.
        paths: image files; one that cannot be decoded is listed in :attr:`Embedded.failed`, not raised.
        runtime: ``auto``, ``onnxruntime`` or ``openvino``.
        batch_size: images per model run.
        threads: runtime threads (``None``: every available CPU).
        workers: decoding threads (``None``: every available CPU).
        progress: called with the number of images done after each batch.

    Raises:
        NoEmbeddingError: the file has no ``embedding`` output.
        ModelFileError, RuntimeUnavailableError: as :func:`garmentcv.infer.runtimes.open_runtime`.
    """
    info = check_embedding_model(model)
    opened = open_runtime(Path(model), runtime, "auto", threads)
    kept: list[Path] = []
    embeddings: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    ood: list[float] = []
    failed: list[tuple[Path, str]] = []
    items = [(Path(p), Path(p)) for p in paths]
    for batch in predict_batches(opened, items, batch_size, workers, temperature=info.applied_temperature):
        for p in batch:
            if p.probs is None:
                failed.append((p.item, p.error or "not decoded"))
                continue
            kept.append(p.item)
            embeddings.append(np.asarray(p.extras[EMBEDDING_NAME], dtype=np.float32))
            probs.append(np.asarray(p.probs, dtype=np.float64))
            if OOD_SCORE_NAME in p.extras:
                ood.append(float(p.extras[OOD_SCORE_NAME]))
        if progress is not None:
            progress(len(batch))
    for path, reason in failed:
        logger.warning("%s: not decoded (%s); left out", path, reason)
    dim, classes = info.embedding_dim, len(info.classes)
    return Embedded(
        info=info, paths=tuple(kept),
        embeddings=np.stack(embeddings) if embeddings else np.empty((0, dim), dtype=np.float32),
        probs=np.stack(probs) if probs else np.empty((0, classes)),
        ood_scores=np.asarray(ood, dtype=np.float32) if info.has_ood_score and len(ood) == len(kept) else None,
        failed=tuple(failed),
    )
