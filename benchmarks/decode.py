"""Decoding at the floor: ``load_crop``/``load_input`` per 600x866 JPEG against decode only.

Every figure is measured in one run, on the same files, interleaved repeat by repeat, on one thread; each is the
median over repeats of the per-image time (thread CPU time, so other processes on the cores inflate it less
than wall time; wall time is recorded beside it):

* ``decode-only (Pillow DCT 1/2)``: Pillow's JPEG decoder at the DCT scale ``load_crop`` uses (``draft``),
  nothing else: the entropy decoding, the scaled inverse DCT and the colour conversion, the floor of any path
  that decodes with libjpeg-turbo at that scale;
* ``decode-only (simplejpeg)``: the same scale with simplejpeg, when it is importable (not a dependency; it is
  measured to choose the decoder, and its pixels are compared with Pillow's);
* ``decode-only (Pillow full)``: the full-size decode, for scale;
* ``decode + crop-box resample``: that decode and then only the one Pillow resize of the crop's source box that
  ``load_crop`` does (:func:`garmentcv.image.resample_crop_box`), with none of its checks, EXIF handling or copies:
  the floor of any path that gives ``load_crop``'s pixels with Pillow's resampler;
* ``crop-box resample alone``: that resize on the already decoded images;
* ``load_crop``: the shared decode path, uint8 crop (format-2 models);
* ``load_input``: the same plus normalisation to float32 (format-1 models, training validation);
* ``full-resize load_input``: the earlier path (rebuilt here): DCT-scaled decode, two full-size copies
  (EXIF transpose, convert), the full resize, crop, normalisation.

Run: ``python -m benchmarks decode`` (writes ``decode.json``, ``.md`` and ``.csv`` to
``benchmarks/results/<machine>/``).
"""

from __future__ import annotations

import io
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmarks import options, results
from benchmarks.photos import LARGE_SIZE, write_photo_folder
from garmentcv.image import (
    Preprocessing,
    load_crop,
    load_input,
    normalize,
    resample_crop_box,
    resize_crop_pil,
)


def _pillow_dct_image(data: bytes, short: int) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    scale = short / min(width, height)
    image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    image.load()
    return image


def _pillow_dct(data: bytes, short: int) -> np.ndarray:
    return np.asarray(_pillow_dct_image(data, short))


def _pillow_full(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _full_resize_load_input(path: Path, pp: Preprocessing) -> np.ndarray:
    """``load_input`` as it was before ``load_crop``: two full-size copies and the full resize before the crop."""
    with Image.open(path) as image:
        width, height = image.size
        if min(width, height) >= 2 * pp.resize:
            scale = pp.resize / min(width, height)
            image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()
        rgb = (ImageOps.exif_transpose(image) or image).convert("RGB")
    return normalize(resize_crop_pil(rgb, pp), pp)


def _simplejpeg() -> Callable[[bytes, int], np.ndarray] | None:
    try:
        import simplejpeg  # noqa: PLC0415 - optional, measured only where installed
    except ImportError:
        return None

    def decode(data: bytes, short: int) -> np.ndarray:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        scale = short / min(width, height)
        return simplejpeg.decode_jpeg(
            data, "RGB", min_height=math.ceil(height * scale), min_width=math.ceil(width * scale)
        )

    return decode


def measure(paths: Sequence[Path], pp: Preprocessing, repeats: int) -> dict[str, tuple[float, float]]:
    """``{path name: (median thread-CPU ms/image, median wall ms/image)}`` over ``repeats`` interleaved repeats."""
    data = [p.read_bytes() for p in paths]
    buffer = np.empty((pp.crop, pp.crop, 3), dtype=np.uint8)
    decoded = [_pillow_dct_image(d, pp.resize) for d in data]
    ways: dict[str, Callable[[int], object]] = {
        "decode-only (Pillow DCT 1/2)": lambda i: _pillow_dct(data[i], pp.resize),
        "decode-only (Pillow full)": lambda i: _pillow_full(data[i]),
        "decode + crop-box resample": lambda i: resample_crop_box(_pillow_dct_image(data[i], pp.resize), pp),
        "crop-box resample alone": lambda i: resample_crop_box(decoded[i], pp),
        "load_crop": lambda i: load_crop(paths[i], pp, out=buffer),
        "load_input": lambda i: load_input(paths[i], pp),
        "full-resize load_input": lambda i: _full_resize_load_input(paths[i], pp),
    }
    sj = _simplejpeg()
    if sj is not None:
        ways["decode-only (simplejpeg)"] = lambda i: sj(data[i], pp.resize)
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    wall: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            c, w = time.thread_time(), time.perf_counter()
            for i in range(len(paths)):
                way(i)
            cpu[name].append((time.thread_time() - c) / len(paths) * 1e3)
            wall[name].append((time.perf_counter() - w) / len(paths) * 1e3)
    return {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in ways}


def simplejpeg_equal(paths: Sequence[Path], pp: Preprocessing) -> bool | None:
    """Whether simplejpeg's decode equals Pillow's at the same DCT scale on every file (``None``: not installed)."""
    sj = _simplejpeg()
    if sj is None:
        return None
    return all(np.array_equal(sj(p.read_bytes(), pp.resize), _pillow_dct(p.read_bytes(), pp.resize)) for p in paths)


def main(argv: list[str] | None = None) -> int:
    """Time every path, write ``decode[-NAME].json``/``.md``/``.csv`` to ``OUT/<machine>/``; return 0."""
    parser = options.suite_parser(__doc__, repeats=15)
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/gcv-bench-decode"), help="folder for the photos (default: %(default)s)"
    )
    parser.add_argument(
        "--files",
        type=int,
        default=40,
        help="photos written, 4 of 5 at 600x866 and only those timed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    begun = results.start("decode", argv)
    folder = write_photo_folder(args.work / "photos", args.files)
    paths = [p for p in sorted(folder.path.glob("*.jpg")) if Image.open(p).size == LARGE_SIZE]
    pp = Preprocessing(resize=256, crop=224)
    figures = measure(paths, pp, args.repeats)
    floor = figures["decode-only (Pillow DCT 1/2)"][0]
    machine = begun.machine
    load = os.getloadavg()
    rows = [{"path": name, "cpu_ms_per_image": round(cpu_ms, 4), "wall_ms_per_image": round(wall_ms, 4),
             "ratio_to_decode_only": round(cpu_ms / floor, 3), "images": len(paths), "repeats": args.repeats}
            for name, (cpu_ms, wall_ms) in figures.items()]  # fmt: skip
    lines = [
        "# Decoding at the floor", "",
        f"{len(paths)} photos of 600x866 px (benchmarks/photos.py), resize 256, crop 224, one thread, median of "
        f"{args.repeats} interleaved repeats; thread CPU time (wall in brackets). Machine: {machine.summary()}; "
        f"load average {' '.join(f'{x:.2f}' for x in load)} at the end.", "",
        "| path | ms/image | ratio to decode-only (Pillow DCT 1/2) |", "|---|---:|---:|",
    ]
    for name, (cpu_ms, wall_ms) in figures.items():
        lines.append(f"| {name} | {cpu_ms:.3f} ({wall_ms:.3f}) | {cpu_ms / floor:.2f}x |")
    floor_pixels = all(
        np.array_equal(resample_crop_box(_pillow_dct_image(p.read_bytes(), pp.resize), pp), load_crop(p, pp))
        for p in paths
    )
    resample = figures["decode + crop-box resample"][0]
    lines += [
        "",
        f"`decode + crop-box resample` gives `load_crop`'s pixels on every file: {floor_pixels}. With Pillow's "
        f"resampler no path can go below it: {resample / floor:.2f}x the decode alone, so `load_crop` <= 1.3x is "
        f"{'within reach' if resample / floor <= 1.3 else 'out of reach'} with it; `load_crop` (checks, EXIF, the copy "
        f"into the batch besides) is {figures['load_crop'][0] / resample:.2f}x that floor in this run.",
    ]
    same = simplejpeg_equal(paths, pp)
    if same is not None:
        lines += ["", f"simplejpeg's pixels equal Pillow's at the same DCT scale on every file: {same}."]
    text = "\n".join(lines) + "\n"
    results.write(begun, rows, args.out, args.name, markdown=text, with_csv=True)
    options.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
