"""Screenshot the review app for the docs (docs/review-app.png), in Debian's chromium driven by Playwright.

Runs ``gcv serve --model ... --root ...`` on loopback (the review app at ``/review/``), classifies ``--folder``,
marks the photos below ``--min-confidence`` as needing review, makes three decisions from the keyboard (accept,
relabel, drop) and saves the window as a small palette PNG. How the docs' screenshot was made: docs/review.md.

Run from the repository root: ``python scripts/review_screenshots.py --model MODEL.onnx --root DIR --folder SUB``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright

#: Debian's chromium (never a browser Playwright downloads).
CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def gcv_serve(model: Path, root: Path) -> Iterator[str]:
    """``gcv serve MODEL --root ROOT`` on a free loopback port until the block ends; yields its base URL once ready."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", "from garmentcv.cli import main; main()", "serve", str(model), "--root",
               str(root), "--port", str(port), "-q"]  # fmt: skip
    server = subprocess.Popen(command)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("gcv serve did not become ready")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(30)


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
    with gcv_serve(args.model, args.root) as base, sync_playwright() as playwright:
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
