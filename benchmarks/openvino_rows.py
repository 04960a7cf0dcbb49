"""OpenVINO against onnxruntime on the same gcv export files, model only and end to end, with AMX and without.

For each CPU condition (this machine as it is, and each ``--mask`` value of ``ONEDNN_MAX_CPU_ISA``, e.g.
``AVX512_CORE_BF16`` to hold oneDNN below AMX) a child process of this module measures, on one FP32 and one INT8
file written by gcv export's library function (random-init speed models, ``benchmarks.onnx_models``):

* model only, one batch of ``--batch`` real photos in the file's input: onnxruntime (gcv classify's session) and
  OpenVINO at f32 and bf16 (gcv classify's compile settings, :mod:`garmentcv.infer.runtimes.openvino`), median
  images/s of the medians of interleaved rounds, and the convolution kernels OpenVINO picked (its performance
  counters: ``..._amx_...`` proves AMX in use, so whether a mask is honoured is measured, not assumed);
* end to end: :func:`garmentcv.infer.classify.classify_folder` on the photo folder (``benchmarks.photos``) with
  ``--runtime onnxruntime``, ``openvino`` and ``auto``, interleaved, median images/s; the decode-only rate
  (the decode the file's input needs, :func:`garmentcv.infer.sources.load_file`, on every CPU) and each
  runtime's shared-core bound ``1 / (1/model + 1/decode)``;
* torchvision eager + DataLoader on the same folder (:mod:`benchmarks.eager_baseline`: torchvision transforms,
  DataLoader, eager FP32, in a fresh process, its own images/s without interpreter start-up), interleaved with
  the rest, so that the targets (``gcv classify`` with ``--runtime auto`` against torchvision eager + DataLoader, and
  against the shared-core bound and onnxruntime) are ratios from one run; they are judged in a table per condition.

The files are written in ``--input-format`` (default: gcv export's default, uint8 crops, format 2), so the rows
are what a user of gcv export and gcv classify gets.

The child's environment carries the mask, since oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once per process. Writes
``NAME.md`` (tables) and ``NAME.json`` (every figure, the machine on each condition) into ``--out``; ``--name``
defaults to ``openvino``.

    python -m benchmarks openvino_rows [--mask AVX512_CORE_BF16] [--files 200] [--repeats 3]
    python -m benchmarks openvino_rows --size 32 64 96 128 --files 400 --name sizes   # where auto switches

With several ``--size`` values the report starts with a table by input size: OpenVINO's and ``auto``'s end-to-end
rate against onnxruntime's, the measurements behind ``auto``'s input-size thresholds
(:data:`garmentcv.infer.runtimes.OPENVINO_MIN_INPUT`).

"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import onnx_models, options, photos, results
from benchmarks.machine import machine_info
from benchmarks.timing import time_call
from garmentcv.artifact import INPUT_FORMATS, INPUT_UINT8


def _conv_kernels(compiled: Any, batch: np.ndarray) -> list[str]:
    """The distinct exec types of OpenVINO's convolution nodes after one profiled run (e.g.
    ``brgconv_avx512_amx_bf16``)."""
    request = compiled.create_infer_request()
    request.infer({0: batch})
    return sorted({p.exec_type for p in request.profiling_info if "conv" in p.node_type.lower()})


def _real_batch(path: Path, photo_paths: list[Path], batch_size: int) -> np.ndarray:
    """``batch_size`` photos decoded into the input the model file declares (uint8 crops or normalised floats)."""
    from garmentcv.infer.model_file import read_model_info
    from garmentcv.infer.sources import load_file

    info = read_model_info(path)
    batch = np.empty(info.input_shape(batch_size), dtype=info.input_dtype)
    for i in range(batch_size):
        load_file(photo_paths[i % len(photo_paths)], info.preprocessing, out=batch[i], input_format=info.input_format)
    return batch


def model_only_rows(
    files: dict[str, Path], photo_paths: list[Path], batch_size: int, rounds: int
) -> list[dict[str, Any]]:
    """Interleaved rounds of every (file, runtime, precision) on one batch of real photos in the file's input;
    rows with median images/s."""
    import openvino as ov

    from garmentcv.cpus import available_cpus
    from garmentcv.infer.runtimes.onnxruntime import open_model
    from garmentcv.infer.runtimes.openvino import compile_config

    threads = available_cpus()
    runners: dict[tuple[str, str, str], Any] = {}
    kernels: dict[tuple[str, str, str], list[str]] = {}
    core = ov.Core()
    batches = {precision: _real_batch(path, photo_paths, batch_size) for precision, path in files.items()}
    for precision, path in files.items():
        batch = batches[precision]
        session = open_model(path, "cpu", threads)
        runners[(precision, "onnxruntime", precision)] = lambda s=session, b=batch: s.logits(b)
        for hint in ("f32", "bf16"):
            config = compile_config(hint, threads)
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
            reported = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            request = compiled.create_infer_request()
            key = (precision, "openvino", hint)
            runners[key] = lambda r=request, b=batch: r.infer({0: b})
            profiled = core.compile_model(core.read_model(str(path)), "CPU", {**config, "PERF_COUNT": "YES"})
            kernels[key] = _conv_kernels(profiled, batch) + [f"reported {reported}"]
    rates: dict[tuple[str, str, str], list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            rates[key].append(time_call(run, batch_size, warmup=2, min_repeats=5, budget_s=1.0).images_per_second)
    return [
        {
            "file": k[0],
            "runtime": k[1],
            "precision": k[2],
            "batch": batch_size,
            "images_per_s": statistics.median(v),
            "rounds": [round(x, 1) for x in v],
            "kernels": kernels.get(k, []),
        }
        for k, v in rates.items()
    ]


def decode_rate(path: Path, paths: list[Path]) -> float:
    """Images/s of decoding every photo into the input ``path`` declares, one thread per CPU, no model: the rate
    no end-to-end run can beat."""
    from concurrent.futures import ThreadPoolExecutor

    from garmentcv.cpus import available_cpus
    from garmentcv.infer.model_file import read_model_info
    from garmentcv.infer.sources import load_file

    info = read_model_info(path)
    buffer = np.empty(info.input_shape(len(paths)), dtype=info.input_dtype)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=available_cpus()) as pool:
        list(pool.map(lambda i: load_file(paths[i], info.preprocessing, out=buffer[i], input_format=info.input_format),
                      range(len(paths))))
    return len(paths) / (time.perf_counter() - started)


def _eager_baseline(checkpoint: Path, folder: Path, work: Path, batch_size: int) -> float:
    """Images/s of :mod:`benchmarks.eager_baseline` on ``folder`` in a fresh process (the rate it prints: model
    building and classification, without interpreter start-up, as classify_folder's rate here).

    Raises:
        RuntimeError: the command failed (its stderr is in the message).
    """
    from benchmarks.end_to_end import (
        REPO_ROOT,
        baseline_command,
        reported_rate,
        run_measured,
    )

    proc = run_measured(baseline_command(folder, checkpoint, work / "eager_baseline.csv", batch_size), cwd=REPO_ROOT)
    rate = reported_rate(proc.stderr_tail)
    if proc.returncode != 0 or rate is None:
        raise RuntimeError(f"torchvision eager + DataLoader failed (exit {proc.returncode}): {proc.stderr_tail}")
    return rate


def _end_to_end(files: dict[str, Path], checkpoint: Path, folder: Path, work: Path, rounds: int,
                batch_size: int) -> tuple[list[dict[str, Any]], dict[str, float], list[float]]:
    """Interleaved rounds of classify_folder per (file, runtime) and of torchvision eager + DataLoader; returns the
    rows, the decode-only images/s per file and torchvision eager + DataLoader's images/s per round."""
    from garmentcv.infer.classify import ClassifyConfig, classify_folder

    paths = sorted(folder.glob("*.jpg"))
    decode: dict[str, list[float]] = {precision: [] for precision in files}
    baseline: list[float] = []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(rounds):
        baseline.append(_eager_baseline(checkpoint, folder, work, batch_size))
        for precision, path in files.items():
            decode[precision].append(decode_rate(path, paths))
            for runtime in ("onnxruntime", "openvino", "auto"):
                cfg = ClassifyConfig(folder=folder, out=work / "out.csv", model=path, runtime=runtime, provider="cpu",
                                     batch_size=batch_size, progress=False)
                started = time.perf_counter()
                s = classify_folder(cfg)
                rate = s.files / (time.perf_counter() - started)
                row = rows.setdefault((precision, runtime), {"file": precision, "runtime": runtime, "rates": []})
                row.update(used=s.runtime, inference_precision=s.inference_precision)
                row["rates"].append(rate)
    for row in rows.values():
        row["images_per_s"] = statistics.median(row["rates"])
        row["rates"] = [round(x, 1) for x in row["rates"]]
    return list(rows.values()), {k: statistics.median(v) for k, v in decode.items()}, [round(x, 2) for x in baseline]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The child's work: every figure of this process's CPU condition."""
    with tempfile.TemporaryDirectory(prefix="gcv-ov-") as tmp:
        work = Path(tmp)
        folder = photos.write_photo_folder(work / "photos", args.files)
        checkpoint, files = onnx_models.speed_files(args.arch, args.size, sorted(folder.path.glob("*.jpg")), work,
                                                    input_format=args.input_format)
        from garmentcv.infer.model_file import read_model_info
        from garmentcv.infer.runtimes import this_cpu_flags

        gates = {
            p: (None if read_model_info(f).bf16 is None else read_model_info(f).bf16.to_dict())
            for p, f in files.items()
        }
        photo_paths = sorted(folder.path.glob("*.jpg"))
        model_rows = model_only_rows(files, photo_paths, args.batch, args.rounds)
        e2e_rows, decode, baseline = _end_to_end(files, checkpoint, folder.path, work, args.rounds, args.batch)
    return {
        "mask": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "machine": machine_info().to_dict(),
        "effective_flags": sorted(
            this_cpu_flags() & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni"}
        ),
        "bf16_gates": gates,
        "model_only": model_rows,
        "end_to_end": e2e_rows,
        "decode_images_per_s": decode,
        "eager_baseline": baseline,
        "files": args.files,
        "arch": args.arch,
        "size": args.size,
        "input_format": args.input_format,
    }


#: The end-to-end targets for ``--runtime auto`` against torchvision eager + DataLoader (resnet18 224 px): with AMX, and
#: without (``None``: at least onnxruntime's own rate on the same file, as the FMA peak bounds FP32 there).
TARGETS_VS_EAGER = {True: {"int8": 8.0, "fp32": 5.0}, False: {"int8": 5.5, "fp32": None}}
#: End to end as a share of the shared-core bound of the runtime used, at least.
TARGET_SHARE_OF_BOUND = 0.85


def shared_core_bound(model: float | None, decode: float) -> float:
    """The shared-core bound ``1 / (1/model + 1/decode)`` images/s: model and decoding taking turns on the
    same cores, neither waiting; ``nan`` when the model-only rate is unknown."""
    return 1.0 / (1.0 / model + 1.0 / decode) if model else float("nan")


def targets(c: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The targets judged on one condition: ``(target, measured, met)`` rows."""
    amx = "amx_bf16" in c["effective_flags"] or "amx_int8" in c["effective_flags"]
    original = statistics.median(c["eager_baseline"])
    model_rate = {(r["file"], r["runtime"], r["precision"]): r["images_per_s"] for r in c["model_only"]}
    e2e = {(r["file"], r["runtime"]): r for r in c["end_to_end"]}
    out = []
    for file in ("int8", "fp32"):
        auto, ort = e2e[(file, "auto")], e2e[(file, "onnxruntime")]
        factor = TARGETS_VS_EAGER[amx][file]
        ratio = auto["images_per_s"] / original
        if factor is not None:
            out.append((f"{file.upper()} file, --runtime auto >= {factor}x torchvision eager + DataLoader end to end",
                        f"{ratio:.2f}x ({auto['images_per_s']:.1f} vs {original:.1f} images/s; ran on {auto['used']} "
                        f"{auto['inference_precision']})", ratio >= factor))
        else:
            out.append(
                (
                    f"{file.upper()} file, --runtime auto at least onnxruntime's {ort['images_per_s'] / original:.2f}x "
                    "torchvision eager + DataLoader",
                    f"{ratio:.2f}x ({auto['images_per_s']:.1f} vs {original:.1f} images/s)",
                    auto["images_per_s"] >= 0.97 * ort["images_per_s"],
                )
            )
        precision = auto["inference_precision"] if auto["used"] == "openvino" else file
        decode = c["decode_images_per_s"][file]
        bound = shared_core_bound(model_rate.get((file, auto["used"], precision)), decode)
        share = auto["images_per_s"] / bound
        out.append((f"{file.upper()} file, --runtime auto >= {TARGET_SHARE_OF_BOUND:.0%} of its shared-core bound",
                    f"{share:.0%} ({auto['images_per_s']:.1f} of {bound:.1f} images/s; decode only {decode:.1f})",
                    share >= TARGET_SHARE_OF_BOUND))
        vs = auto["images_per_s"] / ort["images_per_s"]
        same = (auto["used"], auto["inference_precision"]) == (ort["used"], ort["inference_precision"])
        out.append((f"{file.upper()} file, --runtime auto never slower than onnxruntime (3% noise allowed)",
                    f"{vs:.2f}x ({auto['images_per_s']:.1f} vs {ort['images_per_s']:.1f} images/s"
                    + ("; auto chose onnxruntime: the same runs, so the difference is noise)" if same else ")"),
                    same or vs >= 0.97))
    return out


def size_table(conditions: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per input size, CPU condition and file, OpenVINO's and ``auto``'s end-to-end rate against
    onnxruntime's on the same file, and what ``auto`` ran on (the measurements behind
    :data:`garmentcv.infer.runtimes.OPENVINO_MIN_INPUT`)."""
    lines = ["| input | CPU | file | OpenVINO (precision) vs onnxruntime | auto ran on | auto vs onnxruntime |",
             "|---:|---|---|---:|---|---:|"]
    for c in sorted(conditions, key=lambda c: (c["size"], c["mask"])):
        e2e = {(r["file"], r["runtime"]): r for r in c["end_to_end"]}
        for file in ("int8", "fp32"):
            ort, ov, auto = (e2e[(file, k)] for k in ("onnxruntime", "openvino", "auto"))
            lines.append(f"| {c['size']} px | {'AMX masked' if c['mask'] else 'as is'} | {file} | "
                         f"{ov['images_per_s'] / ort['images_per_s']:.2f}x ({ov['inference_precision']}) | "
                         f"{auto['used']} {auto['inference_precision']} | "
                         f"{auto['images_per_s'] / ort['images_per_s']:.2f}x |")
    return lines


def report(conditions: list[dict[str, Any]]) -> str:
    """Markdown tables: targets, model only and end to end per condition, with ratios to onnxruntime on the same
    file and to torchvision eager + DataLoader."""
    lines = ["# OpenVINO and onnxruntime on the same gcv-export files", ""]
    sizes = sorted({c["size"] for c in conditions})
    if len(sizes) > 1:
        lines += [f"End to end against onnxruntime by input size ({', '.join(f'{s} px' for s in sizes)}; "
                  "details below):", "", *size_table(conditions), ""]
    for c in conditions:
        m = c["machine"]
        label = f"ONEDNN_MAX_CPU_ISA={c['mask']}" if c["mask"] else "as is"
        if len(sizes) > 1:
            label = f"{c['size']} px, {label}"
        original = statistics.median(c["eager_baseline"])
        lines += [
            f"## {label}",
            "",
            f"{m['cpu_model']}, {m['logical_cpus']} CPUs, flags {' '.join(m['isa'])}; usable by oneDNN under this "
            f"condition: {' '.join(c['effective_flags']) or 'none of AMX/VNNI/BF16'}; load average at the end "
            f"{m['load_avg']}; {c['arch']} {c['size']} px; files in {c['input_format']} input.",
            "",
            "Targets (ratios from this run):",
            "",
            "| target | measured | verdict |",
            "|---|---|---|",
        ]
        lines += [f"| {t} | {v} | {'met' if ok else '**missed**'} |" for t, v, ok in targets(c)]
        lines += [
            "",
            "Model only (a batch of real photos in the file's input), median images/s of interleaved rounds:",
            "",
            "| file | runtime | inference precision | images/s | vs onnxruntime | rounds | OpenVINO conv kernels |",
            "|---|---|---|---:|---:|---|---|",
        ]
        base = {r["file"]: r["images_per_s"] for r in c["model_only"] if r["runtime"] == "onnxruntime"}
        model_rate = {}
        for r in c["model_only"]:
            model_rate[(r["file"], r["runtime"], r["precision"])] = r["images_per_s"]
            lines.append(f"| {r['file']} | {r['runtime']} | {r['precision']} | {r['images_per_s']:.1f} | "
                         f"{r['images_per_s'] / base[r['file']]:.2f} | {r['rounds']} | {', '.join(r['kernels'])} |")
        decode = c["decode_images_per_s"]
        lines += [
            "",
            f"End to end, `classify_folder` on {c['files']} photos (4 of 5 at 600x866), median images/s; "
            f"decode only {', '.join(f'{k} file {v:.1f}' for k, v in decode.items())} images/s; bound = "
            "1 / (1/model only + 1/decode only) of the runtime and precision used; "
            "torchvision eager + DataLoader (torchvision "
            f"transforms, DataLoader, eager FP32) {original:.1f} images/s, rounds {c['eager_baseline']}:",
            "",
            "| file | --runtime | ran on | inference precision | images/s | vs onnxruntime | "
            "vs torchvision eager + DataLoader | bound | of bound | rounds |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        e2e_base = {r["file"]: r["images_per_s"] for r in c["end_to_end"] if r["runtime"] == "onnxruntime"}
        for r in c["end_to_end"]:
            precision = r["inference_precision"] if r["used"] == "openvino" else r["file"]
            bound = shared_core_bound(model_rate.get((r["file"], r["used"], precision)), decode[r["file"]])
            lines.append(f"| {r['file']} | {r['runtime']} | {r['used']} | {r['inference_precision']} | "
                         f"{r['images_per_s']:.1f} | {r['images_per_s'] / e2e_base[r['file']]:.2f} | "
                         f"{r['images_per_s'] / original:.2f}x | {bound:.1f} | {r['images_per_s'] / bound:.0%} | "
                         f"{r['rates']} |")
        gates = ", ".join(f"{k}: {'passed' if v and v['passed'] else ('failed' if v else 'not run')}"
                          for k, v in c["bf16_gates"].items())
        lines += ["", f"bf16 gates of the two files at export: {gates}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure each CPU condition in a child process; write ``openvino_rows[-NAME].json``/``.md`` to
    ``OUT/<machine>/`` (one row per condition and size); return 0."""
    parser = options.suite_parser(__doc__, repeats=3)
    parser.add_argument("--mask", nargs="*", default=["AVX512_CORE_BF16"],
                        help="ONEDNN_MAX_CPU_ISA values measured besides the machine as is (default: %(default)s)")
    parser.add_argument("--arch", default="resnet18", help="registered arch (default: %(default)s)")
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[224],
        help="input sizes, px; several measure where `auto` should switch runtimes (default: %(default)s)",
    )
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--files", type=int, default=200, help="photos in the end-to-end folder (default: %(default)s)")
    parser.add_argument("--rounds", dest="repeats", type=int, help=argparse.SUPPRESS)  # the former name of --repeats
    parser.add_argument("--input-format", choices=INPUT_FORMATS, default=INPUT_UINT8,
                        help="model input of the exported files, as gcv export's option (default: %(default)s)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.repeats
    if args.child is not None:
        (args.size,) = args.size
        args.child.write_text(json.dumps(measure(args)), encoding="utf-8")
        return 0
    begun = results.start("openvino_rows", argv)
    conditions = []
    with tempfile.TemporaryDirectory(prefix="gcv-ov-run-") as tmp:
        for size in args.size:
            for mask in ["", *args.mask]:
                env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
                if mask:
                    env["ONEDNN_MAX_CPU_ISA"] = mask
                result = Path(tmp) / f"{size}-{mask or 'as-is'}.json"
                command = [sys.executable, "-m", "benchmarks.openvino_rows", "--child", str(result), "--arch",
                           args.arch, "--size", str(size), "--batch", str(args.batch), "--files", str(args.files),
                           "--repeats", str(args.repeats), "--input-format", args.input_format]  # fmt: skip
                subprocess.run(command, env=env, check=True)
                conditions.append(json.loads(result.read_text(encoding="utf-8")))
    text = report(conditions)
    results.write(begun, conditions, args.out, args.name, markdown=text)
    options.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
