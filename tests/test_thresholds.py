"""Calibrated probabilities in gcv-classify, --min-confidence, --topk; coverage and thresholds in gcv-evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from garmentcv.calibration import coverage_table, threshold_for_accuracy
from garmentcv.image import load_input
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.cli import classify_main
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.rows import OutputFormat

from .conftest import COLOURS, write_image

CLASSES = ("bluzy", "bryuki", "platya")
TEMPERATURE = 2.0


def with_temperature(src: Path, dst: Path, temperature: float) -> Path:
    """A copy of the model file ``src`` whose metadata carries ``temperature``."""
    import onnx

    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        if prop.key == "garmentcv.temperature":
            prop.value = repr(temperature)
            break
    else:
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                            "garmentcv.temperature": repr(temperature)})
    onnx.save_model(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def models(onnx_model_factory, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(uncalibrated, T = 2) copies of one random-init 3-class model."""
    raw = onnx_model_factory(CLASSES, seed=3)
    return raw, with_temperature(raw, tmp_path_factory.mktemp("cal") / "model.onnx", TEMPERATURE)


def folder_of(root: Path, n: int = 9) -> Path:
    for i in range(n):
        write_image(root / f"{i:03d}.jpg", colour=COLOURS[i % 3], seed=i, size=(30 + i, 34))
    return root


def logits_of(model: Path, image: Path) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = load_input(image, read_model_info(model).preprocessing)[None]
    return session.run(["logits"], {"input": x})[0][0].astype(np.float64)


def softmax_t(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp((z - z.max()) / t)
    return e / e.sum()


def run(folder: Path, out: Path, model: Path, **kw: object):
    return classify_folder(ClassifyConfig(folder=folder, out=out, model=model, provider="cpu", progress=False, **kw))  # type: ignore[arg-type]


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(newline="", encoding="utf-8")))


# --- calibrated probabilities in gcv-classify ---

def test_classify_divides_logits_by_the_files_temperature_unless_told_not_to(tmp_path: Path, models) -> None:
    raw_model, cal_model = models
    folder = folder_of(tmp_path / "imgs")
    s = run(folder, tmp_path / "cal.csv", cal_model)
    run(folder, tmp_path / "raw.csv", cal_model, calibration="none")
    run(folder, tmp_path / "old.csv", raw_model)  # a file without a temperature: the raw softmax
    assert s.temperature == TEMPERATURE
    cal, raw = read_csv(tmp_path / "cal.csv"), read_csv(tmp_path / "raw.csv")
    assert cal[0] == raw[0] == ["path", "label", "confidence", *(f"prob_{c}" for c in CLASSES), "error"]
    assert (tmp_path / "old.csv").read_bytes() == (tmp_path / "raw.csv").read_bytes()
    for row_c, row_r in zip(cal[1:], raw[1:], strict=True):
        z = logits_of(raw_model, folder / row_c[0])
        for row, t in ((row_c, TEMPERATURE), (row_r, 1.0)):
            p = softmax_t(z, t)
            assert row == [row_c[0], CLASSES[int(p.argmax())], f"{p.max():.6f}", *(f"{v:.6f}" for v in p), ""]
        assert row_c[1] == row_r[1] and float(row_c[2]) < float(row_r[2])  # same label, less sure


# --- --min-confidence ---

def test_min_confidence_marks_rows_for_review_in_csv_and_jsonl(tmp_path: Path, models) -> None:
    _, model = models
    folder = folder_of(tmp_path / "imgs")
    (folder / "broken.jpg").write_bytes(b"not an image")
    run(folder, tmp_path / "plain.csv", model)
    plain = read_csv(tmp_path / "plain.csv")
    confidences = sorted(float(r[2]) for r in plain[1:] if r[2])
    assert confidences[3] < confidences[4]
    threshold = (confidences[3] + confidences[4]) / 2  # 4 of the 9 images are below it
    s = run(folder, tmp_path / "out.csv", model, min_confidence=threshold)
    run(folder, tmp_path / "out.jsonl", model, min_confidence=threshold, format=OutputFormat.JSONL)
    assert s.needs_review == 4 and s.errors == 1
    rows = read_csv(tmp_path / "out.csv")
    assert rows[0] == ["path", "label", "confidence", "needs_review", *(f"prob_{c}" for c in CLASSES), "error"]
    for row, before in zip(rows[1:], plain[1:], strict=True):
        if before[-1]:  # an error row: nothing to review, no label
            assert row == [before[0], "", "", "", "", "", "", before[-1]]
            continue
        flag = "true" if float(before[2]) < threshold else "false"
        assert row == [*before[:3], flag, *before[3:]]  # the model's choice stays in label
    assert [r[3] for r in rows[1:]].count("true") == 4
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["needs_review"] for r in records] == [
        None if r[3] == "" else r[3] == "true" for r in rows[1:]]
    assert records[0]["label"] == rows[1][1]


def test_min_confidence_and_topk_refused_with_kaggle(tmp_path: Path, models) -> None:
    _, model = models
    folder = folder_of(tmp_path / "imgs", 2)
    for option in (["--min-confidence", "0.5"], ["--topk", "2"]):
        result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "k.csv"), "--model",
                                                    str(model), "--format", "kaggle", *option])
        assert result.exit_code == 2, result.output
        assert option[0] in result.output and "kaggle" in result.output and "csv or jsonl" in result.output
        assert not (tmp_path / "k.csv").exists()


def test_cli_summary_counts_rows_needing_review(tmp_path: Path, models) -> None:
    _, model = models
    folder = folder_of(tmp_path / "imgs", 3)
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "o.csv"), "--model", str(model),
                                                "--device", "cpu", "--min-confidence", "1.0", "-q"])
    assert result.exit_code == 0, result.output
    assert "3 need review (confidence below 1)" in result.output
    assert "temperature 2" in result.output


# --- --topk ---

def test_topk_columns_and_lists(tmp_path: Path, models) -> None:
    _, model = models
    folder = folder_of(tmp_path / "imgs", 4)
    (folder / "broken.jpg").write_bytes(b"not an image")
    run(folder, tmp_path / "plain.csv", model)
    run(folder, tmp_path / "top.csv", model, topk=2)
    run(folder, tmp_path / "top.jsonl", model, topk=2, format=OutputFormat.JSONL)
    plain = read_csv(tmp_path / "plain.csv")
    top = read_csv(tmp_path / "top.csv")
    assert top[0] == ["path", "label", "confidence", "top1_label", "top1_prob", "top2_label", "top2_prob", "error"]
    records = [json.loads(line) for line in (tmp_path / "top.jsonl").read_text(encoding="utf-8").splitlines()]
    for row, before, rec in zip(top[1:], plain[1:], records, strict=True):
        if before[-1]:
            assert row == [before[0], "", "", "", "", "", "", before[-1]]
            assert rec["top_labels"] is None and rec["top_probs"] is None
            continue
        probs = {c: before[3 + i] for i, c in enumerate(CLASSES)}
        ranked = sorted(CLASSES, key=lambda c: -float(probs[c]))
        assert row == [*before[:3], ranked[0], probs[ranked[0]], ranked[1], probs[ranked[1]], ""]
        assert row[3] == row[1] and row[4] == row[2]
        assert rec["top_labels"] == ranked[:2]
        assert rec["top_probs"] == pytest.approx([float(probs[c]) for c in ranked[:2]], abs=1e-6)
        assert "probs" not in rec


def test_topk_larger_than_the_classes_is_refused(tmp_path: Path, models) -> None:
    _, model = models
    folder = folder_of(tmp_path / "imgs", 2)
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "o.csv"), "--model", str(model),
                                                "--topk", "4"])
    assert result.exit_code == 2, result.output
    assert "--topk 4" in result.output and "3 classes" in result.output
    assert not (tmp_path / "o.csv").exists()


# --- coverage and thresholds ---

CONF = np.array([0.95, 0.9, 0.9, 0.8, 0.6, 0.5])
RIGHT = np.array([True, True, False, True, False, True])


def test_coverage_table_by_hand() -> None:
    table = coverage_table(CONF, RIGHT, steps=11)  # thresholds 0.0, 0.1, ..., 1.0
    assert table.thresholds == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert table.kept == pytest.approx((1, 1, 1, 1, 1, 1, 5 / 6, 4 / 6, 4 / 6, 3 / 6, 0))
    assert table.accuracy[:6] == pytest.approx([4 / 6] * 6)
    assert table.accuracy[6:10] == pytest.approx((3 / 5, 3 / 4, 3 / 4, 2 / 3)) and table.accuracy[10] is None
    assert len(coverage_table(CONF, RIGHT).thresholds) == 101


def test_lowest_threshold_for_a_target_accuracy_by_hand() -> None:
    # kept sets by threshold: .95 -> 1/1, .9 -> 2/3, .8 -> 3/4, .6 -> 3/5, .5 -> 4/6
    c = threshold_for_accuracy(CONF, RIGHT, 0.75)
    assert (c.threshold, c.coverage, c.accuracy, c.kept, c.reachable) == (0.8, 4 / 6, 0.75, 4, True)
    c = threshold_for_accuracy(CONF, RIGHT, 0.6)
    assert (c.threshold, c.kept) == (0.5, 6)  # every image: 4/6 >= 0.6
    c = threshold_for_accuracy(CONF, RIGHT, 0.99)
    assert (c.threshold, c.kept) == (0.95, 1)
    wrong_top = threshold_for_accuracy(np.array([0.9, 0.5]), np.array([False, True]), 0.99)
    assert not wrong_top.reachable and wrong_top.threshold is None and wrong_top.best_accuracy == 0.5
    assert wrong_top.to_dict()["reachable"] is False


def lamoda(root: Path, per_class: int = 4) -> Path:
    n = 0
    for c, label in enumerate(CLASSES):
        for i in range(per_class):
            write_image(root / f"{n:04d}_{label}.jpg", colour=COLOURS[c], seed=100 + n, size=(30, 30 + i))
            n += 1
    return root


def test_evaluate_coverage_target_and_per_image_rows(tmp_path: Path, models) -> None:
    from garmentcv.calibration import softmax
    from garmentcv.infer.cli import evaluate_main

    raw_model, model = models
    data = lamoda(tmp_path / "data")
    result = CliRunner().invoke(evaluate_main, ["--model", str(model), str(data), "--out",
                                                str(tmp_path / "ev"), "--device", "cpu", "--target-accuracy", "0.5",
                                                "-q"])
    assert result.exit_code == 0, result.output
    files = sorted(data.iterdir())
    z = np.stack([logits_of(raw_model, f) for f in files])
    p = softmax(z, TEMPERATURE)
    labels = [f.stem.split("_")[1] for f in files]
    correct = np.array([CLASSES[i] == label for i, label in zip(p.argmax(axis=1), labels, strict=True)])
    rows = read_csv(tmp_path / "ev" / "predictions.csv")
    assert rows[0] == ["path", "label", "predicted", "confidence"]
    assert rows[1:] == [[str(f), label, CLASSES[int(q.argmax())], f"{q.max():.6f}"]
                        for f, label, q in zip(files, labels, p, strict=True)]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    want = coverage_table(p.max(axis=1), correct)
    assert metrics["coverage"]["thresholds"] == list(want.thresholds)
    assert metrics["coverage"]["kept"] == pytest.approx(list(want.kept))
    assert metrics["coverage"]["accuracy"][0] == pytest.approx(metrics["accuracy"])
    choice = threshold_for_accuracy(p.max(axis=1), correct, 0.5)
    assert metrics["target_accuracy"] == pytest.approx(choice.to_dict())
    assert (tmp_path / "ev" / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if choice.reachable:
        assert (f"target accuracy 50.00%: confidence >= {choice.threshold:.6f} keeps {choice.coverage:.2%}"
                in result.output)
    else:
        assert "target accuracy 50.00% is not reachable" in result.output
    assert "ECE" in result.output and "temperature 2" in result.output


def test_evaluate_raw_softmax_option(tmp_path: Path, models) -> None:
    from garmentcv.calibration import softmax
    from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model

    raw_model, model = models
    data = lamoda(tmp_path / "data", 2)
    r = evaluate_model(EvaluateConfig(data=data, out=tmp_path / "ev", model=model, provider="cpu", progress=False,
                                      calibration="none"))
    files = sorted(data.iterdir())
    p = softmax(np.stack([logits_of(raw_model, f) for f in files]))
    assert [row.confidence for row in r.predictions] == pytest.approx(list(p.max(axis=1)), abs=1e-6)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["calibration"]["applied"] == "none" and metrics["calibration"]["temperature"] == TEMPERATURE
    # both figures are still reported: raw, and with the file's temperature
    assert metrics["calibration"]["calibrated"]["nll"] != metrics["calibration"]["uncalibrated"]["nll"]
