"""gcv-evaluate when inputs go wrong: non-UTF-8 file names, labels CSV with a byte-order mark, unwritable --out,
missing paths exit 2, --decode-threads, plural summaries, no --out folder left by a refused run."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import garmentcv.cpus
from garmentcv.errors import OutputPathError
from garmentcv.infer.cli import evaluate_main
from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model

from .conftest import write_image
from .test_classify_failures import PoolSpy
from .test_evaluate import CLASSES, model_and_torch  # noqa: F401  (module-scoped fixture)

ENC = {"encoding": "utf-8", "errors": "surrogateescape"}


def test_file_names_that_are_not_utf8_are_reported_as_their_bytes(tmp_path: Path, model_and_torch) -> None:  # noqa: F811
    model_path, _ = model_and_torch
    data = tmp_path / "data"
    data.mkdir()
    pixels = np.full((40, 30, 3), 128, np.uint8)
    same = [os.fsdecode(stem) + ".jpg" for stem in (b"\xff1_bluzy", b"\xff2_bryuki", b"\xff4_shorty")]
    for name in same:  # the same picture under each label: exactly two are misclassified
        Image.fromarray(pixels).save(data / name)
    (data / os.fsdecode(b"\xff3_shorty.jpg")).write_bytes(b"broken")
    result = evaluate_model(EvaluateConfig(data=data, out=tmp_path / "ev", model=model_path, provider="cpu",
                                           progress=False))
    assert (result.count, result.errors) == (3, 1)
    raw = (tmp_path / "ev" / "errors.csv").read_bytes()
    assert raw == (b"path,label,error\n" + os.fsencode(data)
                   + b"/\xff3_shorty.jpg,shorty,not a recognised image format\n")
    wrong = list(csv.reader((tmp_path / "ev" / "misclassified.csv").open(newline="", **ENC)))
    paths = [row[0] for row in wrong[1:]]
    assert len(paths) == 2 and set(paths) < {str(data / name) for name in same}
    # index,label mode: an index with the same bytes matches the file
    labels = tmp_path / "labels.csv"
    test = tmp_path / "test"
    write_image(test / os.fsdecode(b"\xff7.jpg"), seed=7)
    (test / os.fsdecode(b"\xff8.jpg")).write_bytes(b"broken")
    labels.write_bytes(b"index,label\n\xff7,bluzy\n\xff8,bryuki\n")
    result = evaluate_model(EvaluateConfig(data=test, labels=labels, out=tmp_path / "ev2", model=model_path,
                                           provider="cpu", progress=False))
    assert (result.count, result.errors) == (1, 1)
    assert (tmp_path / "ev2" / "errors.csv").read_bytes().endswith(b"/\xff8.jpg,bryuki,not a recognised image format\n")


def test_labels_csv_with_a_byte_order_mark_is_read(tmp_path: Path, model_and_torch) -> None:  # noqa: F811
    model_path, _ = model_and_torch
    test = tmp_path / "test"
    for i in range(4):
        write_image(test / f"{i}.jpg", seed=i)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbfindex,label\r\n"
                       + b"".join(f"{i},{CLASSES[i % 3]}\r\n".encode() for i in range(4)))
    result = evaluate_model(EvaluateConfig(data=test, labels=labels, out=tmp_path / "ev", model=model_path,
                                           provider="cpu", progress=False))
    assert (result.count, result.errors) == (4, 0)
    assert sum(map(sum, result.confusion_matrix)) == 4
    assert [sum(row) for row in result.confusion_matrix] == [2, 1, 1]


def test_unwritable_out_fails_before_the_model_is_opened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_image(data / "1_bluzy.jpg", seed=1)
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    out = tmp_path / "file.txt" / "ev"
    with pytest.raises(OutputPathError, match="is not a folder but a file"):
        evaluate_model(EvaluateConfig(data=data, out=out, model=tmp_path / "junk.onnx", provider="cpu"))
    result = CliRunner().invoke(evaluate_main, ["--model", str(tmp_path / "junk.onnx"), str(data),
                                                "--out", str(out)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'file.txt'} is not a folder but a file" in result.stderr and "--out" in result.stderr
    assert "ONNX" not in result.stderr and "Traceback" not in result.stderr


def test_missing_paths_are_exit_2(tmp_path: Path, model_and_torch) -> None:  # noqa: F811
    model_path, _ = model_and_torch
    data = tmp_path / "data"
    write_image(data / "1_bluzy.jpg", seed=1)
    runner = CliRunner()
    result = runner.invoke(evaluate_main, ["--model", str(tmp_path / "none.onnx"), str(data),
                                           "--out", str(tmp_path / "ev")])
    assert result.exit_code == 2
    assert "none.onnx: model file not found; export one with 'gcv export" in result.stderr
    result = runner.invoke(evaluate_main, ["--model", str(model_path), str(tmp_path / "nodata")])
    assert result.exit_code == 2 and "nodata" in result.stderr and "does not exist" in result.stderr
    result = runner.invoke(evaluate_main, ["--model", str(model_path), str(data), "--labels",
                                           str(tmp_path / "nolabels.csv")])
    assert result.exit_code == 2 and "nolabels.csv" in result.stderr and "does not exist" in result.stderr


def test_workers_reach_the_pool_and_summary_uses_plurals(tmp_path: Path, model_and_torch,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model_path, _ = model_and_torch
    data = tmp_path / "data"
    write_image(data / "1_bluzy.jpg", seed=1)
    (data / "2_bryuki.jpg").write_bytes(b"broken")
    monkeypatch.setattr(garmentcv.cpus, "available_cpus", lambda *a: 8)
    pools = PoolSpy(monkeypatch)
    args = ["--model", str(model_path), str(data), "--device", "cpu", "-q"]
    result = CliRunner().invoke(evaluate_main, [*args, "--out", str(tmp_path / "ev"), "--decode-threads", "3"])
    assert result.exit_code == 0, result.output
    assert pools.sizes == [3]
    assert result.stdout.startswith("1 image (1 could not be decoded): accuracy ")
    # a calibration line follows the headline, which still ends with where the reports went
    assert result.stdout.splitlines()[0].endswith(f"misclassified -> {tmp_path / 'ev'}")
    assert result.stdout.splitlines()[1].startswith("calibration: raw softmax ECE ")
    result = CliRunner().invoke(evaluate_main, [*args, "--out", str(tmp_path / "ev2")])
    assert result.exit_code == 0, result.output
    assert pools.sizes == [3, 8]  # default: every one of the 8 available CPUs decodes
    help_text = CliRunner().invoke(evaluate_main, ["--help"]).output
    assert "--decode-threads" in help_text and "the CPUs this process may use" in help_text


def test_macro_averages_are_over_the_classes_present_and_the_reports_say_which(
        tmp_path: Path, model_and_torch) -> None:  # noqa: F811
    """Images of only two of the model's three classes: the third is named as absent, not averaged as zero."""
    from sklearn.metrics import precision_recall_fscore_support

    model_path, _ = model_and_torch
    test = tmp_path / "test"
    for i in range(6):
        write_image(test / f"{i}.jpg", seed=i, colour=(40 * i, 200 - 30 * i, 90))
    labels = tmp_path / "labels.csv"
    labels.write_text("index,label\n" + "".join(f"{i},{CLASSES[i % 2]}\n" for i in range(6)), encoding="utf-8")
    args = ["--model", str(model_path), str(test), "--labels", str(labels), "--out", str(tmp_path / "ev"),
            "--device", "cpu", "-q"]
    result = CliRunner().invoke(evaluate_main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert report["macro_classes"] == ["bluzy", "bryuki"] and report["absent_classes"] == ["shorty"]
    matrix = np.asarray(json.loads((tmp_path / "ev" / "confusion_matrix.json").read_text())["matrix"])
    y_true = np.repeat(np.arange(3), matrix.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(3), row) for row in matrix])
    p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1], average="macro", zero_division=0)
    assert (report["precision"], report["recall"], report["f1"]) == pytest.approx((p, r, f1), abs=1e-12)
    assert "macro averages over 2 of 3 classes (no images of shorty)" in result.stdout


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
    assert "matches several files: 10.jpg, 10.png; keep one" in str(raised.value) and "PosixPath" not in str(
        raised.value
    )
    assert not out.exists()
    labels.write_text("index,label\n12,bluzy\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"1 index has no image <index>\.<ext> in .*; add the images or remove"):
        evaluate_model(EvaluateConfig(data=test, labels=labels, out=out, model=onnx_model, provider="cpu",
                                      progress=False))
