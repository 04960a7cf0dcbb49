"""gcv classify's steady state against its fixed start (the share-of-bound target): ``classify_folder`` on
N and on 3N photos, per file and ``--runtime``, so that a run's time splits into a marginal rate and a fixed cost.

For ``t(N)`` and ``t(3N)`` (seconds, opening the model included, as a user's run):

* marginal rate ``= 2N / (t(3N) - t(N))`` images/s: what each further photo costs, start excluded;
* fixed start ``= t(N) - N / marginal`` s: opening (compiling) the model, the first batch's kernel set-up, and
  the tail of the last batch;
* the shared-core bound ``1 / (1/model only + 1/decode only)`` of the runtime and inference precision used,
  measured in the same run (:func:`benchmarks.openvino_rows.model_only_rows`,
  :func:`benchmarks.openvino_rows.decode_rate`); the target is 85% of it.

If the marginal rate reaches the bound and the N-photo rate does not, the miss is the fixed start, which a short
run cannot hide. Files as :mod:`benchmarks.openvino_rows` writes them (gcv export, uint8 input, random init);
configurations interleaved in ``--rounds`` rounds, medians of ``t``. Writes ``NAME.md`` and ``NAME.json``::

    python -m benchmarks steady_state                                     # about 2.5 min on 2 cores (224 px)
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python -m benchmarks steady_state --name amx_masked
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import onnx_models, options, photos, results
from benchmarks.openvino_rows import decode_rate, model_only_rows, shared_core_bound

RUNTIMES = ("onnxruntime", "auto")


def measure(files: dict[str, Path], small: Path, large: Path, work: Path, batch_size: int,
            rounds: int) -> list[dict[str, Any]]:
    """Interleaved ``classify_folder`` runs on both folders; one row per (file, runtime) with the median times."""
    from garmentcv.infer.classify import ClassifyConfig, classify_folder

    times: dict[tuple[str, str, str], list[float]] = {}
    used: dict[tuple[str, str], tuple[str, str]] = {}
    counts = {}
    for _ in range(rounds):
        for precision, path in files.items():
            for runtime in RUNTIMES:
                for name, folder in (("small", small), ("large", large)):
                    cfg = ClassifyConfig(folder=folder, out=work / "out.csv", model=path, runtime=runtime,
                                         provider="cpu", batch_size=batch_size, progress=False)
                    started = time.perf_counter()
                    summary = classify_folder(cfg)
                    times.setdefault((precision, runtime, name), []).append(time.perf_counter() - started)
                    used[(precision, runtime)] = (summary.runtime, summary.inference_precision)
                    counts[name] = summary.files
    rows = []
    for precision in files:
        for runtime in RUNTIMES:
            t_small = statistics.median(times[(precision, runtime, "small")])
            t_large = statistics.median(times[(precision, runtime, "large")])
            rows.append({"file": precision, "runtime": runtime, "ran_on": used[(precision, runtime)][0],
                         "inference_precision": used[(precision, runtime)][1], "files": counts["small"],
                         "files_large": counts["large"], "t_small_s": t_small, "t_large_s": t_large,
                         "t_small_rounds": [round(t, 3) for t in times[(precision, runtime, "small")]],
                         "t_large_rounds": [round(t, 3) for t in times[(precision, runtime, "large")]]})
    return rows


def derive(row: dict[str, Any], model_rate: float | None, decode: float) -> dict[str, float]:
    """Rates, marginal rate, fixed start and shares of the bound of one row (see the module docstring).

    Args:
        row: from :func:`measure` (``files``, ``files_large``, ``t_small_s``, ``t_large_s``).
        model_rate: model-only images/s of the runtime and precision the row ran on.
        decode: decode-only images/s of the row's file.
    """
    n, n_large = row["files"], row["files_large"]
    marginal = (n_large - n) / (row["t_large_s"] - row["t_small_s"])
    limit = shared_core_bound(model_rate, decode)
    rate = n / row["t_small_s"]
    return {"rate": rate, "rate_large": n_large / row["t_large_s"], "marginal": marginal,
            "start_s": row["t_small_s"] - n / marginal, "bound": limit, "share": rate / limit,
            "marginal_share": marginal / limit}


def report(result: dict[str, Any]) -> str:
    """Markdown: one row per (file, runtime) with both rates, the marginal rate, the fixed start and the shares of
    the shared-core bound."""
    model_rate = {(r["file"], r["runtime"], r["precision"]): r["images_per_s"] for r in result["model_only"]}
    rows = result["rows"]
    n, n_large = rows[0]["files"], rows[0]["files_large"]
    lines = [
        "# Steady state and fixed start of gcv-classify",
        "",
        result["header"],
        "",
        f"| file | --runtime | ran on | {n} photos, images/s | {n_large} photos | marginal images/s | fixed start, s "
        f"| bound | {n} photos, of bound | marginal, of bound |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        precision = r["inference_precision"] if r["ran_on"] == "openvino" else r["file"]
        d = derive(r, model_rate.get((r["file"], r["ran_on"], precision)), result["decode_images_per_s"][r["file"]])
        lines.append(f"| {r['file']} | {r['runtime']} | {r['ran_on']} {r['inference_precision']} | {d['rate']:.1f} | "
                     f"{d['rate_large']:.1f} | {d['marginal']:.1f} | {d['start_s']:.2f} | {d['bound']:.1f} | "
                     f"{d['share']:.0%} | {d['marginal_share']:.0%} |")
    decode = ", ".join(f"{k} file {v:.1f}" for k, v in result["decode_images_per_s"].items())
    models = ", ".join(f"{k[0]} on {k[1]} {k[2]} {v:.1f}" for k, v in model_rate.items())
    lines += ["", f"Decode only: {decode} images/s. Model only: {models} images/s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``steady_state[-NAME].json``/``.md`` to ``OUT/<machine>/``; return 0."""
    parser = options.suite_parser(__doc__, repeats=3)
    parser.add_argument("--arch", default="resnet18", help="registered arch, random init (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument(
        "--files", type=int, default=200, help="N: photos of the short run, 3N in the long one (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--rounds", dest="repeats", type=int, help=argparse.SUPPRESS)  # the former name of --repeats
    args = parser.parse_args(argv)
    args.rounds = args.repeats
    begun = results.start("steady_state", argv)
    with tempfile.TemporaryDirectory(prefix="gcv-steady-") as tmp:
        work = Path(tmp)
        small = photos.write_photo_folder(work / "small", args.files).path
        large = photos.write_photo_folder(work / "large", 3 * args.files).path
        paths = sorted(large.glob("*.jpg"))
        _, files = onnx_models.speed_files(args.arch, args.size, paths, work, input_format="uint8-nhwc")
        model_only = model_only_rows(files, paths, args.batch, args.rounds)
        decode = {precision: statistics.median(decode_rate(path, paths) for _ in range(args.rounds))
                  for precision, path in files.items()}
        rows = measure(files, small, large, work, args.batch, args.rounds)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header = (f"{args.arch} {args.size} px, {args.files} and {3 * args.files} photos (4 of 5 at 600x866), batch "
              f"{args.batch}, uint8 files, `classify_folder` in process (opening included), medians of {args.rounds} "
              f"interleaved rounds. Command: `{begun.command}`. Machine: {begun.machine.summary()}; "
              f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA') or 'unset'}; load average {load} at the end.")
    result = {"header": header, "model_only": model_only, "decode_images_per_s": decode, "rows": rows}
    text = report(result)
    flat = ([{"section": "runs", **r} for r in rows] + [{"section": "model-only", **r} for r in model_only]
            + [{"section": "decode-only", "file": k, "images_per_s": v} for k, v in decode.items()])  # fmt: skip
    results.write(begun, flat, args.out, args.name, markdown=text)
    options.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
