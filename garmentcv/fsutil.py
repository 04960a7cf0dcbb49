"""Crash-safe file writing and file digests (standard library only)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    The rename is atomic on POSIX file systems, so ``target`` is either its old content or the complete
    new one, never half-written, even after a crash or Ctrl-C. On an exception the temporary file is removed
    and ``target`` is left untouched. The file gets the permissions of any newly created file (``0o666``
    less the umask), not ``tempfile.mkstemp``'s owner-only ``0o600``.

    Raises:
        OSError: the folder of ``target`` is missing or not writable.
    """
    target = Path(target)
    tmp_path = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(target: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``target`` atomically when the block ends.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
    """
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(target) as tmp:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(target: str | Path, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON (non-ASCII kept as is) with a final newline, atomically."""
    with atomic_write(target) as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def check_writable_output(path: str | Path, option: str = "--out") -> None:
    """Fail early, before any work, when the file ``path`` could not be written; create missing folders.

    Probes the folder with a temporary file that is removed at once (permissions alone do not tell on a
    read-only mount or for root). Nothing is left behind except folders that had to be created.

    Args:
        path: the output file.
        option: the option that named it, for the message.

    Raises:
        OutputPathError: ``path`` is a folder, a parent is a file, or the folder cannot be created or written.
    """
    from garmentcv.errors import OutputPathError

    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{option} {path}: {parent} is not a folder but a file; choose another place")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.probe"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, PermissionError):
            reason += ": the folder is not writable"
        raise OutputPathError(f"{option} {path}: cannot write in {path.parent} ({reason}); choose a writable place") from exc
