"""Default places of the files the commands share, relative to the working directory."""

from __future__ import annotations

from pathlib import Path

#: gcv train writes each run into a new folder under it; gcv export takes the newest run from it by default.
RUNS_DIR = Path("runs") / "train"
