"""Faults a fresh user hit following README (issue 12's last review): each with the behaviour README promises."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentcv import installs
from garmentcv.errors import CheckpointError, PathNotFoundError
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.rows import OutputFormat
from garmentcv.train import loop
from garmentcv.train.config import TrainConfig

from .conftest import write_image

TINY = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}


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
    assert "pip install 'garmentcv[train,cpu]'" in result.output and "Internal error" not in result.output


def test_jsonl_rows_of_non_utf8_file_names_are_valid_json(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / os.fsdecode(b"caf\xe9.jpg"), seed=1)
    out = tmp_path / "rows.jsonl"
    classify_folder(ClassifyConfig(folder=folder, out=out, model=onnx_model, provider="cpu",
                                   format=OutputFormat.JSONL, progress=False))
    line = out.read_bytes().splitlines()[0]
    row = json.loads(line)  # the raw byte 0xE9 made this line invalid UTF-8 and invalid JSON
    assert os.fsencode(row["path"]) == b"caf\xe9.jpg"


def test_resume_refuses_another_arch_list(make_lamoda, tmp_path: Path) -> None:
    """--resume with other --arch values rewrote comparison.md without the earlier arch; refuse like other settings."""
    data, out = make_lamoda(per_class=3), tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, **TINY), progress=False)
    with pytest.raises(CheckpointError, match=r"archs: \('resnet18',\) -> \('resnet34',\)"):
        loop.train(TrainConfig(data=data, out=out, resume=True, archs=("resnet34",), **TINY), progress=False)


def test_a_missing_weights_file_is_usage_exit_2_before_any_image_is_read(make_lamoda, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import garmentcv.train.distributed as train_distributed
    from garmentcv.train.cli import main as train_main

    # images are checked through the (DDP-sharded) checker, which calls find_bad_images in garmentcv.train.distributed
    monkeypatch.setattr(train_distributed, "find_bad_images", lambda *a, **k: pytest.fail("images read first"))
    with pytest.raises(PathNotFoundError, match="no-such.pth"):
        loop.train(TrainConfig(data=make_lamoda(per_class=3), out=tmp_path / "r1",
                               **{**TINY, "weights": str(tmp_path / "no-such.pth")}), progress=False)
    result = CliRunner().invoke(train_main, [str(make_lamoda(per_class=3, name="d2")), "--out", str(tmp_path / "r2"),
                                             "--weights", str(tmp_path / "no-such.pth")])
    assert result.exit_code == 2 and "no-such.pth" in result.output
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_export_opset_below_the_exporters_is_a_usage_error() -> None:
    from garmentcv.export.cli import main as export_main

    result = CliRunner().invoke(export_main, ["missing.pt", "--opset", "7"])
    assert result.exit_code == 2 and "7 is not in the range x>=18" in result.output


def test_kaggle_indexes_shared_by_two_files_exit_1_unless_allowed(tmp_path: Path, onnx_model: Path) -> None:
    """10.jpg and 10.png both become index 10: a submission with a duplicate id must not pass silently."""
    from garmentcv.infer.cli import classify_main

    folder = tmp_path / "imgs"
    write_image(folder / "10.jpg", seed=1)
    write_image(folder / "10.png", seed=2)
    write_image(folder / "11.jpg", seed=3)
    args = [str(folder), "--model", str(onnx_model), "--device", "cpu", "--format", "kaggle", "-q"]
    result = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 1, result.output
    assert "1 index is shared by several files: 10 (10.jpg, 10.png)" in result.output
    assert [line.split(",")[0] for line in (tmp_path / "s.csv").read_text().splitlines()] == ["index", "10", "10", "11"]
    allowed = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / "t.csv"), "--on-error", "continue"])
    assert allowed.exit_code == 0, allowed.output


def test_evaluate_failures_leave_no_out_folder_and_messages_say_what_to_do(tmp_path: Path, onnx_model: Path) -> None:
    from garmentcv.errors import DatasetError
    from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model

    test = tmp_path / "test"
    for name in ("10.jpg", "10.png", "11.jpg"):
        write_image(test / name, seed=len(name))
    out = tmp_path / "nested" / "ev"
    with pytest.raises(DatasetError, match=r"no label.*--labels"):  # an unlabelled folder without --labels
        evaluate_model(EvaluateConfig(data=test, out=out, model=onnx_model, provider="cpu", progress=False))
    assert not out.exists()
    labels = tmp_path / "labels.csv"
    labels.write_text("index,label\n10,bluzy\n", encoding="utf-8")
    with pytest.raises(DatasetError) as raised:
        evaluate_model(EvaluateConfig(data=test, labels=labels, out=out, model=onnx_model, provider="cpu",
                                      progress=False))
    assert "matches several files: 10.jpg, 10.png; keep one" in str(raised.value) and "PosixPath" not in str(raised.value)
    assert not out.exists()
    labels.write_text("index,label\n12,bluzy\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"1 index has no image <index>\.<ext> in .*; add the images or remove"):
        evaluate_model(EvaluateConfig(data=test, labels=labels, out=out, model=onnx_model, provider="cpu",
                                      progress=False))


def test_imagenet_weights_of_every_arch_are_fetched_before_any_work(make_lamoda, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With --arch resnet18 --arch resnet34 offline and only resnet18 cached, resnet34's missing file used to stop
    the run after resnet18 had trained; now it stops before any image is read, naming the file."""
    import urllib.error

    import torch

    import garmentcv.train.distributed as train_distributed
    from garmentcv.errors import WeightsError
    from garmentcv.models.registry import get_spec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = get_spec("resnet18").cache_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"present")  # only its presence matters before training

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    # images are checked through the (DDP-sharded) checker, which calls find_bad_images in garmentcv.train.distributed
    monkeypatch.setattr(train_distributed, "find_bad_images", lambda *a, **k: pytest.fail("images read first"))
    out = tmp_path / "run"
    with pytest.raises(WeightsError, match=r"resnet34.*resnet34-b627a593\.pth"):
        loop.train(TrainConfig(data=make_lamoda(per_class=3), out=out, archs=("resnet18", "resnet34"),
                               **{**TINY, "weights": "imagenet"}), progress=False)
    assert not out.exists()
