"""Build a stand-in for the Kaggle lamoda-images-classification data from Fashion-MNIST (numpy, Pillow).

Fashion-MNIST (Zalando, MIT licence; Debian package ``dataset-fashion-mnist``) ships 28x28 greyscale
garments in IDX files. Trouser (label 1) becomes ``bryuki`` and Shirt (6) plus T-shirt/top (0) become
``bluzy``, the two Lamoda classes. Pixels are inverted so that garments appear dark on white, as on product
photos. The output mirrors the Kaggle layout:

* ``OUT/train/<id>_<label>.jpg`` (lamoda layout, ids from 1 in file order),
* ``OUT/test/<index>.jpg`` unlabelled, and ``OUT/test_labels.csv`` (``index,label``, the solution format),
* with ``pretraining_set``, ``OUT/pretrain/<id>_<label>.jpg`` (lamoda layout): the seven classes that are
  neither blouse nor trousers (:data:`PRETRAINING_CLASSES`), from the training IDX file, to pretrain a backbone
  for transfer to bluzy/bryuki. No file there is byte-identical (SHA-256, as ``gcv data inspect`` checks
  leakage) to a file of ``train/`` or ``test/``: such an image is left out and counted.

Files are written in IDX order with fixed JPEG settings, so the same input gives the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
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

#: The pretraining set: the Fashion-MNIST classes in neither Lamoda class, in label order.
PRETRAINING_CLASSES: tuple[str, ...] = ("pullover", "dress", "coat", "sandal", "sneaker", "bag", "ankle-boot")
PRETRAINING_MAPPING: dict[int, str] = {FASHION_MNIST_CLASSES.index(c): c for c in PRETRAINING_CLASSES}

_SPLITS = {"train": "train", "test": "t10k"}
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class FashionMnistSummary:
    """What :func:`write_fashion_mnist` wrote: image counts per class for each split.

    ``pretrain_counts`` is empty without a pretraining set; ``pretrain_shared`` counts the pretraining images
    left out because their file would be byte-identical to one of ``train/`` or ``test/``.
    """

    out: Path
    train_counts: dict[str, int]
    test_counts: dict[str, int]
    pretrain_counts: dict[str, int] = field(default_factory=dict)
    pretrain_shared: int = 0


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


def load_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of the Fashion-MNIST IDX files in ``source`` (``.gz`` or plain).

    Args:
        source: the folder of the IDX files (Debian's ``dataset-fashion-mnist`` installs them in
            :data:`DEFAULT_SOURCE`).
        split: ``train`` or ``test``.

    Returns:
        ``(images uint8 (N, 28, 28), labels uint8 (N,))`` in file order, labels 0-9 as Fashion-MNIST numbers them.

    Raises:
        DatasetError: a file is missing, or the images and labels differ in count.
    """
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


def _encode(pixels: np.ndarray) -> bytes:
    # Inverted greyscale: dark garment on a white background.
    buffer = io.BytesIO()
    Image.fromarray((255 - pixels).astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


def _save(pixels: np.ndarray, path: Path) -> str:
    """Write the JPEG of ``pixels`` to ``path``; returns the SHA-256 hex digest of the bytes written."""
    data = _encode(pixels)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_fashion_mnist(
    out: Path,
    source: Path = DEFAULT_SOURCE,
    max_per_class: int | None = None,
    all_classes: bool = False,
    progress: Callable[[int], None] | None = None,
    pretraining_set: bool = False,
) -> FashionMnistSummary:
    """Write the Lamoda-layout stand-in built from Fashion-MNIST.

    Args:
        out: output folder; ``train/``, ``test/`` and ``test_labels.csv`` are created in it.
        source: folder with the four IDX files (``.gz`` or not).
        max_per_class: keep at most this many images per output class in each split (file order).
        all_classes: keep the ten Fashion-MNIST classes (:data:`FASHION_MNIST_CLASSES`) instead of the two
            Lamoda classes.
        progress: called with the number of images written since the last call.
        pretraining_set: also write ``out/pretrain/`` (:data:`PRETRAINING_CLASSES`, at most ``max_per_class``
            each, from the training file), leaving out any image whose file would equal one of the target set.

    Raises:
        DatasetError: source files missing or corrupt, ``out/train`` / ``out/test`` / ``out/pretrain`` not
            empty, or ``all_classes`` with ``pretraining_set`` (no class would be left to pretrain on).
    """
    if all_classes and pretraining_set:
        raise DatasetError(
            "--all-classes keeps every Fashion-MNIST class in the target set, so --pretraining-set would have no "
            "other class; use one or the other"
        )
    mapping = dict(enumerate(FASHION_MNIST_CLASSES)) if all_classes else LAMODA_MAPPING
    train_dir, test_dir = out / "train", out / "test"
    pre_dir = out / "pretrain"
    for folder in (train_dir, test_dir, *((pre_dir,) if pretraining_set else ())):
        if folder.exists() and any(folder.iterdir()):
            raise DatasetError(f"{folder}: not empty; choose another --out or remove it first")
    data = {split: load_split(source, split) for split in _SPLITS}
    train_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)

    images, labels = data["train"]
    keep = _select(labels, mapping, max_per_class)
    width = max(4, len(str(len(keep))))
    train_counts: dict[str, int] = {}
    target: set[str] = set()
    for number, (index, name) in enumerate(keep, start=1):
        target.add(_save(images[index], train_dir / f"{number:0{width}d}_{name}.jpg"))
        train_counts[name] = train_counts.get(name, 0) + 1
        if progress:
            progress(1)

    images, labels = data["test"]
    keep = _select(labels, mapping, max_per_class)
    test_counts: dict[str, int] = {}
    rows = []
    for number, (index, name) in enumerate(keep):
        target.add(_save(images[index], test_dir / f"{number}.jpg"))
        rows.append((number, name))
        test_counts[name] = test_counts.get(name, 0) + 1
        if progress:
            progress(1)
    with atomic_write(out / "test_labels.csv", mode="w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label"])
        writer.writerows(rows)
    logger.info("wrote %s: train %s, test %s", out, train_counts, test_counts)
    pre_counts, shared = (_write_pretraining_set(pre_dir, data["train"], target, max_per_class, progress)
                          if pretraining_set else ({}, 0))
    return FashionMnistSummary(
        out, dict(sorted(train_counts.items())), dict(sorted(test_counts.items())), dict(sorted(pre_counts.items())),
        shared,
    )


def _write_pretraining_set(
    folder: Path,
    split: tuple[np.ndarray, np.ndarray],
    target: set[str],
    max_per_class: int | None,
    progress: Callable[[int], None] | None,
) -> tuple[dict[str, int], int]:
    """Write the lamoda-layout pretraining set; returns its counts per class and how many images were left out.

    An image is left out when its JPEG bytes have a SHA-256 digest in ``target`` (the target set's files), so the
    two sets share no file, as ``gcv data inspect`` would check; at most ``max_per_class`` are kept per class.
    """
    images, labels = split
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    shared, number = 0, 0
    candidates = _select(labels, PRETRAINING_MAPPING, None)
    width = max(4, len(str(len(candidates))))
    for index, name in candidates:
        if max_per_class is not None and counts.get(name, 0) >= max_per_class:
            continue
        data = _encode(images[index])
        if hashlib.sha256(data).hexdigest() in target:
            shared += 1
            continue
        number += 1
        (folder / f"{number:0{width}d}_{name}.jpg").write_bytes(data)
        counts[name] = counts.get(name, 0) + 1
        if progress:
            progress(1)
    if shared:
        logger.warning("%s: left out %d image(s) whose file equals one of the target set (SHA-256)", folder, shared)
    logger.info("wrote %s: %s", folder, counts)
    return counts, shared
