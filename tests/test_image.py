"""The shared image contract: decoding every mode, preprocessing, and its agreement with torchvision."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from garmentcv import image as gimage
from garmentcv.errors import ImageDecodeError
from garmentcv.image import Preprocessing, decode_image, load_input, preprocess


def test_rgb_jpeg_decodes_to_uint8_hwc(tmp_path: Path, image_writer) -> None:
    path = image_writer(tmp_path / "a.jpg", size=(30, 20))
    out = decode_image(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(Image.open(path).convert("RGB")))


def test_greyscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    out = decode_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3)
    for channel in range(3):
        assert np.array_equal(out[:, :, channel], grey)


def test_palette_image_keeps_its_colours(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0], rgb[1, 1] = (255, 0, 0), (0, 0, 255)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    assert np.array_equal(decode_image(tmp_path / "p.png"), rgb)


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black stays black
    rgba[0, 2] = (0, 0, 0, 128)  # half transparent black -> mid grey
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert out[0, 2].tolist() == [127, 127, 127]


def test_greyscale_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (10, 255))
    la.save(tmp_path / "la.png")
    assert decode_image(tmp_path / "la.png").tolist() == [[[255, 255, 255], [10, 10, 10]]]


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    assert decode_image(tmp_path / "pt.png").tolist() == [[[255, 255, 255], [255, 0, 0]]]


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    out = decode_image(tmp_path / "c.jpg")
    assert out.shape == (4, 4, 3)
    red, green, blue = out[2, 2].tolist()
    assert red > 200 and green < 50 and blue < 50, out[2, 2]


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16)).save(tmp_path / "w.png")
    Image.fromarray(np.full((2, 2), 256 * 100, dtype=np.uint16)).save(tmp_path / "d.png")
    assert decode_image(tmp_path / "w.png").max() == 255
    assert decode_image(tmp_path / "d.png")[0, 0].tolist() == [100, 100, 100]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)  # 4 wide, 2 high; left column red
    pixels[:, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "r.png", exif=exif)
    out = decode_image(tmp_path / "r.png")
    assert out.shape == (4, 2, 3)  # now 2 wide, 4 high
    assert out[0].tolist() == [[255, 0, 0], [255, 0, 0]]  # turned clockwise: the left column is now the top row
    assert not out[1:].any()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not an image", "not a recognised image format"),
        (b"", "not a recognised image format"),
    ],
)
def test_non_images_raise_decode_error_naming_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path)
    assert info.value.path == str(path) and info.value.reason == reason
    assert str(path) in str(info.value)


def test_truncated_jpeg_raises_decode_error(tmp_path: Path, image_writer) -> None:
    full = image_writer(tmp_path / "full.jpg", size=(64, 64)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageDecodeError, match="truncated file"):
        decode_image(tmp_path / "cut.jpg")


def test_missing_file_raises_decode_error(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        decode_image(tmp_path / "nope.jpg")


def test_oversized_image_is_refused_before_decoding(tmp_path: Path, image_writer, monkeypatch) -> None:
    path = image_writer(tmp_path / "big.png", size=(40, 30))
    monkeypatch.setattr(gimage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match=r"oversized: 40x30 px is over the 1000 px limit"):
        decode_image(path)


def test_preprocessing_round_trips_and_validates() -> None:
    pp = Preprocessing(resize=73, crop=64, interpolation="bicubic")
    assert Preprocessing.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError, match="crop <= resize"):
        Preprocessing(resize=10, crop=20)
    with pytest.raises(ValueError, match="interpolation 'area'"):
        Preprocessing(resize=10, crop=10, interpolation="area")
    with pytest.raises(ValueError, match="incomplete"):
        Preprocessing.from_dict({"resize": 10})


def test_with_image_size_keeps_the_resize_ratio() -> None:
    pp = Preprocessing(resize=256, crop=224)
    assert pp.with_image_size(32) == Preprocessing(resize=37, crop=32)  # 32 * 256 / 224 = 36.57
    assert pp.with_image_size(224) == pp


def test_preprocess_gives_normalised_chw_float32() -> None:
    image = np.full((50, 70, 3), 255, dtype=np.uint8)
    pp = Preprocessing(resize=40, crop=32)
    out = preprocess(image, pp)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    expected = (1.0 - np.array(pp.mean)) / np.array(pp.std)
    np.testing.assert_allclose(out[:, 5, 5], expected, rtol=1e-6)


@pytest.mark.parametrize("size", [(50, 70), (70, 50), (33, 33), (600, 866)])
@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_preprocess_matches_torchvision_weights_transforms(tmp_path: Path, image_writer, size, arch) -> None:
    """Our numpy/Pillow path equals torchvision's own eval transform of the weights entry on PIL input."""
    from garmentcv.models.registry import get_spec

    spec = get_spec(arch)
    path = image_writer(tmp_path / "x.png", size=size)
    ours = load_input(path, spec.preprocessing)
    theirs = spec.weights.transforms()(Image.open(path).convert("RGB")).numpy()
    assert ours.shape == theirs.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)


def test_decode_reads_the_first_frame_of_an_animated_gif(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (3, 3), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    (tmp_path / "anim.gif").write_bytes(buffer.getvalue())
    assert decode_image(tmp_path / "anim.gif")[1, 1].tolist() == [255, 0, 0]
