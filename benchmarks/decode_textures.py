"""What the DCT-scaled JPEG decode does to textured garments: pixels, predictions and speed, before and after
training decodes by serving's rule.

Serving (``load_crop``: training validation, export, ``gcv classify``) decodes a JPEG whose shorter side is at least
twice the resize at a reduced DCT scale (1/2 for a 600x866 photo at 256 px). Training used to decode every file in
full; it now decodes each random crop by the same rule (:func:`garmentcv.image.load_region`). On fine textures the
two decodes give other pixels, so this command measures, on one set of generated photos:

* ``pixels``: the mean and largest difference (grey levels, 0..255) between serving's crop and the full decode's
  (``resize_and_crop(decode_image(path))``, torchvision's pixels, what training decoded before), for textured and
  plain garments and per texture; and between serving's crop and training's decode now of the same region;
* ``predictions``: a small CNN (:class:`SmallNet`) trained from scratch twice with the same seed, images, order and
  augmentation (gcv train's defaults), once with each training decode: ``full`` (training before: full decode, then
  torchvision's ``RandomResizedCrop``) and ``serving-rule`` (training now). Each model classifies the test photos
  through both decodes: accuracy with each, labels that flip between them, and the largest and mean change of a
  class probability; ``--seeds`` repeats it;
* ``speed``: ms/image (thread CPU time, median of interleaved repeats, one thread) of serving's decode against the
  full decode and resize (what serving would cost without the shortcut), and of a training view decoded each way.

The photos: Fashion-MNIST items (Debian's ``dataset-fashion-mnist``; ``--classes``) upscaled onto 600x866 px white
photos in a random colour, half of the training photos and a copy of every test photo overlaid with a fine texture
(light stripes 3 px apart, diagonal stripes 4 px apart, or a 3x4 px knit), saved as quality-90 JPEGs.

Run: ``python -m benchmarks decode_textures`` (writes ``decode_textures.json`` and ``.md`` to
``benchmarks/results/<machine>/``; a few minutes on 2 quiet cores).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from benchmarks import options, results
from garmentcv.data.fashion_mnist import (
    DEFAULT_SOURCE,
    FASHION_MNIST_CLASSES,
    load_split,
)
from garmentcv.data.layouts import Sample
from garmentcv.image import (
    Preprocessing,
    crop_geometry,
    decode_image,
    decode_region,
    load_crop,
    normalize,  # fmt: skip
    resample_crop_box,
    resize_and_crop,
)
from garmentcv.train.config import TrainConfig
from garmentcv.train.data import DecodeResizedCrop, TrainImages, train_transform

#: The photo size of the Kaggle lamoda catalogue (width, height), and the side the item is drawn at.
PHOTO_SIZE: tuple[int, int] = (600, 866)
ITEM_SIDE = 560
TEXTURES: tuple[str, ...] = ("stripes-3px", "diagonal-4px", "knit-3x4px")
DECODES: tuple[str, ...] = ("serving", "full")
TRAINING_DECODES: tuple[str, ...] = ("full", "serving-rule")


def texture(name: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 pattern ``(height, width)`` of light threads: ``stripes-3px`` (one line in 3 px, vertical or
    horizontal), ``diagonal-4px`` (one diagonal in 4 px) or ``knit-3x4px`` (chevrons 3 px wide, 4 px tall)."""
    y, x = np.mgrid[0:height, 0:width]
    phase = int(rng.integers(12))
    if name == "stripes-3px":
        return (((x if rng.random() < 0.5 else y) + phase) % 3 == 0).astype(np.float32)
    if name == "diagonal-4px":
        return ((x + y + phase) % 4 == 0).astype(np.float32)
    if name == "knit-3x4px":
        return ((x + np.abs((y + phase) % 4 - 2)) % 3 == 0).astype(np.float32)
    raise ValueError(f"unknown texture {name!r}; use one of {TEXTURES}")


def render(item: np.ndarray, colour: np.ndarray, pattern: np.ndarray | None) -> np.ndarray:
    """A catalogue photo, RGB ``uint8`` ``(866, 600, 3)``: the 28x28 item (bright on black, as Fashion-MNIST stores
    it) upscaled to 560 px, in ``colour`` (RGB 0..255) on white, with light threads where ``pattern`` is 1."""
    width, height = PHOTO_SIZE
    cover = np.zeros((height, width), dtype=np.float32)
    top, left = (height - ITEM_SIDE) // 2, (width - ITEM_SIDE) // 2
    big = Image.fromarray(item).resize((ITEM_SIDE, ITEM_SIDE), Image.Resampling.BICUBIC)
    cover[top : top + ITEM_SIDE, left : left + ITEM_SIDE] = np.asarray(big, dtype=np.float32) / 255
    cloth = np.broadcast_to(colour.astype(np.float32), (height, width, 3))
    if pattern is not None:
        cloth = cloth + 0.8 * (235 - cloth) * pattern[..., None]
    pixels = 255 * (1 - cover[..., None]) + cover[..., None] * cloth
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PhotoSet:
    """The generated photos: training samples, test samples per variant (``textured``, ``plain``), and the texture
    of each textured test photo (in ``test["textured"]`` order)."""

    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    test: dict[str, tuple[Sample, ...]]
    test_textures: tuple[str, ...]


def write_photos(folder: Path, classes: Sequence[str], train_per_class: int, test_per_class: int, seed: int,
                 source: Path = DEFAULT_SOURCE) -> PhotoSet:  # fmt: skip
    """Write the JPEGs into ``folder``: the first items of each class from Fashion-MNIST's training and test files,
    half of the training photos textured, every test item once textured and once plain (same colour)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = [FASHION_MNIST_CLASSES.index(c) for c in classes]
    train: list[Sample] = []
    test: dict[str, list[Sample]] = {"textured": [], "plain": []}
    test_textures: list[str] = []
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, targets = load_split(source, split)
        for label, name in zip(labels, classes, strict=True):
            for n, index in enumerate(np.flatnonzero(targets == label)[:per_class]):
                colour = rng.uniform(30, 160, size=3)
                kind = TEXTURES[n % len(TEXTURES)]
                pattern = texture(kind, *PHOTO_SIZE, rng)
                variants = {"textured": pattern, "plain": None}
                if split == "train":
                    variants = {"textured": pattern} if n % 2 == 0 else {"plain": None}
                else:
                    test_textures.append(kind)
                for variant, chosen in variants.items():
                    path = folder / f"{split}-{name}-{n:04d}-{variant}.jpg"
                    Image.fromarray(render(images[index], colour, chosen)).save(path, quality=90)
                    sample = Sample(path, name)
                    (train.append(sample) if split == "train" else test[variant].append(sample))
    return PhotoSet(tuple(classes), tuple(train), {k: tuple(v) for k, v in test.items()}, tuple(test_textures))


class SmallNet(nn.Module):
    """A small CNN for 224 px inputs: a ResNet-style 7x7 stride-2 stem and max-pool, three stride-2 3x3 convolutions
    down to 7x7 and a linear head on those 7x7 positions (about 75k parameters); it sees the input at full
    resolution, as every torchvision backbone's first layer does, but trains in a minute on a CPU."""

    def __init__(self, classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int, kernel: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, kernel, stride=2, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]

        self.features = nn.Sequential(*block(3, 16, 7), nn.MaxPool2d(3, 2, 1), *block(16, 32, 3), *block(32, 64, 3),
                                      *block(64, 64, 3), nn.Flatten())  # fmt: skip
        self.head = nn.Linear(64 * 7 * 7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FullDecodeResizedCrop(DecodeResizedCrop):
    """Training's random resized crop before it decoded by serving's rule: full decode, then torchvision's
    ``RandomResizedCrop`` (the same random draws as :class:`DecodeResizedCrop`)."""

    def forward(self, path: Path) -> Image.Image:
        crop = T.RandomResizedCrop(self.size, self.scale, self.ratio, T.InterpolationMode(self.interpolation))
        return crop(Image.fromarray(decode_image(path)))


def training_transform(pp: Preprocessing, cfg: TrainConfig, decode: str) -> T.Compose:
    """gcv train's augmentation (:func:`garmentcv.train.data.train_transform`) with the training decode ``decode``."""
    transform = train_transform(pp, cfg)
    if decode == "full":
        first = transform.transforms[0]
        transform.transforms[0] = FullDecodeResizedCrop(first.size, first.scale, first.interpolation, first.ratio)
    return transform


def fit(
    photos: PhotoSet, pp: Preprocessing, decode: str, seed: int, epochs: int, batch_size: int, lr: float
) -> SmallNet:
    """Train :class:`SmallNet` from scratch on ``photos.train`` with the training decode ``decode`` (AdamW, cosine)."""
    cfg = TrainConfig(data=Path("."), out=Path("."), seed=seed)
    torch.manual_seed(seed)
    model = SmallNet(len(photos.classes))
    data = TrainImages(photos.train, photos.classes, training_transform(pp, cfg, decode))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                        drop_last=len(data) % batch_size == 1)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def decoded_inputs(samples: Sequence[Sample], pp: Preprocessing) -> dict[str, np.ndarray]:
    """Each test photo's uint8 crop ``(N, crop, crop, 3)`` through ``serving`` (``load_crop``) and ``full``."""
    return {
        "serving": np.stack([load_crop(s.path, pp) for s in samples]),
        "full": np.stack([resize_and_crop(decode_image(s.path), pp) for s in samples]),
    }


def probabilities(model: SmallNet, crops: np.ndarray, pp: Preprocessing) -> np.ndarray:
    """Softmax ``(N, classes)`` of ``model`` on the crops, normalised as every model input is."""
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([normalize(c, pp) for c in crops]))
        return torch.softmax(model(x), dim=1).numpy()


def prediction_row(
    model: SmallNet, crops: dict[str, np.ndarray], targets: np.ndarray, pp: Preprocessing
) -> dict[str, Any]:
    """Accuracy per decode, label flips between them, and the largest and mean change of any class probability."""
    probs = {name: probabilities(model, crops[name], pp) for name in DECODES}
    labels = {name: p.argmax(axis=1) for name, p in probs.items()}
    change = np.abs(probs["serving"] - probs["full"])
    return {
        **{f"accuracy_{name}": float((labels[name] == targets).mean()) for name in DECODES},
        "flips": int((labels["serving"] != labels["full"]).sum()),
        "max_probability_change": float(change.max()),
        "mean_probability_change": float(change.max(axis=1).mean()),
    }


def _median_ms(ways: dict[str, Callable[[Path], object]], paths: Sequence[Path], repeats: int) -> dict[str, float]:
    """Median thread-CPU ms/image of each way over ``repeats`` interleaved passes over ``paths``."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            started = time.thread_time()
            for path in paths:
                way(path)
            times[name].append((time.thread_time() - started) / len(paths) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def speed(paths: Sequence[Path], pp: Preprocessing, repeats: int) -> dict[str, float]:
    """ms/image of serving's decode with and without the DCT shortcut, and of a training view decoded each way."""
    cfg = TrainConfig(data=Path("."), out=Path("."))
    new = DecodeResizedCrop(pp.crop, (cfg.crop_scale, 1.0), pp.interpolation)
    old = FullDecodeResizedCrop(pp.crop, (cfg.crop_scale, 1.0), pp.interpolation)
    torch.manual_seed(0)
    return _median_ms({
        "serving: load_crop (DCT-scaled)": lambda p: load_crop(p, pp),
        "serving without the shortcut: resize_and_crop(decode_image)": lambda p: resize_and_crop(decode_image(p), pp),
        "training view: serving's rule": new,
        "training view: full decode": old,
    }, paths, repeats)  # fmt: skip


def pixel_rows(crops: dict[str, dict[str, np.ndarray]], textures: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and largest difference (grey levels) between serving's crops and the full decode's: per variant, and
    per texture of the textured photos."""
    groups: dict[str, np.ndarray] = {}
    for variant, decoded in crops.items():
        groups[variant] = np.abs(decoded["serving"].astype(np.int16) - decoded["full"])
    for kind in TEXTURES:
        groups[f"textured: {kind}"] = groups["textured"][np.array([t == kind for t in textures])]
    rows = []
    for name, difference in groups.items():
        per_image = difference.reshape(len(difference), -1).mean(axis=1)
        rows.append({"variant": name, "images": len(difference), "mean": float(difference.mean()),
                     "largest_image_mean": float(per_image.max()), "max": int(difference.max())})  # fmt: skip
    return rows


def training_now_difference(samples: Sequence[Sample], pp: Preprocessing) -> dict[str, float]:
    """Largest and mean difference (grey levels) between ``load_crop`` and training's decode now of the region serving
    shows followed by serving's resample (:func:`garmentcv.image.decode_region`, :func:`resample_crop_box`)."""
    differences = []
    for sample in samples:

        def serving_box(width: int, height: int) -> tuple[float, float, float, float]:
            new_w, new_h, top, left = crop_geometry(width, height, pp)
            sx, sy = width / new_w, height / new_h
            return left * sx, top * sy, (left + pp.crop) * sx, (top + pp.crop) * sy

        decoded, _ = decode_region(sample.path, pp.crop, serving_box)
        differences.append(np.abs(resample_crop_box(decoded, pp).astype(np.int16) - load_crop(sample.path, pp)))
    stacked = np.stack(differences)
    return {"images": len(stacked), "mean": float(stacked.mean()), "max": int(stacked.max())}


def run(work: Path, classes: Sequence[str], train_per_class: int, test_per_class: int, seeds: Sequence[int],
        epochs: int, batch_size: int, lr: float, repeats: int) -> dict[str, Any]:  # fmt: skip
    """Every figure of the module docstring, as plain data."""
    pp = Preprocessing(resize=256, crop=224)
    photos = write_photos(work / "photos", classes, train_per_class, test_per_class, seed=0)
    crops = {variant: decoded_inputs(samples, pp) for variant, samples in photos.test.items()}
    targets = {v: np.array([photos.classes.index(s.label) for s in samples]) for v, samples in photos.test.items()}
    predictions = []
    for seed in seeds:
        for decode in TRAINING_DECODES:
            started = time.perf_counter()
            model = fit(photos, pp, decode, seed, epochs, batch_size, lr)
            seconds = time.perf_counter() - started
            for variant, decoded in crops.items():
                predictions.append(
                    {
                        "training_decode": decode,
                        "seed": seed,
                        "variant": variant,
                        "train_s": round(seconds, 1),
                        **prediction_row(model, decoded, targets[variant], pp),
                    }
                )
    speed_paths = [s.path for s in photos.test["textured"][:20]]
    return {
        "settings": {
            "classes": list(classes),
            "train_images": len(photos.train),
            "test_images_per_variant": len(photos.test["textured"]),
            "seeds": list(seeds),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "photo_size": list(PHOTO_SIZE),
            "preprocessing": pp.to_dict(),
            "textures": list(TEXTURES),
        },
        "pixels": pixel_rows(crops, photos.test_textures),
        "pixels_training_now": training_now_difference(photos.test["textured"], pp),
        "predictions": predictions,
        "speed_ms_per_image": speed(speed_paths, pp, repeats),
    }


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predictions pooled over seeds per (training decode, variant): accuracies and probability changes averaged,
    flips summed, largest change the largest."""
    pooled = []
    for decode in TRAINING_DECODES:
        for variant in ("textured", "plain"):
            group = [r for r in rows if r["training_decode"] == decode and r["variant"] == variant]
            if group:
                pooled.append({"training_decode": decode, "variant": variant, "seeds": len(group),
                               **{k: statistics.mean(r[k] for r in group) for k in ("accuracy_serving", "accuracy_full",
                                                                                   "mean_probability_change")},
                               "flips": sum(r["flips"] for r in group),
                               "max_probability_change": max(r["max_probability_change"] for r in group)})  # fmt: skip
    return pooled


def markdown(result: dict[str, Any]) -> str:
    """The figures as tables, with the machine and the command."""
    s = result["settings"]
    lines = [
        "# Textured garments: DCT-scaled against full JPEG decode",
        "",
        f"`{result['command']}`",
        "",
        f"Machine: {result['machine_summary']}; load average {result['load_avg_end']} at the end.",
        "",
        (
            f"{s['train_images']} training photos (half textured), "
            f"{s['test_images_per_variant']} test items each textured and plain, "
            f"{s['photo_size'][0]}x{s['photo_size'][1]} px quality-90 JPEGs of Fashion-MNIST "
            f"{', '.join(s['classes'])}; resize {s['preprocessing']['resize']}, crop {s['preprocessing']['crop']}; "
            f"SmallNet, {s['epochs']} epochs, seeds {s['seeds']}."
        ),
        "",
        "## Pixels: serving's crop against the full decode's (grey levels)",
        "",
        "| test photos | images | mean | largest per-image mean | max |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['variant']} | {r['images']} | {r['mean']:.2f} | {r['largest_image_mean']:.2f} | {r['max']} |"
              for r in result["pixels"]]  # fmt: skip
    now = result["pixels_training_now"]
    lines += [
        "",
        (
            f"Training's decode now of the region serving shows, then serving's resample, against `load_crop` on "
            f"the {now['images']} textured test photos: mean {now['mean']:.2f}, max {now['max']} grey levels."
        ),
    ]
    lines += [
        "", "## Predictions through each decode (mean over seeds; flips summed)", "",
        ("| training decode | test photos | accuracy, serving decode | accuracy, full decode | labels flipped | "
         "largest probability change | mean of each image's largest change |"), "|---|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in _summary(result["predictions"]):
        lines.append(
            f"| {r['training_decode']} | {r['variant']} | {r['accuracy_serving']:.3f} | {r['accuracy_full']:.3f} | "
            f"{r['flips']} | {r['max_probability_change']:.3f} | {r['mean_probability_change']:.3f} |"
        )
    lines += ["", "## Speed (ms/image, thread CPU time, median of interleaved repeats, one thread)", "",
              "| decode | ms/image |", "|---|---:|"]  # fmt: skip
    lines += [f"| {name} | {ms:.2f} |" for name, ms in result["speed_ms_per_image"].items()]
    return "\n".join(lines) + "\n"


def to_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`run`'s figures as flat rows, each with its ``section``: settings, pixels, pixels-training-now,
    predictions, speed (``decode``, ``ms_per_image``)."""
    return (
        [{"section": "settings", **result["settings"]}]
        + [{"section": "pixels", **r} for r in result["pixels"]]
        + [{"section": "pixels-training-now", **result["pixels_training_now"]}]
        + [{"section": "predictions", **r} for r in result["predictions"]]
        + [
            {"section": "speed", "decode": name, "ms_per_image": ms}
            for name, ms in result["speed_ms_per_image"].items()
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``decode_textures[-NAME].json``/``.md`` to ``OUT/<machine>/``; return 0 (2: unknown class)."""
    parser = options.suite_parser(__doc__, repeats=5)
    parser.add_argument("--work", type=Path, default=None, help="folder for the photos (default: a temporary one)")
    parser.add_argument(
        "--classes",
        default="tshirt-top,trouser,pullover,dress",
        help="Fashion-MNIST classes, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--train-per-class", type=int, default=40, help="training photos per class (default: %(default)s)"
    )
    parser.add_argument(
        "--test-per-class",
        type=int,
        default=50,
        help="test items per class, each textured and plain (default: %(default)s)",
    )
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs per model (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size (default: %(default)s)")
    parser.add_argument(
        "--lr", type=float, default=3e-3, help="AdamW learning rate, cosine decay to 0 (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for training and prediction (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    begun = results.start("decode_textures", argv)
    classes = tuple(args.classes.split(","))
    unknown = sorted(set(classes) - set(FASHION_MNIST_CLASSES))
    if unknown:
        parser.error(f"unknown class(es) {unknown}; use Fashion-MNIST's: {', '.join(FASHION_MNIST_CLASSES)}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gcv-decode-textures-") as tmp:
        result = run(args.work or Path(tmp), classes, args.train_per_class, args.test_per_class,
                     [int(s) for s in args.seeds.split(",")], args.epochs, args.batch_size, args.lr, args.repeats)
    result |= {"command": begun.command, "machine_summary": begun.machine.summary(),
               "load_avg_end": " ".join(f"{x:.2f}" for x in os.getloadavg())}  # fmt: skip
    text = markdown(result)
    results.write(begun, to_rows(result), args.out, args.name, markdown=text)
    options.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
