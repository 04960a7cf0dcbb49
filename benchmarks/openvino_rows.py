"""OpenVINO against onnxruntime on the same gcv-export files, model only and end to end, with AMX and without.

For each CPU condition (this machine as it is, and each ``--mask`` value of ``ONEDNN_MAX_CPU_ISA``, e.g.
``AVX512_CORE_BF16`` to hold oneDNN below AMX) a child process of this module measures, on one FP32 and one INT8
file written by gcv-export's library function (random-init speed models, ``benchmarks.onnx_models``):

* model only, batch ``--batch``: onnxruntime (gcv-classify's session) and OpenVINO at f32 and bf16
  (gcv-classify's compile settings, :mod:`garmentcv.infer.openvino_runtime`), median images/s of the medians of
  interleaved rounds, and the convolution kernels OpenVINO picked (its performance counters: ``..._amx_...``
  proves AMX in use, so whether a mask is honoured is measured, not assumed);
* end to end: :func:`garmentcv.infer.classify.classify_folder` on the photo folder (``benchmarks.photos``) with
  ``--runtime onnxruntime``, ``openvino`` and ``auto``, interleaved, median images/s; the decode-only rate
  (``load_input`` on every CPU) and each runtime's shared-core bound ``1 / (1/model + 1/decode)``.

The child's environment carries the mask, since oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once per process. Writes
``openvino.md`` (tables) and ``openvino.json`` (every figure, the machine on each condition) into ``--out``.

    python -m benchmarks.openvino_rows --out benchmarks/results [--mask AVX512_CORE_BF16] [--files 200] [--rounds 3]
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

from benchmarks import onnx_models, photos
from benchmarks.machine import machine_info
from benchmarks.model_only import random_batch
from benchmarks.timing import time_call


def _conv_kernels(compiled: Any, batch: np.ndarray) -> list[str]:
    """The distinct exec types of OpenVINO's convolution nodes after one profiled run (e.g. ``brgconv_avx512_amx_bf16``)."""
    request = compiled.create_infer_request()
    request.infer({0: batch})
    return sorted({p.exec_type for p in request.profiling_info if "conv" in p.node_type.lower()})


def _model_only(files: dict[str, Path], batch_size: int, size: int, rounds: int) -> list[dict[str, Any]]:
    """Interleaved rounds of every (file, runtime, precision) on one random batch; rows with median images/s."""
    import openvino as ov

    from garmentcv.cpus import available_cpus
    from garmentcv.infer.openvino_runtime import compile_config
    from garmentcv.infer.session import open_model

    threads = available_cpus()
    batch = random_batch(batch_size, size)
    runners: dict[tuple[str, str, str], Any] = {}
    kernels: dict[tuple[str, str, str], list[str]] = {}
    core = ov.Core()
    for precision, path in files.items():
        session = open_model(path, "cpu", threads)
        runners[(precision, "onnxruntime", precision)] = lambda s=session: s.logits(batch)
        for hint in ("f32", "bf16"):
            config = compile_config(hint, threads)
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
            reported = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            request = compiled.create_infer_request()
            key = (precision, "openvino", hint)
            runners[key] = lambda r=request: r.infer({0: batch})
            profiled = core.compile_model(core.read_model(str(path)), "CPU", {**config, "PERF_COUNT": "YES"})
            kernels[key] = _conv_kernels(profiled, batch) + [f"reported {reported}"]
    rates: dict[tuple[str, str, str], list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            rates[key].append(time_call(run, batch_size, warmup=2, min_repeats=5, budget_s=1.0).images_per_second)
    return [{"file": k[0], "runtime": k[1], "precision": k[2], "batch": batch_size, "images_per_s": statistics.median(v),
             "rounds": [round(x, 1) for x in v], "kernels": kernels.get(k, [])} for k, v in rates.items()]


def _end_to_end(files: dict[str, Path], folder: Path, work: Path, rounds: int, batch_size: int) -> tuple[list[dict[str, Any]], float]:
    """Interleaved classify_folder runs per (file, runtime); returns the rows and the decode-only images/s."""
    from benchmarks.end_to_end import decode_seconds
    from garmentcv.infer.classify import ClassifyConfig, classify_folder
    from garmentcv.infer.model_file import read_model_info

    paths = sorted(folder.glob("*.jpg"))
    pp = read_model_info(next(iter(files.values()))).preprocessing
    decode = [len(paths) / decode_seconds(paths, pp) for _ in range(rounds)]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(rounds):
        for precision, path in files.items():
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
    return list(rows.values()), statistics.median(decode)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The child's work: every figure of this process's CPU condition."""
    with tempfile.TemporaryDirectory(prefix="gcv-ov-") as tmp:
        work = Path(tmp)
        folder = photos.write_photo_folder(work / "photos", args.files)
        checkpoint = onnx_models.write_random_checkpoint(args.arch, args.size, work / "model.pt")
        labelled = onnx_models.labelled_photos(work / "labelled", sorted(folder.path.glob("*.jpg"))[:16])
        files = {p: onnx_models.export_model(checkpoint, p, work / f"model.{p}.onnx", val_data=labelled,
                                             calibration_data=labelled, max_accuracy_drop=100.0)
                 for p in ("fp32", "int8")}  # fmt: skip
        from garmentcv.infer.model_file import read_model_info
        from garmentcv.infer.runtimes import this_cpu_flags

        gates = {p: (None if read_model_info(f).bf16 is None else read_model_info(f).bf16.to_dict()) for p, f in files.items()}
        model_rows = _model_only(files, args.batch, args.size, args.rounds)
        e2e_rows, decode = _end_to_end(files, folder.path, work, args.rounds, args.batch)
    return {"mask": os.environ.get("ONEDNN_MAX_CPU_ISA", ""), "machine": machine_info().to_dict(),
            "effective_flags": sorted(this_cpu_flags() & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni"}),
            "bf16_gates": gates, "model_only": model_rows, "end_to_end": e2e_rows, "decode_images_per_s": decode,
            "files": args.files, "arch": args.arch, "size": args.size}  # fmt: skip


def report(conditions: list[dict[str, Any]]) -> str:
    """Markdown tables: model only and end to end per condition, with ratios to onnxruntime on the same file."""
    lines = ["# OpenVINO and onnxruntime on the same gcv-export files", ""]
    for c in conditions:
        m = c["machine"]
        label = f"ONEDNN_MAX_CPU_ISA={c['mask']}" if c["mask"] else "as is"
        lines += [f"## {label}", "",
                  f"{m['cpu_model']}, {m['logical_cpus']} CPUs, flags {' '.join(m['isa'])}; usable by oneDNN under this "
                  f"condition: {' '.join(c['effective_flags']) or 'none of AMX/VNNI/BF16'}; load average at the end "
                  f"{m['load_avg']}; {c['arch']} {c['size']} px.", "",
                  "Model only (random batch), median images/s of interleaved rounds:", "",
                  "| file | runtime | inference precision | images/s | vs onnxruntime | rounds | OpenVINO conv kernels |",
                  "|---|---|---|---:|---:|---|---|"]
        base = {r["file"]: r["images_per_s"] for r in c["model_only"] if r["runtime"] == "onnxruntime"}
        model_rate = {}
        for r in c["model_only"]:
            model_rate[(r["file"], r["runtime"], r["precision"])] = r["images_per_s"]
            lines.append(f"| {r['file']} | {r['runtime']} | {r['precision']} | {r['images_per_s']:.1f} | "
                         f"{r['images_per_s'] / base[r['file']]:.2f} | {r['rounds']} | {', '.join(r['kernels'])} |")
        decode = c["decode_images_per_s"]
        lines += ["", f"End to end, `classify_folder` on {c['files']} photos (4 of 5 at 600x866), median images/s; "
                  f"decode only {decode:.1f} images/s; bound = 1 / (1/model only + 1/decode only) of the runtime and "
                  "precision used:", "",
                  "| file | --runtime | ran on | inference precision | images/s | vs onnxruntime | bound | of bound | rounds |",
                  "|---|---|---|---|---:|---:|---:|---:|---|"]
        e2e_base = {r["file"]: r["images_per_s"] for r in c["end_to_end"] if r["runtime"] == "onnxruntime"}
        for r in c["end_to_end"]:
            precision = r["inference_precision"] if r["used"] == "openvino" else r["file"]
            model = model_rate.get((r["file"], r["used"], precision))
            bound = 1.0 / (1.0 / model + 1.0 / decode) if model else float("nan")
            lines.append(f"| {r['file']} | {r['runtime']} | {r['used']} | {r['inference_precision']} | "
                         f"{r['images_per_s']:.1f} | {r['images_per_s'] / e2e_base[r['file']]:.2f} | {bound:.1f} | "
                         f"{r['images_per_s'] / bound:.0%} | {r['rates']} |")
        gates = ", ".join(f"{k}: {'passed' if v and v['passed'] else ('failed' if v else 'not run')}"
                          for k, v in c["bf16_gates"].items())
        lines += ["", f"bf16 gates of the two files at export: {gates}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for openvino.md/.json (default: %(default)s)")
    parser.add_argument("--mask", nargs="*", default=["AVX512_CORE_BF16"],
                        help="ONEDNN_MAX_CPU_ISA values measured besides the machine as is (default: %(default)s)")
    parser.add_argument("--arch", default="resnet18", help="registered arch (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--files", type=int, default=200, help="photos in the end-to-end folder (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        args.child.write_text(json.dumps(measure(args)), encoding="utf-8")
        return
    conditions = []
    with tempfile.TemporaryDirectory(prefix="gcv-ov-run-") as tmp:
        for mask in ["", *args.mask]:
            env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
            if mask:
                env["ONEDNN_MAX_CPU_ISA"] = mask
            result = Path(tmp) / f"{mask or 'as-is'}.json"
            command = [sys.executable, "-m", "benchmarks.openvino_rows", "--child", str(result), "--arch", args.arch,
                       "--size", str(args.size), "--batch", str(args.batch), "--files", str(args.files),
                       "--rounds", str(args.rounds)]  # fmt: skip
            subprocess.run(command, env=env, check=True)
            conditions.append(json.loads(result.read_text(encoding="utf-8")))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openvino.json").write_text(json.dumps(conditions, indent=1), encoding="utf-8")
    text = report(conditions)
    (args.out / "openvino.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
