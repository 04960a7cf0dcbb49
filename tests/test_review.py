"""The review app's routes with FastAPI's TestClient: listing, path safety, classification, rows files, the
cross-site guard and the corrections export (read back and trained on)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from garmentcv.data.corrections import read_corrections
from garmentcv.errors import PathNotFoundError
from garmentcv.infer.classify import ClassifyConfig
from garmentcv.infer.engines.local import classify_folder
from garmentcv.infer.rows import OutputFormat
from garmentcv.serve.review import TOKEN_HEADER, create_review_router
from garmentcv.train import loop
from garmentcv.train.config import TrainConfig

from .conftest import COLOURS, write_image
from .onnx_classifier import OnnxClassifier

TOKEN = "test-token"
GUARD = {TOKEN_HEADER: TOKEN}


@pytest.fixture
def site(tmp_path: Path, onnx_model: Path) -> dict[str, Path]:
    """A models folder with one model, a review root with a lamoda folder, a nested folder, a hidden file, rows
    files, and links that lead out of the root; and a secret file outside it."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(onnx_model, models / "shop.onnx")
    root = tmp_path / "root"
    for number, label in enumerate(["bluzy", "bluzy", "bluzy", "bryuki", "bryuki", "bryuki"], 1):
        write_image(root / "lamoda" / f"{number:04d}_{label}.jpg", colour=COLOURS[label == "bryuki"], seed=number)
    write_image(root / "lamoda" / "deeper" / "0100_bryuki.png", seed=100)
    write_image(root / "lamoda" / ".hidden.jpg", seed=101)
    outside = tmp_path / "outside"
    write_image(outside / "secret.jpg", seed=102)
    os.symlink(outside, root / "link-out")
    os.symlink(outside / "secret.jpg", root / "lamoda" / "secret.jpg")
    return {"models": models, "root": root, "outside": outside, "model": models / "shop.onnx"}


def _client(site: dict[str, Path], min_confidence: float | None = None) -> TestClient:
    app = FastAPI()
    router = create_review_router(open_model=lambda path: OnnxClassifier(path, min_confidence),
                                  models_dir=site["models"], root=site["root"], token=TOKEN)
    app.include_router(router, prefix="/review")
    return TestClient(app)


def test_the_page_carries_its_token_and_a_policy_that_loads_nothing_from_elsewhere(site) -> None:
    client = _client(site)
    page = client.get("/review/")
    assert page.status_code == 200
    assert f'<meta name="gcv-review-token" content="{TOKEN}">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "http" not in page.text.replace('name="viewport"', "")  # no address of another site
    assert client.get("/review/static/review.js").headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in client.get("/review/static/review.js").text
    assert client.get("/review/static/review.css").status_code == 200
    assert client.get("/review/static/review.html").status_code == 404
    assert client.get("/review/static/..%2Freview.py").status_code == 404


def test_models_and_their_classes_are_listed(site) -> None:
    client = _client(site)
    assert client.get("/review/api/models").json() == {"models": ["shop.onnx"], "root": True}
    info = client.get("/review/api/models/shop.onnx").json()
    assert info == {"name": "shop.onnx", "arch": "resnet18", "precision": "fp32", "classes": ["bluzy", "bryuki"]}
    assert client.get("/review/api/models/..%2Fmodels%2Fshop.onnx").status_code == 404


def test_a_folder_lists_sub_folders_images_and_rows_files_but_nothing_hidden_or_outside(site) -> None:
    (site["root"] / "lamoda" / "run.csv").write_text("path,label\n", encoding="utf-8")
    client = _client(site)
    assert client.get("/review/api/folders").json() == {
        "path": "", "parent": None, "folders": ["lamoda"], "images": 0, "rows_files": []}
    assert client.get("/review/api/folders", params={"path": "lamoda"}).json() == {
        "path": "lamoda", "parent": "", "folders": ["deeper"], "images": 6, "rows_files": ["run.csv"]}


@pytest.mark.parametrize("path", ["..", "../outside", "/etc", "lamoda/../..", "link-out", "lamoda/.hidden.jpg",
                                  "..\\outside", "lamoda/secret.jpg"])
def test_paths_outside_the_root_or_hidden_are_refused(site, path: str) -> None:
    client = _client(site)
    assert client.get("/review/api/folders", params={"path": path}).status_code == 403
    assert client.get("/review/api/thumbnail", params={"path": path}).status_code == 403
    assert client.get("/review/api/rows", params={"path": path}).status_code == 403
    response = client.post("/review/api/classify/folder", json={"model": "shop.onnx", "path": path}, headers=GUARD)
    assert response.status_code == 403


def test_a_thumbnail_is_a_small_jpeg_of_the_image(site) -> None:
    write_image(site["root"] / "big.png", size=(600, 300), seed=3)
    response = _client(site).get("/review/api/thumbnail", params={"path": "big.png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (256, 128)


def _adapter_rows(site, names: list[str], folder: Path, min_confidence: float | None = None) -> list[dict]:
    rows = OnnxClassifier(site["model"], min_confidence).classify_bytes(
        [(name, (folder / name).read_bytes()) for name in names])
    return [{"path": r["path"], "label": r["label"], "confidence": r["confidence"],
             "needs_review": r.get("needs_review"), "error": r["error"]} for r in rows]


def _shown(items: list[dict]) -> list[dict]:
    return [{k: item[k] for k in ("path", "label", "confidence", "needs_review", "error")} for item in items]


def test_classifying_a_folder_under_the_root_gives_the_models_rows(site) -> None:
    client = _client(site, min_confidence=0.5)
    response = client.post("/review/api/classify/folder", json={"model": "shop.onnx", "path": "lamoda",
                                                               "recursive": True}, headers=GUARD)
    assert response.status_code == 200, response.text
    body = response.json()
    names = [f"{i:04d}_{'bluzy' if i <= 3 else 'bryuki'}.jpg" for i in range(1, 7)]
    names.append("deeper/0100_bryuki.png")  # gcv classify's order; the link to a file outside the root is left out
    assert _shown(body["items"]) == _adapter_rows(site, names, site["root"] / "lamoda", 0.5)
    assert [i["image"] for i in body["items"]] == [f"lamoda/{n}" for n in names]
    assert body["classes"] == ["bluzy", "bryuki"]


def test_uploaded_photos_give_the_models_rows_under_their_file_names(site) -> None:
    folder = site["root"] / "lamoda"
    names = ["0001_bluzy.jpg", "0004_bryuki.jpg"]
    files = [("files", (n, (folder / n).read_bytes(), "image/jpeg")) for n in names]
    files.append(("files", ("broken.jpg", b"not an image", "image/jpeg")))
    response = _client(site).post("/review/api/classify/upload", data={"model": "shop.onnx"}, files=files,
                                  headers=GUARD)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert _shown(items[:2]) == _adapter_rows(site, names, folder)
    assert items[2]["path"] == "broken.jpg" and items[2]["label"] is None and items[2]["error"]
    assert all(i["image"] is None for i in items)


@pytest.mark.parametrize("headers", [{}, {TOKEN_HEADER: "guess"}, {**GUARD, "Origin": "https://evil.example"},
                                     {**GUARD, "Sec-Fetch-Site": "cross-site"}])
def test_posts_without_the_token_or_from_another_site_are_refused(site, headers: dict[str, str]) -> None:
    client = _client(site)
    body = {"decisions": [{"path": "a.jpg", "action": "drop"}]}
    assert client.post("/review/api/export", json=body, headers=headers).status_code == 403
    response = client.post("/review/api/classify/folder", json={"model": "shop.onnx", "path": "lamoda"},
                           headers=headers)
    assert response.status_code == 403
    assert client.post("/review/api/export", json=body, headers={**GUARD, "Origin": "http://testserver"}).status_code \
        == 200


def _export(client: TestClient, decisions: list[dict]) -> str:
    response = client.post("/review/api/export", json={"decisions": decisions}, headers=GUARD)
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="corrections.csv"'
    return response.text


def test_export_round_trips_into_a_corrections_file_and_refuses_what_it_cannot_write(site, tmp_path: Path) -> None:
    client = _client(site)
    text = _export(client, [{"path": 'odd, "name".jpg', "action": "relabel", "label": "bryuki"},
                            {"path": "b.jpg", "action": "drop", "label": "ignored"}])
    assert text == 'path,label,action\r\n"odd, ""name"".jpg",bryuki,relabel\r\nb.jpg,,drop\r\n'
    path = tmp_path / "c.csv"
    path.write_bytes(text.encode("utf-8"))
    assert [(c.path, c.label, c.action) for c in read_corrections(path).rows] == [
        ('odd, "name".jpg', "bryuki", "relabel"), ("b.jpg", "", "drop")]
    for bad in ({"path": "a.jpg", "action": "rename"}, {"path": "a.jpg", "action": "relabel", "label": "<b>"}):
        assert client.post("/review/api/export", json={"decisions": [bad]}, headers=GUARD).status_code == 422


def test_decisions_on_a_classified_folder_train_through_gcv_train_corrections(site, tmp_path: Path) -> None:
    client = _client(site)
    items = client.post("/review/api/classify/folder", json={"model": "shop.onnx", "path": "lamoda"},
                        headers=GUARD).json()["items"]
    assert [i["path"] for i in items] == [f"{i:04d}_{'bluzy' if i <= 3 else 'bryuki'}.jpg" for i in range(1, 7)]
    text = _export(client, [{"path": "0002_bluzy.jpg", "action": "relabel", "label": "bryuki"},
                            {"path": "0005_bryuki.jpg", "action": "drop"}])
    corrections = tmp_path / "corrections.csv"
    corrections.write_bytes(text.encode("utf-8"))
    out = tmp_path / "run"
    data = site["root"] / "lamoda"
    (data / "secret.jpg").unlink()
    shutil.rmtree(data / "deeper")
    loop.train(TrainConfig(data=data, out=out, corrections=corrections, image_size=32, weights="none", batch_size=4,
                           epochs=1), progress=False)
    seen = {}
    for name in ("train.csv", "val.csv"):
        with open(out / name, newline="", encoding="utf-8") as handle:
            seen.update({Path(r["path"]).name: r["label"] for r in csv.DictReader(handle)})
    assert seen == {"0001_bluzy.jpg": "bluzy", "0002_bluzy.jpg": "bryuki", "0003_bluzy.jpg": "bluzy",
                    "0004_bryuki.jpg": "bryuki", "0006_bryuki.jpg": "bryuki"}


def test_rows_files_of_gcv_classify_open_with_thumbnails_under_the_root(site, tmp_path: Path) -> None:
    folder = site["root"] / "lamoda"
    (folder / "secret.jpg").unlink()
    client = _client(site)
    for fmt in (OutputFormat.CSV, OutputFormat.JSONL):
        out = site["root"] / f"run.{fmt.value}"
        classify_folder(ClassifyConfig(folder=folder, out=out, model=site["model"], format=fmt, progress=False,
                                       min_confidence=0.5, recursive=False, threads=1, workers=1))
        body = client.get("/review/api/rows", params={"path": out.name, "images": "lamoda"}).json()
        names = [f"{i:04d}_{'bluzy' if i <= 3 else 'bryuki'}.jpg" for i in range(1, 7)]
        assert _shown(body["items"]) == _adapter_rows(site, names, folder, 0.5)
        assert [i["image"] for i in body["items"]] == [f"lamoda/{n}" for n in names]
        assert body["classes"] == ["bluzy", "bryuki"]


def test_a_fix_list_with_extra_columns_opens_with_its_suggestion_and_given_label(site) -> None:
    text = ("path,given_label,suggested_label,issue,score,unknown\n"
            "0001_bluzy.jpg,bluzy,bryuki,label flip,0.91,false\n"
            "../../outside/secret.jpg,bluzy,bluzy,duplicate,1.0,true\n")
    (site["root"] / "lamoda" / "fixes.csv").write_text(text, encoding="utf-8")
    body = _client(site).get("/review/api/rows", params={"path": "lamoda/fixes.csv"}).json()
    assert body["items"] == [
        {"path": "0001_bluzy.jpg", "label": "bryuki", "given": "bluzy", "confidence": None, "needs_review": None,
         "unknown": False, "error": None, "image": "lamoda/0001_bluzy.jpg",
         "extra": {"issue": "label flip", "score": "0.91"}},
        {"path": "../../outside/secret.jpg", "label": "bluzy", "given": "bluzy", "confidence": None,
         "needs_review": None, "unknown": True, "error": None, "image": None,  # outside the root: no thumbnail
         "extra": {"issue": "duplicate", "score": "1.0"}},
    ]
    assert body["classes"] == ["bluzy", "bryuki"]


def test_an_uploaded_rows_file_needs_the_token_and_a_bad_one_names_its_line(site) -> None:
    client = _client(site)
    rows = json.dumps({"path": "a.jpg", "label": "bluzy", "confidence": 0.7, "error": None}) + "\n{oops\n"
    files = {"file": ("run.jsonl", rows.encode(), "application/octet-stream")}
    assert client.post("/review/api/rows/upload", files=files).status_code == 403
    response = client.post("/review/api/rows/upload", files=files, headers=GUARD)
    assert response.status_code == 422 and response.json()["detail"].startswith("run.jsonl, line 2: not JSON")


def test_a_root_or_models_folder_that_is_not_a_folder_is_refused_up_front(site, tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match=r"nowhere: the review root is not a folder"):
        create_review_router(open_model=OnnxClassifier, models_dir=None, root=tmp_path / "nowhere")
    with pytest.raises(PathNotFoundError, match=r"shop.onnx: the models folder is not a folder"):
        create_review_router(open_model=OnnxClassifier, models_dir=site["model"], root=None)


def test_without_a_root_only_uploads_work(site) -> None:
    app = FastAPI()
    app.include_router(create_review_router(open_model=OnnxClassifier, models_dir=site["models"], root=None,
                                            token=TOKEN), prefix="/review")
    client = TestClient(app)
    assert client.get("/review/api/models").json() == {"models": ["shop.onnx"], "root": False}
    assert client.get("/review/api/folders").status_code == 404



def test_the_mount_point_without_a_slash_redirects_to_the_page(site) -> None:
    response = _client(site).get("/review", follow_redirects=False)
    assert response.status_code in (307, 308) and response.headers["location"].endswith("/review/")


def test_the_origin_check_compares_the_host_so_a_tls_proxy_in_front_passes(site) -> None:
    body = {"decisions": [{"path": "a.jpg", "action": "drop"}]}
    headers = {**GUARD, "Origin": "https://testserver"}  # the page on https, this server behind the proxy on http
    assert _client(site).post("/review/api/export", json=body, headers=headers).status_code == 200
    headers = {**GUARD, "Origin": "null"}
    assert _client(site).post("/review/api/export", json=body, headers=headers).status_code == 403


def test_two_decisions_for_one_path_are_refused(site) -> None:
    body = {"decisions": [{"path": "a.jpg", "action": "drop"}, {"path": "a.jpg", "action": "relabel", "label": "x"}]}
    response = _client(site).post("/review/api/export", json=body, headers=GUARD)
    assert response.status_code == 422 and response.json()["detail"] == "a.jpg: two decisions for one path; keep one"


def test_photos_over_the_limits_are_refused_with_413(site, monkeypatch: pytest.MonkeyPatch) -> None:
    from garmentcv.serve import review

    client = _client(site)
    photo = (site["root"] / "lamoda" / "0001_bluzy.jpg").read_bytes()
    monkeypatch.setattr(review, "MAX_IMAGE_BYTES", len(photo) - 1)
    files = [("files", ("a.jpg", photo, "image/jpeg"))]
    response = client.post("/review/api/classify/upload", data={"model": "shop.onnx"}, files=files, headers=GUARD)
    assert response.status_code == 413 and response.json()["detail"].startswith("a.jpg: larger than")
    response = client.post("/review/api/classify/folder", json={"model": "shop.onnx", "path": "lamoda"}, headers=GUARD)
    assert response.status_code == 413 and response.json()["detail"].startswith("lamoda/0001_bluzy.jpg: larger than")
    monkeypatch.setattr(review, "MAX_IMAGE_BYTES", 1 << 20)
    monkeypatch.setattr(review, "MAX_IMAGES", 5)
    response = client.post("/review/api/classify/folder", json={"model": "shop.onnx", "path": "lamoda"}, headers=GUARD)
    assert response.status_code == 413 and "holds more than 5 photos" in response.json()["detail"]


def test_a_file_name_that_is_not_utf8_gets_an_error_row_in_its_place(site) -> None:
    folder = site["root"] / "odd"
    write_image(folder / "a.jpg", seed=1)
    write_image(Path(os.fsdecode(bytes(folder) + b"/b\xff.jpg")), seed=2)
    write_image(folder / "c.jpg", seed=3)
    response = _client(site).post("/review/api/classify/folder", json={"model": "shop.onnx", "path": "odd"},
                                  headers=GUARD)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["path"] for i in items] == ["a.jpg", "b\ufffd.jpg", "c.jpg"]
    assert items[1]["error"] == "the file name is not valid UTF-8; rename the file to review it"
    assert items[1]["image"] is None and items[0]["label"] and items[2]["label"]


def test_a_rows_file_with_absolute_paths_gets_thumbnails_only_inside_the_root(site) -> None:
    inside = site["root"] / "lamoda" / "0001_bluzy.jpg"
    text = f"path,label\n{inside},bluzy\n{site['outside'] / 'secret.jpg'},bluzy\n"
    (site["root"] / "abs.csv").write_text(text, encoding="utf-8")
    items = _client(site).get("/review/api/rows", params={"path": "abs.csv"}).json()["items"]
    assert [i["image"] for i in items] == ["lamoda/0001_bluzy.jpg", None]


def test_a_prediction_set_reads_the_same_from_a_jsonl_record_and_a_csv_row() -> None:
    from garmentcv.serve.review import review_item

    record = review_item({"path": "a.jpg", "label": "bluzy", "confidence": 0.6, "prediction_set": ["bluzy", "bryuki"]})
    cells = review_item({"path": "a.jpg", "label": "bluzy", "confidence": "0.6", "prediction_set": "bluzy|bryuki"})
    empty = review_item({"path": "b.jpg", "label": "bluzy", "confidence": 0.4, "prediction_set": []})
    empty_cell = review_item({"path": "b.jpg", "label": "bluzy", "confidence": "0.4", "prediction_set": ""})
    assert record.extra == cells.extra == {"prediction_set": "bluzy|bryuki"}
    assert empty.extra is None and empty_cell.extra is None  # an empty set is shown by needs_review, as in csv
