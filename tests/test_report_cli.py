"""The report hooks: gcv-evaluate writes report.html in --out; gcv-classify --report FILE.html."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentcv.infer.cli import classify_main
from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model

from .conftest import write_image

CLASSES = ("bluzy", "bryuki", "shorty")


@pytest.fixture(scope="module")
def model(onnx_model_factory) -> Path:
    return onnx_model_factory(CLASSES, seed=1)


def test_evaluate_writes_report_html(tmp_path: Path, model: Path) -> None:
    data = tmp_path / "data"
    for n in range(9):
        write_image(data / f"{n:04d}_{CLASSES[n % 3]}.jpg", (36, 48), (60 + 70 * (n % 3),) * 3, seed=n)
    (data / "0100_bluzy.jpg").write_bytes(b"")
    out = tmp_path / "ev"
    result = evaluate_model(EvaluateConfig(data=data, out=out, model=model, provider="cpu", progress=False))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert result.misclassified == len(re.findall(r"<figure", re.search(
        r'<section id="misclassified".*?</section>', html, re.S).group(0)))
    least_confident = re.search(r'<section id="least-confident".*?</section>', html, re.S).group(0)
    assert len(re.findall(r"<figure", least_confident)) == 9
    cells = {(int(i), int(j)) for i, j in re.findall(r'<section id="cell-(\d)-(\d)"', html)}
    assert cells == {(i, j) for i, row in enumerate(result.confusion_matrix) for j, n in enumerate(row) if n}
    assert re.search(r'<td class="text">0100_bluzy\.jpg</td><td class="text">bluzy</td><td class="text">empty file',
                     html)
    assert re.search(r"<th>accuracy</th><td>" + f"{result.accuracy:.4f}", html)
    # gcv-evaluate draws both plots since the calibration work merged; absent plots: test_report.py
    assert '<img src="report_files/plot-1.png" alt="Reliability diagram">' in html
    assert '<img src="report_files/plot-2.png" alt="Coverage against accuracy">' in html
    assert len(list((out / "report_files").glob("t*.jpg"))) == 9


def test_classify_report_option(tmp_path: Path, model: Path) -> None:
    photos = tmp_path / "photos"
    for n in range(5):
        write_image(photos / f"{n}.png", seed=n)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out, page = tmp_path / "out.csv", tmp_path / "pages" / "check.html"
    result = CliRunner().invoke(classify_main, [str(photos), "--out", str(out), "--model", str(model),
                                                "--device", "cpu", "--report", str(page), "-q"])
    assert result.exit_code == 0, result.output
    assert f"report -> {page}" in result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    html = page.read_text(encoding="utf-8")
    shown = re.findall(r'<figcaption title="([^"]+)"', html)
    assert sorted(shown) == sorted(r["path"] for r in rows if not r["error"])
    for label in {r["label"] for r in rows if r["label"]}:
        section = re.search(rf'<section id="class-{label}".*?</section>', html, re.S).group(0)
        confidences = [float(c) for c in re.findall(r"confidence (\d\.\d+)", section)]
        assert confidences == sorted(confidences)  # lowest first
    assert '<td class="text">broken.jpg</td>' in html
    assert len(list((tmp_path / "pages" / "check_files").glob("t*.jpg"))) == 5


def test_classify_report_refused_with_kaggle_before_any_work(tmp_path: Path, model: Path) -> None:
    photos = tmp_path / "photos"
    write_image(photos / "1.png")
    result = CliRunner().invoke(classify_main, [str(photos), "--out", str(tmp_path / "k.csv"), "--model", str(model),
                                                "--format", "kaggle", "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert "--report" in result.output and "kaggle" in result.output and "csv or jsonl" in result.output
    assert not (tmp_path / "k.csv").exists() and not (tmp_path / "r.html").exists()


def test_classify_report_may_not_be_the_results_file(tmp_path: Path, model: Path) -> None:
    photos = tmp_path / "photos"
    write_image(photos / "1.png")
    same = str(tmp_path / "r.csv")
    result = CliRunner().invoke(classify_main, [str(photos), "--out", same, "--model", str(model), "--report", same])
    assert result.exit_code == 2 and "is the results file --out" in result.output
    assert not Path(same).exists()
