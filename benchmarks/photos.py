"""A folder of realistic photos: JPEG crops of the real photographs scikit-learn ships.

``sklearn.datasets.load_sample_images()`` holds two colour photographs (``china.jpg``, ``flower.jpg``,
427x640). Each file written here is a random crop of one of them, resized to a product-photo size (600x866,
the size of the Kaggle lamoda images) or a thumbnail (46x66), saved as a baseline JPEG at quality 90, so
decoding costs what real photos cost (unlike flat synthetic images, which compress to almost nothing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: (width, height) px of the two kinds of files, and how many of every 5 files are of each.
LARGE_SIZE: tuple[int, int] = (600, 866)
SMALL_SIZE: tuple[int, int] = (46, 66)
LARGE_PER_5: int = 4


@dataclass(frozen=True)
class PhotoFolder:
    """A folder written by :func:`write_photo_folder`.

    Attributes:
        path: the folder.
        files: image files in it (distinct ones plus hard links).
        distinct: files with their own content; the rest are hard links to them (same bytes, new names).
        large: files of :data:`LARGE_SIZE`; the others are :data:`SMALL_SIZE`.
        megabytes: bytes of the distinct files, MB.
    """

    path: Path
    files: int
    distinct: int
    large: int
    megabytes: float


def _sources() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images  # noqa: PLC0415 - only the benchmark needs scikit-learn

    return [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]


def _photo(source: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random crop of ``source`` with the aspect ratio of ``size`` (w, h), resized to ``size``."""
    height, width = source.shape[:2]
    aspect = size[0] / size[1]
    crop_h = int(rng.integers(height // 2, height + 1))
    crop_w = min(width, int(round(crop_h * aspect)))
    crop_h = min(height, int(round(crop_w / aspect)))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crop = Image.fromarray(source[top : top + crop_h, left : left + crop_w])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize(size, Image.Resampling.BICUBIC)


def write_photo_folder(folder: Path, files: int, distinct: int | None = None, seed: int = 0) -> PhotoFolder:
    """Write ``files`` JPEGs ``folder/img_000000.jpg``... (4 of every 5 at 600x866, the rest at 46x66).

    Args:
        folder: created if missing; existing ``img_*.jpg`` files are replaced.
        files: number of image files.
        distinct: files with their own content (default: all); file ``i`` is then a hard link to file
            ``i % distinct``, which makes a 20 000-file folder in seconds with every file still read and
            decoded in full.
        seed: the same seed always gives the same bytes.
    """
    distinct = files if distinct is None else max(1, min(distinct, files))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = _sources()
    size_bytes = large = 0
    for i in range(files):
        path = folder / f"img_{i:06d}.jpg"
        if path.exists():
            path.unlink()
        is_large = (i % distinct) % 5 < LARGE_PER_5
        large += is_large
        if i < distinct:
            photo = _photo(sources[int(rng.integers(len(sources)))], LARGE_SIZE if is_large else SMALL_SIZE, rng)
            photo.save(path, format="JPEG", quality=90)
            size_bytes += path.stat().st_size
        else:
            os.link(folder / f"img_{i % distinct:06d}.jpg", path)
    return PhotoFolder(path=folder, files=files, distinct=distinct, large=large, megabytes=size_bytes / 1e6)
