"""The image contract shared by training, export and inference (numpy and Pillow only).

Two functions define what a model sees:

* :func:`decode_image` turns any supported file into an RGB ``uint8`` array of shape ``(H, W, 3)``;
* :func:`preprocess` turns that array into the model input, a normalised ``float32`` array of shape
  ``(3, crop, crop)``, following a :class:`Preprocessing` that is stored in every checkpoint and ONNX file.

Training validation, export parity checks and ``gcv-classify`` all call :func:`load_input` (these two
plus one decoding shortcut for large JPEGs, described there), so the same file always gives the same array.
The resize and centre crop follow torchvision's ``Resize(int)`` and ``CenterCrop`` on PIL images
(torchvision/transforms/functional.py), which is what the ImageNet weights entries use, pixel for pixel.
"""

from __future__ import annotations

import dataclasses
import io
import math
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from garmentcv.errors import ImageDecodeError

#: File extensions (lower case) treated as images everywhere: discovery, training and classification.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

#: Largest image accepted, in pixels (width x height). Pillow's own decompression-bomb limit is the same
#: order (about 89 Mpx); a larger file is reported as oversized rather than decoded.
MAX_IMAGE_PIXELS: int = 89_478_485

_INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

#: ImageNet channel statistics (RGB, 0..1 scale) used by every torchvision ImageNet weights entry.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def is_image_file(path: Path) -> bool:
    """Return True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes a model input. Stored in every checkpoint and ONNX file.

    Attributes:
        resize: length in px of the shorter side after resizing (aspect ratio kept).
        crop: side in px of the square centre crop taken after resizing; the model input is
            ``(3, crop, crop)``.
        interpolation: resampling filter of the resize, one of ``nearest``, ``bilinear``, ``bicubic``,
            ``lanczos``.
        mean: per-channel mean (RGB, on the 0..1 scale) subtracted after scaling pixels to 0..1.
        std: per-channel standard deviation (RGB, 0..1 scale) divided by after subtracting ``mean``.
    """

    resize: int
    crop: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not supported; use one of {sorted(_INTERPOLATIONS)}"
            )
        if not (0 < self.crop <= self.resize):
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean={self.mean}, std={self.std}")

    def with_image_size(self, size: int) -> Preprocessing:
        """Return a copy whose crop is ``size`` px, the resize scaled in the same ratio (256/224 stays 8/7)."""
        if size < 1:
            raise ValueError(f"image size must be >= 1 px, got {size}")
        resize = max(size, round(size * self.resize / self.crop))
        return dataclasses.replace(self, resize=resize, crop=size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form, the one stored in checkpoints and ONNX metadata."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a key is missing or a value is out of range.
        """
        try:
            return cls(
                resize=int(data["resize"]),
                crop=int(data["crop"]),
                interpolation=str(data["interpolation"]),
                mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete preprocessing description {dict(data)!r}: {exc}") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha is composited on white, 16-bit greys are scaled to 8 bits."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), mode="L")
    elif image.mode in ("I", "F"):
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _open_rgb(source: Path | IO[bytes], path: Path, min_short: int | None = None) -> Image.Image:
    """Open, check, decode and convert one file to an upright RGB Pillow image (see :func:`decode_image`).

    ``source`` is the file or its bytes; ``path`` names it in errors.

    With ``min_short``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4 or 1/8, Pillow's ``draft``)
    whose shorter side is still at least ``min_short`` px; other formats and smaller images decode in full.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageDecodeError(
                        path, f"oversized: {width}x{height} px is over the {MAX_IMAGE_PIXELS} px limit"
                    )
                if min_short is not None and image.format == "JPEG" and min(width, height) >= 2 * min_short:
                    scale = min_short / min(width, height)
                    image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
                image.load()
                image = ImageOps.exif_transpose(image) or image
                return _to_rgb(image)
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(path, "file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(path, f"oversized: {exc}") from exc
    except OSError as exc:
        reason = "truncated file" if "truncat" in str(exc).lower() else f"corrupt or unsupported: {exc}"
        raise ImageDecodeError(path, reason) from exc
    except (ValueError, SyntaxError, struct.error) as exc:
        raise ImageDecodeError(path, f"corrupt: {exc}") from exc


def _as_rgb_array(rgb: Image.Image, path: Path) -> np.ndarray:
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ImageDecodeError(path, f"unexpected decoded shape {array.shape}")
    return array


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file into an RGB ``uint8`` array of shape ``(H, W, 3)``, at full resolution.

    EXIF orientation is applied; greyscale, palette, CMYK and 16-bit files are converted to RGB; alpha
    (RGBA, LA, palette transparency) is composited on white, the background of product photos. Only the
    first frame of an animated file is used.

    Raises:
        ImageDecodeError: the file is missing, not an image, truncated, corrupt, of an unsupported format,
            or larger than :data:`MAX_IMAGE_PIXELS`. ``.path`` and ``.reason`` say which and why.
    """
    path = Path(path)
    return _as_rgb_array(_open_rgb(path, path), path)


def decode_image_bytes(data: bytes, name: str | Path) -> np.ndarray:
    """Decode the bytes of an image file exactly as :func:`decode_image` decodes the file itself.

    For callers that already hold the bytes (e.g. to hash them, ``gcv-data inspect``) so that each file is
    read once. ``name`` is only used in error messages.

    Returns:
        RGB ``uint8`` array ``(H, W, 3)``.

    Raises:
        ImageDecodeError: as :func:`decode_image`, with ``.path`` set to ``name``.
    """
    return _as_rgb_array(_open_rgb(io.BytesIO(data), Path(name)), Path(name))


def _resize_crop_pil(pil: Image.Image, pp: Preprocessing) -> np.ndarray:
    """Resize the shorter side to ``pp.resize`` px, then centre-crop ``pp.crop`` px: RGB ``uint8`` array.

    The same arithmetic as torchvision's ``Resize(int)`` (long side ``int(resize * long / short)``) and
    ``CenterCrop`` (offsets ``round((new - crop) / 2)``) on PIL images, so the result equals torchvision's.
    """
    width, height = pil.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = pp.resize, int(pp.resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        pil = pil.resize((new_w, new_h), _INTERPOLATIONS[pp.interpolation])
    top = int(round((new_h - pp.crop) / 2.0))
    left = int(round((new_w - pp.crop) / 2.0))
    return np.asarray(pil)[top : top + pp.crop, left : left + pp.crop]


def resize_and_crop(image: np.ndarray, pp: Preprocessing) -> np.ndarray:
    """Resize the shorter side to ``pp.resize`` px and centre-crop ``pp.crop`` px square.

    Args:
        image: RGB ``uint8`` array ``(H, W, 3)``, as from :func:`decode_image`.
        pp: the preprocessing to follow.

    Returns:
        RGB ``uint8`` array ``(pp.crop, pp.crop, 3)``.
    """
    return _resize_crop_pil(Image.fromarray(image), pp)


def normalize(image: np.ndarray, pp: Preprocessing) -> np.ndarray:
    """Scale an RGB ``uint8`` array ``(H, W, 3)`` to 0..1, normalise with ``pp.mean``/``pp.std``.

    Computed as ``x * (1 / (255 std)) - mean / std`` in place on one float32 copy (one pass fewer than
    ``(x / 255 - mean) / std``; equal within float32 rounding, about 3e-7).

    Returns:
        ``float32`` array ``(3, H, W)``, channels first.
    """
    std = np.asarray(pp.std, dtype=np.float64).reshape(3, 1, 1)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    offset = (np.asarray(pp.mean, dtype=np.float64).reshape(3, 1, 1) / std).astype(np.float32)
    chw = image.transpose(2, 0, 1).astype(np.float32)
    chw *= scale
    chw -= offset
    return chw


def preprocess(image: np.ndarray, pp: Preprocessing) -> np.ndarray:
    """Turn a decoded RGB ``uint8`` image ``(H, W, 3)`` into a model input.

    Returns:
        ``float32`` array ``(3, pp.crop, pp.crop)``, normalised with ``pp.mean`` and ``pp.std``.
    """
    return normalize(resize_and_crop(image, pp), pp)


def load_input(path: str | Path, pp: Preprocessing) -> np.ndarray:
    """Decode and preprocess one file: ``float32`` ``(3, pp.crop, pp.crop)``. The one inference path.

    Equal to ``preprocess(decode_image(path), pp)`` except for one shortcut: a JPEG whose shorter side is
    at least twice ``pp.resize`` is decoded at a reduced DCT scale (1/2, 1/4 or 1/8, Pillow's ``draft``)
    that keeps the shorter side >= ``pp.resize`` before the usual resize (a 600x866 photo for a 256 px resize
    decodes at 300x433: about 2x faster, 0.45 grey levels mean difference after the resize). Training
    validation, export parity checks and ``gcv-classify``/``gcv-evaluate`` all call this function, so they
    see identical inputs.

    Raises:
        ImageDecodeError: as :func:`decode_image`.
    """
    path = Path(path)
    rgb = _open_rgb(path, path, min_short=pp.resize)
    if min(rgb.size) < 1:
        raise ImageDecodeError(path, f"unexpected decoded size {rgb.size}")
    return normalize(_resize_crop_pil(rgb, pp), pp)
