"""Heatmaps on report pages: the overlay of a hand-made map (where its hottest pixel lands, its exact colours), and
classify and evaluate pages made with a model file that has the ``cam`` output show them for the flagged rows only."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from garmentcv.artifact import CAM_NAME, EMBEDDING_NAME, INPUT_FLOAT32, OUTPUT_NAME, ModelInfo
from garmentcv.export.cam import WithCam
from garmentcv.export.convert import DEFAULT_OPSET, finalize, save_model, trace_to_onnx
from garmentcv.models import build_model
from garmentcv.models.registry import default_preprocessing
from garmentcv.report import Limits, Prediction, files_folder, write_classify_report, write_evaluate_report
from garmentcv.report.heatmap import HEATMAP_ALPHA, colorize, overlay, upsample_map
from tests.conftest import build_onnx_model, write_image

SIZE = 64  # a 2 x 2 last feature map for resnet18
CLASSES = ("x", "y")


def test_overlay_puts_the_hottest_pixel_at_the_hot_cell_and_blends_at_alpha() -> None:
    cam = np.zeros((4, 4), np.float32)
    cam[1, 2] = 5.0  # one hot cell: row 1, column 2 of a 4 x 4 map over a 64 x 64 picture (16 px a cell)
    heat = upsample_map(cam, 64, 64)
    assert heat.shape == (64, 64) and heat.min() == 0.0
    # Pillow's bilinear samples cell centres at 16 x + 7.5: the peak is shared by the 4 pixels around (23.5, 39.5)
    peak = {tuple(int(v) for v in p) for p in np.argwhere(heat == heat.max())}
    assert peak == {(23, 39), (23, 40), (24, 39), (24, 40)}
    picture = np.full((64, 64, 3), 128, np.uint8)
    blended = overlay(picture, cam)
    assert HEATMAP_ALPHA == 0.4
    assert blended[0, 0].tolist() == [77, 77, 179]  # coldest: blue, 0.6 x 128 + 0.4 x (0, 0, 255)
    hottest = np.rint(0.6 * 128 + 0.4 * colorize(heat.max()).astype(np.float32)).astype(np.uint8)
    assert hottest.tolist() == [179, 102, 77]  # heat 0.938: between yellow and red, no blue
    assert {tuple(int(v) for v in p) for p in np.argwhere((blended == hottest).all(axis=2))} == peak
    assert colorize(np.float32(1.0)).tolist() == [255, 0, 0]


def test_a_constant_map_is_all_cold_and_a_wrong_shape_is_refused() -> None:
    assert not upsample_map(np.full((3, 3), 2.0), 9, 9).any()
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        upsample_map(np.zeros((2, 3, 3)), 9, 9)


@pytest.fixture(scope="module")
def cam_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init resnet18 file at 64 px with the logits, embedding and cam outputs and its metadata."""
    torch.manual_seed(0)
    network = build_model("resnet18", len(CLASSES), "none").model.eval()
    proto = trace_to_onnx(WithCam(network, "fc", SIZE), torch.zeros(2, 3, SIZE, SIZE), DEFAULT_OPSET,
                          (OUTPUT_NAME, EMBEDDING_NAME, CAM_NAME))
    info = ModelInfo(arch="resnet18", classes=CLASSES, preprocessing=default_preprocessing("resnet18", SIZE),
                     precision="fp32", weights_source="none (random init)", opset=DEFAULT_OPSET,
                     input_format=INPUT_FLOAT32, outputs=(OUTPUT_NAME, EMBEDDING_NAME, CAM_NAME), embedding_dim=512)
    path = tmp_path_factory.mktemp("cam") / "cam.onnx"
    save_model(finalize(proto, info), path)
    assert onnx.load(str(path)).graph.output[2].name == CAM_NAME
    return path


def _section(page: str, ident: str) -> str:
    part = page[page.index(f'<section id="{ident}">'):]
    return part[: part.index("</section>")]


def _classify_page(tmp_path: Path, model: Path) -> tuple[str, Path]:
    folder = tmp_path / "photos"
    for i, name in enumerate(("a.png", "b.png", "c.png", "d.png", "e.png")):
        write_image(folder / name, size=(80, 70), seed=i)
    results = tmp_path / "rows.csv"
    with open(results, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "label", "confidence", "error", "needs_review", "unknown"])
        out.writerows([["a.png", "x", "0.55", "", "true", "false"],   # needs review
                       ["b.png", "x", "0.9", "", "false", "true"],    # unknown
                       ["c.png", "y", "0.51", "", "true", "true"],    # both: one heatmap, shown twice
                       ["d.png", "x", "0.99", "", "false", "false"],
                       ["e.png", "y", "0.97", "", "false", "false"]])  # fmt: skip
    page = write_classify_report(tmp_path / "page.html", results, folder, Limits(thumbnail_px=96), model=model)
    return page.read_text(encoding="utf-8"), files_folder(page)


def test_classify_report_overlays_heatmaps_on_review_and_unknown_rows_only(cam_model: Path, tmp_path: Path) -> None:
    page, files = _classify_page(tmp_path, cam_model)
    assert sorted(p.name for p in files.glob("h*.jpg")) == ["h00000.jpg", "h00001.jpg", "h00002.jpg"]
    review, unknown = _section(page, "needs-review"), _section(page, "unknown")
    assert review.count('class="heatmap"') == 2 and unknown.count('class="heatmap"') == 2
    assert "heatmap of x</span>" in review and "heatmap of y</span>" in review  # a.png: x, c.png: y
    assert "heatmap of x</span>" in unknown and "heatmap of y</span>" in unknown  # b.png: x, c.png: y
    assert page.count('class="heatmap"') == 4  # the class galleries keep plain thumbnails
    assert re.search(r'<img class="heatmap" src="page_files/h0000\d\.jpg" alt="[a-c]\.png, heatmap of [xy]" '
                     r'width="64" height="64">', review)  # the 64 px crop the model saw, not enlarged to 96


def test_classify_report_without_cam_output_has_no_heatmaps(tmp_path: Path) -> None:
    model, _ = build_onnx_model(tmp_path / "plain.onnx", CLASSES, size=SIZE)
    page, files = _classify_page(tmp_path, model)
    assert not list(files.glob("h*.jpg")) and "heatmap" not in page


def test_evaluate_report_overlays_heatmaps_on_misclassified_rows(cam_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "val"
    rows = []
    for i, (label, predicted) in enumerate((("x", "y"), ("y", "x"), ("x", "x"), ("y", "y"), ("y", "x"))):
        source = write_image(folder / f"{i}.png", size=(64, 64), seed=i)
        rows.append(Prediction(source.name, source, label, predicted, 0.6 + 0.05 * i))
    page = write_evaluate_report(tmp_path / "ev.html", classes=CLASSES, figures={"accuracy": 0.4}, per_class={},
                                 matrix=[[1, 1], [2, 1]], rows=rows, model=cam_model).read_text(encoding="utf-8")
    wrong = _section(page, "misclassified")
    assert wrong.count('class="heatmap"') == 3 and wrong.count("heatmap of x</span>") == 2
    assert wrong.count("heatmap of y</span>") == 1
    assert page.count('class="heatmap"') == 3  # least-confident and cell galleries keep plain thumbnails
    assert len(list(files_folder(tmp_path / "ev.html").glob("h*.jpg"))) == 3


def test_classify_page_with_heatmaps_loads_in_chromium(cam_model: Path, tmp_path: Path) -> None:
    from tests.test_report_browser import _check

    _classify_page(tmp_path, cam_model)
    # 5 thumbnails in the class galleries, 2 heatmaps needing review, 2 unknown: every one decoded
    assert _check(tmp_path / "page.html") == "images=9 broken=0 dangling=0"
