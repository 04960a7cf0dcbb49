"""HTML reports (garmentcv.report): content, optional figures, escaping, offline folder, 100,000 rows, hooks."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path

import pytest

from garmentcv.errors import OutputPathError
from garmentcv.report import (
    Limits,
    Prediction,
    files_folder,
    write_classify_report,
    write_evaluate_report,
)

from .conftest import write_image

CLASSES = ("bluzy", "bryuki", "shorty")


def _rows(root: Path) -> list[Prediction]:
    """6 labelled images: 4 right, 2 wrong (bluzy->bryuki 0.9, shorty->bluzy 0.55)."""
    spec = [("a.png", "bluzy", "bluzy", 0.8), ("b.png", "bluzy", "bryuki", 0.9), ("c.png", "bryuki", "bryuki", 0.6),
            ("d.png", "bryuki", "bryuki", 0.99), ("e.png", "shorty", "bluzy", 0.55), ("f.png", "shorty", "shorty", 0.7)]
    rows = []
    for i, (name, label, pred, conf) in enumerate(spec):
        write_image(root / name, (20, 30), seed=i)
        rows.append(Prediction(path=name, source=root / name, label=label, predicted=pred, confidence=conf))
    return rows


def _evaluate(tmp_path: Path, figures: dict | None = None, plots: dict | None = None, **kw) -> tuple[Path, str]:
    root = tmp_path / "data"
    out = tmp_path / "ev"
    rows = _rows(root)
    matrix = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    per_class = {"bluzy": {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2},
                 "bryuki": {"precision": 0.6667, "recall": 1.0, "f1-score": 0.8, "support": 2},
                 "shorty": {"precision": 1.0, "recall": 0.5, "f1-score": 0.6667, "support": 2}}
    errors = [Prediction(path="broken.jpg", source=None, label="bluzy", error="truncated file")]
    page = write_evaluate_report(
        out / "report.html", classes=CLASSES, figures=figures or {"accuracy": 0.6667, "count": 6, "errors": 1},
        per_class=per_class, matrix=matrix, rows=rows, errors=errors, plots=plots or {}, **kw,
    )
    return page, page.read_text(encoding="utf-8")


def _section(html: str, ident: str) -> str:
    """The text of the <section id=ident> ... </section> element."""
    match = re.search(rf'<section id="{re.escape(ident)}".*?</section>', html, re.S)
    assert match, f"no section {ident}"
    return match.group(0)


def test_evaluate_page_tables_matrix_links_and_galleries(tmp_path: Path) -> None:
    page, html = _evaluate(tmp_path)
    assert page == tmp_path / "ev" / "report.html"
    metrics = _section(html, "metrics")
    assert re.search(r"<th>accuracy</th><td>0\.6667</td>", metrics)
    assert re.search(r"<th>count</th><td>6</td>", metrics)
    per_class = _section(html, "per-class")
    assert re.search(r"<th>bryuki</th><td>0\.6667</td><td>1\.0000</td><td>0\.8000</td><td>2</td>", per_class)
    matrix = _section(html, "confusion")
    # every non-zero cell links to its images, empty cells link nowhere
    assert re.findall(r'href="#(cell-\d-\d)"', matrix) == ["cell-0-0", "cell-0-1", "cell-1-1", "cell-2-0", "cell-2-2"]
    assert html.count('<section id="cell-') == 5
    cell = _section(html, "cell-1-1")
    assert re.findall(r'<figcaption title="([^"]+)"', cell) == ["c.png", "d.png"]  # least confident first
    wrong = _section(html, "misclassified")
    assert re.findall(r'<figcaption title="([^"]+)"', wrong) == ["b.png", "e.png"]  # most confident mistakes first
    assert "true bluzy" in wrong and "predicted bryuki" in wrong and "0.900" in wrong
    least = _section(html, "least-confident")
    assert re.findall(r'<figcaption title="([^"]+)"', least)[:3] == ["e.png", "c.png", "f.png"]
    errors = _section(html, "not-decoded")
    assert "broken.jpg" in errors and "truncated file" in errors
    # each shown image has a thumbnail file in report_files/
    thumbs = re.findall(r'<img src="report_files/([^"]+)"', html)
    assert len(set(thumbs)) == 6
    assert all((tmp_path / "ev" / "report_files" / t).is_file() for t in thumbs)


def test_optional_figures_show_when_present(tmp_path: Path) -> None:
    plot = write_image(tmp_path / "plots" / "reliability.png", (40, 30))
    coverage = write_image(tmp_path / "plots" / "coverage.png", (40, 30))
    figures = {"accuracy": 0.6667, "calibration": {"raw": {"ece": 0.1234}, "calibrated": {"ece": 0.0456}},
               "coverage": [{"threshold": 0.5, "kept": 0.9, "accuracy": 0.95},
                            {"threshold": 0.9, "kept": 0.4, "accuracy": 1.0}]}
    _, html = _evaluate(tmp_path, figures=figures, plots={"Reliability diagram": plot, "Coverage": coverage})
    metrics = _section(html, "metrics")
    assert re.search(r"<th>calibration raw ece</th><td>0\.1234</td>", metrics)
    assert re.search(r"<th>calibration calibrated ece</th><td>0\.0456</td>", metrics)
    table = _section(html, "table-coverage")
    assert "<th>threshold</th><th>kept</th><th>accuracy</th>" in table
    assert "<td>0.9000</td><td>0.4000</td><td>1.0000</td>" in table
    plots = _section(html, "plots")
    assert re.findall(r'<img src="report_files/([^"]+)" alt="([^"]+)"', plots) == [
        ("plot-1.png", "Reliability diagram"), ("plot-2.png", "Coverage")]
    assert (tmp_path / "ev" / "report_files" / "plot-1.png").read_bytes() == plot.read_bytes()


def test_optional_figures_absent_when_not_given(tmp_path: Path) -> None:
    _, html = _evaluate(tmp_path)
    assert 'id="plots"' not in html and "Reliability" not in html and 'id="table-' not in html
    assert "ece" not in html


def _results_csv(path: Path, rows: list[dict], review: bool) -> Path:
    fields = ["path", "label", "confidence", "prob_bluzy", "prob_bryuki", *(["needs_review"] if review else []),
              "error"]
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.DictWriter(handle, fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _classify_rows(folder: Path) -> list[dict]:
    rows = []
    for i, (label, conf) in enumerate([("bluzy", 0.9), ("bluzy", 0.51), ("bryuki", 0.7), ("bluzy", 0.6)]):
        write_image(folder / f"sub/{i}.png", seed=i)
        rows.append({"path": f"sub/{i}.png", "label": label, "confidence": f"{conf:.6f}",
                     "needs_review": "true" if conf < 0.65 else "false", "error": ""})
    rows.append({"path": "bad.jpg", "label": "", "confidence": "", "needs_review": "", "error": "empty file (0 bytes)"})
    return rows


def test_classify_page_per_class_lowest_first_review_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    results = _results_csv(tmp_path / "out.csv", _classify_rows(folder), review=True)
    page = write_classify_report(tmp_path / "rep" / "page.html", results, folder)
    html = page.read_text(encoding="utf-8")
    bluzy = _section(html, "class-bluzy")
    assert re.findall(r'<figcaption title="([^"]+)"', bluzy) == ["sub/1.png", "sub/3.png", "sub/0.png"]
    assert "3 images" in bluzy
    assert re.findall(r'<figcaption title="([^"]+)"', _section(html, "class-bryuki")) == ["sub/2.png"]
    review = _section(html, "needs-review")
    assert re.findall(r'<figcaption title="([^"]+)"', review) == ["sub/1.png", "sub/3.png"]
    errors = _section(html, "not-read")
    assert r'<td class="text">bad.jpg</td><td class="text">empty file (0 bytes)</td>' in errors
    assert re.findall(r'<img src="page_files/', html) and (tmp_path / "rep" / "page_files").is_dir()


def test_classify_page_without_review_column_and_from_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    rows = _classify_rows(folder)
    results = tmp_path / "out.jsonl"
    with open(results, "w", encoding="utf-8") as handle:
        for r in rows:
            handle.write(json.dumps({"path": r["path"], "label": r["label"] or None,
                                     "confidence": float(r["confidence"]) if r["confidence"] else None,
                                     "probs": None, "error": r["error"] or None}) + "\n")
    html = write_classify_report(tmp_path / "page.html", results, folder).read_text(encoding="utf-8")
    main = html[html.index("<main>"):]
    assert 'id="needs-review"' not in html and "review" not in main.lower()
    assert re.findall(r'<figcaption title="([^"]+)"', _section(html, "class-bluzy")) == [
        "sub/1.png", "sub/3.png", "sub/0.png"]
    assert "empty file (0 bytes)" in _section(html, "not-read")


def test_names_and_labels_are_escaped_and_non_utf8_names_shown(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    evil = "<script>alert(1)</script>.png"
    raw = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8, a surrogate escape in Python
    write_image(folder / evil)
    write_image(folder / raw)
    rows = [{"path": evil, "label": '<img src=x onerror="alert(2)">', "confidence": "0.5", "error": ""},
            {"path": raw, "label": "bluzy", "confidence": "0.6", "error": ""},
            {"path": "<b>x</b>.jpg", "label": "", "confidence": "", "error": "<i>bad</i>"}]
    results = _results_csv(tmp_path / "out.csv", rows, review=False)
    html = write_classify_report(tmp_path / "page.html", results, folder).read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "onerror=" not in html.replace("onerror=&quot;", "")
    assert "<b>x" not in html and "<i>bad" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "&lt;i&gt;bad&lt;/i&gt;" in html
    assert r"caf\xe9.png" in html
    assert len(re.findall(r'<img src="page_files/t\d+\.jpg"', html)) == 2  # one thumbnail per image


def test_page_is_offline_with_relative_links_only(tmp_path: Path) -> None:
    plot = write_image(tmp_path / "reliability.png", (40, 30))
    page, html = _evaluate(tmp_path, plots={"Reliability diagram": plot})
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert links and all(not re.match(r"[a-z]+:|/", link) for link in links if link != "data:,"), links
    assert "http" not in html.replace("http-equiv", "")
    # the page and its folder still work when copied elsewhere
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    os.rename(page, moved / "report.html")
    os.rename(page.parent / "report_files", moved / "report_files")
    for link in links:
        if not link.startswith(("#", "data:")):
            assert (moved / link).is_file(), link


def test_rerun_replaces_the_files_folder_but_never_a_foreign_one(tmp_path: Path) -> None:
    page, _ = _evaluate(tmp_path)
    stale = files_folder(page) / "t99999.jpg"
    stale.write_bytes(b"old")
    _evaluate(tmp_path)
    assert not stale.exists() and (files_folder(page) / "t00000.jpg").is_file()
    other = tmp_path / "mine.html"
    (tmp_path / "mine_files").mkdir()
    (tmp_path / "mine_files" / "notes.txt").write_text("keep")
    with pytest.raises(OutputPathError, match="mine_files.*not a GarmentCV report folder"):
        write_classify_report(other, _results_csv(tmp_path / "r.csv", [], review=False), tmp_path)
    assert (tmp_path / "mine_files" / "notes.txt").read_text() == "keep" and not other.exists()


def test_100000_rows_are_quick_capped_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import garmentcv.report.thumbnails as thumbnails

    folder = tmp_path / "photos"
    for i in range(20):
        write_image(folder / f"{i:06d}.png", (16, 16), seed=i)
    classes = [f"c{k}" for k in range(10)]
    rows = [{"path": f"{i:06d}.png", "label": classes[i % 10],
             "confidence": f"{0.1 + (i * 7919 % 100000) / 111112:.6f}",
             "needs_review": "true" if i % 3 else "false", "error": ""} for i in range(100_000)]
    for i in range(0, 100_000, 50):
        rows[i].update(label="", confidence="", needs_review="", error="truncated file")
    results = _results_csv(tmp_path / "out.csv", rows, review=True)
    decoded = []
    real = thumbnails.decode_image
    monkeypatch.setattr(thumbnails, "decode_image", lambda path: decoded.append(path) or real(path))
    start = time.perf_counter()
    page = write_classify_report(tmp_path / "page.html", results, folder,
                                 Limits(gallery=200, grouped=2000, listed=1000))
    seconds = time.perf_counter() - start
    html = page.read_text(encoding="utf-8")
    assert seconds < 5, seconds
    assert page.stat().st_size < 3_000_000
    assert len(decoded) <= 200 + 2000  # only the images shown (most do not exist here: their decoding fails at once)
    review = _section(html, "needs-review")
    assert "showing the 200 least confident of 65,333" in review
    assert len(re.findall("<figure", review)) == 200
    assert "showing the 200 least confident of 10,000" in _section(html, "class-c1")
    assert "showing 1,000 of 2,000" in _section(html, "not-read")
    assert len(re.findall("<figure", html)) == 200 + 2000
    assert "no preview: file not found" in html  # a shown file that is gone is a placeholder, not a crash


def test_evaluate_page_of_100000_rows_is_quick_and_capped(tmp_path: Path) -> None:
    classes = [f"c{k}" for k in range(10)]
    rows = [Prediction(path=f"{i:06d}.png", source=tmp_path / f"{i:06d}.png", label=classes[i % 10],
                       predicted=classes[(i * 7) % 10 if i % 4 == 0 else i % 10],
                       confidence=(i * 7919 % 100000) / 100000)
            for i in range(100_000)]
    matrix = [[0] * 10 for _ in classes]
    for r in rows:
        matrix[classes.index(r.label)][classes.index(r.predicted)] += 1
    start = time.perf_counter()
    page = write_evaluate_report(tmp_path / "report.html", classes=classes, figures={"accuracy": 0.775},
                                 per_class={}, matrix=matrix, rows=rows)
    seconds = time.perf_counter() - start
    html = page.read_text(encoding="utf-8")
    assert seconds < 5, seconds
    assert page.stat().st_size < 3_000_000
    cells = re.findall(r'<section id="cell-', html)
    assert len(cells) == sum(1 for line in matrix for n in line if n) == 14
    # 200 + 200 + 2000 shared by the 14 cells (142 each)
    assert len(re.findall("<figure", html)) == 200 + 200 + 14 * 142
    # rows i % 4 == 0 are predicted c(7i mod 10): wrong unless i % 20 == 0, so 20,000 mistakes in 4 cells of 5,000
    assert "showing the 200 most confident of 20,000" in _section(html, "misclassified")
    assert "showing the 142 least confident of 10,000" in _section(html, "cell-0-0")
    assert "showing the 142 most confident of 5,000" in _section(html, "cell-2-4")


def test_gcv_evaluates_calibration_and_coverage_read_as_compact_tables(tmp_path: Path) -> None:
    """metrics.json's calibration block, 101-step coverage lists and target become three small tables, not dumps."""
    bins = [{"lower": i / 15, "upper": (i + 1) / 15, "count": 0, "confidence": None, "accuracy": None}
            for i in range(15)]
    thresholds = [round(i / 100, 10) for i in range(101)]
    figures = {
        "accuracy": 0.9867,
        "calibration": {"temperature": 0.6141, "applied": "temperature", "bins": 15,
                        "uncalibrated": {"ece": 0.0284, "nll": 0.0569, "brier": 0.0243, "reliability": bins},
                        "calibrated": {"ece": 0.0078, "nll": 0.0408, "brier": 0.0197, "reliability": bins}},
        "coverage": {"thresholds": thresholds, "kept": [1.0 - t / 2 for t in thresholds],
                     "accuracy": [0.9 + t / 10 for t in thresholds]},
        "target_accuracy": {"target": 0.99, "threshold": 0.6214, "coverage": 0.995, "accuracy": 0.9903, "kept": 2985,
                            "best_accuracy": 1.0, "reachable": True},
    }
    _, html = _evaluate(tmp_path, figures=figures)
    assert "101 values" not in html and "reliability</h2>" not in html
    calibration = _section(html, "calibration")
    assert "temperature T = 0.6141 (confidences use it)" in calibration
    assert "<tr><th>raw softmax</th><td>0.0284</td><td>0.0569</td><td>0.0243</td></tr>" in calibration
    assert "<tr><th>softmax(logits / T)</th><td>0.0078</td><td>0.0408</td><td>0.0197</td></tr>" in calibration
    coverage = _section(html, "coverage")
    assert "<tr><td>0.50</td><td>75.0%</td><td>95.00%</td></tr>" in coverage
    assert "<tr><td>0.99</td><td>50.5%</td><td>99.90%</td></tr>" in coverage
    assert "target accuracy 99.00%: confidence &gt;= 0.6214 keeps 99.5% (2,985 images) at 99.03%" in coverage
    assert re.search(r"<th>accuracy</th><td>0\.9867</td>", _section(html, "metrics"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_results_file_reads_the_rows_of_each_format_with_every_column(tmp_path: Path, fmt: str) -> None:
    from garmentcv.conformal import ConformalPredictor
    from garmentcv.infer.rows import write_output
    from garmentcv.report import ResultsFile

    rows = [{"path": "a.png", "label": "x", "probs": [0.6, 0.4], "error": None, "ood_score": 1.2345678},
            {"path": "b.png", "label": None, "probs": None, "error": "cannot decode"},
            {"path": "c.png", "label": "y", "probs": [0.25, 0.75], "error": None, "ood_score": -0.5}]
    out = tmp_path / f"rows.{fmt}"
    write_output(out, rows, ["x", "y"], fmt, sets=ConformalPredictor("lac", 0.9, (0.65,)), unknown_threshold=0.0)
    with ResultsFile(out) as reader:
        assert reader.format == fmt and reader.review and reader.unknown
        shown = [(p.path, p.predicted, p.confidence, p.needs_review, p.unknown, p.error) for p in reader]
    assert shown == [("a.png", "x", 0.6, True, True, None), ("b.png", None, None, False, False, "cannot decode"),
                     ("c.png", "y", 0.75, False, False, None)]
    with ResultsFile(out) as reader:
        records = list(reader.records())
        assert reader.classes == ["x", "y"]
    if fmt == "jsonl":
        probs = [r["probs"] and [r["probs"]["x"], r["probs"]["y"]] for r in records]
    else:
        probs = [None if r["prob_x"] in (None, "") else [float(r["prob_x"]), float(r["prob_y"])] for r in records]
    assert probs == [[0.6, 0.4], None, [0.25, 0.75]]
    sets = [r["prediction_set"] for r in records]
    assert sets == (["x|y", "", "y"] if fmt == "csv" else [["x", "y"], None, ["y"]])  # 1 - 0.4 <= 0.65: two labels
    assert [r["ood_score"] for r in records] == (["1.234568", "", "-0.500000"] if fmt == "csv" else
                                                 [1.234568, None, -0.5])
