"""How long does ``gcv data audit`` take, and how much memory, at 10,000 and 60,000 images? Offline.

Data: the ten Fashion-MNIST classes of its training file (``gcv data fashion-mnist --all-classes``, 60,000 images of
28x28 px, written once in ``--work``); the first ``N / 10`` images of each class make the dataset of size N. The
model file is the curate experiment's embedder (:func:`benchmarks.experiments.curate.build_embedder`, resnet18 at
32 px with the ``embedding`` output), built or reused from ``--work``.

Each size runs the whole command, ``gcv data audit MANIFEST --model EMBEDDER --out DIR`` (embedding, the K-fold
linear head, cleanlab, duplicates, outliers, the fix list and the report page), as its own process: wall time and its
peak resident memory (``ru_maxrss`` of that process, from :func:`os.wait4`), with images/s. The stages' own times come
from the command's log. Writes ``OUT/<machine>/audit_scale[-NAME].json`` and ``.md``. Usage::

    python -m benchmarks audit_scale --work experiments/curate [--sizes 10000,60000]
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from benchmarks import options, results
from benchmarks.experiments.curate import build_embedder
from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging, verbose_option
from garmentcv.cpus import available_cpus
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist
from garmentcv.data.layouts import load_dataset

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
#: A stage's time in the audit's log: ``NAME took SECONDS s``.
_STAGE = re.compile(r"audit stage (?P<stage>[a-z -]+): (?P<seconds>[0-9.]+) s")


def ten_class_train_set(work: Path, source: Path) -> Path:
    """The ten-class Fashion-MNIST training file as images in ``work/ten-train`` (written once); its train folder."""
    folder = work / "ten-train"
    if not (folder / "test_labels.csv").is_file():
        write_fashion_mnist(folder, source, all_classes=True)
    return folder / "train"


def manifest(train: Path, size: int, out: Path) -> Path:
    """A ``path,label`` manifest of the first ``size / classes`` images of each class of ``train``."""
    dataset = load_dataset(train)
    per_class = size // len(dataset.classes)
    kept = [s for c in dataset.classes for s in [s for s in dataset.samples if s.label == c][:per_class]]
    out.write_text("path,label\n" + "".join(f"{s.path.resolve()},{s.label}\n" for s in kept), encoding="utf-8")
    return out


def timed_audit(data: Path, model: Path, out: Path) -> dict[str, Any]:
    """Run ``gcv data audit`` as its own process: wall seconds, peak resident memory (MB) and the stages' seconds.

    Raises:
        RuntimeError: the command failed.
    """
    command = [sys.executable, "-c", "from garmentcv.cli import main; main()", "data", "audit", str(data), "--model",
               str(model), "--out", str(out), "-v"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile(mode="w+") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    if proc.returncode != 0:
        raise RuntimeError(f"gcv data audit exited with {proc.returncode}: {text[-2000:]}")
    stages = {m["stage"].strip(): float(m["seconds"]) for m in _STAGE.finditer(text)}
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stages": stages}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("experiments/curate"),
              help="Folder for the data and the embedder (shared with the curate experiment, reused when present).")
@click.option("--sizes", default="10000,60000", help="Dataset sizes, comma-separated.")
@click.option("--pretrain-per-class", type=click.IntRange(min=10), default=1000,
              help="Images per class of the embedder's seven classes (when it is built).")
@click.option("--epochs", type=click.IntRange(min=1), default=3, help="Epochs of the embedder's training.")
@click.option("--image-size", type=click.IntRange(min=16), default=32, help="Model input side in px.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
              help="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist).")
@options.click_shared(repeats=None, quiet=False)
@quiet_option
@verbose_option
@handle_errors
def main(work: Path, sizes: str, pretrain_per_class: int, epochs: int, image_size: int, source: Path, out: Path,
         name: str | None, quiet: bool, verbose: bool) -> None:
    """gcv data audit's wall time and peak memory per dataset size."""
    setup_logging(quiet, verbose)
    begun = results.start("audit_scale")
    model, _ = build_embedder(work, pretrain_per_class, pretrain_per_class, epochs, image_size, source)
    train = ten_class_train_set(work, source)
    rows = []
    for size in (int(s) for s in sizes.split(",") if s):
        data = manifest(train, size, work / f"audit-scale-{size}.csv")
        figures = timed_audit(data, model, work / f"audit-scale-{size}")
        rows.append({"images": size, **figures, "images_per_s": round(size / figures["seconds"], 1)})
        logger.info("%d images: %.1f s, peak %.0f MB", size, figures["seconds"], figures["peak_rss_mb"])
    stages = list(dict.fromkeys(s for r in rows for s in r["stages"]))
    lines = [f"| images | seconds | images/s | peak memory MB | {' | '.join(stages)} |",
             "|---:|---:|---:|---:|" + "---:|" * len(stages)]
    for r in rows:
        cells = " | ".join(f"{r['stages'].get(s, float('nan')):.1f}" for s in stages)
        lines.append(f"| {r['images']:,} | {r['seconds']} | {r['images_per_s']} | {r['peak_rss_mb']:,.0f} | {cells} |")
    lines += ["", f"gcv data audit as its own process per size, {available_cpus()} CPUs; stage columns in seconds "
              "from the command's log."]
    text = "\n".join(lines) + "\n"
    results.write(begun, rows, out, name, markdown=text)
    if not quiet:
        click.echo(text)


if __name__ == "__main__":
    sys.exit(main())
