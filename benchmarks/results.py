"""One result document for every suite: what was measured, on which machine, at which commit.

Every suite writes through :func:`write`: a JSON document with exactly the keys :data:`KEYS`, stored per machine
as ``OUT/<machine slug>/<suite>[-NAME].json`` (the commit is a field of the document), with an optional markdown
rendering beside it (same stem, ``.md``). ``rows`` is a list of dicts, one per measured figure (flat), or one per
measured condition where a suite nests its tables (``openvino_rows``: one per CPU condition and input size).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.machine import MachineInfo, machine_info
from garmentcv.fsutil import atomic_write

#: Version of the document's layout; bumped when a key changes meaning.
SCHEMA = 1
#: The document's keys, in order.
KEYS: tuple[str, ...] = ("schema", "suite", "machine", "commit", "started", "command", "rows")
#: The machine record's keys, in order.
MACHINE_KEYS: tuple[str, ...] = ("cpu_model", "slug", "flags", "cores", "memory_gb", "platform", "gpu", "versions",
                                 "load_before", "load_after")  # fmt: skip
#: Versions recorded (``python`` first); absent packages are left out.
VERSION_KEYS: tuple[str, ...] = (
    "python",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "torch",
    "torchvision",
    "pillow",
    "garmentcv",
)
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where results go unless ``--out`` says otherwise.
DEFAULT_ROOT = Path("benchmarks/results")


def machine_slug(cpu_model: str, isa: Sequence[str]) -> str:
    """A folder name for one kind of machine: the CPU's vendor and family, then its widest matrix ISA.

    e.g. ``AMD EPYC 9R14`` with avx512_bf16 -> ``amd-epyc-avx512bf16``; ``Intel(R) Xeon(R) Platinum 8488C`` with
    amx_tile -> ``intel-xeon-amx``. The ISA tag is the first of amx, avx512bf16, avx512vnni, avx512, avx2 the CPU
    has (none: no tag); an empty model gives ``unknown``.
    """
    words = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b", " ", cpu_model.lower()).split()
    words = [re.sub(r"[^a-z0-9]+", "", w) for w in words[:2]]
    flags = set(isa)
    tag = next((t for t, have in (("amx", "amx_tile" in flags), ("avx512bf16", "avx512_bf16" in flags),
                                  ("avx512vnni", "avx512_vnni" in flags), ("avx512", "avx512f" in flags),
                                  ("avx2", "avx2" in flags)) if have), "")  # fmt: skip
    return "-".join(w for w in [*words, tag] if w) or "unknown"


def git_commit(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"rev": <full hash>, "dirty": <uncommitted changes to tracked files>}``; ``rev`` is ``""`` outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {"rev": "", "dirty": False}
    return {"rev": rev, "dirty": bool(status.strip())}


def command_line(suite: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces the run: ``python -m benchmarks SUITE ARGS`` (``argv``: sys.argv[1:] by default)."""
    return shlex.join(["python", "-m", "benchmarks", suite, *(sys.argv[1:] if argv is None else argv)])


def machine_record(before: MachineInfo, load_after: Sequence[float] | None = None) -> dict[str, Any]:
    """The document's ``machine``: :data:`MACHINE_KEYS`, the load averages (1, 5, 15 min) before and after the run."""
    versions = {"python": before.python} | {k: before.versions[k] for k in VERSION_KEYS if k in before.versions}
    if load_after is None:
        load_after = _load()
    return {
        "cpu_model": before.cpu_model,
        "slug": machine_slug(before.cpu_model, before.isa),
        "flags": list(before.isa),
        "cores": before.logical_cpus,
        "memory_gb": before.memory_gb,
        "platform": before.platform,
        "gpu": before.gpu,
        "versions": versions,
        "load_before": list(before.load_avg),
        "load_after": [round(x, 2) for x in load_after],
    }


def _load() -> tuple[float, float, float]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Run:
    """A suite's run, begun: the machine and the time before anything was measured.

    Attributes:
        suite: the suite's name (``python -m benchmarks SUITE``).
        command: the command line that reproduces it.
        machine: the machine when the run began (its load average is ``load_before``).
        started: UTC start time, ISO 8601.
    """

    suite: str
    command: str
    machine: MachineInfo
    started: str


def start(suite: str, argv: Sequence[str] | None = None, machine: MachineInfo | None = None) -> Run:
    """Begin a run of ``suite``: record the machine, its load and the start time now."""
    return Run(suite, command_line(suite, argv), machine or machine_info(),
               datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip


def document(run: Run, rows: Sequence[Mapping[str, Any]], load_after: Sequence[float] | None = None) -> dict[str, Any]:
    """The result document (keys :data:`KEYS`) of ``run`` with ``rows``; the load after is taken now unless given."""
    return {"schema": SCHEMA, "suite": run.suite, "machine": machine_record(run.machine, load_after),
            "commit": git_commit(), "started": run.started, "command": run.command, "rows": [dict(r) for r in rows]}


def result_path(root: Path, suite: str, slug: str, name: str | None = None) -> Path:
    """``root/<slug>/<suite>[-name].json``."""
    return root / slug / f"{suite}{'-' + name if name else ''}.json"


def write(run: Run, rows: Sequence[Mapping[str, Any]], root: Path = DEFAULT_ROOT, name: str | None = None,
          markdown: str | None = None, with_csv: bool = False,
          csv_rows: Sequence[Mapping[str, Any]] | None = None) -> Path:  # fmt: skip
    """Write ``run``'s document (and ``markdown`` beside it, ``.md``; with ``with_csv`` the rows as ``.csv``, the
    first row's keys as the header; ``csv_rows``, when given, are the CSV's rows instead, for a document whose rows
    come in several shapes) atomically; return the JSON's path.

    Raises:
        TypeError: a row value JSON cannot hold (nothing is written).
    """
    doc = document(run, rows)
    text = json.dumps(doc, indent=1, allow_nan=True)
    path = result_path(root, run.suite, doc["machine"]["slug"], name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(text + "\n")
    if markdown is not None:
        with atomic_write(path.with_suffix(".md")) as handle:
            handle.write(markdown)
    table = rows if csv_rows is None else csv_rows
    if (with_csv or csv_rows is not None) and table:
        with atomic_write(path.with_suffix(".csv"), newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    return path


def folder(root: Path, run: Run) -> Path:
    """``root/<slug>``, created: where a suite puts its other files (CSV, chart) beside its document."""
    path = root / machine_slug(run.machine.cpu_model, run.machine.isa)
    path.mkdir(parents=True, exist_ok=True)
    return path
