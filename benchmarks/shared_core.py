"""End to end against the shared-core bound, for both model-file formats and thread splits.

Decoding threads and onnxruntime's threads share the same cores, so a pipeline that keeps both busy cannot beat
``bound = 1 / (1/model-only + 1/decode-only)`` images/s, each rate measured alone on all the cores. In one run,
for gcv export's FP32 and INT8 files of one arch, in format 1 (float32 input, ``load_input``) and format 2
(uint8 crops, ``load_crop``), this measures, interleaved repeat by repeat (median of ``--repeats``):

* ``model-only``: the session gcv classify opens (``open_model``, ``--threads`` intra-op threads) on batches of
  real crops of the photo folder;
* ``decode-only``: the pipeline's decode of the whole folder into one batch buffer, ``--workers`` threads;
* ``end-to-end``: ``predict_batches`` (gcv classify's pipeline) over the folder, in process (no start-up);

and reports end to end as a share of the bound. Random-init models (speed does not depend on the weights).

Run: ``python -m benchmarks shared_core`` (writes ``shared_core.json``, ``.md``, ``.csv`` to
``benchmarks/results/<machine>/``).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import onnx_models, options, results
from benchmarks.photos import write_photo_folder
from garmentcv.artifact import INPUT_FLOAT32, INPUT_UINT8
from garmentcv.image import load_crop, load_input
from garmentcv.infer.pipeline import predict_batches
from garmentcv.infer.runtimes.onnxruntime import LoadedModel, open_model


@dataclass(frozen=True)
class Figures:
    """Images/s of one model file with one split: model only, decode only, end to end, and the bound."""

    label: str
    threads: int
    workers: int
    batch_size: int
    model: float
    decode: float
    end_to_end: float

    @property
    def bound(self) -> float:
        """``1 / (1/model + 1/decode)``, images/s."""
        return 1.0 / (1.0 / self.model + 1.0 / self.decode)

    @property
    def share(self) -> float:
        """End to end as a share of :attr:`bound`, 0..1."""
        return self.end_to_end / self.bound


def _decode_all(model: LoadedModel, paths: list[Path], workers: int) -> None:
    info = model.info
    buffer = np.empty(info.input_shape(len(paths)), dtype=info.input_dtype)
    pp = info.preprocessing

    def one(i: int) -> None:
        if buffer.dtype == np.uint8:
            load_crop(paths[i], pp, out=buffer[i])
        else:
            buffer[i] = load_input(paths[i], pp)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(paths))))


def _real_batch(model: LoadedModel, paths: list[Path], batch_size: int) -> np.ndarray:
    load = load_crop if model.info.input_dtype == "uint8" else load_input
    return np.stack([load(paths[i % len(paths)], model.info.preprocessing) for i in range(batch_size)])


def measure(files: dict[str, Path], paths: list[Path], splits: list[tuple[int, int]], batch_size: int,
            repeats: int) -> list[Figures]:
    """Figures for every ``(label, file)`` and ``(threads, workers)`` split, repeats interleaved."""
    runs: dict[tuple[str, int, int], dict[str, list[float]]] = {}
    models = {
        (label, t): open_model(path, "cpu", threads=t) for label, path in files.items() for t in {s[0] for s in splits}
    }
    batches = {key: _real_batch(m, paths, batch_size) for key, m in models.items()}
    for key, m in models.items():  # warm-up
        m.logits(batches[key])
    for _ in range(repeats):
        for label in files:
            for threads, workers in splits:
                model, batch = models[(label, threads)], batches[(label, threads)]
                times = runs.setdefault((label, threads, workers), {"model": [], "decode": [], "e2e": []})
                start = time.perf_counter()
                for _ in range(3):
                    model.logits(batch)
                times["model"].append(3 * batch_size / (time.perf_counter() - start))
                start = time.perf_counter()
                _decode_all(model, paths, workers)
                times["decode"].append(len(paths) / (time.perf_counter() - start))
                start = time.perf_counter()
                for _ in predict_batches(model, [(p, p) for p in paths], batch_size=batch_size, workers=workers):
                    pass
                times["e2e"].append(len(paths) / (time.perf_counter() - start))
    return [
        Figures(label, threads, workers, batch_size, statistics.median(t["model"]), statistics.median(t["decode"]),
                statistics.median(t["e2e"]))
        for (label, threads, workers), t in runs.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``shared_core[-NAME].json``/``.md``/``.csv`` to ``OUT/<machine>/``; return 0."""
    parser = options.suite_parser(__doc__, repeats=3)
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/gcv-bench-shared"),
        help="folder for photos and models (default: %(default)s)",
    )
    parser.add_argument("--arch", default="resnet18", help="registered arch (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument(
        "--files", type=int, default=200, help="photos in the folder, 4 of 5 at 600x866 (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size of model-only and end to end (default: %(default)s)"
    )
    parser.add_argument(
        "--splits", default="2:2,2:1,1:1", help="threads:workers pairs, onnxruntime:decoding (default: %(default)s)"
    )
    parser.add_argument(
        "--precisions", default="fp32,int8", help="gcv export precisions measured (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    begun = results.start("shared_core", argv)
    folder = write_photo_folder(args.work / "photos", args.files)
    paths = sorted(folder.path.glob("*.jpg"))
    ckpt = onnx_models.write_random_checkpoint(args.arch, args.size, args.work / "random.pt")
    labelled = onnx_models.labelled_photos(args.work / "labelled", paths[:16])
    files: dict[str, Path] = {}
    for precision in args.precisions.split(","):
        for fmt, name in ((INPUT_FLOAT32, "float32"), (INPUT_UINT8, "uint8")):
            out = args.work / f"{args.arch}-{precision}-{name}.onnx"
            files[f"{precision} {fmt}"] = onnx_models.export_model(
                ckpt, precision, out, val_data=labelled, calibration_data=labelled, max_accuracy_drop=100.0,
                input_format=fmt)
    splits = [tuple(int(v) for v in s.split(":")) for s in args.splits.split(",")]
    figures = measure(files, paths, splits, args.batch_size, args.repeats)  # type: ignore[arg-type]
    machine, load = begun.machine, os.getloadavg()
    rows = [
        {
            "arch": args.arch,
            "size": args.size,
            "file": f.label,
            "threads": f.threads,
            "workers": f.workers,
            "batch": f.batch_size,
            "model_only_ips": round(f.model, 1),
            "decode_only_ips": round(f.decode, 1),
            "bound_ips": round(f.bound, 1),
            "end_to_end_ips": round(f.end_to_end, 1),
            "share_of_bound": round(f.share, 3),
            "images": len(paths),
            "repeats": args.repeats,
        }
        for f in figures
    ]
    lines = [
        "# End to end against the shared-core bound",
        "",
        f"{args.arch} at {args.size} px, {len(paths)} photos (4 of 5 at 600x866), batch {args.batch_size}, median of "
        f"{args.repeats} interleaved repeats, images/s, in process (no start-up). Machine: {machine.summary()}; load "
        f"average {' '.join(f'{x:.2f}' for x in load)} at the end.",
        "",
        "| file (precision, input) | threads:workers | model only | decode only | bound | end to end "
        "| share of bound |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(f"| {f.label} | {f.threads}:{f.workers} | {f.model:.1f} | {f.decode:.1f} | {f.bound:.1f} | "
                     f"{f.end_to_end:.1f} | {f.share:.0%} |")
    text = "\n".join(lines) + "\n"
    results.write(begun, rows, args.out, args.name, markdown=text, with_csv=True)
    options.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
