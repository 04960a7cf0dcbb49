"""Throughput of gcv-classify against the model alone and the decoding alone (not part of the test run).

    .venv/bin/python benchmarks/classify_speed.py --images 500 --arch resnet18 --size 224

Makes N photo-like 600x866 JPEGs (smooth shapes + mild noise, quality 90) and a random-init model exported
at ``--size`` px, then reports images/s of: load_input alone (1 thread and all cores), the onnxruntime model
alone on ready batches, and classify_folder end to end (peak RSS in MB too).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import build_onnx_model  # noqa: E402

from garmentcv.image import load_input  # noqa: E402
from garmentcv.infer.classify import ClassifyConfig, classify_folder  # noqa: E402
from garmentcv.infer.model_file import read_model_info  # noqa: E402
from garmentcv.infer.session import open_model  # noqa: E402


def make_photos(folder: Path, n: int, size: tuple[int, int] = (600, 866)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        image = Image.new("RGB", size, (240, 240, 240))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, size[0] - 50), rng.integers(0, size[1] - 50)
            x1, y1 = x0 + rng.integers(40, 400), y0 + rng.integers(40, 600)
            draw.rounded_rectangle((x0, y0, x1, y1), radius=20, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        image = image.filter(ImageFilter.GaussianBlur(2))
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, (size[1], size[0], 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gcv-bench-"))
    folder, model_path = work / f"photos{args.images}", work / f"{args.arch}-{args.size}.onnx"
    if not folder.is_dir():
        make_photos(folder, args.images)
    if not model_path.is_file():
        build_onnx_model(model_path, ("bluzy", "bryuki"), arch=args.arch, size=args.size)
    files = sorted(folder.glob("*.jpg"))
    pp = read_model_info(model_path).preprocessing

    t = time.perf_counter()
    for f in files[:200]:
        load_input(f, pp)
    print(f"load_input, 1 thread: {200 / (time.perf_counter() - t):.1f} images/s")
    t = time.perf_counter()
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda f: load_input(f, pp), files))
    print(f"load_input, all cores: {len(files) / (time.perf_counter() - t):.1f} images/s")

    model = open_model(model_path, "cpu")
    batch = np.random.default_rng(0).standard_normal((args.batch_size, 3, pp.crop, pp.crop)).astype(np.float32)
    model.logits(batch)
    runs = max(3, len(files) // args.batch_size)
    t = time.perf_counter()
    for _ in range(runs):
        model.logits(batch)
    model_only = runs * args.batch_size / (time.perf_counter() - t)
    print(f"model only ({args.arch} {pp.crop} px, batch {args.batch_size}): {model_only:.1f} images/s")

    t = time.perf_counter()
    summary = classify_folder(ClassifyConfig(folder=folder, out=work / "out.csv", model=model_path, provider="cpu",
                                             batch_size=args.batch_size, progress=False))
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"classify_folder end to end: {summary.files / wall:.1f} images/s "
          f"({summary.files / wall / model_only:.0%} of model only), peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
