"""One vocabulary across the commands: option names, old names kept for one release, --version/-q/-v everywhere,
one line of help per option, a docs page named by every --help, and exit codes carried by exceptions."""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import garmentcv
import garmentcv.infer.engines.local
import garmentcv.infer.evaluate
from garmentcv.cli import main as gcv
from garmentcv.infer.classify import ClassifyConfig, ClassifySummary
from garmentcv.infer.cli import classify_main, evaluate_main
from garmentcv.infer.evaluate import EvaluateConfig, EvaluateResult
from garmentcv.infer.rows import OutputFormat
from tests.conftest import write_image

PACKAGE = Path(garmentcv.__file__).parent


def _walk(command: click.Command, path: tuple[str, ...] = ("gcv",)):
    """Every command and sub-command below ``command`` (itself first), with its path of names."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


def _opts(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


# --version, -q, -v -----------------------------------------------------------------------------------------------

def test_every_command_and_sub_command_has_version_quiet_and_verbose() -> None:
    paths = []
    for path, command in _walk(gcv):
        paths.append(" ".join(path))
        assert {"--version", "-q", "--quiet", "-v", "--verbose"} <= _opts(command), path
        result = CliRunner().invoke(command, ["--version"])
        assert result.exit_code == 0, (path, result.output)
        assert result.stdout.endswith(f" (garmentcv) {garmentcv.__version__}\n"), path
    assert paths == ["gcv", "gcv data", "gcv data fashion-mnist", "gcv data inspect", "gcv data audit",
                     "gcv data corrections", "gcv data label-next", "gcv data from-label-studio", "gcv train",
                     "gcv export", "gcv classify", "gcv evaluate", "gcv serve"]


def test_data_sub_commands_name_themselves_in_version() -> None:
    from garmentcv.data.cli import main as data_main

    for name in ("fashion-mnist", "inspect", "audit", "corrections", "label-next", "from-label-studio"):
        result = CliRunner().invoke(data_main, [name, "--version"])
        assert result.stdout == f"gcv data {name} (garmentcv) {garmentcv.__version__}\n"


def test_quiet_on_the_gcv_group_silences_the_sub_command(tmp_path: Path) -> None:
    from garmentcv.data.cli import main as data_main

    root = tmp_path / "data"
    for i, label in enumerate(("bluzy", "bluzy", "bryuki", "bryuki")):
        write_image(root / f"{i:04d}_{label}.jpg", seed=i)
    loud = CliRunner().invoke(gcv, ["data", "inspect", str(root)])
    quiet = CliRunner().invoke(gcv, ["-q", "data", "inspect", str(root)])
    assert loud.exit_code == quiet.exit_code == 0, (loud.output, quiet.output)
    assert "INFO" in loud.stderr or "inspecting" in loud.stderr
    assert quiet.stderr == "" and quiet.stdout == loud.stdout
    assert CliRunner().invoke(data_main, ["-q", "inspect", str(root)]).stderr == ""


# one line of help per option, the docs page ---------------------------------------------------------------------

#: The commands whose help follows the one-line rule, and the docs page each names.
DOCS_PAGES = {
    ("gcv",): "cli",
    ("gcv", "data"): "data",
    ("gcv", "data", "fashion-mnist"): "data",
    ("gcv", "data", "inspect"): "data",
    ("gcv", "data", "label-next"): "curate",
    ("gcv", "train"): "training",
    ("gcv", "export"): "export",
    ("gcv", "classify"): "classify",
    ("gcv", "evaluate"): "evaluate",
    ("gcv", "serve"): "serve",
}
#: Options whose absence turns something off: no default to show.
OFF_WHEN_ABSENT = {"--report", "--list-skipped", "--min-confidence", "--topk", "--labels", "--target-accuracy",
                   "--json", "--test", "--config", "--models"}


@pytest.mark.parametrize("path", sorted(DOCS_PAGES), ids=" ".join)
def test_every_option_has_one_short_line_of_help_and_shows_its_default(path: tuple[str, ...]) -> None:
    command = dict(_walk(gcv))[path]
    ctx = click.Context(command, info_name=path[-1], **command.context_settings)
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        name = param.opts[-1]
        assert param.help and "\n" not in param.help and len(param.help) <= 100, (path, name, param.help)
        record = param.get_help_record(ctx)
        assert record is not None and "\n" not in record[1], (path, name)
        needs_default = not (param.is_flag or param.required or name in OFF_WHEN_ABSENT
                             or name in ("--help", "--version"))
        if needs_default:
            assert "[default: " in record[1], (path, name, record[1])


@pytest.mark.parametrize("path", sorted(DOCS_PAGES), ids=" ".join)
def test_help_ends_by_naming_the_docs_page(path: tuple[str, ...]) -> None:
    command = dict(_walk(gcv))[path]
    assert command.epilog == f"Docs: docs/{DOCS_PAGES[path]}.md"
    assert re.fullmatch(r"Docs: docs/[a-z-]+\.md", command.epilog)
    result = CliRunner().invoke(gcv, [*path[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().splitlines()[-1].strip() == command.epilog


#: A command named by its script instead of its sub-command (``gcv-train`` for ``gcv train``).
SCRIPT_NAME = re.compile(r"gcv-(train|export|classify|evaluate|data|serve)\b")


def test_help_and_version_of_every_command_name_commands_as_gcv_sub_commands() -> None:
    """Every ``--help`` and ``--version`` says ``gcv train``, ``gcv classify`` ..., never the script names, which
    remain only as aliases. Unwrapped (a very wide terminal), so that no name is split at its hyphen."""
    assert SCRIPT_NAME.search("run gcv-train --other-data") and not SCRIPT_NAME.search("run gcv train --other-data")
    seen = []
    for path, _command in _walk(gcv):
        seen.append(" ".join(path))
        for flag in ("--help", "--version"):
            result = CliRunner().invoke(gcv, [*path[1:], flag], prog_name="gcv", terminal_width=10_000,
                                        max_content_width=10_000)
            assert result.exit_code == 0, (path, flag, result.output)
            assert SCRIPT_NAME.findall(result.output) == [], (path, flag, result.output)
    assert len(seen) == 13 and seen[-1] == "gcv serve"


# --device, --decode-threads, DATA ---------------------------------------------------------------------------------

class _Captured:
    """Stands in for the library entry points: records the config the command built."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.configs: list[object] = []
        monkeypatch.setattr(garmentcv.infer.engines.local, "classify_folder", self.classify)
        monkeypatch.setattr(garmentcv.infer.evaluate, "evaluate_model", self.evaluate)

    def classify(self, cfg: ClassifyConfig) -> ClassifySummary:
        self.configs.append(cfg)
        return ClassifySummary(out=cfg.out, files=1, classified=1, errors=0, skipped={}, reused=0, seconds=1.0,
                               images_per_second=1.0, provider="cpu")

    def evaluate(self, cfg: EvaluateConfig) -> EvaluateResult:
        self.configs.append(cfg)
        return EvaluateResult(out=cfg.out, count=1, errors=0, accuracy=1.0, precision=1.0, recall=1.0, f1=1.0,
                              misclassified=0, confusion_matrix=[[1]], classes=("bluzy",))


def test_classify_device_and_decode_threads_with_their_old_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    captured = _Captured(monkeypatch)
    args = [str(tmp_path), "--out", str(tmp_path.parent / "o.csv"), "-q"]
    result = CliRunner().invoke(classify_main, [*args, "--device", "cuda", "--decode-threads", "3"])
    assert (result.exit_code, result.stderr.count("Warning")) == (0, 0), result.output
    old = CliRunner().invoke(classify_main, [*args, "--provider", "cuda", "--workers", "3"])
    assert old.exit_code == 0, old.output
    assert old.stderr.startswith("Warning: --provider is deprecated; use --device\n"
                                 "Warning: --workers is deprecated; use --decode-threads\n")
    assert [(c.provider, c.workers) for c in captured.configs] == [("cuda", 3), ("cuda", 3)]
    help_text = CliRunner().invoke(classify_main, ["--help"]).stdout
    assert "--device [auto|cpu|cuda]" in help_text and "--decode-threads" in help_text
    assert "--provider" not in help_text and "--workers" not in help_text


def test_evaluate_takes_data_first_and_its_old_options_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    captured = _Captured(monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    out = ["--out", str(tmp_path / "ev"), "-q"]
    result = CliRunner().invoke(evaluate_main, [str(data), *out, "--device", "cpu", "--decode-threads", "2"])
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    old = CliRunner().invoke(evaluate_main, ["--data", str(data), *out, "--provider", "cpu", "--workers", "2"])
    assert old.exit_code == 0, old.output
    assert old.stderr.splitlines() == ["Warning: --data is deprecated; give DATA as the first argument",
                                       "Warning: --provider is deprecated; use --device",
                                       "Warning: --workers is deprecated; use --decode-threads"]
    assert [(c.data, c.provider, c.workers) for c in captured.configs] == [(data, "cpu", 2), (data, "cpu", 2)]
    missing = CliRunner().invoke(evaluate_main, out)
    assert missing.exit_code == 2 and "Missing argument 'DATA'" in missing.stderr
    help_text = CliRunner().invoke(evaluate_main, ["--help"]).stdout
    assert help_text.startswith("Usage: evaluate-main [OPTIONS] DATA\n")
    assert "--data" not in help_text and "--provider" not in help_text and "--workers" not in help_text


def test_command_choices_are_the_library_values() -> None:
    from garmentcv.infer.classify import ENGINES, ON_ERROR
    from garmentcv.infer.runtimes import RUNTIMES
    from garmentcv.infer.runtimes.onnxruntime import PROVIDERS

    def choices(command: click.Command, name: str) -> tuple[str, ...]:
        return tuple(next(p for p in command.params if p.name == name).type.choices)  # type: ignore[attr-defined]

    assert choices(classify_main, "engine") == ENGINES
    assert choices(classify_main, "on_error") == ON_ERROR
    assert choices(classify_main, "fmt") == tuple(f.value for f in OutputFormat)
    for command in (classify_main, evaluate_main):
        assert choices(command, "device") == PROVIDERS and choices(command, "runtime") == RUNTIMES


def test_train_keeps_workers_as_dataloader_processes() -> None:
    from garmentcv.train.cli import main as train_main

    workers = next(p for p in train_main.params if p.name == "workers")
    assert "process" in (workers.help or "").lower()


def test_cuda_errors_name_the_device_option(tmp_path: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    import garmentcv.infer.runtimes.onnxruntime

    monkeypatch.setattr(
        garmentcv.infer.runtimes.onnxruntime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"]
    )
    write_image(tmp_path / "imgs" / "a.jpg")
    result = CliRunner().invoke(classify_main, [str(tmp_path / "imgs"), "--out", str(tmp_path / "o.csv"), "--model",
                                                str(onnx_model), "--device", "cuda", "-q"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: onnxruntime ") and result.stderr.rstrip().endswith("use --device cpu")
    assert not (tmp_path / "o.csv").exists()


# --on-error ------------------------------------------------------------------------------------------------------

def _folder_with_a_bad_image(root: Path) -> Path:
    write_image(root / "1.jpg", seed=1)
    write_image(root / "2.png", seed=2)
    (root / "3.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.mark.parametrize(("fmt", "policy", "code"), [
    ("csv", "auto", 0), ("csv", "fail", 1), ("csv", "continue", 0),
    ("kaggle", "auto", 1), ("kaggle", "fail", 1), ("kaggle", "continue", 0),
])
def test_on_error_decides_the_exit_code_of_rows_with_errors(tmp_path: Path, onnx_model: Path, fmt: str,
                                                            policy: str, code: int) -> None:
    folder = _folder_with_a_bad_image(tmp_path / "imgs")
    out = tmp_path / f"{fmt}-{policy}.csv"
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(out), "--model", str(onnx_model),
                                                "--device", "cpu", "--format", fmt, "--on-error", policy, "-q"])
    assert result.exit_code == code, result.output
    rows = list(csv.reader(out.open(newline="")))
    assert len(rows) == 4  # the file is written whatever the exit code
    if code:
        assert result.stderr.splitlines()[-1].startswith("Error: 1 image could not be decoded")
    if fmt == "kaggle" and policy == "auto":
        assert "or pass --on-error continue to accept the empty label" in result.stderr


def test_on_error_old_flags_map_to_fail_and_continue(tmp_path: Path, onnx_model: Path) -> None:
    folder = _folder_with_a_bad_image(tmp_path / "imgs")
    args = [str(folder), "--model", str(onnx_model), "--device", "cpu", "-q"]
    failed = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / "a.csv"), "--fail-on-error"])
    assert failed.exit_code == 1
    assert failed.stderr.startswith("Warning: --fail-on-error is deprecated; use --on-error fail\n")
    allowed = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / "b.csv"), "--format", "kaggle",
                                                 "--allow-errors"])
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stderr.startswith("Warning: --allow-errors is deprecated; use --on-error continue\n")
    both = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / "c.csv"), "--fail-on-error",
                                              "--allow-errors"])
    assert both.exit_code == 2 and "disagree; give --on-error only" in both.stderr
    assert not (tmp_path / "c.csv").exists()


def test_on_error_continue_accepts_kaggle_indexes_shared_by_two_files(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "10.jpg", seed=1)
    write_image(folder / "10.png", seed=2)
    args = [str(folder), "--model", str(onnx_model), "--device", "cpu", "--format", "kaggle", "-q"]
    for policy, code in (("auto", 1), ("fail", 1), ("continue", 0)):
        result = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / f"{policy}.csv"),
                                                    "--on-error", policy])
        assert result.exit_code == code, (policy, result.output)
        if code:
            assert ("1 index is shared by several files: 10 (10.jpg, 10.png)" in result.stderr
                    and "pass --on-error continue to accept it" in result.stderr)


# commands only parse options; library modules do not import the click layer -----------------------------------

def _calls(path: Path) -> set[str]:
    """Dotted names of every call in ``path``, e.g. ``sys.exit``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
    return names


def test_no_command_calls_sys_exit() -> None:
    modules = [PACKAGE / "cli.py", *sorted(PACKAGE.glob("*/cli.py"))]
    assert len(modules) == 6
    for module in modules:
        assert not {"sys.exit", "exit", "quit", "os._exit"} & _calls(module), module


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


#: Library modules that still import ``plural`` from ``garmentcv.cli_utils`` instead of ``garmentcv.text``.
STILL_IMPORTING_CLI_UTILS: set[str] = set()


def test_library_modules_do_not_import_the_click_layer() -> None:
    layer = {"click", "garmentcv.cli_utils", "garmentcv.cli"}
    offenders = set()
    for module in sorted(PACKAGE.rglob("*.py")):
        name = module.relative_to(PACKAGE).as_posix()
        if name in ("cli.py", "cli_utils.py", "__main__.py") or module.name in ("cli.py", "__main__.py"):
            continue
        imported = _imports(module)
        if layer & imported or any(i.endswith(".cli") for i in imported):
            offenders.add(name)
    assert offenders <= STILL_IMPORTING_CLI_UTILS, offenders - STILL_IMPORTING_CLI_UTILS
    assert "infer/classify.py" not in offenders and "infer/evaluate.py" not in offenders


# --quantization-data / --quantization-images (INT8 ranges; "calibration" means the temperature only) --------------

def test_export_quantization_options_and_their_old_calibration_names(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import garmentcv.export.exporter
    from garmentcv.errors import GarmentCVError
    from garmentcv.export.cli import main as export_main

    configs = []

    def captured(cfg: object, progress: bool = True) -> None:
        configs.append(cfg)
        raise GarmentCVError("stopped by the test")

    monkeypatch.setattr(garmentcv.export.exporter, "export_checkpoint", captured)
    images = tmp_path / "images"
    images.mkdir()
    args = [str(tmp_path / "best.pt"), "--out", str(tmp_path / "m.onnx"), "--precision", "int8", "-q"]
    new = CliRunner().invoke(export_main, [*args, "--quantization-data", str(images), "--quantization-images", "7"])
    assert new.exit_code == 1 and new.stderr == "Error: stopped by the test\n", new.output
    old = CliRunner().invoke(export_main, [*args, "--calibration-data", str(images), "--calibration-images", "7"])
    assert old.exit_code == 1, old.output
    assert old.stderr.splitlines() == ["Warning: --calibration-data is deprecated; use --quantization-data",
                                       "Warning: --calibration-images is deprecated; use --quantization-images",
                                       "Error: stopped by the test"]
    assert [(c.calibration_data, c.calibration_images) for c in configs] == [(images, 7), (images, 7)]
    default = CliRunner().invoke(export_main, args)
    assert default.exit_code == 1 and (configs[-1].calibration_data, configs[-1].calibration_images) == (None, 200)
    both = CliRunner().invoke(export_main, [*args, "--quantization-images", "7", "--calibration-images", "8"])
    assert both.exit_code == 2 and "disagree; give --quantization-images only" in both.stderr
    bad = CliRunner().invoke(export_main, [*args, "--calibration-images", "0"])
    assert bad.exit_code == 2 and "--calibration-images" in bad.stderr
    help_text = CliRunner().invoke(export_main, ["--help"]).stdout
    assert "--quantization-data" in help_text and "--quantization-images" in help_text
    assert "--calibration" not in help_text
