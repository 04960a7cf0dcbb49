"""The baseline way to classify a folder: torchvision eager + DataLoader, which ``gcv classify`` must beat.

torchvision transforms on PIL images (Resize, CenterCrop, ToTensor, Normalize), a ``DataLoader`` over the
files, the eager PyTorch model in FP32 under ``torch.inference_mode()``, and a per-image Python loop over
each batch's outputs (``.item()`` per image) that builds the rows, written as CSV at the end. Same
preprocessing as the checkpoint's, so the predictions match ``gcv classify``'s.

Run as ``python -m benchmarks.eager_baseline --checkpoint CK --folder DIR --out rows.csv``; the benchmark runs it
in a fresh process to measure its wall time and peak memory.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from benchmarks.onnx_models import load_eager
from garmentcv.image import is_image_file


class FolderImages(Dataset):
    """Every image file in a folder (sorted), as ``(tensor (3, S, S), path)``."""

    def __init__(self, folder: Path, transform: T.Compose) -> None:
        self.paths = sorted(str(p) for p in folder.iterdir() if p.is_file() and is_image_file(p))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.paths[i]


def classify_eager_baseline(checkpoint: Path, folder: Path, out: Path, batch_size: int, workers: int) -> int:
    """Classify every image in ``folder`` torchvision eager + DataLoader; write ``path,label,confidence`` rows; return
    the count."""
    model, pp, classes = load_eager(checkpoint)
    transform = T.Compose([
        T.Resize(pp.resize, interpolation=T.InterpolationMode(pp.interpolation)),
        T.CenterCrop(pp.crop),
        T.ToTensor(),
        T.Normalize(pp.mean, pp.std),
    ])
    loader = DataLoader(FolderImages(folder, transform), batch_size=batch_size, num_workers=workers)
    rows = []
    with torch.inference_mode():
        for images, paths in loader:
            probs = torch.softmax(model(images), dim=1)
            for path, p in zip(paths, probs, strict=True):
                index = int(p.argmax().item())
                rows.append((path, classes[index], float(p[index].item())))
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "confidence"])
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    count = classify_eager_baseline(args.checkpoint, args.folder, args.out, args.batch_size, args.workers)
    seconds = time.perf_counter() - start
    print(f"{count} images, {seconds:.2f} s, {count / seconds:.2f} images/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
