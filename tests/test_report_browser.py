"""The report pages in a real headless browser: Debian's chromium (scripts/setup.sh installs it).

Each page is opened as a file:// URL twice: as written (no console message may appear, the DOM has the
expected sections and no script), and as a copy with a small checking script appended (the page's policy
relaxed for that script only) that records, after load, how many images there are and how many did not
decode (``naturalWidth == 0``), and how many in-page links lead nowhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from garmentcv.report import write_classify_report

from .conftest import write_image
from .test_report import _evaluate, _results_csv

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute("src"));
  const dangling = [...document.querySelectorAll('a[href^="#"]')]
    .filter(a => !document.getElementById(a.getAttribute("href").slice(1)));
  const out = document.createElement("div");
  out.id = "gcv-check";
  out.textContent = `images=${images.length} broken=${broken.length} dangling=${dangling.length} `
    + broken.slice(0, 3).join(" ");
  document.body.appendChild(out);
});
</script>"""


HEIGHT = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("div");
  out.id = "gcv-height";
  out.textContent = String(document.documentElement.scrollHeight);
  document.body.appendChild(out);
});
</script>"""


def _chromium(page: Path, *extra: str) -> tuple[str, str]:
    """Load ``page`` in headless chromium; return the DOM after load and chromium's log (stderr)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, *extra, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        )
    return done.stdout, done.stderr


def _console(log: str) -> list[str]:
    """Console messages and uncaught errors chromium logged for the page."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def _check(page: Path) -> str:
    """Open the page as written and with the checking script; return the checker's line."""
    dom, log = _chromium(page)
    assert _console(log) == []
    assert "<script" not in dom.lower()
    checked = page.with_name("check-" + page.name)
    text = page.read_text(encoding="utf-8").replace("default-src 'none';",
                                                    "default-src 'none'; script-src 'unsafe-inline';")
    checked.write_text(text.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    os.symlink(page.with_name(page.stem + "_files"), checked.with_name(checked.stem + "_files"))
    dom, log = _chromium(checked)
    assert _console(log) == []
    found = re.search(r'<div id="gcv-check">([^<]*)</div>', dom)
    assert found, dom[-2000:]
    return found.group(1).strip()


def test_evaluate_page_loads_in_chromium(tmp_path: Path) -> None:
    plot = write_image(tmp_path / "reliability.png", (60, 40))
    page, _ = _evaluate(tmp_path, plots={"Reliability diagram": plot})
    dom, _ = _chromium(page)
    for ident in ("metrics", "per-class", "confusion", "plots", "misclassified", "least-confident", "not-decoded",
                  "cell-0-0", "cell-0-1", "cell-1-1", "cell-2-0", "cell-2-2"):
        assert f'id="{ident}"' in dom, ident
    # thumbnails: 2 misclassified + 6 least confident + 6 in cells, and the plot, every one decoded
    assert _check(page) == "images=15 broken=0 dangling=0"


def test_classify_page_with_hostile_names_loads_in_chromium(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    names = ["<script>alert(1)</script>.png", os.fsdecode(b"caf\xe9.png"), "a&b \"q\".png", "plain.png"]
    rows = []
    for i, name in enumerate(names):
        write_image(folder / name, (28, 28), seed=i)
        rows.append({"path": name, "label": ["bluzy", "<i>x</i>"][i % 2], "confidence": f"{0.5 + i / 10:.6f}",
                     "needs_review": "true" if i < 2 else "false", "error": ""})
    rows.append({"path": "gone.jpg", "label": "", "confidence": "", "needs_review": "", "error": "file not found"})
    page = write_classify_report(tmp_path / "classify.html", _results_csv(tmp_path / "out.csv", rows, review=True),
                                 folder)
    dom, _ = _chromium(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in dom and r"caf\xe9.png" in dom
    assert 'id="needs-review"' in dom and 'id="not-read"' in dom and "file not found" in dom
    # 4 in the class galleries, 2 needing review
    assert _check(page) == "images=6 broken=0 dangling=0"


def test_evaluate_page_of_200_images_stays_short_in_chromium(tmp_path: Path) -> None:
    """200 least confident images and two cells of 100: each gallery opens with its first thumbnails only."""
    from .test_report_scale import _evaluate_200

    _evaluate_200(tmp_path)
    page = tmp_path / "ev" / "report.html"
    measured = page.with_name("height-" + page.name)
    text = page.read_text(encoding="utf-8").replace("default-src 'none';",
                                                    "default-src 'none'; script-src 'unsafe-inline';")
    measured.write_text(text.replace("</body>", HEIGHT + "</body>"), encoding="utf-8")
    os.symlink(page.with_name(page.stem + "_files"), measured.with_name(measured.stem + "_files"))
    dom, log = _chromium(measured, "--window-size=1280,900")
    assert _console(log) == []
    height = int(re.search(r'<div id="gcv-height">(\d+)</div>', dom).group(1))
    # all 400 thumbnails open: about 10,000 px; 3 galleries of 24 open (8 a row at 1280 px): about 2,700 px
    assert height < 4000, height
