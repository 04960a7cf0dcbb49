"""Print the demo's results as one markdown table: test-split figures per model and precision.

A second table gives the calibration figures of the same evaluations (raw softmax against the temperature that
gcv export fitted) and the share of test images kept at 99% accuracy (gcv evaluate --target-accuracy 0.99).

Usage: python scripts/demo_table.py WORKDIR [--json FILE] [--wall-s SECONDS]  (reads
WORKDIR/evaluate/<arch>-<precision>/metrics.json and confusion_matrix.json written by gcv evaluate,
WORKDIR/models/<arch>-<precision>.onnx and WORKDIR/run/<arch>/metrics.json written by gcv train, as laid out by
scripts/demo.sh). ``--json FILE`` also writes the same figures as data (one row per model and precision, with the
machine: CPU model, CPUs, load average, versions), the file the docs render their tables from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any


def _coverage(target: dict | None) -> str:
    if not target:
        return "n/a"
    if not target["reachable"]:
        return f"not reachable (best {target['best_accuracy']:.2%})"
    return f"{target['coverage']:.2%} (confidence >= {target['threshold']:.4f})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _row(work: Path, arch: str, precision: str, test: dict[str, Any], confusion: dict[str, Any]) -> dict[str, Any]:
    """One model file's figures as data: the same numbers the two tables print."""
    run = json.loads((work / "run" / arch / "metrics.json").read_text())
    cal = test.get("calibration") or {}
    target = test.get("target_accuracy") or {}
    return {
        "arch": arch, "precision": precision,
        "val_accuracy": run["history"][run["best_epoch"] - 1]["accuracy"],
        "test_accuracy": test["accuracy"], "test_precision": test["precision"], "test_recall": test["recall"],
        "test_f1": test["f1"], "confusion_matrix": confusion["matrix"], "classes": confusion["classes"],
        "file_mb": round((work / "models" / f"{arch}-{precision}.onnx").stat().st_size / 1e6, 1),
        "temperature": cal.get("temperature") or 1.0,
        "ece_raw": cal.get("uncalibrated", {}).get("ece"), "ece_calibrated": cal.get("calibrated", {}).get("ece"),
        "nll_raw": cal.get("uncalibrated", {}).get("nll"), "nll_calibrated": cal.get("calibrated", {}).get("nll"),
        "brier_raw": cal.get("uncalibrated", {}).get("brier"),
        "brier_calibrated": cal.get("calibrated", {}).get("brier"),
        "kept_at_target": _coverage(target or None), "target_accuracy": target.get("target"),
    }


def write_json(work: Path, out: Path, wall_s: float | None) -> None:
    """The demo's figures and the machine that produced them, as ``{"machine": ..., "rows": [...]}``."""
    import garmentcv

    rows = []
    for metrics in sorted((work / "evaluate").glob("*/metrics.json")):
        arch, precision = metrics.parent.name.rsplit("-", 1)
        confusion = json.loads((metrics.parent / "confusion_matrix.json").read_text())
        rows.append(_row(work, arch, precision, json.loads(metrics.read_text()), confusion))
    machine = {"cpu_model": _cpu_model(), "logical_cpus": os.cpu_count(), "load_avg_end": list(os.getloadavg()),
               "python": platform.python_version(), "garmentcv": garmentcv.__version__}
    for name in ("torch", "onnxruntime", "openvino"):
        try:
            machine[name] = __import__(name).__version__
        except ImportError:
            pass
    data = {"command": "bash scripts/demo.sh", "wall_s": wall_s, "machine": machine, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(work: Path) -> None:
    print("| model | precision | val accuracy (training) | test accuracy | precision | recall | F1 | "
          "confusion matrix (rows true, cols predicted) | file MB |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    evaluations = [(f.parent, *f.parent.name.rsplit("-", 1), json.loads(f.read_text()))
                   for f in sorted((work / "evaluate").glob("*/metrics.json"))]
    for folder, arch, precision, test in evaluations:
        confusion = json.loads((folder / "confusion_matrix.json").read_text())
        run = json.loads((work / "run" / arch / "metrics.json").read_text())
        val = run["history"][run["best_epoch"] - 1]["accuracy"]
        size_mb = (work / "models" / f"{arch}-{precision}.onnx").stat().st_size / 1e6
        classes = ", ".join(confusion["classes"])
        print(f"| {arch} | {precision} | {val:.4f} | {test['accuracy']:.4f} | {test['precision']:.4f} | "
              f"{test['recall']:.4f} | {test['f1']:.4f} | {confusion['matrix']} ({classes}) | {size_mb:.1f} |")
    print()
    print("| model | precision | temperature T | ECE raw | ECE calibrated | NLL raw | NLL calibrated | Brier raw | "
          "Brier calibrated | kept at 99% test accuracy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for _, arch, precision, test in evaluations:
        cal = test["calibration"]
        raw, fit = cal["uncalibrated"], cal["calibrated"]
        print(f"| {arch} | {precision} | {cal['temperature'] or 1.0:.3f} | {raw['ece']:.4f} | {fit['ece']:.4f} | "
              f"{raw['nll']:.4f} | {fit['nll']:.4f} | {raw['brier']:.4f} | {fit['brier']:.4f} | "
              f"{_coverage(test.get('target_accuracy'))} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the demo's results tables (and write them as data).")
    parser.add_argument("work", type=Path, help="the demo's work folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--wall-s", type=float, default=None, help="the demo's wall time, recorded in the JSON")
    args = parser.parse_args()
    main(args.work)
    if args.json:
        write_json(args.work, args.json, args.wall_s)
