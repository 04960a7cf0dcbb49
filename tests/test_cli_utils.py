"""What every command shares: exit codes, --debug, writable --out checks, CPU counts, plurals."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from garmentcv.cli_utils import EXIT_ERROR, EXIT_INTERNAL, EXIT_USAGE, handle_errors, plural
from garmentcv.cpus import available_cpus
from garmentcv.errors import GarmentCVError, OutputPathError, PathNotFoundError
from garmentcv.fsutil import check_writable_output


def _command(exc: BaseException) -> click.Command:
    @click.command()
    @handle_errors
    def cmd() -> None:
        """A command that fails."""
        raise exc

    return cmd


def test_input_error_exits_1_with_the_message() -> None:
    result = CliRunner().invoke(_command(GarmentCVError("bad data: fix it")))
    assert result.exit_code == EXIT_ERROR == 1
    assert "Error: bad data: fix it" in result.output


def test_missing_path_exits_2_as_usage() -> None:
    result = CliRunner().invoke(_command(PathNotFoundError("model.onnx: not found")))
    assert result.exit_code == EXIT_USAGE == 2
    assert "model.onnx: not found" in result.output


def test_unexpected_exception_is_an_internal_error_with_its_own_code_and_no_traceback() -> None:
    result = CliRunner().invoke(_command(ZeroDivisionError("division by zero")))
    assert result.exit_code == EXIT_INTERNAL == 70
    assert "internal error" in result.output.lower() and "ZeroDivisionError" in result.output
    assert "--debug" in result.output and "Traceback" not in result.output


def test_debug_prints_the_traceback() -> None:
    result = CliRunner().invoke(_command(ZeroDivisionError("division by zero")), ["--debug"])
    assert result.exit_code == EXIT_INTERNAL
    assert "Traceback (most recent call last)" in result.output


def test_click_usage_errors_keep_code_2() -> None:
    result = CliRunner().invoke(_command(click.UsageError("--resume needs --out")))
    assert result.exit_code == 2 and "--resume needs --out" in result.output


def test_debug_and_exit_codes_are_listed_in_help() -> None:
    result = CliRunner().invoke(_command(ValueError()), ["--help"])
    assert "--debug" in result.output and "traceback" in result.output
    assert "internal error" in result.output and "70" in result.output


def test_every_command_has_debug_and_documents_exit_codes() -> None:
    from garmentcv.data.cli import main as data_main
    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.cli import classify_main, evaluate_main
    from garmentcv.train.cli import main as train_main

    for cmd in (data_main.commands["inspect"], data_main.commands["fashion-mnist"], export_main, train_main,
                classify_main, evaluate_main):
        assert "--debug" in [opt for p in cmd.params for opt in p.opts], cmd.name
        assert "Exit codes" in (cmd.help or ""), cmd.name


def test_plural() -> None:
    assert plural(1, "error") == "1 error"
    assert plural(0, "error") == "0 errors"
    assert plural(3, "class") == "3 classes"  # was "3 classs" in gcv-classify's --topk message
    assert plural(2, "box") == "2 boxes" and plural(1, "class") == "1 class"
    assert plural(2, "epoch") == "2 epochs"
    assert plural(1, "image file") == "1 image file"


def test_writable_output_refuses_a_parent_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match=r"file\.txt.*not a folder"):
        check_writable_output(blocker / "results.csv", "--out")


def test_writable_output_refuses_a_read_only_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root (CI) permissions do not stop writes; simulate EROFS/EACCES at the probe file instead."""
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OutputPathError, match="Read-only file system"):
        check_writable_output(tmp_path / "ro" / "results.csv", "--out")
    assert list((tmp_path / "ro").iterdir()) == []


def test_writable_output_creates_missing_folders_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "results.csv"
    check_writable_output(target, "--out")
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []


def test_writable_output_refuses_a_folder_as_file(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="is a folder"):
        check_writable_output(tmp_path, "--out")


def test_available_cpus_follows_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cpus() == 1


def test_available_cpus_follows_a_cgroup_quota(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert available_cpus(cgroup_cpu_max=cpu_max) == 2  # 1.5 CPUs of quota -> 2 threads (rounded up)
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cgroup_cpu_max=cpu_max) == 8
    assert available_cpus(cgroup_cpu_max=tmp_path / "missing") == 8
