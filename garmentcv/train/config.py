"""Settings of a training run (a frozen dataclass, saved as ``config.json`` in every run folder)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The recipe the original project used and users know: AdamW at lr 0.01 decaying x0.8 per epoch, 5 epochs.
DEFAULT_EPOCHS = 5
DEFAULT_LR = 0.01
DEFAULT_LR_GAMMA = 0.8
DEFAULT_BATCH_SIZE = 32
DEFAULT_VAL_FRACTION = 0.2
#: The registered archs (garmentcv.models.registry.MODELS, in its order), named here so that the CLI's --arch
#: choices, --help and --version load no torch; a test keeps the two equal.
ARCHS: tuple[str, ...] = ("efficientnet_b0", "resnet18", "resnet34")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what ``gcv-train`` does.

    Attributes:
        data: dataset folder or ``path,label`` CSV manifest.
        out: run folder; one sub-folder per arch is written inside.
        archs: torchvision names of the models to train, in order.
        weights: ``imagenet``, ``none`` or the path of a torchvision state dict.
        layout: force a dataset layout (``lamoda``, ``folders``, ``csv``); ``None`` detects it.
        epochs: number of passes over the training split.
        batch_size: images per optimisation step.
        lr: AdamW learning rate at epoch 1.
        lr_gamma: ExponentialLR factor applied after each epoch.
        weight_decay: AdamW decoupled weight decay (PyTorch's default 0.01).
        val_fraction: share of each class held out for validation (stratified).
        seed: seeds the split, the initialisation of the head and every epoch's augmentation.
        image_size: model input side in px; ``None`` keeps each weights entry's default (224).
        rotation: largest random rotation in degrees (training augmentation).
        crop_scale: smallest area fraction kept by the random resized crop.
        jitter: brightness/contrast/saturation jitter strength (0 disables).
        hflip: probability of a horizontal flip.
        workers: DataLoader worker processes (0 decodes in the main process).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        resume: continue each arch from its ``last.pt`` in ``out``.
        skip_bad_images: leave images that cannot be decoded out of the split (listed in
            ``skipped_images.csv``) instead of stopping with an error that names them.
    """

    data: Path
    out: Path
    archs: tuple[str, ...] = ("resnet18",)
    weights: str = "imagenet"
    layout: str | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    lr_gamma: float = DEFAULT_LR_GAMMA
    weight_decay: float = 0.01
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    image_size: int | None = None
    rotation: float = 15.0
    crop_scale: float = 0.7
    jitter: float = 0.2
    hflip: float = 0.5
    workers: int = 0
    device: str = "auto"
    resume: bool = False
    skip_bad_images: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (paths as strings, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["data"], kwargs["out"] = Path(kwargs["data"]), Path(kwargs["out"])
        kwargs["archs"] = tuple(kwargs.get("archs", ("resnet18",)))
        return cls(**kwargs)
