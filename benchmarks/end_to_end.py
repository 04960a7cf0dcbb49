"""End to end on a folder: a command run in a fresh process, timed by the wall clock, peak memory from the OS.

Each command runs as its own child process (``subprocess.Popen``) and is reaped with ``os.wait4``, whose
resource usage is that child's alone: ``ru_maxrss`` is its peak resident set size (the largest of the
child and any processes it started and waited for, not their sum). The wall time includes starting
Python, importing the libraries and loading the model, which a user also waits for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


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


def run_measured(command: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> ProcessRun:
    """Run ``command`` to completion in a fresh process; return its wall time, peak RSS and exit status."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=devnull, stderr=subprocess.PIPE)
        assert process.stderr is not None
        stderr = process.stderr.read()  # drained before waiting, so a chatty child cannot block on a full pipe
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it was reaped
    return ProcessRun(
        command=tuple(command), seconds=seconds, peak_rss_mb=usage.ru_maxrss * 1024 / 1e6,  # ru_maxrss is KiB on Linux
        returncode=process.returncode, stderr_tail=stderr.decode(errors="replace")[-2000:],
    )


def classify_command(folder: Path, model: Path, out: Path, batch_size: int, threads: int | None = None) -> list[str]:
    """The ``gcv-classify`` command line for ``folder`` (the console script beside this Python, CPU provider)."""
    script = Path(sys.executable).with_name("gcv-classify")
    exe = [str(script)] if script.exists() else [shutil.which("gcv-classify") or "gcv-classify"]
    command = exe + [str(folder), "--model", str(model), "--out", str(out), "--batch-size", str(batch_size),
                     "--provider", "cpu", "-q"]
    return command + (["--threads", str(threads)] if threads else [])


def gcv_classify_available() -> bool:
    """True when the ``gcv-classify`` command is installed (branch ``classify`` merged and installed)."""
    return Path(sys.executable).with_name("gcv-classify").exists() or shutil.which("gcv-classify") is not None


def original_command(folder: Path, checkpoint: Path, out: Path, batch_size: int, workers: int = 0) -> list[str]:
    """The command line of :mod:`benchmarks.original_way` for ``folder`` (run from the repository root)."""
    return [sys.executable, "-m", "benchmarks.original_way", "--checkpoint", str(checkpoint), "--folder", str(folder),
            "--out", str(out), "--batch-size", str(batch_size), "--workers", str(workers)]
