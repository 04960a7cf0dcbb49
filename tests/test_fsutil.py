"""Crash-safe writes and file digests."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from garmentcv.fsutil import atomic_write, sha256_of, write_json


def test_sha256_of_reads_the_whole_file_in_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # 2.3 MB: more than two 1 MiB blocks
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old complete content\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as handle:
            handle.write("half of the new")
            raise KeyboardInterrupt
    assert target.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left behind
    with atomic_write(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    """Results and models are shared with other users and services: not owner-only like mkstemp's files."""
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "results.csv") as handle:
            handle.write("x\n")
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "results.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
