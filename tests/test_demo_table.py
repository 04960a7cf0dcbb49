"""scripts/demo_table.py: the main job's final table, from the files gcv-train and gcv-evaluate write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_table_has_one_exact_row_per_model_and_precision(tmp_path: Path) -> None:
    (tmp_path / "run" / "resnet18").mkdir(parents=True)
    history = [{"epoch": 1, "accuracy": 0.9}, {"epoch": 2, "accuracy": 0.95}]
    (tmp_path / "run" / "resnet18" / "metrics.json").write_text(json.dumps({"best_epoch": 2, "history": history}))
    (tmp_path / "models").mkdir()
    for precision, size, accuracy in (("fp32", 2_000_000, 0.96), ("int8", 500_000, 0.955)):
        folder = tmp_path / "evaluate" / f"resnet18-{precision}"
        folder.mkdir(parents=True)
        metrics = {"accuracy": accuracy, "precision": 0.5, "recall": 0.25, "f1": 0.125}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        confusion = {"classes": ["bluzy", "bryuki"], "matrix": [[3, 1], [0, 4]]}
        (folder / "confusion_matrix.json").write_text(json.dumps(confusion))
        (tmp_path / "models" / f"resnet18-{precision}.onnx").write_bytes(b"\0" * size)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_table.py"), str(tmp_path)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[2:] == [
        "| resnet18 | fp32 | 0.9500 | 0.9600 | 0.5000 | 0.2500 | 0.1250 | [[3, 1], [0, 4]] (bluzy, bryuki) | 2.0 |",
        "| resnet18 | int8 | 0.9500 | 0.9550 | 0.5000 | 0.2500 | 0.1250 | [[3, 1], [0, 4]] (bluzy, bryuki) | 0.5 |",
    ]
