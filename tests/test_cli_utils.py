"""What every command shares: exit codes, --debug, writable --out checks, CPU counts, plurals."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from garmentcv.cli_utils import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_USAGE,
    deprecated_alias,
    handle_errors,
    plural,
    quiet_option,
    verbose_option,
)
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


def test_plural_lives_in_a_plain_module_and_cli_utils_passes_it_on() -> None:
    import garmentcv.text

    assert plural is garmentcv.text.plural
    assert garmentcv.text.plural(3, "class") == "3 classes"


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


def _aliased() -> click.Command:
    """A command with an option, a flag-valued choice and a positional argument, each with a deprecated old name."""

    @click.command()
    @click.argument("data", required=False, type=click.Path(exists=True), metavar="DATA")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Device.")
    @click.option("--on-error", type=click.Choice(["auto", "fail", "continue"]), default="auto", help="Policy.")
    @deprecated_alias("--data", "data", type=click.Path(exists=True), required=True)
    @deprecated_alias("--provider", "device", type=click.Choice(["auto", "cpu", "cuda"]))
    @deprecated_alias("--fail-on-error", "on_error", flag_value="fail")
    @deprecated_alias("--allow-errors", "on_error", flag_value="continue")
    @handle_errors
    def cmd(data: str, device: str, on_error: str) -> None:
        """A command with deprecated option names."""
        click.echo(f"{data} {device} {on_error}")

    return cmd


def test_deprecated_alias_forwards_its_value_and_warns_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--provider", "cuda"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path} cuda auto\n"
    assert result.stderr == "Warning: --provider is deprecated; use --device\n"
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--device", "cpu"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"{tmp_path} cpu auto\n", "")


def test_deprecated_flag_alias_sets_its_value_of_the_new_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--fail-on-error"])
    assert (result.exit_code, result.stdout) == (0, f"{tmp_path} auto fail\n")
    assert result.stderr == "Warning: --fail-on-error is deprecated; use --on-error fail\n"
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--allow-errors"])
    assert (result.exit_code, result.stdout) == (0, f"{tmp_path} auto continue\n")
    assert result.stderr == "Warning: --allow-errors is deprecated; use --on-error continue\n"


def test_deprecated_alias_of_a_positional_argument(tmp_path: Path) -> None:
    result = CliRunner().invoke(_aliased(), ["--data", str(tmp_path)])
    assert (result.exit_code, result.stdout) == (0, f"{tmp_path} auto auto\n")
    assert result.stderr == "Warning: --data is deprecated; give DATA as the first argument\n"
    result = CliRunner().invoke(_aliased(), [])
    assert result.exit_code == 2 and "Missing argument 'DATA'" in result.stderr
    result = CliRunner().invoke(_aliased(), ["--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.stderr  # the old name keeps the new one's type


def test_deprecated_alias_and_new_name_must_agree(tmp_path: Path) -> None:
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--device", "cpu", "--provider", "cuda"])
    assert result.exit_code == 2
    assert "--provider cuda and --device cpu disagree; give --device only" in result.stderr
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--device", "cpu", "--provider", "cpu"])
    assert (result.exit_code, result.stdout) == (0, f"{tmp_path} cpu auto\n")
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--fail-on-error", "--allow-errors"])
    assert result.exit_code == 2
    assert "--allow-errors and --fail-on-error disagree; give --on-error only" in result.stderr
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--on-error", "continue", "--fail-on-error"])
    assert result.exit_code == 2 and "--fail-on-error and --on-error continue disagree" in result.stderr


def test_deprecated_alias_is_hidden_from_help_and_refuses_bad_values(tmp_path: Path) -> None:
    help_text = CliRunner().invoke(_aliased(), ["--help"]).stdout
    assert "--device" in help_text and "--on-error" in help_text
    assert not any(old in help_text for old in ("--provider", "--data", "--fail-on-error", "--allow-errors"))
    result = CliRunner().invoke(_aliased(), [str(tmp_path), "--provider", "gpu"])
    assert result.exit_code == 2 and "'gpu' is not one of 'auto', 'cpu', 'cuda'" in result.stderr


def test_quiet_and_verbose_of_a_group_reach_its_sub_commands() -> None:
    @click.group()
    @quiet_option
    @verbose_option
    def group(quiet: bool, verbose: bool) -> None:
        """A group."""

    @group.command()
    @quiet_option
    @verbose_option
    def sub(quiet: bool, verbose: bool) -> None:
        """A sub-command."""
        click.echo(f"{quiet} {verbose}")

    assert CliRunner().invoke(group, ["sub"]).stdout == "False False\n"
    assert CliRunner().invoke(group, ["-q", "sub"]).stdout == "True False\n"
    assert CliRunner().invoke(group, ["-v", "sub"]).stdout == "False True\n"
    assert CliRunner().invoke(group, ["sub", "-q", "-v"]).stdout == "True True\n"
