"""The peers' own ways to classify a folder and to train, one whole process each, for ``python -m benchmarks peers``.

Run as ``python -m benchmarks.peer_runners RUNNER [options]``; the process writes its rows to ``--out`` (CSV:
``path,label,confidence``, or one row per epoch for training) and its figures as JSON beside it (``--out`` with
``.json``) and on stdout: images, the seconds of its classifying (or training) loop once the model is open, and its
images/s. The caller times the whole process from outside.

Runners:

``timm``
    timm's inference pipeline as its ``inference.py`` builds it: ``timm.create_model``, the model's pretrained data
    config (``resolve_data_config``), ``timm.data.ImageDataset`` and ``create_loader`` with DataLoader workers,
    optionally channels_last, bf16 autocast (``--amp-dtype bfloat16``) and ``torch.compile`` (``--torchcompile``).
``ultralytics``
    ``YOLO(MODEL).predict(folder, stream=True)`` on a ``.pt`` file, an ``.onnx`` file or an OpenVINO folder
    (Ultralytics' own export), its classify preprocessing and AutoBackend.
``gcv-train``
    GarmentCV's training (its library function), for the same whole-process comparison.
``ultralytics-train``
    ``YOLO(CFG).train(data=DIR, ...)`` on an ImageNet-style folder (``train/<class>/``, ``val/<class>/``); the
    training passes are timed with Ultralytics' epoch callbacks (validation excluded).

None of these packages is a GarmentCV dependency: ``pip install '.[peers]'``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any


def _write_rows(out: Path, rows: list[tuple[str, str, float]]) -> None:
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "confidence"])
        writer.writerows((path, label, f"{confidence:.6f}") for path, label, confidence in rows)


def run_timm(args: argparse.Namespace) -> dict[str, Any]:
    """timm's inference pipeline on ``args.folder``; rows in file order of timm's dataset."""
    import timm
    import torch
    from timm.data import ImageDataset, create_loader, resolve_data_config

    torch.set_num_threads(args.threads)
    model = timm.create_model(args.model, pretrained=False, num_classes=len(args.classes)).eval()
    config = resolve_data_config({"input_size": (3, args.size, args.size)}, model=model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.torchcompile:
        model = torch.compile(model)
    dataset = ImageDataset(str(args.folder))
    loader = create_loader(
        dataset, input_size=config["input_size"], batch_size=args.batch_size, use_prefetcher=False,
        interpolation=config["interpolation"], mean=config["mean"], std=config["std"], crop_pct=config["crop_pct"],
        crop_mode=config.get("crop_mode", "center"), num_workers=args.workers,
    )  # fmt: skip
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp_dtype == "bfloat16")
    names = dataset.filenames(basename=False)
    rows: list[tuple[str, str, float]] = []
    started = time.perf_counter()
    with torch.inference_mode(), autocast:
        for images, _ in loader:
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            probs = model(images).float().softmax(dim=-1)
            conf, index = probs.max(dim=-1)
            for c, i in zip(conf.tolist(), index.tolist(), strict=True):
                rows.append((names[len(rows)], args.classes[i], c))
    seconds = time.perf_counter() - started
    _write_rows(args.out, rows)
    return {"images": len(rows), "loop_seconds": seconds}


def run_ultralytics(args: argparse.Namespace) -> dict[str, Any]:
    """Ultralytics' predict on ``args.folder`` with ``args.model`` (``.pt``, ``.onnx`` or an OpenVINO folder)."""
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(args.threads)
    model = YOLO(str(args.model), task="classify")
    rows: list[tuple[str, str, float]] = []
    started = time.perf_counter()
    for result in model.predict(source=str(args.folder), imgsz=args.size, batch=args.batch_size, stream=True,
                                verbose=False, device="cpu"):  # fmt: skip
        index = int(result.probs.top1)
        rows.append((str(result.path), result.names[index], float(result.probs.top1conf)))
    seconds = time.perf_counter() - started
    _write_rows(args.out, rows)
    return {"images": len(rows), "loop_seconds": seconds}


def run_ultralytics_train(args: argparse.Namespace) -> dict[str, Any]:
    """Ultralytics' classify training of ``args.model`` (a model YAML) on ``args.folder``; the training passes'
    images/s per epoch from its ``on_train_epoch_start``/``on_train_epoch_end`` callbacks, the last epoch's
    top-1 validation accuracy."""
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(args.threads)
    model = YOLO(str(args.model), task="classify")
    epochs: list[dict[str, float]] = []
    state: dict[str, float] = {}

    def epoch_start(trainer: Any) -> None:
        state["started"] = time.perf_counter()

    def epoch_end(trainer: Any) -> None:
        seconds = time.perf_counter() - state["started"]
        images = len(trainer.train_loader.dataset)
        epochs.append({"epoch": len(epochs) + 1, "seconds": seconds, "images": images,
                       "images_per_s": images / seconds})  # fmt: skip

    model.add_callback("on_train_epoch_start", epoch_start)
    model.add_callback("on_train_epoch_end", epoch_end)
    model.train(data=str(args.folder), epochs=args.epochs, imgsz=args.size, batch=args.batch_size,
                workers=args.workers, device="cpu", amp=False, plots=False, project=str(args.out.parent),
                name="ultralytics-train", exist_ok=True, verbose=False, val=True, seed=0)  # fmt: skip
    top1 = float(model.trainer.metrics.get("metrics/accuracy_top1", float("nan")))
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "seconds", "images", "images_per_s"])
        writer.writeheader()
        writer.writerows(epochs)
    last = epochs[-1]
    return {"images": last["images"], "loop_seconds": last["seconds"], "val_top1": top1,
            "images_per_s_by_epoch": [round(e["images_per_s"], 2) for e in epochs]}  # fmt: skip


def run_gcv_train(args: argparse.Namespace) -> dict[str, Any]:
    """gcv train's library function on ``args.folder`` (``train/`` and ``val/`` class folders) with ``--amp
    args.amp_dtype`` (:func:`benchmarks.train_amp.train_rows`, which times the training passes only), from the
    torchvision resnet18 weights file in ``$TORCH_HOME``."""
    import torch

    from benchmarks.train_amp import train_rows

    torch.set_num_threads(args.threads)
    (row,) = train_rows(args.folder / "train", args.size, args.epochs, (args.amp,), (args.model,), args.out.parent,
                        args.batch_size, "peers", 0.0, weights="imagenet", val_data=args.folder / "val",
                        workers=args.workers)  # fmt: skip
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "images_per_s"])
        writer.writerows(enumerate(row["images_per_s_by_epoch"], start=1))
    return {"images": row["train_images"], "loop_seconds": row["train_images"] / row["images_per_s"],
            "val_top1": row["best_val_accuracy"], "images_per_s_by_epoch": row["images_per_s_by_epoch"],
            "precision": row["precision"], "memory_format": row["memory_format"]}  # fmt: skip


RUNNERS = {"gcv-train": run_gcv_train, "timm": run_timm, "ultralytics": run_ultralytics,
           "ultralytics-train": run_ultralytics_train}  # fmt: skip


def run_cli(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the runner, write and print its figures; exit code 0 (errors raise)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_runners", description=__doc__.splitlines()[0])
    parser.add_argument("runner", choices=sorted(RUNNERS))
    parser.add_argument("--folder", type=Path, required=True, help="images (a training dataset for -train)")
    parser.add_argument("--model", required=True, help="timm model name, Ultralytics model file or YAML")
    parser.add_argument("--out", type=Path, required=True, help="CSV rows written here")
    parser.add_argument("--classes", default="bluzy,bryuki", help="class names in index order (timm)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--channels-last", action="store_true", help="timm: channels_last model and input")
    parser.add_argument("--amp-dtype", choices=("float32", "bfloat16"), default="float32", help="timm autocast")
    parser.add_argument("--torchcompile", action="store_true", help="timm: torch.compile the model")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default: %(default)s)")
    parser.add_argument("--amp", default="off", help="gcv train --amp (default: %(default)s)")
    args = parser.parse_args(argv)
    args.classes = tuple(args.classes.split(","))
    figures = RUNNERS[args.runner](args)
    figures["images_per_s"] = figures["images"] / figures["loop_seconds"]
    text = json.dumps(figures)
    args.out.with_suffix(".json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli())
