"""How gcv classify should split the CPUs between decoding threads and onnxruntime threads.

Times :func:`garmentcv.infer.classify.classify_folder` end to end on one photo folder (benchmarks.photos) with
one exported model for each ``(threads, workers)`` pair, the pairs interleaved and repeated so that drift of
a shared machine hits every pair alike; reports the median images/s of each pair and its ratio to the
default split (:func:`garmentcv.infer.pipeline.split_cpus`).

    python -m benchmarks threads [--arch resnet18] [--size 224] \
        [--precision fp32 int8] [--files 200] [--repeats 3]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import onnx_models, options, photos, results
from benchmarks.machine import MachineInfo
from garmentcv.cpus import available_cpus
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.pipeline import split_cpus


def _pairs(cpus: int) -> list[tuple[int, int]]:
    """Every (threads, workers) with each of 1..cpus, plus the default."""
    pairs = {(t, w) for t in range(1, cpus + 1) for w in range(1, cpus + 1)}
    pairs.add(split_cpus(None, None, cpus))
    return sorted(pairs)


def run(
    arch: str, size: int, precisions: list[str], files: int, repeats: int, machine: MachineInfo
) -> tuple[str, list[dict[str, Any]]]:
    """Measure every split; return the markdown table and its rows (precision, threads, workers, images/s, vs
    default)."""
    rows: list[dict[str, Any]] = []
    cpus = available_cpus()
    default = split_cpus(None, None, cpus)
    lines = [f"# gcv-classify thread split, {arch} {size} px, {files} photos", "",
             f"Machine: {machine.summary()}; available CPUs {cpus}; default split (threads, workers) {default}.",
             f"Median of {repeats} interleaved runs; images/s of this run (wall time of classify_folder).", "",
             "| precision | threads | workers | images/s | vs default |", "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="gcv-threads-") as tmp:
        work = Path(tmp)
        folder = photos.write_photo_folder(work / "photos", files)
        checkpoint = onnx_models.write_random_checkpoint(arch, size, work / "model.pt")
        labelled = onnx_models.labelled_photos(work / "labelled", sorted(folder.path.glob("*.jpg"))[:16])
        for precision in precisions:
            model = onnx_models.export_model(checkpoint, precision, work / f"model.{precision}.onnx", val_data=labelled,
                                             calibration_data=labelled, max_accuracy_drop=100.0)
            rates: dict[tuple[int, int], list[float]] = {p: [] for p in _pairs(cpus)}
            for _ in range(repeats):
                for threads, workers in rates:
                    cfg = ClassifyConfig(folder=folder.path, out=work / "out.csv", model=model, threads=threads,
                                         workers=workers, progress=False)
                    started = time.perf_counter()
                    summary = classify_folder(cfg)
                    rates[(threads, workers)].append(summary.files / (time.perf_counter() - started))
            base = statistics.median(rates[default])
            for (threads, workers), values in rates.items():
                median = statistics.median(values)
                mark = " (default)" if (threads, workers) == default else ""
                lines.append(f"| {precision} | {threads} | {workers}{mark} | {median:.1f} | {median / base:.2f} |")
                rows.append(
                    {
                        "precision": precision,
                        "threads": threads,
                        "workers": workers,
                        "default": bool(mark),
                        "images_per_s": round(median, 1),
                        "vs_default": round(median / base, 2),
                        "repeats": repeats,
                    }
                )
    return "\n".join(lines) + "\n", rows


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``threads[-NAME].json``/``.md`` to ``OUT/<machine>/``; return 0."""
    parser = options.suite_parser(__doc__, repeats=3)
    parser.add_argument("--arch", default="resnet18", help="registered arch (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32", "int8"], help="exported precisions (default: %(default)s)"
    )
    parser.add_argument("--files", type=int, default=200, help="photos in the folder (default: %(default)s)")
    args = parser.parse_args(argv)
    begun = results.start("threads", argv)
    text, rows = run(args.arch, args.size, args.precision, args.files, args.repeats, begun.machine)
    results.write(begun, rows, args.out, args.name, markdown=text)
    options.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
