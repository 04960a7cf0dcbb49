"""gcv classify --engine ray against the local engine on one folder, and what Ray's start-up costs.

One photo folder (benchmarks.photos) and one gcv export FP32 model; in one process, interleaved and repeated so
that drift of a shared machine hits every configuration alike:

* ``local``: :func:`garmentcv.infer.classify.classify_folder` with its default threads (all CPUs);
* ``ray N x K``: :func:`garmentcv.infer.engines.ray.classify_ray` with N workers of K CPUs each on a Ray instance
  started once for the benchmark (``ray.init(num_cpus=<available CPUs>)``), so these rates include each run's
  actor start (model session opened in every worker) and Ray's task scheduling, not Ray's own start-up;
* Ray's start-up: ``ray.init`` + ``ray.shutdown`` of a local instance, timed separately (median of the repeats).

Reports the median images/s of each configuration (files / wall time of the library call) and its ratio to the
local engine, and writes a markdown table. Usage:

    python -m benchmarks ray_engine [--files 200] [--size 224] [--repeats 3]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import onnx_models, photos, results
from benchmarks import options as shared
from benchmarks.machine import MachineInfo
from garmentcv.cpus import available_cpus
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.engines.ray import RayOptions, classify_ray


def _configs(cpus: int) -> list[tuple[str, RayOptions | None]]:
    """The local engine, then Ray with 1 and 2 one-CPU workers, and one worker holding every CPU."""
    configs: list[tuple[str, RayOptions | None]] = [("local", None)]
    for workers, per in sorted({(1, 1), (min(2, cpus), 1), (1, cpus)}):
        configs.append((f"ray {workers} x {per} CPU", RayOptions(num_workers=workers, cpus_per_worker=per)))
    return configs


def _startup_seconds(ray: object, cpus: int) -> float:
    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")  # type: ignore[attr-defined]
    ray.shutdown()  # type: ignore[attr-defined]
    return time.perf_counter() - started


def run(arch: str, size: int, files: int, repeats: int, machine: MachineInfo) -> tuple[str, list[dict[str, Any]]]:
    """Measure every engine; return the markdown table and its rows (engine, images/s, vs local, runs; Ray's
    start-up)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cpus = available_cpus()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gcv-ray-bench-") as tmp:
        work = Path(tmp)
        folder = photos.write_photo_folder(work / "photos", files)
        checkpoint = onnx_models.write_random_checkpoint(arch, size, work / "model.pt")
        labelled = onnx_models.labelled_photos(work / "labelled", sorted(folder.path.glob("*.jpg"))[:16])
        model = onnx_models.export_model(checkpoint, "fp32", work / "model.onnx", val_data=labelled,
                                         max_accuracy_drop=100.0)
        startups = [_startup_seconds(ray, cpus) for _ in range(repeats)]
        configs = _configs(cpus)
        rates: dict[str, list[float]] = {name: [] for name, _ in configs}
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        try:
            for _ in range(repeats):
                for name, options in configs:
                    cfg = ClassifyConfig(folder=folder.path, out=work / "out.csv", model=model, progress=False)
                    started = time.perf_counter()
                    summary = classify_folder(cfg) if options is None else classify_ray(cfg, options)
                    rates[name].append(summary.files / (time.perf_counter() - started))
        finally:
            ray.shutdown()
    load_after = os.getloadavg()
    base = statistics.median(rates["local"])
    lines = [
        f"# gcv-classify --engine ray vs local, {arch} {size} px FP32, {files} photos", "",
        f"Machine: {machine.summary()}; available CPUs {cpus}; ray {ray.__version__}.",
        f"Load average (1, 5, 15 min) {tuple(round(x, 2) for x in load_before)} before, "
        f"{tuple(round(x, 2) for x in load_after)} after.",
        f"Median of {repeats} interleaved runs; images/s = files / wall time of the library call (Ray runs include "
        "their workers' start and model load, not Ray's own start-up).", "",
        "| engine | images/s | vs local | runs (images/s) |", "|---|---:|---:|---|",
    ]
    for name, values in rates.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {median / base:.2f} | {', '.join(f'{v:.1f}' for v in values)} |")
    lines += ["", f"Ray start-up (`ray.init(num_cpus={cpus})` + `ray.shutdown()` of a local instance): median "
              f"{statistics.median(startups):.1f} s (runs: {', '.join(f'{s:.1f}' for s in startups)})."]
    rows: list[dict[str, Any]] = [
        {"section": "engine", "engine": name, "images_per_s": round(statistics.median(values), 1),
         "vs_local": round(statistics.median(values) / base, 2), "runs": [round(v, 1) for v in values]}
        for name, values in rates.items()]  # fmt: skip
    rows.append({"section": "ray-startup", "seconds": round(statistics.median(startups), 1),
                 "runs": [round(s, 1) for s in startups], "ray": ray.__version__})  # fmt: skip
    return "\n".join(lines) + "\n", rows


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``ray_engine[-NAME].json``/``.md`` to ``OUT/<machine>/``; return 0."""
    parser = shared.suite_parser(__doc__, repeats=3)
    parser.add_argument("--arch", default="resnet18", help="registered arch (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument("--files", type=int, default=200, help="photos in the folder (default: %(default)s)")
    args = parser.parse_args(argv)
    begun = results.start("ray_engine", argv)
    text, rows = run(args.arch, args.size, args.files, args.repeats, begun.machine)
    results.write(begun, rows, args.out, args.name, markdown=text)
    shared.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
