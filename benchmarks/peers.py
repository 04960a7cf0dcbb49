"""``python -m benchmarks peers``: gcv classify against timm's and Ultralytics' own pipelines on the same folder.

Whole processes, one folder of photos (4 of every 5 at 600x866, the rest at 46x66, :mod:`benchmarks.photos`), the
same input size, batch size and CPU threads for everyone, the configurations taking turns within every repeat so a
busy spell hits them alike. Each row gives the model's GFLOPs per image (``torch.utils.flop_counter``), the whole
process's images/s (files over wall time from start to exit, median over ``--repeats``), the images/s of its
classifying loop once the model is open where the tool reports it, peak memory, and the ratio to GarmentCV's FP32
file. Every process must write one row per file, or the suite stops.

Configurations:

- GarmentCV: ``gcv classify`` with the FP32 and the INT8 file of gcv export (random-init resnet18: speed does not
  depend on the weights), default settings.
- torchvision eager with a DataLoader (:mod:`benchmarks.eager_baseline`), the way the original study classified.
- timm (pip): its inference pipeline (:mod:`benchmarks.peer_runners`), resnet18 in FP32, channels_last,
  channels_last with bf16 autocast, and ``torch.compile``.
- Ultralytics (pip): its resnet18 classify config (``yolo11-cls-resnet18.yaml``, about the same GFLOPs) as a
  PyTorch file and its own ONNX, OpenVINO FP32 and OpenVINO INT8 (NNCF) exports; and its own small classifier
  (``yolo26n-cls.yaml``) exported to OpenVINO FP32 and INT8.

With ``--train-per-class N`` a training section follows: ``gcv train`` (``--amp off`` and ``auto``) and
Ultralytics' classify training of its resnet18 config on the same Fashion-MNIST images (class folders, 4 of every
5 for training), same size, batch, threads and DataLoader workers, both from the same torchvision resnet18 weights
file; images/s of the last epoch's training pass (validation excluded) and the validation top-1. The recipes differ
(see the report).

Offline: torchvision's resnet18 weights are a random-init file written into a private ``TORCH_HOME``, and
Ultralytics runs with ``YOLO_OFFLINE=1``. Needs ``pip install '.[peers]'``; not part of the tests.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from benchmarks import options, results
from benchmarks.end_to_end import REPO_ROOT, baseline_command, classify_command, reported_rate, run_measured

logger = logging.getLogger("benchmarks")

CLASSES = ("bluzy", "bryuki")
#: Ultralytics' classify config built on torchvision's resnet18 (its ``TorchVision`` module), and its own classifier.
ULTRALYTICS_RESNET18 = "yolo11-cls-resnet18.yaml"
ULTRALYTICS_OWN = "yolo26n-cls.yaml"


@dataclass
class Config:
    """One configuration: a command that classifies the folder and writes ``out`` (CSV, one row per file)."""

    name: str
    tool: str
    gflops: float
    command: list[str]
    out: Path
    loop_rate: str  # where its loop images/s comes from: "json" (beside out), "stderr" or ""
    seconds: list[float] = field(default_factory=list)
    loop: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)


def _env(work: Path, threads: int) -> dict[str, str]:
    """The environment of every measured process: the private TORCH_HOME, Ultralytics offline, this checkout first."""
    env = dict(os.environ)
    env.update({
        "TORCH_HOME": str(work / "torch-home"), "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "ultralytics"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
    })  # fmt: skip
    return env


def _gflops(model: Any, size: int) -> float:
    """GFLOPs of one ``size``-px image through ``model`` (torch's FlopCounterMode: 2 FLOPs per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, size, size))
    return round(counter.get_total_flops() / 1e9, 2)


def _random_torchvision_weights(torch_home: Path) -> None:
    """A random-init resnet18 state dict where ``weights=ResNet18_Weights.DEFAULT`` looks for the download."""
    import torch
    from torchvision.models import ResNet18_Weights, resnet18

    path = torch_home / "hub" / "checkpoints" / Path(ResNet18_Weights.DEFAULT.url).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(resnet18().state_dict(), path)


def _imagenet_layout(root: Path, files: list[tuple[Path, str]], val_every: int = 5) -> Path:
    """Hard links ``root/train/<class>/`` and ``root/val/<class>/`` (every ``val_every``-th file) to ``files``."""
    for i, (path, label) in enumerate(files):
        split = "val" if i % val_every == val_every - 1 else "train"
        link = root / split / label / path.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, link)
    return root


def _ultralytics_files(work: Path, size: int, photos: list[Path]) -> dict[str, tuple[Path, float]]:
    """Ultralytics' models with our two classes, exported its own way: name -> (model path, GFLOPs)."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import ClassificationModel

    calibration = _imagenet_layout(work / "ultralytics-data", [(p, CLASSES[i % 2]) for i, p in enumerate(photos[:64])])
    made: dict[str, tuple[Path, float]] = {}
    for key, cfg, formats in (("resnet18", ULTRALYTICS_RESNET18, ("pt", "onnx", "openvino", "openvino-int8")),
                              ("yolo26n-cls", ULTRALYTICS_OWN, ("openvino", "openvino-int8"))):  # fmt: skip
        model = YOLO(cfg, task="classify")
        ClassificationModel.reshape_outputs(model.model, len(CLASSES))
        model.model.names = dict(enumerate(CLASSES))
        flops = _gflops(model.model.float(), size)
        pt = work / f"ultralytics-{key}.pt"
        model.save(pt)
        for fmt in formats:
            if fmt == "pt":
                made[f"{key} pt"] = (pt, flops)
                continue
            # Each export in its own copy: Ultralytics names the output after the .pt file.
            copy = work / f"ultralytics-{key}-{fmt}.pt"
            copy.write_bytes(pt.read_bytes())
            exported = YOLO(str(copy), task="classify").export(
                format=fmt.split("-")[0], imgsz=size, dynamic=fmt == "onnx", int8=fmt.endswith("int8"),
                data=str(calibration) if fmt.endswith("int8") else None, device="cpu", verbose=False,
            )  # fmt: skip
            made[f"{key} {fmt}"] = (Path(exported), flops)
    return made


def _prepare(work: Path, photos: list[Path], size: int, batch: int, threads: int, workers: int,
             peers: set[str]) -> list[Config]:  # fmt: skip
    """Write every model file; return the configurations to time."""
    import timm
    import torch

    from benchmarks.onnx_models import speed_files
    from garmentcv.models import build_model

    torch.set_num_threads(threads)
    folder = photos[0].parent
    runner = [sys.executable, "-m", "benchmarks.peer_runners"]
    common = ["--folder", str(folder), "--size", str(size), "--batch-size", str(batch), "--threads", str(threads),
              "--workers", str(workers)]  # fmt: skip
    gcv_flops = _gflops(build_model("resnet18", len(CLASSES), "none").model, size)
    (work / "gcv").mkdir(exist_ok=True)
    checkpoint, files = speed_files("resnet18", size, photos, work / "gcv", input_format="uint8-nhwc")
    configs = [Config(f"GarmentCV {p.upper()} file", "garmentcv", gcv_flops,
                      classify_command(folder, files[p], work / f"gcv-{p}.csv", batch), work / f"gcv-{p}.csv",
                      "stderr") for p in ("fp32", "int8")]  # fmt: skip
    if "torchvision" in peers:
        out = work / "eager.csv"
        configs.append(Config("torchvision eager + DataLoader", "torchvision", gcv_flops,
                              baseline_command(folder, checkpoint, out, batch), out, "stderr"))  # fmt: skip
    if "timm" in peers:
        timm_flops = _gflops(timm.create_model("resnet18", pretrained=False, num_classes=len(CLASSES)), size)
        for name, flags in (("FP32", []), ("channels_last", ["--channels-last"]),
                            ("channels_last + bf16 autocast", ["--channels-last", "--amp-dtype", "bfloat16"]),
                            ("torch.compile", ["--torchcompile"])):  # fmt: skip
            out = work / f"timm-{len(configs)}.csv"
            configs.append(Config(f"timm resnet18 {name}", "timm", timm_flops,
                                  [*runner, "timm", "--model", "resnet18", "--out", str(out), *common, *flags], out,
                                  "json"))  # fmt: skip
    if "ultralytics" in peers:
        for key, (path, flops) in _ultralytics_files(work, size, photos).items():
            out = work / f"ultralytics-{len(configs)}.csv"
            configs.append(Config(f"Ultralytics {key}", "ultralytics", flops,
                                  [*runner, "ultralytics", "--model", str(path), "--out", str(out), *common], out,
                                  "json"))  # fmt: skip
    return configs


def _rows_written(out: Path) -> int:
    with open(out, newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _time_all(configs: list[Config], files: int, repeats: int, env: dict[str, str]) -> None:
    """Run every configuration ``repeats`` times, taking turns; fill in their samples.

    Raises:
        click.ClickException: a process failed or did not write one row per file.
    """
    previous = dict(os.environ)
    os.environ.update(env)
    try:
        for repeat in range(repeats):
            for config in configs:
                config.out.unlink(missing_ok=True)
                run = run_measured(config.command, cwd=REPO_ROOT)
                if run.returncode != 0:
                    raise click.ClickException(f"{config.name} failed (exit {run.returncode}):\n{run.stderr_tail}")
                written = _rows_written(config.out)
                if written != files:
                    raise click.ClickException(f"{config.name} wrote {written} rows for {files} files")
                config.seconds.append(run.seconds)
                config.rss.append(run.peak_rss_mb)
                if config.loop_rate == "json":
                    config.loop.append(json.loads(config.out.with_suffix(".json").read_text())["images_per_s"])
                elif config.loop_rate == "stderr" and (rate := reported_rate(run.stderr_tail)) is not None:
                    config.loop.append(rate)
                logger.info("repeat %d/%d %s: %.2f s, %.1f images/s whole process", repeat + 1, repeats,
                            config.name, run.seconds, files / run.seconds)  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(previous)


def _classify_rows(configs: list[Config], files: int, size: int, batch: int, threads: int) -> list[dict[str, Any]]:
    base = files / statistics.median(configs[0].seconds)
    rows = []
    for c in configs:
        rate = files / statistics.median(c.seconds)
        rows.append({
            "section": "classify", "configuration": c.name, "tool": c.tool, "gflops": c.gflops, "files": files,
            "size": size, "batch": batch, "threads": threads, "images_per_s": round(rate, 2),
            "vs_garmentcv_fp32": round(rate / base, 3),
            "loop_images_per_s": round(statistics.median(c.loop), 2) if c.loop else None,
            "peak_rss_mb": round(max(c.rss), 1), "repeats": len(c.seconds),
            "spread": round((max(c.seconds) - min(c.seconds)) / statistics.median(c.seconds), 3),
        })  # fmt: skip
    return rows


def _train_section(work: Path, per_class: int, size: int, batch: int, epochs: int, threads: int, workers: int,
                   env: dict[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    """gcv train (--amp off, auto) and Ultralytics' classify training on the same images; one row per run."""
    from benchmarks.train_amp import make_subset
    from garmentcv.data.layouts import load_dataset

    for old in work.glob("peers-resnet18-*"):  # an earlier run's in a kept --work folder
        shutil.rmtree(old)
    subset = make_subset(per_class, work)
    labelled = [(Path(s.path), s.label) for s in load_dataset(subset).samples]
    data = _imagenet_layout(work / "train-data", labelled)
    rows = []
    for runner, model, amp in (("gcv-train", "resnet18", "off"), ("gcv-train", "resnet18", "auto"),
                               ("ultralytics-train", ULTRALYTICS_RESNET18, "off")):  # fmt: skip
        out = work / f"{runner}-{amp}.csv"
        command = [sys.executable, "-m", "benchmarks.peer_runners", runner, "--folder", str(data), "--model", model,
                   "--out", str(out), "--size", str(size), "--batch-size", str(batch), "--threads", str(threads),
                   "--workers", str(workers), "--epochs", str(epochs), "--amp", amp]  # fmt: skip
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise click.ClickException(f"{runner} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        figures = json.loads(out.with_suffix(".json").read_text())
        rows.append({
            "section": "train", "tool": "garmentcv" if runner == "gcv-train" else "ultralytics",
            "configuration": f"gcv train --amp {amp}" if runner == "gcv-train" else f"Ultralytics {model}",
            "train_images": figures["images"], "size": size, "batch": batch, "epochs": epochs, "threads": threads,
            "workers": workers, "precision": figures.get("precision", "float32"),
            "memory_format": figures.get("memory_format", "nchw"), "images_per_s": round(figures["images_per_s"], 2),
            "images_per_s_by_epoch": figures["images_per_s_by_epoch"], "val_top1": round(figures["val_top1"], 4),
        })  # fmt: skip
    off = rows[0]["images_per_s"]
    for row in rows:
        row["vs_gcv_amp_off"] = round(row["images_per_s"] / off, 3)
    return rows


#: What differs between the two training recipes (for the report).
RECIPE_NOTES = (
    "gcv train: its default recipe (AdamW with an exponential learning-rate decay; random resized crop, flip, "
    "rotation and colour jitter; `gcv train --help` gives the values), `--amp` as the row says (`auto`: the rule's "
    "pick on this CPU), a Linear head of 2 classes, DataLoaders made anew each epoch.",
    "Ultralytics: `optimizer=auto` (SGD or AdamW by iterations), its classify augmentations (RandomResizedCrop, "
    "flip, RandAugment, erasing), `amp` off on the CPU, a Conv + pool + Linear head (1280 channels) on the "
    "resnet18 backbone.",
)


def _markdown(rows: list[dict[str, Any]], run: results.Run) -> str:
    m = run.machine
    lines = [
        "# GarmentCV against its peers, whole processes",
        "",
        f"Command: `{run.command}`  ",
        f"Machine: {m.cpu_model}, {m.logical_cpus} CPUs, ISA flags: {' '.join(m.isa)}; load at start {m.load_avg}",
        "",
    ]
    classify = [r for r in rows if r["section"] == "classify"]
    if classify:
        first = classify[0]
        lines += [
            f"## Classifying {first['files']} photos, {first['size']} px, batch {first['batch']}, "
            f"{first['threads']} threads",
            "",
            "| configuration | GFLOPs | images/s (whole process) | vs GarmentCV FP32 | loop images/s | peak MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in classify:
            loop = "" if r["loop_images_per_s"] is None else f"{r['loop_images_per_s']:.1f}"
            lines.append(f"| {r['configuration']} | {r['gflops']:.2f} | {r['images_per_s']:.1f} | "
                         f"{r['vs_garmentcv_fp32']:.2f} | {loop} | {r['peak_rss_mb']:.0f} |")  # fmt: skip
        lines.append("")
    train = [r for r in rows if r["section"] == "train"]
    if train:
        first = train[0]
        lines += [
            f"## Training resnet18 on {first['train_images']} images, {first['size']} px, batch {first['batch']}, "
            f"{first['epochs']} epochs, {first['threads']} threads, {first['workers']} workers",
            "",
            "| configuration | precision | images/s (last epoch) | vs gcv train --amp off | validation top-1 |",
            "|---|---|---:|---:|---:|",
        ]
        for r in train:
            lines.append(f"| {r['configuration']} | {r['precision']} {r['memory_format']} | {r['images_per_s']:.1f} | "
                         f"{r['vs_gcv_amp_off']:.2f} | {r['val_top1']:.3f} |")  # fmt: skip
        lines += ["", *[f"- {note}" for note in RECIPE_NOTES], ""]
    return "\n".join(lines) + "\n"


@click.command(context_settings={"show_default": True})
@click.option("--files", type=click.IntRange(min=1), default=400, help="Photos in the folder.")
@click.option("--size", type=click.IntRange(min=32), default=224, help="Input side, px, for every tool.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per batch, every tool.")
@click.option("--threads", type=click.IntRange(min=1), default=os.cpu_count() or 1, help="CPU threads, every tool.")
@click.option("--workers", type=click.IntRange(min=0), default=2, help="DataLoader workers of timm and training.")
@click.option("--peers", default="torchvision,timm,ultralytics", help="Comma-separated peers to run beside GarmentCV.")
@click.option("--train-per-class", type=click.IntRange(min=0), default=0,
              help="Training section: Fashion-MNIST images per class (0: skip it).")  # fmt: skip
@click.option("--train-size", type=click.IntRange(min=32), default=224, help="Training section: input side, px.")
@click.option("--train-epochs", type=click.IntRange(min=1), default=2, help="Training section: epochs.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the photos, model files and rows here (default: a temporary folder).")  # fmt: skip
@options.click_shared(repeats=3)
def main(files: int, size: int, batch_size: int, threads: int, workers: int, peers: str, train_per_class: int,
         train_size: int, train_epochs: int, work: Path | None, out: Path, name: str | None, repeats: int,
         quiet: bool) -> None:  # fmt: skip
    """gcv classify against timm's and Ultralytics' pipelines on the same photos, and gcv train against Ultralytics'."""
    options.setup_logging(quiet)
    wanted = set(filter(None, peers.split(",")))
    unknown = wanted - {"torchvision", "timm", "ultralytics"}
    if unknown:
        raise click.BadParameter(f"{', '.join(sorted(unknown))}; choose from torchvision, timm, ultralytics",
                                 param_hint="--peers")  # fmt: skip
    begun = results.start("peers")
    with tempfile.TemporaryDirectory(prefix="gcv-peers-") as tmp:
        root = work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        env = _env(root, threads)
        os.environ.update({k: env[k] for k in ("TORCH_HOME", "YOLO_OFFLINE", "YOLO_CONFIG_DIR")})
        _random_torchvision_weights(root / "torch-home")

        from benchmarks.photos import write_photo_folder

        shutil.rmtree(root / "photos", ignore_errors=True)  # a kept --work folder's earlier photos
        folder = write_photo_folder(root / "photos", files)
        photos = sorted(folder.path.glob("img_*.jpg"))
        configs = _prepare(root, photos, size, batch_size, threads, workers, wanted)
        _time_all(configs, files, repeats, env)
        rows = _classify_rows(configs, files, size, batch_size, threads)
        if train_per_class:
            rows += _train_section(root, train_per_class, train_size, batch_size, train_epochs, threads, workers, env)
    text = _markdown(rows, begun)
    results.write(begun, rows, out, name, markdown=text, with_csv=False)
    options.report(text, quiet)


if __name__ == "__main__":
    main()
