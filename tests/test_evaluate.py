"""gcv-evaluate: agreement with training's validation, the index,label mode, reports, CLI, missing extras."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import DataLoader

from garmentcv.data.layouts import load_dataset
from garmentcv.errors import DatasetError
from garmentcv.infer.cli import evaluate_main
from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model
from garmentcv.installs import pip_install
from garmentcv.models.registry import default_preprocessing
from garmentcv.train.data import EvalImages
from garmentcv.train.loop import evaluate as train_evaluate

from .conftest import build_onnx_model, write_image

CLASSES = ("bluzy", "bryuki", "shorty")


def lamoda_folder(root: Path, per_class: int = 5) -> Path:
    """``<id>_<label>.jpg`` files; each class a different brightness so a random model splits them unevenly."""
    n = 0
    for c, label in enumerate(CLASSES):
        for _ in range(per_class):
            rng = np.random.default_rng(n)
            pixels = np.clip(rng.normal(60 + 70 * c, 40, (48, 36, 3)), 0, 255).astype(np.uint8)
            root.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / f"{n:04d}_{label}.jpg")
            n += 1
    return root


@pytest.fixture(scope="module")
def model_and_torch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("evalmodel")
    return build_onnx_model(folder / "model.onnx", CLASSES, seed=1)  # type: ignore[return-value]


def test_agrees_with_training_validation(tmp_path: Path, model_and_torch) -> None:
    model_path, torch_model = model_and_torch
    data = lamoda_folder(tmp_path / "train")
    dataset = load_dataset(data)
    pp = default_preprocessing("resnet18", 32)
    loader = DataLoader(EvalImages(dataset.samples, CLASSES, pp), batch_size=4)
    _, expected = train_evaluate(torch_model, loader, torch.device("cpu"), len(CLASSES))
    result = evaluate_model(EvaluateConfig(data=data, out=tmp_path / "ev", model=model_path, provider="cpu",
                                           batch_size=7, progress=False))
    assert result.count == expected.count == 15
    assert result.confusion_matrix == expected.confusion_matrix
    assert sum(1 for column in np.asarray(expected.confusion_matrix).T if column.sum()) >= 2  # not a constant model
    assert (result.accuracy, result.precision, result.recall, result.f1) == pytest.approx(
        (expected.accuracy, expected.precision, expected.recall, expected.f1), abs=1e-12)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(expected.accuracy, abs=1e-12)
    assert list(metrics["per_class"]) == list(CLASSES)
    assert [metrics["per_class"][c]["support"] for c in CLASSES] == [5, 5, 5]
    matrix = np.asarray(expected.confusion_matrix)
    for i, c in enumerate(CLASSES):
        recall = matrix[i, i] / matrix[i].sum()
        assert metrics["per_class"][c]["recall"] == pytest.approx(recall)
    cm = json.loads((tmp_path / "ev" / "confusion_matrix.json").read_text())
    assert cm["classes"] == list(CLASSES) and cm["matrix"] == expected.confusion_matrix
    assert (tmp_path / "ev" / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = list(csv.reader((tmp_path / "ev" / "misclassified.csv").open(newline="")))
    assert wrong[0] == ["path", "label", "predicted", "confidence"]
    assert len(wrong) - 1 == expected.count - int(np.trace(matrix)) == result.misclassified
    for path, label, predicted, _ in wrong[1:]:
        assert Path(path).stem.rsplit("_", 1)[1] == label != predicted


def test_index_label_csv_mode_with_a_broken_image(tmp_path: Path, model_and_torch) -> None:
    model_path, _ = model_and_torch
    test = tmp_path / "test"
    for i in range(6):
        write_image(test / f"{i}.jpg", seed=i)
    (test / "6.jpg").write_bytes(b"broken")
    write_image(test / "99.png", seed=99)  # no label row: not evaluated
    labels = tmp_path / "test_labels.csv"
    labels.write_text("index,label\n" + "".join(f"{i},{CLASSES[i % 3]}\n" for i in range(7)))
    result = evaluate_model(EvaluateConfig(data=test, labels=labels, out=tmp_path / "ev", model=model_path,
                                           provider="cpu", progress=False))
    assert (result.count, result.errors) == (6, 1)
    assert sum(map(sum, result.confusion_matrix)) == 6
    errors = list(csv.reader((tmp_path / "ev" / "errors.csv").open(newline="")))
    assert errors == [["path", "label", "error"], [str(test / "6.jpg"), "bluzy", "not a recognised image format"]]
    labels.write_text("index,label\n0,bluzy\n1,unknown_class\n")
    with pytest.raises(DatasetError, match="not classes of the model"):
        evaluate_model(EvaluateConfig(data=test, labels=labels, out=tmp_path / "e2", model=model_path, provider="cpu"))
    labels.write_text("index,label\n0,bluzy\n42,bryuki\n")
    with pytest.raises(DatasetError, match=r"1 index has no image"):
        evaluate_model(EvaluateConfig(data=test, labels=labels, out=tmp_path / "e2", model=model_path, provider="cpu"))


def test_cli_end_to_end(tmp_path: Path, model_and_torch) -> None:
    model_path, _ = model_and_torch
    data = lamoda_folder(tmp_path / "train", per_class=2)
    result = CliRunner().invoke(evaluate_main, ["--model", str(model_path), str(data), "--out",
                                                str(tmp_path / "ev"), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("6 images (0 could not be decoded): accuracy ")
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [
        "confusion_matrix.json", "confusion_matrix.png", "coverage.png", "errors.csv", "metrics.json",
        "misclassified.csv", "predictions.csv", "reliability.png", "report.html", "report_files"]
    result = CliRunner().invoke(evaluate_main, ["--model", str(tmp_path / "none.onnx"), str(data)])
    # a model file that does not exist is wrong usage: exit 2
    assert result.exit_code == 2 and "model file not found" in result.stderr


def test_missing_scikit_learn_gives_install_hint(tmp_path: Path, model_and_torch) -> None:
    model_path, _ = model_and_torch
    data = lamoda_folder(tmp_path / "train", per_class=2)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["sklearn"] = None
        from garmentcv.infer.cli import evaluate_main
        evaluate_main(["--model", {str(model_path)!r}, {str(data)!r}, "--out", {str(tmp_path / 'ev')!r}])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert pip_install("eval") in proc.stderr
