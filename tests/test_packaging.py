"""Installs: the CPU and GPU runtimes are alternatives, floors match the APIs called, pins cover what tests assert."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from garmentcv import installs
from garmentcv.errors import GarmentCVError

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _floor(requirements: list[str], name: str) -> tuple[int, ...]:
    spec = next(r for r in requirements if _names([r]) == {name})
    return tuple(int(p) for p in re.search(r">=([\d.]+)", spec).group(1).split("."))  # type: ignore[union-attr]


def test_cpu_and_gpu_runtimes_are_alternative_extras() -> None:
    """onnxruntime and onnxruntime-gpu side by side can hide the CUDA provider: no install may pull both."""
    base = _names(PYPROJECT["dependencies"])
    extras = {name: _names(reqs) for name, reqs in PYPROJECT["optional-dependencies"].items()}
    assert not base & {"onnxruntime", "onnxruntime-gpu", "torch", "torchvision"}
    assert [n for n, reqs in extras.items() if "onnxruntime" in reqs] == ["cpu"]
    assert [n for n, reqs in extras.items() if "onnxruntime-gpu" in reqs] == ["gpu"]
    assert not any(n.startswith("nvidia") for reqs in (base, extras["cpu"]) for n in reqs)


def test_floors_cover_the_apis_the_code_calls() -> None:
    train = PYPROJECT["optional-dependencies"]["train"]
    # torch.onnx.export(dynamo=True, optimize=..., external_data=...) is the torch.export-based exporter of 2.6+;
    # torch.amp.GradScaler("cuda") needs 2.3+.
    assert _floor(train, "torch") >= (2, 6)
    assert _floor(train, "torchvision") >= (0, 21)  # the torchvision of torch 2.6
    assert _floor(train, "onnxscript") >= (0, 2)


def test_constraints_pin_what_the_tests_assert_exact_behaviour_of() -> None:
    pins = dict(
        line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert {"torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "pillow"} <= set(pins)


def test_setup_installs_one_runtime_with_training() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r"-e '\.\[cpu,train,eval,dev\]'", setup)


def test_no_runtime_installed_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installs, "installed_version", lambda name: None)
    with pytest.raises(GarmentCVError) as raised:
        installs.require_onnxruntime()
    assert f"{installs.pip_install('cpu')} (CPU) or {installs.pip_install('gpu')} (CUDA" in str(raised.value)


def test_both_runtimes_installed_names_the_conflict_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installs, "installed_version", {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.1"}.get)
    message = installs.runtime_conflict()
    assert message is not None
    assert "both onnxruntime 1.22.0 and onnxruntime-gpu 1.22.1 are installed" in message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in message


def test_one_runtime_is_no_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installs, "installed_version", {"onnxruntime": "1.22.0"}.get)
    assert installs.runtime_conflict() is None
    assert installs.require_onnxruntime() == "onnxruntime"


@pytest.mark.parametrize("command", ["classify", "evaluate", "export"])
def test_commands_without_a_runtime_say_which_extra_to_install(command: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.cli import classify_main, evaluate_main

    monkeypatch.setattr(installs, "installed_version", lambda name: None)
    (tmp_path / "imgs").mkdir()
    main, args = {
        "classify": (classify_main, [str(tmp_path / "imgs"), "--out", str(tmp_path / "r.csv")]),
        "evaluate": (evaluate_main, [str(tmp_path / "imgs")]),
        "export": (export_main, [str(tmp_path / "best.pt")]),
    }[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert installs.pip_install("cpu") in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["train", "export"])
def test_torch_commands_without_torch_say_which_extra_to_install(command: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A [cpu]-only install: gcv-train/gcv-export exit 1 naming [train,cpu], not 70 'a bug'."""
    from garmentcv.export.cli import main as export_main
    from garmentcv.train.cli import main as train_main

    real = installs.installed_version
    monkeypatch.setattr(installs, "installed_version", lambda name: None if name == "torch" else real(name))
    (tmp_path / "data").mkdir()
    main, args = {"train": (train_main, [str(tmp_path / "data")]),
                  "export": (export_main, [str(tmp_path / "best.pt")])}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert installs.pip_install("train,cpu") in result.output and "Internal error" not in result.output


def test_install_hints_name_the_checkout_this_install_runs_from() -> None:
    """From a checkout (editable install) the command works in any folder: the checkout's absolute path, not '.'."""
    assert installs.install_source() == str(REPO)
    assert installs.pip_install("train,cpu") == f"pip install '{REPO}[train,cpu]'"


def test_install_hints_fall_back_to_the_folder_pip_installed_from_then_the_name(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    class Dist:
        def __init__(self, url: str | None) -> None:
            self.url = url

        def read_text(self, name: str) -> str | None:
            assert name == "direct_url.json"
            return None if self.url is None else json.dumps({"url": self.url, "dir_info": {}})

    site = tmp_path / "site-packages" / "garmentcv"
    site.mkdir(parents=True)
    monkeypatch.setattr(installs, "__file__", str(site / "installs.py"))  # an install without the checkout
    for url, expected in ((tmp_path.as_uri(), str(tmp_path)), (None, "garmentcv"),
                          ("https://example.org/garmentcv-0.1.0.tar.gz", "garmentcv")):
        monkeypatch.setattr(installs.metadata, "distribution", lambda name, url=url: Dist(url))
        installs.install_source.cache_clear()
        assert installs.install_source() == expected
    installs.install_source.cache_clear()
