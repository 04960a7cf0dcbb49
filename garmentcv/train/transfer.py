"""Backbone weights for training: torchvision's (via the registry) or the backbone of another GarmentCV run.

A GarmentCV checkpoint (``best.pt`` of a run on other classes) given as ``--weights`` keeps every tensor but
the head's; the head is new, initialised as for ``--weights none``, for this run's classes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from garmentcv.errors import CheckpointError, WeightsError
from garmentcv.models.registry import BuiltModel, build_model, get_spec
from garmentcv.train.checkpoint import FORMAT, load_checkpoint

logger = logging.getLogger(__name__)


def is_garmentcv_checkpoint(weights: str) -> bool:
    """Whether ``weights`` names a file written by gcv train (a ``best.pt``/``last.pt``), not a plain state dict."""
    path = Path(weights)
    if weights in ("imagenet", "none") or not path.is_file():
        return False
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not loadable: the registry's plain-file path says why, in its words
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def build_for_training(arch: str, num_classes: int, weights: str, progress: bool = False) -> BuiltModel:
    """Build ``arch`` for ``num_classes`` with ``weights``: as :func:`build_model`, or from a GarmentCV checkpoint.

    With a checkpoint, the model is built randomly (head included, from torch's current RNG state) and every
    backbone tensor is then copied from the checkpoint's ``state_dict``; the weights source reads
    ``garmentcv:<file name> (<arch>, classes <a,b,...>)``.

    Raises:
        WeightsError: the checkpoint is of another arch, or its tensors do not fit; see :func:`build_model`.
        CheckpointError: the checkpoint is damaged (see :func:`load_checkpoint`).
    """
    if not is_garmentcv_checkpoint(weights):
        return build_model(arch, num_classes, weights, progress=progress)
    path = Path(weights)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from exc
    if ckpt["arch"] != arch:
        raise WeightsError(
            f"{path}: a GarmentCV checkpoint of {ckpt['arch']}, not {arch}: only the same arch can take its "
            f"backbone; train with --arch {ckpt['arch']}, or give weights for {arch}"
        )
    built = build_model(arch, num_classes, "none")
    head = get_spec(arch).head + "."
    backbone = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(head)}
    missing, unexpected = built.model.load_state_dict(backbone, strict=False)
    wrong = [k for k in missing if not k.startswith(head)] + list(unexpected)
    if wrong:
        raise WeightsError(f"{path}: its tensors do not fit {arch} ({', '.join(wrong[:3])}, ...); is the file damaged?")
    source = f"garmentcv:{path.name} ({arch}, classes {','.join(ckpt['classes'])})"
    logger.info("random-init backbone of %s replaced by the one in %s; new head for %d classes", arch, path,
                num_classes)
    return BuiltModel(built.model, source)
