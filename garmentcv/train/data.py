"""Training data: the stratified split, the augmentation and the DataLoaders.

Validation images go through :func:`garmentcv.image.load_input`, the very function ``gcv classify`` uses,
so validation figures are what the exported model will see. Training images are decoded by the same rule for
each random crop (:class:`DecodeResizedCrop`): a large JPEG at the DCT scale serving uses, so the model learns on
the pixels it will be served, fine textures included.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision import transforms as T
from tqdm import tqdm

from garmentcv.cpus import available_cpus
from garmentcv.data.corrections import TOO_FEW_ADVICE, AppliedCorrections, CorrectionsError, describe_class_changes
from garmentcv.data.layouts import LabelledDataset, Sample, scan_images
from garmentcv.errors import DatasetError, ImageDecodeError
from garmentcv.image import Preprocessing, decode_image, load_input, load_region
from garmentcv.text import plural
from garmentcv.train.config import TrainConfig
from garmentcv.train.recipe import sampler_weights

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Disjoint training and validation samples, each sorted by path.

    Attributes:
        train: training samples.
        val: validation samples.
        no_val_classes: classes without a validation image (a single image, kept for training; or absent from
            ``--val-data``), so their validation figures are absent (see
            :class:`garmentcv.metrics.ClassificationMetrics`).
    """

    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    no_val_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BadImage:
    """A sample whose file cannot be decoded, with the reason (e.g. ``truncated file``)."""

    sample: Sample
    reason: str


def _decode_problem(sample: Sample) -> str | None:
    try:
        decode_image(sample.path)
    except ImageDecodeError as exc:
        return exc.reason
    return None


def find_bad_images(samples: Sequence[Sample], progress: bool = True) -> list[BadImage]:
    """Decode every sample once, in full, and return those that fail, in order (a file that fails here fails
    whatever DCT scale training or validation later decodes it at, and one that passes decodes at any).

    Streams: each image is decoded by one of a few threads (the CPUs this process may use, at most 8) and
    dropped at once; a progress bar goes to stderr unless ``progress`` is false or stderr is not a terminal.
    """
    if not samples:
        return []
    threads = max(1, min(8, available_cpus(), len(samples)))
    bad: list[BadImage] = []
    bar = tqdm(total=len(samples), desc="check images", unit="img", file=sys.stderr, disable=None if progress else True)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for sample, problem in zip(samples, pool.map(_decode_problem, samples, chunksize=16), strict=True):
            if problem is not None:
                bad.append(BadImage(sample, problem))
            bar.update()
    bar.close()
    return bad


def drop_bad_images(dataset: LabelledDataset, bad: Sequence[BadImage], skip: bool) -> LabelledDataset:
    """``dataset`` without the ``bad`` samples when ``skip``; without ``skip`` any bad image is an error.

    Raises:
        DatasetError: there are bad images and not ``skip`` (the message names the first few and the count,
            and says what to do); or skipping them leaves a class without any image.
    """
    if not bad:
        return dataset
    shown = ", ".join(f"{b.sample.path} ({b.reason})" for b in bad[:5]) + (
        f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    )
    count = plural(len(bad), "image")
    if not skip:
        raise DatasetError(
            f"{dataset.root}: {count} cannot be decoded: {shown}; fix or remove them, or pass --skip-bad-images "
            "to train without them (they are then listed in skipped_images.csv of the run folder)"
        )
    logger.warning("skipping %s that cannot be decoded: %s", count, shown)
    dropped = {b.sample.path for b in bad}
    kept = tuple(s for s in dataset.samples if s.path not in dropped)
    emptied = [name for name in dataset.classes if not any(s.label == name for s in kept)]
    if emptied:
        raise DatasetError(
            f"{dataset.root}: without the images that cannot be decoded, class(es) {', '.join(emptied)} have no "
            "image left; fix those images or remove the class"
        )
    return dataclasses.replace(dataset, samples=kept)


#: Corrections that drop more than this share of the images are logged as a WARNING, with every class's counts.
LARGE_DROP_SHARE = 0.5


def check_corrected_dataset(dataset: LabelledDataset, applied: AppliedCorrections, source: Path, split: bool) -> None:
    """Check ``dataset``, reduced by the corrections file ``source`` (``applied``), before it trains.

    :func:`split_dataset` needs 2 images of a class to give it a validation image; a class with one only warns
    there, since the data is what it is. A class that had at least 2 images and that the corrections leave with
    one is refused instead: it is the corrections that take away its validation figures. Only with ``split``
    (no ``--val-data``: with a validation set of its own, every image of the dataset trains). An emptied class is
    refused earlier, by :func:`garmentcv.data.corrections.apply_corrections`.

    Then, when the corrections drop more than :data:`LARGE_DROP_SHARE` of the images, logs a WARNING with every
    class's images before and after, dropped and relabelled.

    Raises:
        CorrectionsError: a class left too few images to split (the message names ``source``, every class's images
            before and after, and what to do).
    """
    changes = applied.classes
    if split:
        short = [name for name, change in changes.items() if change.before >= 2 > change.after]
        if short:
            raise CorrectionsError(
                f"{source}: after its corrections, class(es) {', '.join(short)} of {dataset.root} have fewer than 2 "
                "images, too few to split for validation (images per class before -> after: "
                f"{describe_class_changes(changes)}); {TOO_FEW_ADVICE}"
            )
    total = applied.images_before
    if len(applied.dropped) > LARGE_DROP_SHARE * total:
        logger.warning(
            "%s: the corrections drop %d of %d images (%.0f%%), more than half; images per class before -> after: "
            "%s; check that the file acts on the issues you meant",
            source, len(applied.dropped), total, 100 * len(applied.dropped) / total, describe_class_changes(changes),
        )


def split_dataset(dataset: LabelledDataset, val_fraction: float, seed: int) -> Split:
    """Stratified split: ``val_fraction`` of every class goes to validation, chosen by ``seed``.

    Uses scikit-learn's ``train_test_split(stratify=...)``, then makes sure that every class with at least 2
    images has at least one image on each side (a rounding of the stratified split can leave a small class
    without validation images); the moved image is chosen by ``seed``. A class with a single image stays in
    training and is named in :attr:`Split.no_val_classes` and in a warning. The same dataset, fraction and
    seed always give the same split.

    Raises:
        DatasetError: no class has 2 images, or the split cannot be made.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    counts = dataset.class_counts()
    small = {name: n for name, n in counts.items() if n < 2}
    if len(small) == len(counts):
        raise DatasetError(
            f"{dataset.root}: class(es) {small} have fewer than 2 images, too few to split for validation; "
            "add images to them"
        )
    if small:
        logger.warning(
            "class(es) %s have a single image: kept for training, no validation image, so their validation "
            "figures are absent; add images to them",
            ", ".join(small),
        )
    splittable = [i for i, s in enumerate(dataset.samples) if s.label not in small]
    singles = [i for i, s in enumerate(dataset.samples) if s.label in small]
    targets = dataset.targets
    # sklearn refuses a side with fewer images than classes (3 classes x 3 images at 20%: 2 validation images);
    # then ask for the nearest size it accepts, and the step below puts every class on both sides.
    n, n_classes = len(splittable), len(counts) - len(small)
    n_val = math.ceil(val_fraction * n)  # sklearn's own rounding of a fractional test_size
    test_size: float | int = (val_fraction if n_classes <= n_val <= n - n_classes
                              else min(max(n_val, n_classes), n - n_classes))
    try:
        train_idx, val_idx = train_test_split(
            splittable, test_size=test_size, random_state=seed, stratify=[targets[i] for i in splittable]
        )
    except ValueError as exc:
        raise DatasetError(
            f"{dataset.root}: cannot make a stratified {val_fraction:.0%} validation split of {counts} ({exc})"
        ) from exc
    train_idx, val_idx = _every_class_on_both_sides(list(train_idx), list(val_idx), targets, seed)
    pick = lambda idx: tuple(dataset.samples[i] for i in sorted(idx))  # noqa: E731
    return Split(train=pick(train_idx + singles), val=pick(val_idx), no_val_classes=tuple(small))


def given_split(dataset: LabelledDataset, val_set: LabelledDataset) -> Split:
    """Train on every image of ``dataset`` and validate on ``val_set`` (``gcv train --val-data``).

    Raises:
        DatasetError: ``val_set`` has a class that ``dataset`` lacks, or the two share a file (the same resolved
            path), which would score images the model trained on.
    """
    unknown = sorted(set(val_set.classes) - set(dataset.classes))
    if unknown:
        raise DatasetError(
            f"{val_set.root}: validation class(es) {', '.join(unknown)} are not among the training classes "
            f"{', '.join(dataset.classes)}; rename or remove them"
        )
    trained = {s.path.resolve() for s in dataset.samples}
    shared = sorted(str(s.path) for s in val_set.samples if s.path.resolve() in trained)
    if shared:
        raise DatasetError(
            f"{val_set.root}: {plural(len(shared), 'validation image')} also in the training data {dataset.root} "
            f"({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}); "
            "validation must not score images the model trains on"
        )
    present = {s.label for s in val_set.samples}
    missing = tuple(c for c in dataset.classes if c not in present)
    if missing:
        logger.warning("class(es) %s have no validation image in %s: their validation figures are absent",
                       ", ".join(missing), val_set.root)
    return Split(train=dataset.samples, val=val_set.samples, no_val_classes=missing)


def _every_class_on_both_sides(
    train_idx: list[int], val_idx: list[int], targets: Sequence[int], seed: int
) -> tuple[list[int], list[int]]:
    """Move one image (chosen by ``seed``) of a class missing on one side from the other side."""
    rng = np.random.default_rng(seed)
    for cls in sorted({targets[i] for i in train_idx + val_idx}):
        in_train = sorted(i for i in train_idx if targets[i] == cls)
        in_val = sorted(i for i in val_idx if targets[i] == cls)
        if not in_val and len(in_train) >= 2:
            moved = in_train[int(rng.integers(len(in_train)))]
            train_idx.remove(moved)
            val_idx.append(moved)
        elif not in_train and len(in_val) >= 2:
            moved = in_val[int(rng.integers(len(in_val)))]
            val_idx.remove(moved)
            train_idx.append(moved)
    return train_idx, val_idx


class DecodeResizedCrop(torch.nn.Module):
    """torchvision's ``RandomResizedCrop`` that decodes the file itself: image path -> PIL RGB image ``(size, size)``.

    The region is picked as ``T.RandomResizedCrop.get_params`` picks it (same random draws, on the upright
    full-size image, whose size is read from the file's header) and then decoded and resized by
    :func:`garmentcv.image.load_region`: a large JPEG is decoded at the DCT scale serving's ``load_crop`` uses for
    a region that large (at least one decoded pixel per output pixel), so a training view of what serving shows
    is made from serving's decoded pixels; a region under twice ``size`` across, and any PNG or small JPEG, from
    the full decode, cropped and resized exactly as ``RandomResizedCrop`` does.
    """

    def __init__(self, size: int, scale: tuple[float, float], interpolation: str = "bilinear",
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        super().__init__()
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.interpolation = interpolation

    def pick_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random region ``(left, top, right, bottom)`` of a ``width`` x ``height`` image, as torchvision picks it."""
        # get_params reads only the shape: a zero-stride view of the size, no pixels allocated.
        top, left, h, w = T.RandomResizedCrop.get_params(
            torch.empty(()).expand(3, height, width), list(self.scale), list(self.ratio)
        )
        return left, top, left + w, top + h

    def forward(self, path: Path) -> Image.Image:
        return Image.fromarray(load_region(path, self.size, self.pick_box, self.interpolation))


def train_transform(pp: Preprocessing, cfg: TrainConfig) -> T.Compose:
    """Training augmentation of an image file -> normalised ``float32`` tensor ``(3, crop, crop)``.

    Random resized crop decoded by serving's rule (scale ``cfg.crop_scale``..1; :class:`DecodeResizedCrop`),
    rotation (+-``cfg.rotation`` degrees, white fill like a product photo's background), horizontal flip, colour
    jitter, then ImageNet normalisation from ``pp``.
    """
    ops: list[torch.nn.Module] = [DecodeResizedCrop(pp.crop, (cfg.crop_scale, 1.0), pp.interpolation)]
    if cfg.rotation > 0:
        ops.append(T.RandomRotation(cfg.rotation, fill=255))
    if cfg.hflip > 0:
        ops.append(T.RandomHorizontalFlip(cfg.hflip))
    if cfg.jitter > 0:
        ops.append(T.ColorJitter(brightness=cfg.jitter, contrast=cfg.jitter, saturation=cfg.jitter))
    ops += [T.ToTensor(), T.Normalize(pp.mean, pp.std)]
    return T.Compose(ops)


class TrainImages(Dataset):
    """Training samples, each decoded and augmented by ``transform`` (:func:`train_transform`: it takes the file's
    path, so the decode can follow the random crop). Items: ``(tensor (3, S, S), class index)``."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], transform: T.Compose) -> None:
        self.samples = list(samples)
        self.index = {name: i for i, name in enumerate(classes)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        return self.transform(sample.path), self.index[sample.label]


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


def load_other_images(folder: Path, split: Split, skip_bad: bool, progress: bool = True) -> tuple[Path, ...]:
    """The images of ``folder`` (searched recursively, sorted) for outlier exposure (``gcv train --other-data``).

    Every image is decoded once, as the training images are; one that cannot be decoded is an error, or left out
    with ``skip_bad`` (logged).

    Raises:
        DatasetError: ``folder`` is not a folder or holds no image; an image is also a training or validation image
            (the same resolved path); an image cannot be decoded and not ``skip_bad``.
    """
    paths = tuple(scan_images(folder))
    if not paths:
        raise DatasetError(f"--other-data {folder}: no image found; give a folder of images of none of the classes")
    labelled = {s.path.resolve() for s in (*split.train, *split.val)}
    shared = [str(p) for p in paths if p.resolve() in labelled]
    if shared:
        raise DatasetError(
            f"--other-data {folder}: {plural(len(shared), 'image')} also labelled in the training data "
            f"({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}); other images must be none of the classes"
        )
    bad = find_bad_images([Sample(p, "") for p in paths], progress)
    if bad:
        shown = ", ".join(f"{b.sample.path} ({b.reason})" for b in bad[:5])
        if not skip_bad:
            raise DatasetError(f"--other-data {folder}: {plural(len(bad), 'image')} cannot be decoded: {shown}; fix "
                               "or remove them, or pass --skip-bad-images to train without them")
        logger.warning("--other-data: skipping %s that cannot be decoded: %s", plural(len(bad), "image"), shown)
        dropped = {b.sample.path for b in bad}
        paths = tuple(p for p in paths if p not in dropped)
        if not paths:
            raise DatasetError(f"--other-data {folder}: no image can be decoded")
    return paths


class OtherImages(Dataset):
    """Images of none of the classes, augmented as training images (``transform``). Items: tensor ``(3, S, S)``."""

    def __init__(self, paths: Sequence[Path], transform: T.Compose) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.paths[i])


def other_batches(paths: Sequence[Path], pp: Preprocessing, cfg: TrainConfig, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches ``(B, 3, S, S)`` of other images for outlier exposure, ``B <= cfg.batch_size``
    (a pass's last batch may be smaller; each joins a training batch, so BatchNorm never sees one image alone).
    Each pass over ``paths`` is reshuffled by a generator seeded with ``seed``."""
    loader = DataLoader(
        OtherImages(paths, train_transform(pp, cfg)), batch_size=cfg.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed), num_workers=cfg.workers,
    )  # fmt: skip
    while True:
        yield from loader


def build_loaders(
    split: Split, classes: Sequence[str], pp: Preprocessing, cfg: TrainConfig, epoch_seed: int
) -> tuple[DataLoader, DataLoader]:
    """DataLoaders for one epoch: shuffled training batches (order fixed by ``epoch_seed``) and validation.

    With ``cfg.balanced_sampler`` the training images are drawn with replacement, each with weight ``1/n_c``
    (:func:`garmentcv.train.recipe.sampler_weights`), as many as the training split holds.

    A final training batch of exactly one image is dropped, since BatchNorm cannot train on it.

    Raises:
        DatasetError: fewer than 2 training images.
    """
    if len(split.train) < 2:
        raise DatasetError(f"only {len(split.train)} training image(s) after the split; need at least 2")
    generator = torch.Generator().manual_seed(epoch_seed)
    sampler = None
    if cfg.balanced_sampler:
        targets = [classes.index(s.label) for s in split.train]
        sampler = WeightedRandomSampler(sampler_weights(targets), len(targets), replacement=True, generator=generator)
    train_loader = DataLoader(
        TrainImages(split.train, classes, train_transform(pp, cfg)),
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=cfg.workers,
        drop_last=len(split.train) % cfg.batch_size == 1,
    )
    val_loader = DataLoader(
        EvalImages(split.val, classes, pp), batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers
    )
    return train_loader, val_loader
