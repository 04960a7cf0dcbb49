"""The settings of gcv-classify and gcv-evaluate are checked by the library, before any work: a program calling
the library functions gets the errors (and exit codes) the commands give."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentcv.infer.classify import (
    ClassifyConfig,
    ClassifySummary,
    ClassifyUsageError,
    ErrorRowsError,
    check_config,
    check_error_policy,
    classify_folder,
)
from garmentcv.infer.cli import classify_main, evaluate_main
from garmentcv.infer.engines.ray import RayOptions
from garmentcv.infer.evaluate import EvaluateConfig, EvaluateUsageError, evaluate_model
from garmentcv.infer.evaluate import check_config as check_evaluate_config
from garmentcv.infer.rows import OutputFormat
from tests.conftest import write_image


def _cfg(tmp_path: Path, **kw: object) -> ClassifyConfig:
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    return ClassifyConfig(folder=folder, out=tmp_path / "out.csv", model=tmp_path / "m.onnx", progress=False,
                          **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings", "engine", "ray", "message"), [
    ({}, "local", RayOptions(num_workers=2), "--num-workers only go with --engine ray"),
    ({}, "local", RayOptions(address="auto", cpus_per_worker=2),
     "--address, --cpus-per-worker only go with --engine ray"),
    ({"threads": 2}, "ray", None, "--threads and --decode-threads are for --engine local"),
    ({"workers": 2}, "ray", None, "--threads and --decode-threads are for --engine local"),
    ({"runtime": "openvino"}, "ray", None, "--engine ray runs onnxruntime in its workers"),
    ({"provider": "cuda"}, "ray", None, "--engine ray runs its workers on CPUs; use --device auto or cpu"),
    ({}, "ray", RayOptions(num_workers=0), "--num-workers and --cpus-per-worker must be at least 1"),
    ({}, "spark", None, "--engine 'spark': choose local or ray"),
    ({"provider": "gpu"}, "local", None, "--device 'gpu': choose auto, cpu or cuda"),
    ({"runtime": "tensorrt"}, "local", None, "--runtime 'tensorrt': choose auto, onnxruntime or openvino"),
    ({"batch_size": 0}, "local", None, "--batch-size 0: give at least 1"),
    ({"threads": 0}, "local", None, "--threads 0: give at least 1"),
    ({"workers": 0}, "local", None, "--decode-threads 0: give at least 1"),
    ({"format": OutputFormat.KAGGLE, "topk": 2}, "local", None, "--topk cannot be used with --format kaggle"),
])
def test_settings_that_do_not_go_together_are_usage_errors(tmp_path: Path, settings: dict, engine: str,
                                                            ray: RayOptions | None, message: str) -> None:
    with pytest.raises(ClassifyUsageError) as info:
        check_config(_cfg(tmp_path, **settings), engine=engine, ray=ray)
    assert str(info.value).startswith(message)
    assert info.value.exit_code == 2


def test_report_needs_a_local_folder_the_csv_or_jsonl_columns_and_its_own_name(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    check_config(_cfg(tmp_path), report=page)  # a local folder and csv: accepted
    manifest = tmp_path / "list.txt"
    manifest.write_text("a.jpg\n")
    cases = [
        (ClassifyConfig(folder=manifest, out=tmp_path / "o.csv"), page,
         "--report shows the images of a local folder; SOURCE is not one"),
        (ClassifyConfig(folder="s3://bucket/photos/", out=tmp_path / "o.csv"), page,
         "--report shows the images of a local folder; SOURCE is not one"),
        (_cfg(tmp_path, format=OutputFormat.KAGGLE), page,
         "--report needs the confidence and error columns of --format csv or jsonl, not kaggle"),
        (_cfg(tmp_path), tmp_path / "out.csv", f"--report {tmp_path / 'out.csv'} is the results file --out"),
        (_cfg(tmp_path), tmp_path / "imgs" / "page.html",
         f"--report {tmp_path / 'imgs' / 'page.html'} lies inside SOURCE"),
    ]
    for cfg, report, message in cases:
        with pytest.raises(ClassifyUsageError) as info:
            check_config(cfg, report=report)
        assert str(info.value).startswith(message), (str(info.value), message)


def test_classify_folder_checks_its_settings_before_any_work(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, batch_size=0)
    with pytest.raises(ClassifyUsageError, match="--batch-size 0: give at least 1"):
        classify_folder(cfg)  # before the model (which does not exist) is opened
    assert not cfg.out.exists() and not Path(f"{cfg.out}.partial").exists()


def test_the_command_gives_the_library_errors(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg")
    args = [str(folder), "--out", str(tmp_path / "o.csv"), "--model", str(onnx_model)]
    for extra, message in (
        (["--engine", "ray", "--decode-threads", "2"], "--threads and --decode-threads are for --engine local"),
        (["--engine", "ray", "--device", "cuda"], "--engine ray runs its workers on CPUs; use --device auto or cpu"),
        (["--report", str(tmp_path / "o.csv")], "is the results file --out"),
    ):
        result = CliRunner().invoke(classify_main, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"Error: {message}") or message in result.stderr, result.stderr
    assert not (tmp_path / "o.csv").exists()


def _summary(out: Path, errors: int = 0, duplicates: dict | None = None) -> ClassifySummary:
    return ClassifySummary(out=out, files=3, classified=3 - errors, errors=errors, skipped={}, reused=0, seconds=1.0,
                           images_per_second=3.0, provider="cpu", error_examples=("b.jpg",) * errors,
                           duplicate_indexes=duplicates or {})


@pytest.mark.parametrize(("fmt", "policy", "errors", "duplicates", "message"), [
    (OutputFormat.CSV, "auto", 1, None, None),
    (OutputFormat.CSV, "continue", 1, None, None),
    (OutputFormat.CSV, "fail", 1, None, "1 image could not be decoded: b.jpg (see the error column of out.csv)"),
    (OutputFormat.CSV, "fail", 0, None, None),
    (OutputFormat.KAGGLE, "auto", 1, None, "1 image could not be decoded and has an empty label in the kaggle file"),
    (OutputFormat.KAGGLE, "fail", 1, None, "1 image could not be decoded: b.jpg"),
    (OutputFormat.KAGGLE, "continue", 1, None, None),
    (OutputFormat.KAGGLE, "auto", 0, {"10": ["10.jpg", "10.png"]}, "1 index is shared by several files: 10"),
    (OutputFormat.KAGGLE, "fail", 0, {"10": ["10.jpg", "10.png"]}, "1 index is shared by several files: 10"),
    (OutputFormat.KAGGLE, "continue", 0, {"10": ["10.jpg", "10.png"]}, None),
])
def test_error_policy(fmt: OutputFormat, policy: str, errors: int, duplicates: dict | None,
                      message: str | None) -> None:
    summary = _summary(Path("out.csv"), errors, duplicates)
    if message is None:
        check_error_policy(summary, fmt, policy)
        return
    with pytest.raises(ErrorRowsError) as info:
        check_error_policy(summary, fmt, policy)
    assert str(info.value).startswith(message) and info.value.exit_code == 1
    assert info.value.summary is summary


def test_error_policy_names_its_choices() -> None:
    with pytest.raises(ClassifyUsageError, match="--on-error 'sometimes': choose auto, fail or continue"):
        check_error_policy(_summary(Path("o.csv")), OutputFormat.CSV, "sometimes")


@pytest.mark.parametrize(("settings", "message"), [
    ({"calibration": "platt"}, "--calibration 'platt': choose temperature or none"),
    ({"provider": "gpu"}, "--device 'gpu': choose auto, cpu or cuda"),
    ({"runtime": "tvm"}, "--runtime 'tvm': choose auto, onnxruntime or openvino"),
    ({"batch_size": 0}, "--batch-size 0: give at least 1"),
    ({"threads": 0}, "--threads 0: give at least 1"),
    ({"workers": 0}, "--decode-threads 0: give at least 1"),
    ({"target_accuracy": 1.5}, "--target-accuracy 1.5: give an accuracy within 0..1"),
    ({"layout": "coco"}, "--layout 'coco': choose lamoda, folders or csv"),
    ({"layout": "lamoda", "labels": Path("labels.csv")},
     "--layout is for labelled data; with --labels DATA is a folder of <index>.<ext> images"),
])
def test_evaluate_settings_are_checked_by_the_library(tmp_path: Path, settings: dict, message: str) -> None:
    cfg = EvaluateConfig(data=tmp_path, out=tmp_path / "ev", model=tmp_path / "m.onnx", progress=False,
                         **settings)  # type: ignore[arg-type]
    with pytest.raises(EvaluateUsageError) as info:
        check_evaluate_config(cfg)
    assert str(info.value).startswith(message) and info.value.exit_code == 2
    with pytest.raises(EvaluateUsageError):
        evaluate_model(cfg)  # before the model (which does not exist) is opened
    assert not (tmp_path / "ev").exists()


def test_evaluate_command_refuses_layout_with_labels(tmp_path: Path, onnx_model: Path) -> None:
    data = tmp_path / "test"
    write_image(data / "1.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("index,label\n1,bluzy\n")
    result = CliRunner().invoke(evaluate_main, [str(data), "--labels", str(labels), "--layout", "lamoda",
                                                "--model", str(onnx_model), "--out", str(tmp_path / "ev")])
    assert result.exit_code == 2
    assert "Error: --layout is for labelled data; with --labels DATA is a folder" in result.stderr
