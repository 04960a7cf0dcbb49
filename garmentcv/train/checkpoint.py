"""GarmentCV checkpoints: plain types that load with ``torch.load(..., weights_only=True)``.

A checkpoint holds the weights, the arch, the class names in index order, the preprocessing, the training
config, the metrics and the library versions, so that export needs nothing else. ``last.pt`` also holds the
optimizer, scheduler and RNG states for ``--resume``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torchvision

import garmentcv
from garmentcv.errors import CheckpointError
from garmentcv.fsutil import atomic_path
from garmentcv.image import Preprocessing
from garmentcv.models.registry import unreadable_torch_file

logger = logging.getLogger(__name__)

FORMAT = "garmentcv-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("arch", "classes", "preprocessing", "state_dict", "epoch", "metrics", "weights_source")


def versions() -> dict[str, str]:
    """Versions of the libraries that produced an artifact."""
    return {"garmentcv": garmentcv.__version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` plus format and version fields to ``path`` atomically (temp file, then rename)."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated or corrupt file; not a GarmentCV checkpoint; a newer format
            version than this release reads; required fields missing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; give a best.pt or last.pt from a gcv-train run folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; the raw one stays chained for --debug
        raise CheckpointError(
            f"{path}: not a readable checkpoint: {unreadable_torch_file(path)}. Give a best.pt or last.pt "
            "written by gcv-train (copy it again if it was cut short), or train again"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a GarmentCV checkpoint (no format {FORMAT!r}); use a file written by gcv-train")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this garmentcv "
            f"({garmentcv.__version__}) reads (up to {FORMAT_VERSION}); upgrade garmentcv"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; it is incomplete or damaged")
    try:
        Preprocessing.from_dict(data["preprocessing"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad preprocessing in checkpoint ({exc})") from exc
    return data
