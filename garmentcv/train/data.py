"""Training data: the stratified split, the augmentation and the DataLoaders.

Validation images go through :func:`garmentcv.image.load_input`, the very function ``gcv-classify`` uses,
so validation figures are what the exported model will see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from garmentcv.data.layouts import LabelledDataset, Sample
from garmentcv.errors import DatasetError
from garmentcv.image import Preprocessing, decode_image, load_input
from garmentcv.train.config import TrainConfig


@dataclass(frozen=True)
class Split:
    """Disjoint training and validation samples, each sorted by path."""

    train: tuple[Sample, ...]
    val: tuple[Sample, ...]


def split_dataset(dataset: LabelledDataset, val_fraction: float, seed: int) -> Split:
    """Stratified split: ``val_fraction`` of every class goes to validation, chosen by ``seed``.

    Uses scikit-learn's ``train_test_split(stratify=...)``; the same dataset, fraction and seed always give
    the same split.

    Raises:
        DatasetError: a class has too few images to appear on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    counts = dataset.class_counts()
    small = {name: n for name, n in counts.items() if n < 2}
    if small:
        raise DatasetError(
            f"{dataset.root}: class(es) {small} have fewer than 2 images, too few to split for validation; "
            "add images to them"
        )
    indices = list(range(len(dataset.samples)))
    try:
        train_idx, val_idx = train_test_split(
            indices, test_size=val_fraction, random_state=seed, stratify=dataset.targets
        )
    except ValueError as exc:
        raise DatasetError(
            f"{dataset.root}: cannot make a stratified {val_fraction:.0%} validation split of {counts} ({exc})"
        ) from exc
    pick = lambda idx: tuple(dataset.samples[i] for i in sorted(idx))  # noqa: E731
    return Split(train=pick(train_idx), val=pick(val_idx))


def train_transform(pp: Preprocessing, cfg: TrainConfig) -> T.Compose:
    """Training augmentation on a PIL RGB image -> normalised ``float32`` tensor ``(3, crop, crop)``.

    Random resized crop (scale ``cfg.crop_scale``..1), rotation (+-``cfg.rotation`` degrees, white fill like
    a product photo's background), horizontal flip, colour jitter, then ImageNet normalisation from ``pp``.
    """
    ops: list[torch.nn.Module] = [
        T.RandomResizedCrop(pp.crop, scale=(cfg.crop_scale, 1.0), interpolation=T.InterpolationMode(pp.interpolation)),
    ]
    if cfg.rotation > 0:
        ops.append(T.RandomRotation(cfg.rotation, fill=255))
    if cfg.hflip > 0:
        ops.append(T.RandomHorizontalFlip(cfg.hflip))
    if cfg.jitter > 0:
        ops.append(T.ColorJitter(brightness=cfg.jitter, contrast=cfg.jitter, saturation=cfg.jitter))
    ops += [T.ToTensor(), T.Normalize(pp.mean, pp.std)]
    return T.Compose(ops)


class TrainImages(Dataset):
    """Training samples: shared decode, then random augmentation. Items: ``(tensor (3, S, S), class index)``."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], transform: T.Compose) -> None:
        self.samples = list(samples)
        self.index = {name: i for i, name in enumerate(classes)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        image = Image.fromarray(decode_image(sample.path))
        return self.transform(image), self.index[sample.label]


class EvalImages(Dataset):
    """Validation samples through the shared inference preprocessing. Items: ``(tensor (3, S, S), index)``."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], pp: Preprocessing) -> None:
        self.samples = list(samples)
        self.index = {name: i for i, name in enumerate(classes)}
        self.pp = pp

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        return torch.from_numpy(load_input(sample.path, self.pp)), self.index[sample.label]


def build_loaders(
    split: Split, classes: Sequence[str], pp: Preprocessing, cfg: TrainConfig, epoch_seed: int
) -> tuple[DataLoader, DataLoader]:
    """DataLoaders for one epoch: shuffled training batches (order fixed by ``epoch_seed``) and validation.

    A final training batch of exactly one image is dropped, since BatchNorm cannot train on it.

    Raises:
        DatasetError: fewer than 2 training images.
    """
    if len(split.train) < 2:
        raise DatasetError(f"only {len(split.train)} training image(s) after the split; need at least 2")
    generator = torch.Generator().manual_seed(epoch_seed)
    train_loader = DataLoader(
        TrainImages(split.train, classes, train_transform(pp, cfg)),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=cfg.workers,
        drop_last=len(split.train) % cfg.batch_size == 1,
    )
    val_loader = DataLoader(
        EvalImages(split.val, classes, pp), batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers
    )
    return train_loader, val_loader
