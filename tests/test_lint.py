"""The code passes the lint rules of pyproject.toml's [tool.ruff] (pyflakes, pycodestyle, import order, bugbear)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_passes_on_the_repository() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"ruff check exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
