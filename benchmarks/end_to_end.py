"""End to end on a folder: a command run in a fresh process, timed by the wall clock, peak memory from the OS.

Each command runs as its own process and is reaped with ``os.wait4``, whose resource usage is that
process's alone: ``ru_maxrss`` is its peak resident set size (the largest of it and any processes it
started and waited for, not their sum). Linux carries a process's peak across ``fork`` and ``exec``, so a
command forked straight from this (large, torch-holding) process would report at least this process's size;
hence a small launcher Python starts the command and reports its figures. The wall time includes starting
Python, importing the libraries and loading the model, which a user also waits for.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from garmentcv.image import Preprocessing, load_input

#: The repository root, where ``python -m benchmarks.eager_baseline`` must run.
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ProcessRun:
    """One command's run.

    Attributes:
        command: what was run.
        seconds: wall time from start to exit, s.
        peak_rss_mb: peak resident set size, MB (10^6 bytes).
        returncode: exit status.
        stderr_tail: the last 2000 characters of its stderr (for error messages).
    """

    command: tuple[str, ...]
    seconds: float
    peak_rss_mb: float
    returncode: int
    stderr_tail: str


# Runs argv[2:] with stdout discarded, then writes its wall time, peak RSS (KiB) and exit code to argv[1].
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as handle:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, handle)
"""


def run_measured(command: Sequence[str], cwd: Path | None = None) -> ProcessRun:
    """Run ``command`` to completion in a fresh process; return its wall time, peak RSS and exit status.

    Raises:
        RuntimeError: the launcher itself failed (its stderr is in the message).
    """
    with tempfile.TemporaryDirectory(prefix="gcv-bench-run-") as tmp:
        figures = Path(tmp) / "figures.json"
        launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, str(figures), *command], cwd=cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        stderr = launcher.stderr.decode(errors="replace")
        if not figures.is_file():
            raise RuntimeError(f"the launcher of {list(command)} failed (exit {launcher.returncode}): {stderr[-2000:]}")
        data = json.loads(figures.read_text())
    return ProcessRun(
        command=tuple(command), seconds=float(data["seconds"]),
        peak_rss_mb=int(data["maxrss_kib"]) * 1024 / 1e6,  # ru_maxrss is in KiB on Linux
        returncode=int(data["code"]), stderr_tail=stderr[-2000:],
    )


def classify_command(folder: Path, model: Path, out: Path, batch_size: int, threads: int | None = None) -> list[str]:
    """The ``gcv-classify`` command line for ``folder`` (the console script beside this Python, CPU provider)."""
    script = Path(sys.executable).with_name("gcv-classify")
    exe = [str(script)] if script.exists() else [shutil.which("gcv-classify") or "gcv-classify"]
    command = exe + [str(folder), "--model", str(model), "--out", str(out), "--batch-size", str(batch_size),
                     "--device", "cpu", "-q"]
    return command + (["--threads", str(threads)] if threads else [])


def gcv_classify_available() -> bool:
    """True when the ``gcv-classify`` command is installed (branch ``classify`` merged and installed)."""
    return Path(sys.executable).with_name("gcv-classify").exists() or shutil.which("gcv-classify") is not None


def baseline_command(folder: Path, checkpoint: Path, out: Path, batch_size: int, workers: int = 0) -> list[str]:
    """The command line of :mod:`benchmarks.eager_baseline` for ``folder`` (run from the repository root)."""
    return [sys.executable, "-m", "benchmarks.eager_baseline", "--checkpoint", str(checkpoint), "--folder", str(folder),
            "--out", str(out), "--batch-size", str(batch_size), "--workers", str(workers)]


_RATE = re.compile(r"([0-9]+(?:\.[0-9]+)?) images/s")


def reported_rate(stderr: str) -> float | None:
    """The last ``<number> images/s`` a command printed on stderr (gcv classify's summary line, the eager
    way's last line), or ``None``."""
    found = _RATE.findall(stderr)
    return float(found[-1]) if found else None


def decode_seconds(paths: Sequence[Path], pp: Preprocessing, threads: int | None = None) -> float:
    """Wall time, s, to run :func:`garmentcv.image.load_input` on every file with ``threads`` threads (default one
    per CPU), as gcv classify's decoding threads do, with no model: the rate no end-to-end run can beat."""
    from benchmarks.model_only import cpu_threads  # noqa: PLC0415

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads or cpu_threads()) as pool:
        for _ in pool.map(lambda p: load_input(p, pp), paths):
            pass
    return time.perf_counter() - start
