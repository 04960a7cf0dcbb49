"""Report pages at catalogue scale and for real folders: streamed results, unique anchors, folded galleries,
tooltips on cut names, the header's file counts, the coverage plot's accuracy axis."""

from __future__ import annotations

import csv
import html as htmllib
import json
import re
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentcv.report import Limits, Prediction, write_classify_report, write_evaluate_report
from garmentcv.report.html import slug

from .conftest import write_image
from .test_report import _results_csv, _section

CLASSES = [f"c{k:02d}" for k in range(20)]


def _big_results(path: Path, n: int) -> None:
    """``n`` rows in 20 classes, about 250 B each: confidences repeat (ties broken by path), file order is not path
    order, every 97th row is an error, rows below 0.35 need review."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "confidence", "needs_review", *(f"prob_{c}" for c in CLASSES), "error"])
        probs = ["0.050000"] * len(CLASSES)
        for i in range(n):
            name = f"img/{(i * 7919) % n:06d}.png"
            if i % 97 == 0:
                writer.writerow([name, "", "", "", *([""] * len(CLASSES)), "truncated file"])
                continue
            confidence = 0.2 + (i * 31 % 400) / 1000
            writer.writerow([name, CLASSES[i * 13 % 20], f"{confidence:.6f}", "true" if confidence < 0.35 else "false",
                             *probs, ""])


def _shown(section: str) -> list[str]:
    return [htmllib.unescape(name) for name in re.findall(r'<figcaption title="([^"]+)"', section)]


def test_report_of_50000_rows_is_streamed_into_capped_galleries_with_exact_counts(tmp_path: Path) -> None:
    results = tmp_path / "out.csv"
    _big_results(results, 50_000)
    limits = Limits(gallery=30, grouped=120, listed=40)
    tracemalloc.start()
    try:
        page = write_classify_report(tmp_path / "page.html", results, tmp_path, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = results.stat().st_size
    # every row in memory takes about 2 KB each (100 MB); streamed, only the shown rows and the page are held
    assert size > 10_000_000 and peak < 1_000_000, (size, peak)

    with open(results, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    read = [r for r in rows if not r["error"]]
    failed = [r["path"] for r in rows if r["error"]]
    flagged = sorted((float(r["confidence"]), r["path"]) for r in read if r["needs_review"] == "true")
    html = page.read_text(encoding="utf-8")
    for c in CLASSES:  # 120 thumbnails shared by 20 classes: the 6 least confident of each, ties by path
        members = sorted((float(r["confidence"]), r["path"]) for r in read if r["label"] == c)
        gallery = _section(html, f"class-{c}")
        assert _shown(gallery) == [p for _, p in members[:6]], c
        assert f"showing the 6 least confident of {len(members):,}" in gallery
        assert f'<a href="#class-{c}">{c}</a></th><td>{len(members)}</td>' in html
    review = _section(html, "needs-review")
    assert _shown(review) == [p for _, p in flagged[:30]]
    assert f"showing the 30 least confident of {len(flagged):,}" in review
    errors = _section(html, "not-read")
    assert re.findall(r'<tr><td class="text">([^<]+)</td>', errors) == failed[:40]
    assert f"showing 40 of {len(failed):,}" in errors
    summary = _section(html, "summary")
    for name, value in (("rows", 50_000), ("classified", len(read)), ("needing review", len(flagged)),
                        ("not read", len(failed))):
        assert f"<tr><th>{name}</th><td>{value:,}</td></tr>" in summary, name


def test_jsonl_results_show_classes_in_the_model_order_they_give(tmp_path: Path) -> None:
    lines = [{"path": "0.png", "label": None, "confidence": None, "probs": None, "error": "empty file (0 bytes)"},
             {"path": "1.png", "label": "alpha", "confidence": 0.6, "probs": {"zeta": 0.4, "alpha": 0.6},
              "error": None},
             {"path": "2.png", "label": "zeta", "confidence": 0.9, "probs": {"zeta": 0.9, "alpha": 0.1}, "error": None}]
    results = tmp_path / "out.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    html = write_classify_report(tmp_path / "page.html", results, tmp_path).read_text(encoding="utf-8")
    assert re.findall(r'<section id="class-([^"]+)"', html) == ["zeta", "alpha"]
    assert _shown(_section(html, "class-alpha")) == ["1.png"]


def test_slug_gives_different_anchors_to_different_names() -> None:
    names = ["a b", "a\u020b", "\u00e9a", "\u0e9a", "a_20b", "a_20_b", "a-b", "a", "A", "bluzy"]
    assert len({slug(n) for n in names}) == len(names)
    assert slug("bluzy") == "bluzy" and slug("a-b") == "a-b"
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", slug(n)) for n in names)


def test_class_galleries_of_names_that_slugged_alike_have_their_own_anchors(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    labels = ["a b", "a\u020b", "\u00e9a", "\u0e9a"]
    rows = []
    for i, label in enumerate(labels):
        write_image(folder / f"{i}.png", seed=i)
        rows.append({"path": f"{i}.png", "label": label, "confidence": "0.9", "error": ""})
    html = write_classify_report(tmp_path / "page.html", _results_csv(tmp_path / "out.csv", rows, review=False),
                                 folder).read_text(encoding="utf-8")
    links = re.findall(r'<tr><th><a href="#([^"]+)">([^<]+)</a></th>', html)
    assert len(links) == 4 and len({ident for ident, _ in links}) == 4
    for ident, name in links:  # each link leads to the gallery of its class, holding that class's image
        gallery = _section(html, ident)
        label = htmllib.unescape(name)
        assert f"<h3>{htmllib.escape(label)}</h3>" in gallery
        assert _shown(gallery) == [f"{labels.index(label)}.png"]
    assert html.count('<section id="class-') == 4


def _evaluate_200(tmp_path: Path) -> str:
    rows = [Prediction(path=f"{i:03d}.png", source=tmp_path / f"{i:03d}.png", label=["bluzy", "bryuki"][i % 2],
                       predicted=["bluzy", "bryuki"][i % 2], confidence=0.5 + i / 500) for i in range(200)]
    page = write_evaluate_report(tmp_path / "ev" / "report.html", classes=["bluzy", "bryuki"],
                                 figures={"accuracy": 1.0}, per_class={}, matrix=[[100, 0], [0, 100]], rows=rows)
    return page.read_text(encoding="utf-8")


def test_long_galleries_fold_after_the_first_thumbnails(tmp_path: Path) -> None:
    html = _evaluate_200(tmp_path)
    least = _section(html, "least-confident")
    assert _shown(least) == [f"{i:03d}.png" for i in range(200)]  # all 200 still on the page, in order
    shown, folded = least.split("<details", 1)
    assert len(re.findall("<figure", shown)) == 24 and len(re.findall("<figure", folded)) == 176
    assert "<summary>show the other 176</summary>" in folded
    cell = _section(html, "cell-0-0")  # 100 of each class: 24 shown, 76 folded
    assert len(re.findall("<figure", cell.split("<details", 1)[0])) == 24 and "show the other 76" in cell
    small = _section(html, "misclassified")
    assert "<details" not in small


def test_cut_names_and_labels_carry_their_full_text_as_a_tooltip(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    name = "a-very-long-file-name-that-the-caption-cuts-" * 3 + '"q"&<b>.png'
    label = "a-class-name-longer-than-a-thumbnail-<i>"
    write_image(folder / name)
    rows = [{"path": name, "label": label, "confidence": "0.5", "error": ""}]
    html = write_evaluate_report(tmp_path / "ev.html", classes=[label], figures={}, per_class={}, matrix=[[1]],
                                 rows=[Prediction(path=name, source=folder / name, label=label, predicted=label,
                                                  confidence=0.5)]).read_text(encoding="utf-8")
    figure = re.search(r"<figure.*?</figure>", _section(html, "least-confident"), re.DOTALL).group(0)
    esc_name, esc_label = htmllib.escape(name), htmllib.escape(label)
    assert f'<div class="pic" title="{esc_name}">' in figure
    assert f'<span class="file" title="{esc_name}">{esc_name}</span>' in figure
    assert f'<span title="true {esc_label}">true {esc_label}</span>' in figure
    assert f'<span title="predicted {esc_label}">predicted {esc_label}</span>' in figure
    page = write_classify_report(tmp_path / "c.html", _results_csv(tmp_path / "out.csv", rows, review=False), folder)
    assert f'<span class="file" title="{esc_name}">' in page.read_text(encoding="utf-8")


def test_classify_header_counts_skipped_files_too(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    rows = []
    for i in range(4):
        write_image(folder / f"{i}.png", seed=i)
        rows.append({"path": f"{i}.png", "label": "bluzy", "confidence": "0.9", "error": ""})
    rows.append({"path": "bad.jpg", "label": "", "confidence": "", "error": "truncated file"})
    results = _results_csv(tmp_path / "out.csv", rows, review=False)
    html = write_classify_report(tmp_path / "page.html", results, folder,
                                 skipped={"not an image": 2, "hidden": 1}).read_text(encoding="utf-8")
    assert ("<p>8 files: 5 images (4 classified, 1 not read), 3 skipped (1 hidden, 2 not an image)</p>"
            in html)
    summary = _section(html, "summary")
    assert "<tr><th>skipped: hidden</th><td>1</td></tr>" in summary
    assert "<tr><th>skipped: not an image</th><td>2</td></tr>" in summary
    plain = write_classify_report(tmp_path / "plain.html", results, folder).read_text(encoding="utf-8")
    assert "<p>5 images: 4 classified, 1 not read</p>" in plain


def test_classify_report_header_of_a_folder_counts_every_file(tmp_path: Path, onnx_model: Path) -> None:
    from garmentcv.infer.cli import classify_main

    folder = tmp_path / "photos"
    for i in range(3):
        write_image(folder / f"{i}.png", seed=i)
    (folder / "notes").write_text("no extension")
    page = tmp_path / "page.html"
    result = CliRunner().invoke(classify_main, [str(folder), "--model", str(onnx_model), "--device", "cpu", "-q",
                                                "--out", str(tmp_path / "out.csv"), "--report", str(page)])
    assert result.exit_code == 0, result.output
    assert ("<p>4 files: 3 images (3 classified, 0 not read), 1 skipped (1 not an image)</p>"
            in page.read_text(encoding="utf-8"))


def test_coverage_plot_fits_the_accuracy_axis_to_its_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from garmentcv import plots
    from garmentcv.calibration import CoverageTable

    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    thresholds = tuple(i / 100 for i in range(101))

    def accuracy_axis(accuracy: tuple) -> tuple[float, float]:
        closed.clear()
        table = CoverageTable(thresholds, tuple(1 - t for t in thresholds), accuracy)
        plots.save_coverage_curve(table, tmp_path / "coverage.png", "coverage")
        assert (tmp_path / "coverage.png").stat().st_size > 0
        (figure,) = closed
        axis = next(ax for ax in figure.axes if any(line.get_label() == "accuracy of the kept" for line in ax.lines))
        return axis.get_ylim()

    # 0.90 .. 0.99: the span, 5% padding each side
    assert accuracy_axis((*(0.90 + 0.09 * i / 99 for i in range(100)), None)) == pytest.approx((0.8955, 0.9945))
    # 0.97 .. 1.00 spans less than the floor of 0.05: the axis shows 0.95 .. 1.00, padded
    assert accuracy_axis((*(0.97 + 0.03 * t for t in thresholds[:-1]), 1.0)) == pytest.approx((0.9475, 1.0025))
    # 0.01 .. 1.00: the padding stops at 0
    assert accuracy_axis(tuple(0.01 + 0.99 * t for t in thresholds)) == pytest.approx((0.0, 1.0495))
