"""The ``gcv`` entry point: one sub-command per task, the same commands as the ``gcv-*`` scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import garmentcv
from garmentcv.cli import COMMANDS, main


def test_gcv_help_lists_every_sub_command_in_order_of_the_work() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.stdout.split("Commands:")[1].split()
    assert [word for word in listed if word in COMMANDS] == ["data", "train", "export", "classify", "evaluate", "serve"]


def test_gcv_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"gcv (garmentcv) {garmentcv.__version__}\n"


def test_sub_command_usage_names_the_gcv_command_path() -> None:
    result = CliRunner().invoke(main, ["classify", "--help"], prog_name="gcv")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: gcv classify [OPTIONS] SOURCE")


def test_gcv_classify_writes_the_rows_gcv_classify_writes(tmp_path: Path, onnx_model: Path, make_lamoda) -> None:
    from garmentcv.infer.cli import classify_main

    folder = make_lamoda(per_class=2)
    script, sub = tmp_path / "script.csv", tmp_path / "sub.csv"
    first = CliRunner().invoke(classify_main, [str(folder), "--out", str(script), "--model", str(onnx_model), "-q"])
    second = CliRunner().invoke(main, ["classify", str(folder), "--out", str(sub), "--model", str(onnx_model), "-q"])
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    assert sub.read_bytes() == script.read_bytes()
    assert len(sub.read_text(encoding="utf-8").splitlines()) == 1 + 4


def test_gcv_help_never_imports_torch() -> None:
    code = ("import sys\nfrom click.testing import CliRunner\nfrom garmentcv.cli import main\n"
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False False"
