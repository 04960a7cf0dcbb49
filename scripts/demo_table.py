"""Print the demo's results as one markdown table: test-split figures per model and precision.

A second table gives the calibration figures of the same evaluations (raw softmax against the temperature that
gcv-export fitted) and the share of test images kept at 99% accuracy (gcv-evaluate --target-accuracy 0.99).

Usage: python scripts/demo_table.py WORKDIR  (reads WORKDIR/evaluate/<arch>-<precision>/metrics.json and
confusion_matrix.json written by gcv-evaluate, WORKDIR/models/<arch>-<precision>.onnx and
WORKDIR/run/<arch>/metrics.json written by gcv-train, as laid out by scripts/demo.sh)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _coverage(target: dict | None) -> str:
    if not target:
        return "n/a"
    if not target["reachable"]:
        return f"not reachable (best {target['best_accuracy']:.2%})"
    return f"{target['coverage']:.2%} (confidence >= {target['threshold']:.4f})"


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
    main(Path(sys.argv[1]))
