"""The one decode path (``load_crop``), its DCT-scaled shortcut and its copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from garmentcv import image as gimage
from garmentcv.image import Preprocessing, decode_image, load_crop, load_input, normalize, resize_and_crop


def _photo(path: Path, size: tuple[int, int], seed: int = 0, fmt: str | None = None) -> Path:
    """A smooth photo-like image with mild noise (JPEG-friendly), ``size`` = (width, height)."""
    x, y = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]))
    smooth = np.stack([120 + 100 * np.sin(6 * x + 3 * y), 128 + 90 * np.cos(5 * y), 60 + 150 * x * y], axis=-1)
    pixels = np.clip(smooth + np.random.default_rng(seed).normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt, quality=90)
    return path


@pytest.mark.parametrize(
    ("size", "fmt"),
    [((600, 866), "PNG"), ((866, 600), "PNG"), ((300, 433), "JPEG"), ((50, 70), "JPEG"), ((40, 40), "PNG")],
)
def test_crop_equals_resize_and_crop_of_the_full_decode(tmp_path: Path, size, fmt: str) -> None:
    """Without the DCT shortcut (PNG, or a JPEG under twice the resize), the crop is torchvision's pixels:
    exactly ``resize_and_crop(decode_image(path))``, and ``load_input`` is exactly its normalised form."""
    path = _photo(tmp_path / f"x.{fmt.lower()}", size, fmt=fmt)
    pp = Preprocessing(resize=256, crop=224) if min(size) > 100 else Preprocessing(resize=37, crop=32)
    crop = load_crop(path, pp)
    assert crop.dtype == np.uint8 and crop.shape == (pp.crop, pp.crop, 3)
    assert np.array_equal(crop, resize_and_crop(decode_image(path), pp))
    assert np.array_equal(load_input(path, pp), normalize(crop, pp))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(600, 866), (866, 600), (1200, 1732)])
def test_large_jpeg_is_dct_scaled_and_only_the_crop_is_resampled(tmp_path: Path, size, interpolation: str) -> None:
    """A JPEG at least twice the resize: decoded at the DCT scale Pillow's draft picks (1/2 for 600x866, 1/4 for
    1200x1732 at a 256 px resize), then exactly Pillow's resize of the crop's source box; close to torchvision's
    full decode and resize (mean under 1 grey level, none more than 12 apart on this photo)."""
    path = _photo(tmp_path / "x.jpg", size, fmt="JPEG")
    pp = Preprocessing(resize=256, crop=224, interpolation=interpolation)
    with Image.open(path) as reference:
        scale = 4 if min(size) >= 1024 else 2
        reference.draft("RGB", (size[0] // scale, size[1] // scale))
        reference.load()
        assert reference.size == ((size[0] + scale - 1) // scale, (size[1] + scale - 1) // scale)
        new_w, new_h, top, left = gimage.crop_geometry(*reference.size, pp)
        sx, sy = reference.size[0] / new_w, reference.size[1] / new_h
        box = (left * sx, top * sy, (left + 224) * sx, (top + 224) * sy)
        expected = np.asarray(reference.resize((224, 224), gimage._INTERPOLATIONS[interpolation], box=box))
    ours = load_crop(path, pp)
    assert np.array_equal(ours, expected)
    full = resize_and_crop(decode_image(path), pp).astype(np.int16)
    difference = np.abs(ours.astype(np.int16) - full)
    assert difference.mean() < 1.0 and difference.max() <= 12


def test_crop_box_resample_is_close_to_the_full_resize(tmp_path: Path) -> None:
    """The source-box resample against the full resize then crop, on photo-like images: at most 2 grey levels
    apart, mean under 0.4 (sample positions agree to float rounding, and Pillow may run the two passes in
    the other order, rounding in between)."""
    for width, height in [(300, 433), (433, 300), (257, 600), (512, 700)]:
        pil = Image.open(_photo(tmp_path / f"{width}.png", (width, height), seed=width)).convert("RGB")
        for interpolation in ("bilinear", "bicubic", "lanczos"):
            pp = Preprocessing(resize=256, crop=224, interpolation=interpolation)
            difference = np.abs(gimage.resample_crop_box(pil, pp).astype(np.int16) - gimage.resize_crop_pil(pil, pp))
            assert difference.max() <= 2 and difference.mean() < 0.4, (width, height, interpolation)


def test_crop_is_written_into_the_buffer_given(tmp_path: Path) -> None:
    """``out=`` receives the crop (a row of a reused batch buffer) and is returned; the same pixels as without."""
    path = _photo(tmp_path / "x.jpg", (600, 866), fmt="JPEG")
    pp = Preprocessing(resize=256, crop=224)
    batch = np.zeros((3, 224, 224, 3), dtype=np.uint8)
    returned = load_crop(path, pp, out=batch[1])
    assert returned is batch[1] or np.shares_memory(returned, batch)
    assert np.array_equal(batch[1], load_crop(path, pp)) and not batch[0].any() and not batch[2].any()


def test_an_upright_rgb_jpeg_is_not_copied_after_decoding(tmp_path: Path, monkeypatch) -> None:
    """No ``convert``/``copy`` pass over an image that is already upright RGB (two full-size copies before)."""
    path = _photo(tmp_path / "x.jpg", (600, 866), fmt="JPEG")
    calls: list[str] = []
    for name in ("convert", "copy"):
        original = getattr(Image.Image, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Image.Image, name, spy)
    load_crop(path, Preprocessing(resize=256, crop=224))
    assert calls == []
