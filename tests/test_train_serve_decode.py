"""Training and serving decode a file the same way: a large JPEG is decoded at the DCT scale serving uses.

On fine textures (stripes or knits a few px apart) a DCT-scaled decode and a full decode differ by tens of grey
levels after the resize, so a model trained on one and served the other sees other pixels exactly where the garment
is textured. These tests fix the shared rule: a view of ``size`` px is decoded at the largest DCT reduction (1/2,
1/4, 1/8) that keeps at least one decoded pixel per output pixel across its region's shorter side; serving's view is
the centre crop of the resize, training's are the random resized crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from garmentcv import image as gimage
from garmentcv.data.layouts import Sample
from garmentcv.image import (
    Preprocessing,
    decode_image,
    decode_region,
    load_crop,
    resize_and_crop,
)
from garmentcv.train.config import TrainConfig
from garmentcv.train.data import TrainImages, train_transform

PP = Preprocessing(resize=256, crop=224)


def _textured(path: Path, size: tuple[int, int] = (600, 866), fmt: str = "JPEG") -> Path:
    """A catalogue-sized photo of a striped garment: a dark body with light stripes 3 px apart on white."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    body = ((x - width / 2) / (0.38 * width)) ** 2 + ((y - height / 2) / (0.42 * height)) ** 2 < 1
    stripes = np.where(x % 3 == 0, 215, 40)
    grey = np.where(body, stripes, 250)
    pixels = np.stack([grey, grey * 0.9, grey * 0.8], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt, quality=90)
    return path


def _cfg(tmp_path: Path, crop_scale: float) -> TrainConfig:
    """Training settings whose only augmentation is the random resized crop."""
    return TrainConfig(data=tmp_path, out=tmp_path / "run", crop_scale=crop_scale, rotation=0, hflip=0, jitter=0)


def _to_model_input(pil: Image.Image) -> torch.Tensor:
    return T.Normalize(PP.mean, PP.std)(T.ToTensor()(pil))


def test_training_view_of_a_large_textured_jpeg_is_resampled_from_the_serving_decode(tmp_path: Path) -> None:
    """With crop scale 1 the random resized crop of a 600x866 photo is torchvision's fallback box (0, 33)-(600, 833),
    600 px across: training decodes it at 1/2 DCT scale (300x433, as serving does) and resamples the box (halved)
    to 224 px; bit for bit. The same box from the full decode differs by over 8 grey levels on average (the
    striped garment fills about half the view)."""
    path = _textured(tmp_path / "striped.jpg")
    torch.manual_seed(0)
    tensor, label = TrainImages([Sample(path, "a")], ["a"], train_transform(PP, _cfg(tmp_path, 1.0)))[0]
    with Image.open(path) as reference:
        reference.draft("RGB", (300, 433))
        reference.load()
        assert reference.size == (300, 433)
        view = reference.resize((224, 224), Image.Resampling.BILINEAR, box=(0, 16.5, 300, 416.5))
    assert label == 0 and torch.equal(tensor, _to_model_input(view))
    full = Image.fromarray(decode_image(path)).crop((0, 33, 600, 833)).resize((224, 224), Image.Resampling.BILINEAR)
    assert np.abs(np.asarray(full, dtype=np.int16) - np.asarray(view, dtype=np.int16)).mean() > 8


def test_training_decode_of_the_serving_region_then_the_serving_resample_is_load_crop(tmp_path: Path) -> None:
    """Training's decode of the region serving shows, followed by serving's resample, gives ``load_crop``'s pixels
    exactly; the full decode followed by the same resize is over 15 grey levels away on average on 3 px stripes."""
    path = _textured(tmp_path / "striped.jpg")
    new_w, new_h, top, left = gimage.crop_geometry(600, 866, PP)
    sx, sy = 600 / new_w, 866 / new_h
    serving_box = (left * sx, top * sy, (left + PP.crop) * sx, (top + PP.crop) * sy)
    seen: list[tuple[int, int]] = []

    def pick(width: int, height: int) -> tuple[float, float, float, float]:
        seen.append((width, height))
        return serving_box

    decoded, box = decode_region(path, PP.crop, pick)
    assert seen == [(600, 866)] and decoded.size == (300, 433)
    assert box == pytest.approx(tuple(v / 2 for v in serving_box))
    served = load_crop(path, PP)
    assert np.array_equal(gimage.resample_crop_box(decoded, PP), served)
    full = resize_and_crop(decode_image(path), PP).astype(np.int16)
    assert np.abs(full - served).mean() > 15


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_views_under_twice_their_size_are_torchvisions_random_resized_crop_of_the_full_decode(
    tmp_path: Path, fmt: str
) -> None:
    """A PNG, and a JPEG whose views are all under twice the output (120x180 px at 64 px: a region is at most
    120 px across), are decoded in full and cropped then resized as torchvision's ``RandomResizedCrop`` does: the
    same tensors for the same seed as the full decode through torchvision's own transform."""
    path = _textured(tmp_path / f"striped.{fmt.lower()}", size=(120, 180), fmt=fmt)
    pp = Preprocessing(resize=73, crop=64)
    ours = TrainImages([Sample(path, "a")], ["a"], train_transform(pp, _cfg(tmp_path, 0.1)))
    theirs = T.Compose([T.RandomResizedCrop(64, scale=(0.1, 1.0)), T.ToTensor(), T.Normalize(pp.mean, pp.std)])
    full = Image.fromarray(decode_image(path))
    for seed in range(8):
        torch.manual_seed(seed)
        tensor, _ = ours[0]
        torch.manual_seed(seed)
        assert torch.equal(tensor, theirs(full)), seed


def test_a_zoomed_in_view_keeps_one_decoded_pixel_per_output_pixel(tmp_path: Path) -> None:
    """A region of a large JPEG that is under twice the output size across is decoded in full (no detail lost to
    the DCT scale), one at least twice the size at 1/2, one at least eight times at 1/8; box in decoded px."""
    path = _textured(tmp_path / "striped.jpg", size=(1800, 2600))
    for region, size, expected in [(400, 224, (1800, 2600)), (448, 224, (900, 1300)), (1799, 224, (225, 325))]:
        decoded, box = decode_region(path, size, lambda w, h, r=region: (100, 200, 100 + r, 200 + r))
        assert decoded.size == expected, region
        scale = expected[0] / 1800
        assert box == pytest.approx((100 * scale, 200 * scale, (100 + region) * scale, (200 + region) * scale))


def test_the_region_is_picked_on_the_upright_image(tmp_path: Path) -> None:
    """An EXIF-rotated JPEG (stored 866x600, orientation 6): the region is chosen on the upright 600x866 image and the
    decoded image is upright."""
    stored = tmp_path / "stored.png"
    _textured(stored, size=(866, 600), fmt="PNG")
    path = tmp_path / "rotated.jpg"
    with Image.open(stored) as pil:
        exif = Image.Exif()
        exif[0x0112] = 6
        pil.convert("RGB").save(path, quality=90, exif=exif)
    seen: list[tuple[int, int]] = []
    decoded, _ = decode_region(path, 224, lambda w, h: seen.append((w, h)) or (0, 0, w, h))
    assert seen == [(600, 866)] and decoded.size == (300, 433)
