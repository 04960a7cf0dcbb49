"""Screenshot the review app for the docs (docs/review-app.png), in Debian's chromium driven by Playwright.

Serves the review router on loopback with ``--root`` as the review root, classifies ``--folder`` with ``--model``,
marks the photos below ``--min-confidence`` as needing review, makes three decisions from the keyboard (accept,
relabel, drop) and saves the window as a small palette PNG. How the docs' screenshot was made: docs/review.md.

Run from the repository root: ``python scripts/review_screenshots.py --model MODEL.onnx --root DIR --folder SUB``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from fastapi import FastAPI
from PIL import Image
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from garmentcv.serve.review import create_review_router  # noqa: E402
from tests.onnx_classifier import OnnxClassifier  # noqa: E402
from tests.test_review_browser import CHROMIUM, serving  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="GarmentCV ONNX file to classify with.")
    parser.add_argument("--root", type=Path, required=True, help="Review root (the folder browser's top).")
    parser.add_argument("--folder", default="", help="Folder under --root to classify (default: the root).")
    parser.add_argument("--min-confidence", type=float, default=0.6, help="Needs-review threshold (default 0.6).")
    parser.add_argument("--out", type=Path, default=Path("docs/review-app.png"), help="PNG to write.")
    parser.add_argument("--size", default="1280x860", help="Window size WIDTHxHEIGHT in px (default 1280x860).")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    models = {args.model.name: args.model.resolve()}
    app = FastAPI()
    app.include_router(create_review_router(open_model=OnnxClassifier, models_dir=None, root=args.root,
                                            models=models), prefix="/review")
    with serving(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{base}/review/")
        expect(page.locator("#model-note")).to_contain_text("classes")
        page.locator("#browser summary").click()
        for part in filter(None, args.folder.split("/")):
            page.get_by_role("button", name=f"Open folder {part}").click()
            expect(page.locator("#folder-count")).to_contain_text(part)
        page.click("#classify-folder")
        expect(page.locator("#status")).to_contain_text("Classified")
        page.locator("#browser summary").click()  # fold the browser so the photos fill the window
        page.fill("#threshold", str(args.min_confidence))
        page.locator("#items li").first.focus()
        for key in ("a", "2", "x"):
            page.keyboard.press(key)
        page.locator("#items li").first.focus()
        page.keyboard.press("j")
        page.wait_for_timeout(500)  # thumbnails decoded
        png = page.screenshot()
        browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
