"""The image contract shared by training, export and inference (numpy and Pillow only).

Two functions define what a model sees:

* :func:`decode_image` turns any supported file into an RGB ``uint8`` array of shape ``(H, W, 3)``;
* :func:`preprocess` turns that array into the model input, a normalised ``float32`` array of shape
  ``(3, crop, crop)``, following a :class:`Preprocessing` that is stored in every checkpoint and ONNX file.

Training validation, export parity checks and ``gcv classify`` all take their pixels from :func:`load_crop`
(these two plus one decoding shortcut for large JPEGs, described there; :func:`load_input` is its normalised
float32 form), so the same file always gives the same array. Training's random crops take theirs from
:func:`load_region`, which decodes by the same rule (:func:`dct_denominator`): a large JPEG is decoded at a
reduced DCT scale wherever the view made from it keeps at least one decoded pixel per output pixel, so a view
that covers what serving shows is made from the same decoded pixels.
The resize and centre crop follow torchvision's ``Resize(int)`` and ``CenterCrop`` on PIL images
(torchvision/transforms/functional.py), which is what the ImageNet weights entries use, pixel for pixel; a
very thin image is resized only where the crop keeps it, so memory stays bounded (:func:`resize_crop_pil`).
Only :func:`decoded_formats` are ever decoded, whatever a file's extension says; :func:`image_extensions`,
the files discovery treats as images, are the extensions Pillow registers for those formats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from garmentcv.errors import ImageDecodeError

#: The Pillow formats GarmentCV decodes where the installed Pillow reads them. Pillow picks the decoder by
#: content, not by extension, so without this list a ``.jpg`` holding EPS would be handed to Ghostscript.
#: AVIF is read by Pillow 11.3+ wheels (``PIL.features.check("avif")``); ``MPO``, the multi-picture JPEG of
#: some cameras, is opened by the JPEG decoder (first picture) but its ``.mpo`` extension does not count.
CANDIDATE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "AVIF")


@functools.cache
def decoded_formats() -> tuple[str, ...]:
    """The formats of :data:`CANDIDATE_FORMATS` that this Pillow reads, in that order: the only decoders
    GarmentCV ever lets Pillow use; content of any other format is refused.

    A format counts when Pillow registers a file extension for it, which Pillow does only where it can read
    it (its AVIF and WebP plugins register their extensions only when their codec library is present).
    Computed once, on first use: it initialises every Pillow plugin (``Image.init()``, about 50 ms), which
    importing this module does not. Also available as ``garmentcv.image.DECODED_FORMATS``.
    """
    readable = set(Image.registered_extensions().values())
    return tuple(name for name in CANDIDATE_FORMATS if name in readable and name in Image.OPEN)


@functools.cache
def image_extensions() -> frozenset[str]:
    """File extensions (lower case, with the dot) treated as images everywhere: discovery for training,
    ``gcv data inspect`` and ``gcv classify``/``gcv evaluate``.

    Exactly the extensions Pillow registers for :func:`decoded_formats` (with Pillow 13: ``.jpg .jpeg .jpe
    .jfif .png .apng .bmp .gif .webp .tif .tiff .avif .avifs``). Computed once, on first use; also available
    as ``garmentcv.image.IMAGE_EXTENSIONS``.
    """
    formats = set(decoded_formats())
    return frozenset(ext.lower() for ext, name in Image.registered_extensions().items() if name in formats)


def extensions_markdown() -> str:
    """docs/data.md's line of accepted extensions per format (``python -m garmentcv.image --extensions``)."""
    registered = Image.registered_extensions()
    extensions = image_extensions()
    parts = []
    for name in decoded_formats():
        listed = sorted(ext for ext, fmt in registered.items() if fmt == name and ext in extensions)
        parts.append(f"{name} ({' '.join(f'`{ext}`' for ext in listed)})")
    return "; ".join(parts) + "."


def __getattr__(name: str) -> Any:
    """``DECODED_FORMATS`` and ``IMAGE_EXTENSIONS``, computed on first use (see the functions above)."""
    if name == "DECODED_FORMATS":
        return decoded_formats()
    if name == "IMAGE_EXTENSIONS":
        return image_extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """Return True when ``path`` has one of :func:`image_extensions` (case-insensitive)."""
    return path.suffix.lower() in image_extensions()


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


def _scale_to_uint8(image: Image.Image) -> Image.Image:
    """Scale a 32-bit integer (``I``) or float (``F``) image to an 8-bit greyscale (``L``) one.

    The rule, chosen so that the usual meanings of these files survive:

    * ``I``: values all within 0..255 are kept; all within 0..65535 are scaled as 16-bit (``v >> 8``, as
      ``I;16`` files); otherwise min-max scaled to 0..255 (``round(255 (v - min) / (max - min))``).
    * ``F``: values all within 0..1 are multiplied by 255; all within 0..255 are kept; otherwise min-max
      scaled as above; rounded to the nearest integer (halves to even). NaN and infinities are left out of
      the range and become 0 (black).

    A constant image outside both ranges becomes 0 (black).
    """
    values = np.asarray(image)
    finite = np.isfinite(values) if image.mode == "F" else np.ones(values.shape, dtype=bool)
    if image.mode == "F":
        values = np.where(finite, values, 0.0).astype(np.float64)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0, 0)
    if image.mode == "I" and low >= 0 and high <= 255:
        out = values
    elif image.mode == "I" and low >= 0 and high <= 65535:
        out = values >> 8
    elif image.mode == "F" and low >= 0 and high <= 1:
        out = np.rint(values * 255.0)
    elif image.mode == "F" and low >= 0 and high <= 255:
        out = np.rint(values)
    elif high > low:
        out = np.rint((values.astype(np.float64) - low) * (255.0 / (float(high) - float(low))))
    else:
        out = np.zeros_like(values)
    out = np.where(finite, out, 0)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha is composited on white, 16-bit greys are scaled to 8 bits,
    32-bit integer and float greys as :func:`_scale_to_uint8` says."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), mode="L")
    elif image.mode in ("I", "F"):
        image = _scale_to_uint8(image)
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _prefix(source: Path | IO[bytes], length: int = 16) -> bytes:
    """The first ``length`` bytes of a file or stream (the stream's position is restored)."""
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            return handle.read(length)
    position = source.tell()
    try:
        source.seek(0)
        return source.read(length)
    finally:
        source.seek(position)


def _unidentified_reason(source: Path | IO[bytes]) -> str:
    """Why no decoder of :func:`decoded_formats` accepted ``source``: empty, another format, or unknown.

    The other format is found the way Pillow finds it, by each plugin's signature check on the first
    16 bytes only; no other decoder is ever run.
    """
    try:
        head = _prefix(source)
    except OSError:
        return "not a recognised image format"
    if not head:
        return "empty file (0 bytes)"
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            match = accept is not None and bool(accept(head))
        except Exception:  # noqa: BLE001 - a foreign plugin's signature check must not mask the real reason
            match = False
        if match and name not in decoded_formats():
            return (
                f"format {name} is not one GarmentCV decodes (only {', '.join(decoded_formats())}); "
                "convert the file or remove it"
            )
    return "not a recognised image format"


#: A region of an image, ``(left, top, right, bottom)`` in px, as Pillow's ``crop`` and ``resize(box=...)`` take it.
Box = tuple[float, float, float, float]

#: The reductions libjpeg's scaled inverse DCT offers and Pillow's ``draft`` picks from, largest first.
_DCT_DENOMINATORS: tuple[int, ...] = (8, 4, 2, 1)

#: EXIF orientations (``ImageOps.exif_transpose``) that swap width and height.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def dct_denominator(reduction: float) -> int:
    """The DCT scale a JPEG is decoded at when the view made from it may shrink it ``reduction`` times: ``d`` of 1/d.

    The one decoding rule of training and serving: the largest of 8, 4, 2 and 1 that is not above ``reduction``,
    so that the decoded image still has at least one pixel per output pixel across the view's region. ``reduction``
    is the region's shorter side over the output's side: for serving's centre crop, the image's shorter side over
    ``Preprocessing.resize`` (a 600x866 photo at 256 px: 2.34, decoded at 1/2); for a training crop of a box to
    ``size`` px, ``min(box width, box height) / size``. Under 2, the file is decoded in full.
    """
    return next(d for d in _DCT_DENOMINATORS if d <= max(reduction, 1.0))


def _open_rgb(source: Path | IO[bytes], path: Path) -> Image.Image:
    """Open, check, decode and convert one file, in full, to an upright RGB Pillow image (see :func:`decode_image`).

    ``source`` is the file or its bytes; ``path`` names it in errors.
    """
    return _open_rgb_scaled(source, path)[0]


def _open_rgb_scaled(
    source: Path | IO[bytes], path: Path, reduction: Callable[[int, int], float] | None = None
) -> tuple[Image.Image, bool]:
    """:func:`_open_rgb`, also saying whether the JPEG was decoded at a reduced DCT scale: ``(image, scaled)``.

    Only :func:`decoded_formats` are opened. Pillow's decompression-bomb warning is left to the process's
    warning filters (changing them here would race between decoding threads); the explicit size check
    against :data:`MAX_IMAGE_PIXELS` refuses the same images.

    With ``reduction``, called once with the upright (EXIF-rotated) width and height in px before any pixel is
    decoded, a JPEG is decoded at the DCT scale :func:`dct_denominator` gives for the reduction it returns
    (Pillow's ``draft``: the decoded image is ``ceil(width / d) x ceil(height / d)``); other formats decode in
    full. No copy is made of an image that is already upright RGB (EXIF rotation is applied in place); the file
    is closed on return, the pixels stay loaded.
    """
    try:
        with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as handle:
            # The Image is not a context manager here: closing it would free the pixels returned.
            image = Image.open(handle, formats=decoded_formats())
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(
                    path, f"oversized: {width}x{height} px is over the {MAX_IMAGE_PIXELS} px limit"
                )
            if reduction is not None:
                swapped = image.getexif().get(ExifTags.Base.Orientation) in _SWAPPING_ORIENTATIONS
                upright = (height, width) if swapped else (width, height)
                denominator = dct_denominator(min(reduction(*upright), width, height))
                if denominator > 1 and image.format == "JPEG":
                    # Pillow picks the largest 1/d whose size is at least the one asked for: exactly 1/denominator.
                    image.draft(None, (width // denominator, height // denominator))
            scaled = image.size != (width, height)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image), scaled
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(path, "file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, _unidentified_reason(source)) from exc
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

    Only the formats of :func:`decoded_formats` are decoded, whatever the extension. EXIF orientation is
    applied; greyscale, palette, CMYK and 16-bit files are converted to RGB (32-bit integer and float greys
    are scaled as :func:`_scale_to_uint8` documents); alpha
    (RGBA, LA, palette transparency) is composited on white, the background of product photos. Only the
    first frame of an animated file is used.

    Raises:
        ImageDecodeError: the file is missing, empty (``"empty file (0 bytes)"``), not an image, of a format
            GarmentCV does not decode (``"format EPS is not one GarmentCV decodes ..."``), truncated,
            corrupt, or larger than :data:`MAX_IMAGE_PIXELS`. ``.path`` and ``.reason`` say which and why.
    """
    path = Path(path)
    return _as_rgb_array(_open_rgb(path, path), path)


def decode_image_bytes(data: bytes, name: str | Path) -> np.ndarray:
    """Decode the bytes of an image file exactly as :func:`decode_image` decodes the file itself.

    For callers that already hold the bytes (e.g. to hash them, ``gcv data inspect``) so that each file is
    read once. ``name`` is only used in error messages.

    Returns:
        RGB ``uint8`` array ``(H, W, 3)``.

    Raises:
        ImageDecodeError: as :func:`decode_image`, with ``.path`` set to ``name``.
    """
    return _as_rgb_array(_open_rgb(io.BytesIO(data), Path(name)), Path(name))


#: Largest resized image, in px, that preprocessing makes in full (Pillow's resize, pixel for pixel
#: torchvision's ``Resize``); about 16 MiB as Pillow stores RGB in 4 bytes a pixel. Any image up to 64:1 at
#: a 256 px resize is under it. A larger one (a 1x1500 px image resized to 256 px would be 256x384000 px,
#: about 900 MB with Pillow's intermediates) is only computed where the centre crop keeps it; see
#: :func:`resize_crop_pil`.
FULL_RESIZE_MAX_PIXELS: int = 4 * 1024 * 1024

# Pillow's filter supports (src/libImaging/Resample.c) and its fixed-point precision for 8-bit images.
_FILTER_SUPPORT: dict[str, float] = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}
_PRECISION_BITS = 32 - 8 - 2


def _filter_weight(name: str, x: float) -> float:
    """Pillow's resampling filters, with the same floating-point operations in the same order."""
    if name == "bilinear":
        x = -x if x < 0.0 else x
        return 1.0 - x if x < 1.0 else 0.0
    if name == "bicubic":
        a = -0.5
        x = -x if x < 0.0 else x
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0
    if -3.0 <= x < 3.0:  # lanczos: sinc(x) sinc(x / 3)

        def sinc(v: float) -> float:
            if v == 0.0:
                return 1.0
            v = v * math.pi
            return math.sin(v) / v

        return sinc(x) * sinc(x / 3)
    return 0.0


def _axis_taps(
    in_size: int, out_size: int, start: int, count: int, interpolation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of output positions ``start .. start + count`` of a 1-D resize.

    Exactly Pillow's ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` (weights as 22-bit fixed point)
    for a resize of ``in_size`` to ``out_size`` samples without a box; for ``nearest``, the source sample
    under each output centre (one tap of weight 1). Returns ``(indices, weights)``, both ``(count, taps)``
    int64; unused taps repeat the first index with weight 0.
    """
    scale = in_size / out_size
    if interpolation == "nearest":
        centres = (np.arange(start, start + count, dtype=np.float64) + 0.5) * scale
        index = np.minimum(centres.astype(np.int64), in_size - 1)[:, None]
        return index, np.ones_like(index) << _PRECISION_BITS
    filterscale = max(scale, 1.0)
    support = _FILTER_SUPPORT[interpolation] * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    index = np.zeros((count, taps), dtype=np.int64)
    weight = np.zeros((count, taps), dtype=np.int64)
    ss = 1.0 / filterscale
    for row, xx in enumerate(range(start, start + count)):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_filter_weight(interpolation, (x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        index[row] = xmin
        for x, w in enumerate(k):
            w = w / ww if ww != 0.0 else w
            weight[row, x] = int(-0.5 + w * (1 << _PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << _PRECISION_BITS))
            index[row, x] = xmin + x
    return index, weight


def _resample_axis(pixels: np.ndarray, index: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """Apply :func:`_axis_taps` along ``axis`` (0 rows, 1 columns) of a ``uint8`` array as Pillow's 8-bit
    pass does: integer sum with rounding, shifted and clipped to 0..255."""
    moved = np.moveaxis(pixels, axis, 0)
    acc = np.full((index.shape[0],) + moved.shape[1:], 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    extra = (1,) * (moved.ndim - 1)
    for tap in range(index.shape[1]):
        acc += moved[index[:, tap]].astype(np.int64) * weight[:, tap].reshape((-1,) + extra)
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def resize_crop_pil(pil: Image.Image, pp: Preprocessing, full_max_pixels: int | None = None) -> np.ndarray:
    """Resize the shorter side to ``pp.resize`` px, then centre-crop ``pp.crop`` px: RGB ``uint8`` array.

    The same arithmetic as torchvision's ``Resize(int)`` (long side ``int(resize * long / short)``) and
    ``CenterCrop`` (offsets ``round((new - crop) / 2)``) on PIL images, so the result equals torchvision's.

    Memory is bounded whatever the aspect ratio: an image whose resized size is over ``full_max_pixels``
    (default :data:`FULL_RESIZE_MAX_PIXELS`) is not resized in full. Instead, as Pillow's two-pass resize
    (horizontal, then vertical), the pass along the long side computes only the ``pp.crop`` samples the crop
    keeps, with Pillow's own coefficients and fixed-point arithmetic (:func:`_axis_taps`), and the pass
    along the short side is Pillow's on the rows or columns needed; memory is then about the crop plus the
    source rows or columns it reads. That equals Pillow's horizontal-then-vertical resize pixel for pixel
    for ``bilinear``, ``bicubic`` and ``lanczos`` (tests/test_image.py). Pillow 13 sometimes runs the
    vertical pass first, which rounds in between in the other order: such images then differ from
    torchvision's by a grey level or a few (the intermediate is clipped to 0..255); ``nearest`` takes the
    source pixel under each output centre, which Pillow's accumulated coordinates can put one pixel off.
    """
    if full_max_pixels is None:
        full_max_pixels = FULL_RESIZE_MAX_PIXELS
    width, height = pil.size
    new_w, new_h, top, left = crop_geometry(width, height, pp)
    if (new_w, new_h) == (width, height):
        return np.asarray(pil)[top : top + pp.crop, left : left + pp.crop]
    resample = _INTERPOLATIONS[pp.interpolation]
    if new_w * new_h <= full_max_pixels:
        return np.asarray(pil.resize((new_w, new_h), resample))[top : top + pp.crop, left : left + pp.crop]
    if width <= height:  # tall: Pillow's horizontal pass on the rows needed, then the vertical pass computed
        index, weight = _axis_taps(height, new_h, top, pp.crop, pp.interpolation)
        first, last = int(index.min()), int(index.max()) + 1
        band = pil.crop((0, first, width, last))
        if new_w != width:
            band = band.resize((new_w, last - first), resample)
        columns = np.asarray(band)[:, left : left + pp.crop]
        return _resample_axis(columns, index - first, weight, axis=0)
    # wide: the horizontal pass computed on the columns needed, then Pillow's vertical pass
    index, weight = _axis_taps(width, new_w, left, pp.crop, pp.interpolation)
    first, last = int(index.min()), int(index.max()) + 1
    strip = _resample_axis(np.asarray(pil.crop((first, 0, last, height))), index - first, weight, axis=1)
    if new_h != height:
        strip = np.asarray(Image.fromarray(strip).resize((pp.crop, new_h), resample))
    return strip[top : top + pp.crop]


def resize_and_crop(image: np.ndarray, pp: Preprocessing) -> np.ndarray:
    """Resize the shorter side to ``pp.resize`` px and centre-crop ``pp.crop`` px square.

    Args:
        image: RGB ``uint8`` array ``(H, W, 3)``, as from :func:`decode_image`.
        pp: the preprocessing to follow.

    Memory stays bounded whatever the aspect ratio (see :data:`FULL_RESIZE_MAX_PIXELS`).

    Returns:
        RGB ``uint8`` array ``(pp.crop, pp.crop, 3)``.
    """
    return resize_crop_pil(Image.fromarray(image), pp)


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


def crop_geometry(width: int, height: int, pp: Preprocessing) -> tuple[int, int, int, int]:
    """torchvision's ``Resize(int)`` size and ``CenterCrop`` offsets: ``(new_w, new_h, top, left)`` px."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = pp.resize, int(pp.resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_w, new_h, int(round((new_h - pp.crop) / 2.0)), int(round((new_w - pp.crop) / 2.0))


def resample_crop_box(pil: Image.Image, pp: Preprocessing) -> np.ndarray:
    """The centre crop of a ``pp.resize`` resize, resampled from its source box only: RGB ``uint8`` ``(crop, crop, 3)``.

    One Pillow ``resize`` to ``(crop, crop)`` of the source rectangle that the crop's pixels cover in the full
    resize (``box = (left, top, left + crop, top + crop) x source/resized``), so only ``crop x crop`` pixels are
    computed (a 300x433 DCT-scaled photo: 224x224 instead of 256x369). The filter and its support are those of
    the full resize; the sample positions agree only to float rounding and Pillow may run the two passes in
    the other order, so a pixel can differ from the full resize of the same decoded image by a grey level or two
    (tests/test_decode_path.py). Used for DCT-scaled JPEGs only, whose decoded pixels are already not torchvision's
    (fine textures differ most; see :func:`load_crop`); every other image keeps :func:`resize_crop_pil`,
    torchvision's pixels.
    """
    width, height = pil.size
    new_w, new_h, top, left = crop_geometry(width, height, pp)
    if (new_w, new_h) == (width, height):
        return np.asarray(pil)[top : top + pp.crop, left : left + pp.crop]
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + pp.crop) * sx, (top + pp.crop) * sy)
    return np.asarray(pil.resize((pp.crop, pp.crop), _INTERPOLATIONS[pp.interpolation], box=box))


def load_crop(
    path: str | Path, pp: Preprocessing, out: np.ndarray | None = None, data: bytes | None = None
) -> np.ndarray:
    """Decode one file into the model's pixels: RGB ``uint8`` ``(pp.crop, pp.crop, 3)``. The one decode path.

    Everything a model sees at inference comes from here: :func:`load_input` (training validation, export parity
    checks, float32 model files) normalises this crop, and uint8 model files (format 2, see
    :mod:`garmentcv.artifact`) take it as it is, normalising inside the graph; so the same file gives the
    same pixels to training validation, export and ``gcv classify``/``gcv evaluate``. Training's random crops
    decode by the same rule (:func:`load_region`).

    Equal to ``resize_and_crop(decode_image(path), pp)`` (torchvision's pixels) except for one shortcut: a
    JPEG whose shorter side is at least twice ``pp.resize`` is decoded at a reduced DCT scale (1/2, 1/4 or
    1/8, Pillow's ``draft``; :func:`dct_denominator` of the shorter side over ``pp.resize``), which keeps the
    shorter side >= ``pp.resize``, and then only the crop is resampled from its source box
    (:func:`resample_crop_box`): a 600x866 photo for a 256 px resize decodes at 300x433 and resamples only the
    224x224 crop, which is faster than the full decode and resize (docs/performance.md). The scaled decode
    keeps only the lower frequencies of each 8x8 block: on smooth photos its pixels stay close to
    torchvision's, but fine textures (stripes or knits a few px apart) that the full decode and resize alias
    into visible patterns come out smooth. That is why training decodes its views by the same rule; how the
    two decodes' pixels and predictions compare: docs/performance.md.

    Args:
        path: the image file.
        pp: the preprocessing (resize, crop, interpolation; mean and std are not used here).
        out: an array to write the crop into (e.g. one row of a reused batch buffer); it is returned.
        data: the file's content (read from object storage, say); ``path`` then only names it in errors,
            and the result is the same as for the file itself.

    Returns:
        ``out``, or a new array (possibly read-only) when ``out`` is ``None``.

    Raises:
        ImageDecodeError: as :func:`decode_image`.
    """
    path = Path(path)
    rgb, scaled = _open_rgb_scaled(
        path if data is None else io.BytesIO(data), path, reduction=lambda width, height: min(width, height) / pp.resize
    )
    if min(rgb.size) < 1:
        raise ImageDecodeError(path, f"unexpected decoded size {rgb.size}")
    crop = resample_crop_box(rgb, pp) if scaled else resize_crop_pil(rgb, pp)
    if out is None:
        return crop
    out[...] = crop
    return out


def decode_region(
    path: str | Path, size: int, pick_box: Callable[[int, int], Box], data: bytes | None = None
) -> tuple[Image.Image, Box]:
    """Decode one file for a view of ``size`` x ``size`` px of a region: ``(upright RGB image, region in its px)``.

    ``pick_box(width, height)`` is called once, with the upright (EXIF-rotated) size in px before any pixel is
    decoded, and returns the region as a :data:`Box` in those px (a training crop picks it at random). A JPEG
    is then decoded at the DCT scale of :func:`dct_denominator` for ``min(box width, box height) / size``, the
    rule :func:`load_crop` follows for its centre crop, so a region as large as serving's is decoded as serving
    decodes it; a region under twice ``size`` across, and any other format, is decoded in full. The region is
    returned in the decoded image's px, scaled by decoded over full size on each axis as
    :func:`resample_crop_box` scales serving's.

    Args:
        path: the image file (only names it in errors when ``data`` is given).
        size: the side in px of the view to be made from the region.
        pick_box: chooses the region from the upright full-size width and height.
        data: the file's content, when already read.

    Raises:
        ImageDecodeError: as :func:`decode_image`.
    """
    rgb, box, _ = _decode_region(path, size, pick_box, data)
    return rgb, box


def _decode_region(
    path: str | Path, size: int, pick_box: Callable[[int, int], Box], data: bytes | None
) -> tuple[Image.Image, Box, bool]:
    """:func:`decode_region`, also saying whether the decode was DCT-scaled: ``(image, box, scaled)``."""
    path = Path(path)
    picked: list[tuple[Box, tuple[int, int]]] = []

    def reduction(width: int, height: int) -> float:
        left, top, right, bottom = (float(v) for v in pick_box(width, height))
        picked.append(((left, top, right, bottom), (width, height)))
        return min(right - left, bottom - top) / size

    rgb, scaled = _open_rgb_scaled(path if data is None else io.BytesIO(data), path, reduction=reduction)
    (left, top, right, bottom), (full_w, full_h) = picked[0]
    if not scaled:
        return rgb, (left, top, right, bottom), False
    sx, sy = rgb.size[0] / full_w, rgb.size[1] / full_h
    return rgb, (left * sx, top * sy, right * sx, bottom * sy), True


def load_region(
    path: str | Path,
    size: int,
    pick_box: Callable[[int, int], Box],
    interpolation: str = "bilinear",
    data: bytes | None = None,
) -> np.ndarray:
    """Training's view of one file: the region ``pick_box`` chooses, resized to RGB ``uint8`` ``(size, size, 3)``.

    Decoded by :func:`decode_region` (the DCT-scale rule :func:`load_crop` follows). From a full decode the region
    is cropped and then resized, exactly as torchvision's ``RandomResizedCrop`` does on a PIL image (integer
    boxes, as it picks them); from a DCT-scaled decode the region (then fractional) is resampled in one Pillow
    ``resize(box=...)``, as :func:`resample_crop_box` resamples serving's crop.

    Raises:
        ImageDecodeError: as :func:`decode_image`.
        ValueError: ``interpolation`` is not one of :class:`Preprocessing`'s.
    """
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not supported; use one of {sorted(_INTERPOLATIONS)}")
    rgb, box, scaled = _decode_region(path, size, pick_box, data)
    resample = _INTERPOLATIONS[interpolation]
    if not scaled and all(v.is_integer() for v in box):
        view = rgb.crop(tuple(int(v) for v in box)).resize((size, size), resample)
    else:
        view = rgb.resize((size, size), resample, box=box)
    return np.asarray(view)


def load_input(path: str | Path, pp: Preprocessing, data: bytes | None = None) -> np.ndarray:
    """Decode and preprocess one file: ``float32`` ``(3, pp.crop, pp.crop)``, ``normalize(load_crop(path, pp), pp)``.

    The input of float32 model files and of PyTorch (training validation, export parity); the pixels are
    :func:`load_crop`'s, the shared decode path. With ``data``, these bytes are the file's content (read
    from object storage, say) and ``path`` only names it in errors.

    Raises:
        ImageDecodeError: as :func:`decode_image`.
    """
    return normalize(load_crop(path, pp, data=data), pp)


def _main(argv: list[str]) -> int:
    """``python -m garmentcv.image --extensions``: print :func:`extensions_markdown` (docs/data.md's list)."""
    if argv != ["--extensions"]:
        print("usage: python -m garmentcv.image --extensions", file=sys.stderr)
        return 2
    print(extensions_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
