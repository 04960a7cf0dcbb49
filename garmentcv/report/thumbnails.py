"""Thumbnails for the report pages: small JPEG files made with Pillow from :func:`garmentcv.image.decode_image`.

Only the images a page shows are decoded (at most a few thousand, whatever the number of rows), in a pool of
threads sized to the CPUs this process may use (Pillow releases the GIL while it decodes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from garmentcv.cpus import available_cpus
from garmentcv.errors import ImageDecodeError
from garmentcv.image import decode_image

logger = logging.getLogger(__name__)

#: Side, in px, of the square a thumbnail fits in (smaller images are enlarged by a whole factor, nearest
#: neighbour, so that a 28 px Fashion-MNIST image stays sharp at 84 px).
THUMBNAIL_PX = 96
#: JPEG quality of the thumbnail files (about 2-4 kB each at 96 px).
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Thumbnail:
    """One thumbnail: ``name`` of the file written (``None`` when the image could not be decoded, then
    ``reason`` says why), its size in px."""

    name: str | None
    width: int = 0
    height: int = 0
    reason: str | None = None


def _thumbnail(source: Path, target: Path, size: int) -> Thumbnail:
    try:
        rgb = Image.fromarray(decode_image(source))
    except ImageDecodeError as exc:
        return Thumbnail(None, reason=exc.reason)
    except OSError as exc:  # unreadable or vanished since the run: a page without that picture, not a crash
        return Thumbnail(None, reason=exc.strerror or str(exc))
    longest = max(rgb.size)
    if longest > size:
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    elif longest * 2 <= size:
        factor = size // longest
        rgb = rgb.resize((rgb.width * factor, rgb.height * factor), Image.Resampling.NEAREST)
    rgb.save(target, format="JPEG", quality=JPEG_QUALITY)
    return Thumbnail(target.name, rgb.width, rgb.height)


def make_thumbnails(sources: Sequence[Path], folder: Path, size: int = THUMBNAIL_PX,
                    workers: int | None = None) -> list[Thumbnail]:
    """Write ``t00000.jpg``, ``t00001.jpg``, ... in ``folder``, one per entry of ``sources``, in that order.

    Args:
        sources: image files (any format :func:`~garmentcv.image.decode_image` reads); each is decoded once.
        folder: an existing folder receiving the JPEG files.
        size: the thumbnails fit in ``size`` x ``size`` px, aspect ratio kept.
        workers: decoding threads; default the CPUs this process may use.

    Returns:
        One :class:`Thumbnail` per source, in order; a file that cannot be decoded gets ``name=None`` and
        its reason instead of raising.
    """
    targets = [folder / f"t{i:05d}.jpg" for i in range(len(sources))]
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=workers or available_cpus()) as pool:
        return list(pool.map(lambda pair: _thumbnail(pair[0], pair[1], size), zip(sources, targets, strict=True)))
