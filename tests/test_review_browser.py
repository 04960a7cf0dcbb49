"""The review app end to end in Debian's chromium (driven by Playwright) against a real uvicorn on loopback:
upload two photos, filter to needs-review, relabel and accept from the keyboard, export, read the file back."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import expect, sync_playwright

from garmentcv.serve.review import create_review_router

from .conftest import write_image
from .onnx_classifier import OnnxClassifier

CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on uvicorn on a free loopback port in a thread; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def review_app(tmp_path: Path, onnx_model: Path) -> FastAPI:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(onnx_model, models / "shop.onnx")
    (tmp_path / "root").mkdir()
    app = FastAPI()
    app.include_router(create_review_router(open_model=OnnxClassifier, models_dir=models, root=tmp_path / "root"),
                       prefix="/review")
    return app


def test_upload_filter_relabel_accept_and_export_in_chromium(review_app: FastAPI, tmp_path: Path,
                                                             onnx_model: Path) -> None:
    photos = tmp_path / "photos"
    first = write_image(photos / "<img src=x onerror=alert(1)>.png", size=(40, 30), colour=(200, 40, 40), seed=1)
    second = write_image(photos / "b&w, \"quoted\".jpg", size=(30, 40), colour=(40, 60, 200), seed=2)
    rows = OnnxClassifier(onnx_model).classify_bytes([(p.name, p.read_bytes()) for p in (first, second)])
    confidences = [r["confidence"] for r in rows]
    assert confidences[0] != confidences[1]
    low = confidences.index(min(confidences))  # the photo below the threshold: the one that needs review
    high = 1 - low
    classes = ["bluzy", "bryuki"]
    other = next(c for c in classes if c != rows[low]["label"])  # relabel to the class the model did not give
    problems: list[str] = []
    with serving(review_app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True)
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (problems.append("dialog: " + d.message), d.dismiss()))
            page.goto(f"{base}/review/")
            expect(page.locator("#model-note")).to_contain_text("2 classes")
            page.set_input_files("#files", [str(first), str(second)])
            expect(page.locator("#items li")).to_have_count(2)
            names = page.locator("#items .path").all_text_contents()
            assert names == [first.name, second.name]  # shown as text, never as markup
            assert page.locator("#items img:not([src^='blob:'])").count() == 0
            labels = page.locator("#items .label strong").all_text_contents()
            assert labels == [r["label"] for r in rows]

            page.fill("#threshold", f"{(confidences[0] + confidences[1]) / 2:.6f}")
            page.select_option("#filter", "review")
            expect(page.locator("#items li")).to_have_count(1)
            assert page.locator("#items .path").all_text_contents() == [[first, second][low].name]
            page.locator("#items li").first.focus()
            page.keyboard.press(str(classes.index(other) + 1))
            expect(page.locator("#items .decision")).to_have_text([f"relabelled: {other}"])

            page.select_option("#filter", "all")
            expect(page.locator("#items li")).to_have_count(2)
            page.locator("#items li").nth(low).focus()
            page.keyboard.press("j" if high > low else "k")
            focused = page.evaluate("document.activeElement.getAttribute('aria-label')")
            assert focused.startswith([first, second][high].name + ", ")
            page.keyboard.press("a")
            decisions = page.locator("#items .decision").all_text_contents()
            assert decisions[high] == f"accepted: {rows[high]['label']}" and decisions[low] == f"relabelled: {other}"

            page.keyboard.press("?")
            assert page.locator("#help").is_visible()
            page.keyboard.press("Escape")
            assert not page.locator("#help").is_visible()

            with page.expect_download() as download:
                page.click("#export")
            assert download.value.suggested_filename == "corrections.csv"
            text = Path(download.value.path()).read_bytes().decode("utf-8")
        finally:
            browser.close()
    quoted = '"b&w, ""quoted"".jpg"'
    expected = {low: f"{[first.name, quoted][low]},{other},relabel",
                high: f"{[first.name, quoted][high]},{rows[high]['label']},relabel"}
    assert text == f"path,label,action\r\n{expected[0]}\r\n{expected[1]}\r\n"
    assert problems == []
