"""Build a stand-in for the Kaggle lamoda-images-classification data from Fashion-MNIST (numpy, Pillow).

Fashion-MNIST (Zalando, MIT licence; Debian package ``dataset-fashion-mnist``) ships 28x28 greyscale
garments in IDX files. Trouser (label 1) becomes ``bryuki`` and Shirt (6) plus T-shirt/top (0) become
``bluzy``, the two Lamoda classes. Pixels are inverted so that garments appear dark on white, as on product
photos. The output mirrors the Kaggle layout:

* ``OUT/train/<id>_<label>.jpg`` (lamoda layout, ids from 1 in file order),
* ``OUT/test/<index>.jpg`` unlabelled, and ``OUT/test_labels.csv`` (``index,label``, the solution format).

Files are written in IDX order with fixed JPEG settings, so the same input gives the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from garmentcv.errors import DatasetError
from garmentcv.fsutil import atomic_write

logger = logging.getLogger(__name__)

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")

#: Fashion-MNIST label index -> class name (Zalando's README, with names made valid class names).
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "tshirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)

#: The Lamoda stand-in: Fashion-MNIST label index -> Lamoda class.
LAMODA_MAPPING: dict[int, str] = {1: "bryuki", 6: "bluzy", 0: "bluzy"}

_SPLITS = {"train": "train", "test": "t10k"}
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class FashionMnistSummary:
    """What :func:`write_fashion_mnist` wrote: image counts per class for each split."""

    out: Path
    train_counts: dict[str, int]
    test_counts: dict[str, int]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Format: big-endian magic ``0x0000 <dtype> <ndim>``, then ``ndim`` uint32 sizes, then the data
    (Y. LeCun's MNIST page). Only the unsigned-byte type used by (Fashion-)MNIST is supported.

    Raises:
        DatasetError: the file is missing, truncated or not an unsigned-byte IDX file.
    """
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">u4"))
    data = np.frombuffer(raw[header:], dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: truncated IDX file, {data.size} values for shape {shape}")
    return data.reshape(shape)


def _load_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = _SPLITS[split]
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [source / f"{prefix}-{kind}.gz", source / f"{prefix}-{kind}"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise DatasetError(
                f"{candidates[0]}: Fashion-MNIST file not found; install it with "
                "'apt-get install dataset-fashion-mnist' or pass --source DIR"
            )
        found.append(read_idx(path))
    images, labels = found
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{source}: {split} images and labels differ in count")
    return images, labels


def _select(labels: np.ndarray, mapping: dict[int, str], max_per_class: int | None) -> list[tuple[int, str]]:
    """Indices to keep, in file order, with their output class; at most ``max_per_class`` per output class."""
    taken: dict[str, int] = {}
    keep = []
    for index, label in enumerate(labels.tolist()):
        name = mapping.get(label)
        if name is None or (max_per_class is not None and taken.get(name, 0) >= max_per_class):
            continue
        taken[name] = taken.get(name, 0) + 1
        keep.append((index, name))
    return keep


def _save(pixels: np.ndarray, path: Path) -> None:
    # Inverted greyscale: dark garment on a white background.
    Image.fromarray(255 - pixels, mode="L").save(path, format="JPEG", quality=_JPEG_QUALITY)


def write_fashion_mnist(
    out: Path,
    source: Path = DEFAULT_SOURCE,
    max_per_class: int | None = None,
    all_classes: bool = False,
    progress: Callable[[int], None] | None = None,
) -> FashionMnistSummary:
    """Write the Lamoda-layout stand-in built from Fashion-MNIST.

    Args:
        out: output folder; ``train/``, ``test/`` and ``test_labels.csv`` are created in it.
        source: folder with the four IDX files (``.gz`` or not).
        max_per_class: keep at most this many images per output class in each split (file order).
        all_classes: keep the ten Fashion-MNIST classes (:data:`FASHION_MNIST_CLASSES`) instead of the two
            Lamoda classes.
        progress: called with the number of images written since the last call.

    Raises:
        DatasetError: source files missing or corrupt, or ``out/train`` / ``out/test`` not empty.
    """
    mapping = dict(enumerate(FASHION_MNIST_CLASSES)) if all_classes else LAMODA_MAPPING
    train_dir, test_dir = out / "train", out / "test"
    for folder in (train_dir, test_dir):
        if folder.exists() and any(folder.iterdir()):
            raise DatasetError(f"{folder}: not empty; choose another --out or remove it first")
    data = {split: _load_split(source, split) for split in _SPLITS}
    train_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)

    images, labels = data["train"]
    keep = _select(labels, mapping, max_per_class)
    width = max(4, len(str(len(keep))))
    train_counts: dict[str, int] = {}
    for number, (index, name) in enumerate(keep, start=1):
        _save(images[index], train_dir / f"{number:0{width}d}_{name}.jpg")
        train_counts[name] = train_counts.get(name, 0) + 1
        if progress:
            progress(1)

    images, labels = data["test"]
    keep = _select(labels, mapping, max_per_class)
    test_counts: dict[str, int] = {}
    rows = []
    for number, (index, name) in enumerate(keep):
        _save(images[index], test_dir / f"{number}.jpg")
        rows.append((number, name))
        test_counts[name] = test_counts.get(name, 0) + 1
        if progress:
            progress(1)
    with atomic_write(out / "test_labels.csv", mode="w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label"])
        writer.writerows(rows)
    logger.info("wrote %s: train %s, test %s", out, train_counts, test_counts)
    return FashionMnistSummary(out, dict(sorted(train_counts.items())), dict(sorted(test_counts.items())))
