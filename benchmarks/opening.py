"""Opening the model while the first batches decode: ``classify_folder`` end to end, as it runs
(:class:`garmentcv.infer.runtimes.OpeningModel`) against opening the model first, then decoding.

Per file (gcv export FP32 and INT8, default uint8 input, random-init ``--arch``) and ``--runtime``
(onnxruntime, auto), ``classify_folder`` on the photo folder (benchmarks/photos.py) with the model opened:

* ``in the background``: as gcv classify runs (``OpeningModel``);
* ``first``: :func:`garmentcv.infer.runtimes.open_planned` before any decoding (the way before this change);
* ``in the background + warm-up batch``: a batch of zeros through the model right after opening, still in the
  background (the variant measured and not adopted).

Each variant's rate includes opening, as a user's run does; variants take turns in every round, and the median of
``--rounds`` is reported. Writes ``opening.csv`` and ``opening.md`` into ``--out``::

    python -m benchmarks opening                                     # about 2 min on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import onnx_models, options, photos, results
from garmentcv.fsutil import atomic_write
from garmentcv.infer.engines import local as classify_module
from garmentcv.infer.runtimes import Model, OpeningModel, RuntimePlan, open_planned


class _WarmedUp(OpeningModel):
    """:class:`OpeningModel` that also runs one batch of zeros in the background after opening."""

    def __init__(self, plan: RuntimePlan, threads: int | None = None, warmup_batch: int = 32) -> None:
        super().__init__(plan, threads)
        opened = self._future

        def warm() -> Model:
            model = opened.result()
            model.logits(np.zeros(plan.info.input_shape(warmup_batch), dtype=plan.info.input_dtype))
            return model

        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcv-warm")
        self._future = pool.submit(warm)
        pool.shutdown(wait=False)


def variants(batch_size: int) -> dict[str, Callable[..., Model]]:
    """How ``classify_folder`` gets its model in each variant (it calls ``OpeningModel(plan, threads)``)."""
    return {
        "in the background": OpeningModel,
        "first": lambda plan, threads=None: open_planned(plan, threads),
        "in the background + warm-up batch": lambda plan, threads=None: _WarmedUp(plan, threads, batch_size),
    }


def measure(files: dict[str, Path], folder: Path, work: Path, batch_size: int, rounds: int) -> list[dict]:
    """Median images/s of ``classify_folder`` per (file, runtime, variant), interleaved rounds."""
    rates: dict[tuple[str, str, str], list[float]] = {}
    ran_on: dict[tuple[str, str, str], str] = {}
    real = classify_module.OpeningModel
    try:
        for _ in range(rounds):
            for precision, path in files.items():
                for runtime in ("onnxruntime", "auto"):
                    for name, make in variants(batch_size).items():
                        classify_module.OpeningModel = make  # type: ignore[assignment, misc]
                        cfg = classify_module.ClassifyConfig(folder=folder, out=work / "out.csv", model=path,
                                                             runtime=runtime, provider="cpu", batch_size=batch_size,
                                                             progress=False)  # fmt: skip
                        started = time.perf_counter()
                        summary = classify_module.classify_folder(cfg)
                        key = (precision, runtime, name)
                        rates.setdefault(key, []).append(summary.files / (time.perf_counter() - started))
                        ran_on[key] = f"{summary.runtime} {summary.inference_precision}"
    finally:
        classify_module.OpeningModel = real  # type: ignore[misc]
    return [{"file": k[0], "runtime": k[1], "variant": k[2], "ran_on": ran_on[k], "images_per_s": statistics.median(v),
             "rounds": [round(x, 1) for x in v]} for k, v in rates.items()]  # fmt: skip


def report(rows: list[dict], header: str) -> str:
    """Markdown: one row per (file, runtime, variant) with the ratio to ``first`` in the same run."""
    first = {(r["file"], r["runtime"]): r["images_per_s"] for r in rows if r["variant"] == "first"}
    lines = ["# Opening the model while the first batches decode", "", header, "",
             "| file | --runtime | ran on | model opened | images/s | vs first | rounds |",
             "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['runtime']} | {r['ran_on']} | {r['variant']} | {r['images_per_s']:.1f} | "
                     f"{r['images_per_s'] / first[(r['file'], r['runtime'])]:.2f} | {r['rounds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``opening[-NAME].json``/``.md``/``.csv`` to ``OUT/<machine>/``; return 0."""
    parser = options.suite_parser(__doc__, repeats=3)
    parser.add_argument("--arch", default="resnet18", help="registered arch, random init (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument(
        "--files", type=int, default=200, help="photos in the folder, 4 of 5 at 600x866 (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--rounds", dest="repeats", type=int, help=argparse.SUPPRESS)  # the former name of --repeats
    args = parser.parse_args(argv)
    args.rounds = args.repeats
    begun = results.start("opening", argv)
    with tempfile.TemporaryDirectory(prefix="gcv-opening-") as tmp:
        work = Path(tmp)
        folder = photos.write_photo_folder(work / "photos", args.files)
        _, files = onnx_models.speed_files(args.arch, args.size, sorted(folder.path.glob("*.jpg")), work,
                                           input_format="uint8-nhwc")
        rows = measure(files, folder.path, work, args.batch, args.rounds)
    machine = begun.machine
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header = (f"{args.arch} {args.size} px, {args.files} photos, batch {args.batch}, uint8 files, `classify_folder` in "
              f"process (opening included), median of {args.rounds} interleaved rounds. Machine: {machine.summary()}; "
              f"load average {load} at the end.")
    text = report(rows, header)
    path = results.write(begun, rows, args.out, args.name, markdown=text)
    with atomic_write(path.with_suffix(".csv"), newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "runtime", "ran_on", "variant", "images_per_s", "rounds"])
        for r in rows:
            writer.writerow([r["file"], r["runtime"], r["ran_on"], r["variant"], f"{r['images_per_s']:.2f}",
                             " ".join(map(str, r["rounds"]))])
    options.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
