"""scripts/demo_table.py: the main job's final table, from the files gcv-train and gcv-evaluate write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _demo_folder(tmp_path: Path) -> None:
    (tmp_path / "run" / "resnet18").mkdir(parents=True)
    history = [{"epoch": 1, "accuracy": 0.9}, {"epoch": 2, "accuracy": 0.95}]
    (tmp_path / "run" / "resnet18" / "metrics.json").write_text(json.dumps({"best_epoch": 2, "history": history}))
    (tmp_path / "models").mkdir()
    for precision, size, accuracy in (("fp32", 2_000_000, 0.96), ("int8", 500_000, 0.955)):
        folder = tmp_path / "evaluate" / f"resnet18-{precision}"
        folder.mkdir(parents=True)
        metrics = {"accuracy": accuracy, "precision": 0.5, "recall": 0.25, "f1": 0.125,
                   "calibration": {"temperature": 1.5, "applied": "temperature",
                                   "uncalibrated": {"ece": 0.031, "nll": 0.12, "brier": 0.05},
                                   "calibrated": {"ece": 0.012, "nll": 0.09, "brier": 0.045}},
                   "target_accuracy": {"target": 0.99, "threshold": 0.875, "coverage": 0.9125, "accuracy": 0.991,
                                       "kept": 73, "best_accuracy": 1.0, "reachable": precision == "fp32"}}
        if precision == "int8":
            metrics["target_accuracy"].update(threshold=None, coverage=0.0, accuracy=None, kept=0)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        confusion = {"classes": ["bluzy", "bryuki"], "matrix": [[3, 1], [0, 4]]}
        (folder / "confusion_matrix.json").write_text(json.dumps(confusion))
        (tmp_path / "models" / f"resnet18-{precision}.onnx").write_bytes(b"\0" * size)


def test_table_has_one_exact_row_per_model_and_precision(tmp_path: Path) -> None:
    _demo_folder(tmp_path)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_table.py"), str(tmp_path)],
                            capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[2:4] == [
        "| resnet18 | fp32 | 0.9500 | 0.9600 | 0.5000 | 0.2500 | 0.1250 | [[3, 1], [0, 4]] (bluzy, bryuki) | 2.0 |",
        "| resnet18 | int8 | 0.9500 | 0.9550 | 0.5000 | 0.2500 | 0.1250 | [[3, 1], [0, 4]] (bluzy, bryuki) | 0.5 |",
    ]
    # the calibration table: raw softmax against softmax(logits / T), and what a 99% target keeps
    assert lines[4] == ""
    assert lines[5].startswith("| model | precision | temperature T | ECE raw | ECE calibrated |")
    assert lines[7:] == [
        "| resnet18 | fp32 | 1.500 | 0.0310 | 0.0120 | 0.1200 | 0.0900 | 0.0500 | 0.0450 "
        "| 91.25% (confidence >= 0.8750) |",
        "| resnet18 | int8 | 1.500 | 0.0310 | 0.0120 | 0.1200 | 0.0900 | 0.0500 | 0.0450 "
        "| not reachable (best 100.00%) |",
    ]


def test_json_holds_the_same_figures_and_the_machine(tmp_path: Path) -> None:
    _demo_folder(tmp_path)
    out = tmp_path / "summary.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "demo_table.py"), str(tmp_path), "--json", str(out),
                    "--wall-s", "412"], capture_output=True, text=True, check=True)
    data = json.loads(out.read_text())
    assert data["command"] == "bash scripts/demo.sh" and data["wall_s"] == 412
    assert data["machine"]["logical_cpus"] >= 1 and data["machine"]["cpu_model"]
    fp32, int8 = data["rows"]
    assert fp32 == {
        "arch": "resnet18", "precision": "fp32", "val_accuracy": 0.95, "test_accuracy": 0.96, "test_precision": 0.5,
        "test_recall": 0.25, "test_f1": 0.125, "confusion_matrix": [[3, 1], [0, 4]], "classes": ["bluzy", "bryuki"],
        "file_mb": 2.0, "temperature": 1.5, "ece_raw": 0.031, "ece_calibrated": 0.012, "nll_raw": 0.12,
        "nll_calibrated": 0.09, "brier_raw": 0.05, "brier_calibrated": 0.045,
        "kept_at_target": "91.25% (confidence >= 0.8750)", "target_accuracy": 0.99,
    }
    assert (int8["precision"], int8["file_mb"], int8["kept_at_target"]) == ("int8", 0.5, "not reachable (best 100.00%)")
