"""The shared image contract: decoding every mode, preprocessing, and its agreement with torchvision."""

from __future__ import annotations

import io
import warnings
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
        (b"", "empty file (0 bytes)"),
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


# --- unreadable input, unwritable output ------------------------------------------------------------------------------


def _old_full_resize_crop(image: np.ndarray, pp: Preprocessing) -> np.ndarray:
    """The reference path (torchvision's Resize(int) + CenterCrop): resize the whole image, then crop."""
    pil = Image.fromarray(image)
    width, height = pil.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = pp.resize, int(pp.resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        pil = pil.resize((new_w, new_h), gimage._INTERPOLATIONS[pp.interpolation])
    top, left = int(round((new_h - pp.crop) / 2.0)), int(round((new_w - pp.crop) / 2.0))
    return np.asarray(pil)[top : top + pp.crop, left : left + pp.crop]


_THIN_SIZES = [(3, 200), (200, 3), (1, 150), (1, 1500), (7, 2000), (2000, 7), (100, 1000), (13, 900), (401, 97)]


def _noise(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(size[0] * 1000 + size[1]).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize(
    ("size", "resize", "crop"),
    [(size, 37, 32) for size in _THIN_SIZES + [(50, 70), (70, 50), (600, 866), (36, 37)]]
    + [(size, 256, 224) for size in [(3, 200), (200, 3), (100, 1000), (600, 866)]],
)
def test_crop_only_resize_equals_pillows_two_pass_resize(size, interpolation: str, resize: int, crop: int) -> None:
    """The bounded-memory path (forced here for every size) equals Pillow's horizontal-then-vertical resize
    and centre crop exactly, on noise (the hardest case)."""
    image = _noise(size)
    pp = Preprocessing(resize=resize, crop=crop, interpolation=interpolation)
    ours = gimage.resize_crop_pil(Image.fromarray(image), pp, full_max_pixels=0)
    pil, resample = Image.fromarray(image), gimage._INTERPOLATIONS[interpolation]
    old = _old_full_resize_crop(image, pp)  # only for the geometry
    width, height = pil.size
    short, long = min(width, height), max(width, height)
    new_long = int(resize * long / short)
    new_w, new_h = (resize, new_long) if width <= height else (new_long, resize)
    two_pass = np.asarray(pil.resize((new_w, height), resample).resize((new_w, new_h), resample))
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    assert ours.shape == old.shape == (crop, crop, 3)
    assert np.array_equal(ours, two_pass[top : top + crop, left : left + crop])


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos", "nearest"])
@pytest.mark.parametrize("size", _THIN_SIZES)
def test_crop_only_resize_is_close_to_the_full_resize(size, interpolation: str) -> None:
    """Against Pillow's one-call resize (torchvision's path), which may run the passes in the other order:
    on a photo-like image (smooth, mild noise) at most 2 grey levels apart, mean under 0.25; ``nearest`` at
    most one row and one column of the crop off."""
    x, y = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]))
    smooth = np.stack([120 + 100 * np.sin(6 * x + 3 * y), 128 + 90 * np.cos(5 * y), 60 + 150 * x * y], axis=-1)
    noise = np.random.default_rng(1).normal(0, 4, smooth.shape)
    image = np.clip(smooth + noise, 0, 255).astype(np.uint8)
    pp = Preprocessing(resize=37, crop=32, interpolation=interpolation)
    ours = gimage.resize_crop_pil(Image.fromarray(image), pp, full_max_pixels=0).astype(np.int16)
    old = _old_full_resize_crop(image, pp).astype(np.int16)
    difference = np.abs(ours - old)
    if interpolation == "nearest":
        rows, columns = np.nonzero(difference.max(axis=2))
        assert len(set(rows.tolist())) <= 1 or len(set(columns.tolist())) <= 1
    else:
        assert difference.max() <= 2 and difference.mean() < 0.25


def test_ordinary_images_are_resized_in_full(monkeypatch) -> None:
    """Up to FULL_RESIZE_MAX_PIXELS the one-call Pillow resize is used: torchvision's pixels exactly."""
    calls: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self: Image.Image, size, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(tuple(size))
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    image = _noise((600, 866))
    out = gimage.resize_and_crop(image, Preprocessing(resize=256, crop=224))
    assert calls == [(256, 369)]
    monkeypatch.setattr(Image.Image, "resize", original)
    assert np.array_equal(out, _old_full_resize_crop(image, Preprocessing(resize=256, crop=224)))


def test_thin_image_resizes_only_the_crop(monkeypatch) -> None:
    """A 1x1500 px image: no Pillow resize larger than the crop's rows (the full resize was 256x384000 px)."""
    sizes: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self: Image.Image, size, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(self, size, *args, **kwargs)
        sizes.append(out.size)
        return out

    monkeypatch.setattr(Image.Image, "resize", spy)
    image = np.random.default_rng(0).integers(0, 256, (1500, 1, 3), dtype=np.uint8)
    pp = Preprocessing(resize=256, crop=224)
    out = preprocess(image, pp)
    assert out.shape == (3, 224, 224)
    assert max((w * h for w, h in sizes), default=0) <= 256 * 224


def test_thin_image_file_peak_memory_is_bounded(tmp_path: Path) -> None:
    """Peak resident memory of a process decoding a 1x1500 px PNG stays under 150 MB (was about 1 GB)."""
    import subprocess
    import sys

    Image.fromarray(np.full((1500, 1, 3), 128, dtype=np.uint8)).save(tmp_path / "thin.png")
    script = (  # VmHWM: peak resident memory of this process image in KiB (ru_maxrss would include pytest's)
        "import sys\n"
        "from garmentcv.image import Preprocessing, load_input\n"
        "x = load_input(sys.argv[1], Preprocessing(resize=256, crop=224))\n"
        "assert x.shape == (3, 224, 224)\n"
        "status = open('/proc/self/status').read()\n"
        "print(next(line.split()[1] for line in status.splitlines() if line.startswith('VmHWM:')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "thin.png")],
                          capture_output=True, text=True, check=True)
    assert int(done.stdout.strip()) < 150 * 1024, done.stdout


def test_thirty_two_bit_integer_tiff_is_scaled(tmp_path: Path) -> None:
    """'I' images: values within 0..255 kept; within 0..65535 scaled like 16-bit (>> 8); otherwise min-max."""
    Image.fromarray(np.array([[0, 7], [100, 255]], dtype=np.int32)).save(tmp_path / "byte.tif")
    Image.fromarray(np.array([[0, 256], [25600, 65535]], dtype=np.int32)).save(tmp_path / "short.tif")
    Image.fromarray(np.array([[-100, 0], [100, 155]], dtype=np.int32)).save(tmp_path / "wide.tif")
    with Image.open(tmp_path / "short.tif") as written:
        assert written.mode == "I"
    assert decode_image(tmp_path / "byte.tif")[:, :, 0].tolist() == [[0, 7], [100, 255]]
    assert decode_image(tmp_path / "short.tif")[:, :, 0].tolist() == [[0, 1], [100, 255]]
    assert decode_image(tmp_path / "wide.tif")[:, :, 0].tolist() == [[0, 100], [200, 255]]
    assert decode_image(tmp_path / "short.tif").shape == (2, 2, 3)


def test_float_tiff_is_scaled(tmp_path: Path) -> None:
    """'F' images: 0..1 times 255; within 0..255 kept; otherwise min-max; rounded half to even; NaN is 0."""
    Image.fromarray(np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)).save(tmp_path / "unit.tif")
    Image.fromarray(np.array([[0.0, 2.4], [128.6, 255.0]], dtype=np.float32)).save(tmp_path / "byte.tif")
    Image.fromarray(np.array([[-1.0, 0.0], [1.0, np.nan]], dtype=np.float32)).save(tmp_path / "wide.tif")
    with Image.open(tmp_path / "unit.tif") as written:
        assert written.mode == "F"
    assert decode_image(tmp_path / "unit.tif")[:, :, 0].tolist() == [[0, 128], [64, 255]]
    assert decode_image(tmp_path / "byte.tif")[:, :, 0].tolist() == [[0, 2], [129, 255]]
    assert decode_image(tmp_path / "wide.tif")[:, :, 0].tolist() == [[0, 128], [255, 0]]


def test_every_image_extension_maps_to_a_decoded_format() -> None:
    registered = Image.registered_extensions()
    for extension in gimage.IMAGE_EXTENSIONS:
        assert registered[extension] in gimage.DECODED_FORMATS, extension
    assert set(gimage.DECODED_FORMATS) == {"JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "AVIF"}


_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


@pytest.mark.parametrize(("content", "fmt"), [(_EPS, "EPS"), (b"P6\n2 2\n255\n" + bytes(12), "PPM")])
def test_other_formats_under_an_image_extension_are_refused(
    tmp_path: Path, content: bytes, fmt: str, monkeypatch
) -> None:
    """A .jpg holding EPS (Ghostscript) or PPM is never handed to that decoder: refused, naming the format."""
    opened: list[str] = []
    for name in ("EPS", "PPM"):
        factory, accept = Image.OPEN[name]

        def spy(*args, _factory=factory, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            opened.append(_name)
            return _factory(*args, **kwargs)

        monkeypatch.setitem(Image.OPEN, name, (spy, accept))
    (tmp_path / "x.jpg").write_bytes(content)
    expected = f"format {fmt} is not one GarmentCV decodes"
    with pytest.raises(ImageDecodeError, match=expected) as info:
        decode_image(tmp_path / "x.jpg")
    assert info.value.reason.startswith(expected)
    with pytest.raises(ImageDecodeError, match=expected):
        gimage.decode_image_bytes(content, "y.jpg")
    with pytest.raises(ImageDecodeError, match=expected):
        load_input(tmp_path / "x.jpg", Preprocessing(resize=37, crop=32))
    assert opened == []


def test_pdf_under_an_image_extension_is_not_recognised(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path / "x.jpg")
    assert info.value.reason == "not a recognised image format"


def test_decoding_leaves_the_warning_filters_alone(tmp_path: Path, image_writer, monkeypatch) -> None:
    """No warnings.catch_warnings() around the decode: it is process-wide state shared by decode threads."""
    path = image_writer(tmp_path / "a.png", size=(40, 30))
    before = list(warnings.filters)
    seen: list[list] = []
    original = Image.open

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(list(warnings.filters))
        return original(*args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    decode_image(path)
    load_input(path, Preprocessing(resize=37, crop=32))
    assert seen == [before, before]
    assert list(warnings.filters) == before


def test_oversized_image_is_refused_by_pillows_limit_too(tmp_path: Path, image_writer, monkeypatch) -> None:
    """Over twice Pillow's own limit, Image.open raises DecompressionBombError: still the oversized reason."""
    path = image_writer(tmp_path / "big.png", size=(40, 30))
    before = list(warnings.filters)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path)
    assert info.value.reason.startswith("oversized")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", gimage.MAX_IMAGE_PIXELS)
    monkeypatch.setattr(gimage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match=r"oversized: 40x30 px"):
        decode_image(path)
    assert list(warnings.filters) == before


def test_empty_file_is_reported_as_empty(tmp_path: Path) -> None:
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path / "e.png")
    assert info.value.reason == "empty file (0 bytes)"
    with pytest.raises(ImageDecodeError) as info:
        gimage.decode_image_bytes(b"", "e.png")
    assert info.value.reason == "empty file (0 bytes)" and info.value.path == "e.png"
    with pytest.raises(ImageDecodeError, match=r"empty file \(0 bytes\)"):
        load_input(tmp_path / "e.png", Preprocessing(resize=37, crop=32))


def test_avif_written_by_pillow_decodes(tmp_path: Path) -> None:
    """Pillow 11.3+ reads AVIF; GarmentCV decodes it through the same path (lossy: within a few grey levels)."""
    pixels = np.zeros((16, 24, 3), dtype=np.uint8)
    pixels[:, :12] = (200, 40, 40)
    pixels[:, 12:] = (40, 60, 200)
    Image.fromarray(pixels).save(tmp_path / "shirt.avif", quality=95)
    with Image.open(tmp_path / "shirt.avif") as written:
        assert written.format == "AVIF"
    decoded = decode_image(tmp_path / "shirt.avif")
    assert decoded.shape == (16, 24, 3)
    assert np.abs(decoded[:, 2:10].astype(int) - (200, 40, 40)).max() <= 6
    assert np.abs(decoded[:, 14:22].astype(int) - (40, 60, 200)).max() <= 6
    assert load_input(tmp_path / "shirt.avif", Preprocessing(resize=16, crop=16)).shape == (3, 16, 16)
    (tmp_path / "shirt.jpg").write_bytes((tmp_path / "shirt.avif").read_bytes())  # content decides, not name
    assert np.array_equal(decode_image(tmp_path / "shirt.jpg"), decoded)
