"""Crash-safe file writing, file digests, lock files and storage errors (standard library only)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import weakref
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
        raise OutputPathError(f"{option} {path}: cannot write in {path.parent} ({reason}); "
                              "choose a writable place") from exc


class AtomicFile:
    """A file written under a temporary name beside ``target`` and renamed onto it by :meth:`commit`.

    For a file written bit by bit over a long run (a list streamed as a job goes): ``target`` is either its old
    content or the complete new one, never half-written; :meth:`abort` (or a crash) leaves ``target`` untouched.
    ``mode`` and ``open_kwargs`` as for :func:`atomic_write`.

    Raises:
        OSError: the folder of ``target`` is missing or not writable.
    """

    def __init__(self, target: str | Path, mode: str = "w", **open_kwargs: Any) -> None:
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        self.target = Path(target)
        self.tmp = self.target.parent / f".{self.target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        self.handle: IO[Any] = open(self.tmp, "x" + mode.replace("w", ""), **open_kwargs)

    def commit(self) -> None:
        """Flush, sync and rename the file onto ``target`` (the temporary file is removed when that fails)."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.target)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and remove the temporary file; ``target`` is left as it was."""
        try:
            self.handle.close()
        except OSError:  # a failed flush (full disk) of a file about to be removed loses nothing
            pass
        self.tmp.unlink(missing_ok=True)


#: ``errno`` values of storage that is full, read-only, forbidden or failing: a problem of the place, not a bug.
STORAGE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EROFS, errno.EACCES,
                      errno.EPERM, errno.EIO) if code is not None
)


def storage_problem(exc: BaseException) -> str | None:
    """What went wrong and what to do, for an :class:`OSError` of full, read-only, forbidden or failing storage.

    ``"PATH: No space left on device; free some space ..."``, naming ``exc.filename`` (``"a file"`` when the error
    does not name one); ``None`` for any other exception (including other ``OSError`` codes).
    """
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or os.strerror(exc.errno)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
        advice = "free some space (or raise the quota) where it is written, or write elsewhere, and run again"
    elif exc.errno == errno.EFBIG:
        advice = ("the file is over the size limit of its file system or of this process (ulimit -f); write it "
                  "elsewhere or raise the limit, and run again")
    elif exc.errno == errno.EROFS:
        advice = "the file system is read-only; choose a writable place and run again"
    elif exc.errno == errno.EIO:
        advice = "the disk or network storage failed to read or write it; check that storage and run again"
    else:
        advice = "check the permissions of that file and of its folder, or choose another place, and run again"
    return f"{where}: {reason}; {advice}"


class FileLock:
    """An exclusive advisory lock (``flock``) held on a lock file by this process; see :func:`try_lock`.

    Released by :meth:`release`, or when the object is garbage-collected (the file then stays, unlocked).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._close = weakref.finalize(self, os.close, fd)  # closing the descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._close.alive

    def release(self) -> None:
        """Remove the lock file (when it is still this lock's) and release the lock; a no-op when released."""
        if not self._close.alive:
            return
        try:
            if _same_inode(self.path, self._fd):
                self.path.unlink()
        finally:
            self._close()


def _same_inode(path: Path, fd: int) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def try_lock(path: str | Path, owner: dict[str, Any]) -> FileLock | None:
    """Take the exclusive lock of the file ``path`` (created if missing) and write ``owner`` into it as JSON.

    The lock is ``fcntl.flock``, held until :meth:`FileLock.release` or the process ends (a kill releases it;
    the file then stays with the dead owner's details until the next owner overwrites them). A lock file
    removed by its releasing owner between this process opening and locking it is not taken: the lock is
    taken on the file at ``path``.

    Returns:
        The lock, or ``None`` when another process (or another open of the file) holds it; :func:`lock_owner`
        reads who.

    Raises:
        OSError: the folder is missing or not writable, or the file system has no locks (``ENOLCK``,
            ``EOPNOTSUPP``).
    """
    import fcntl

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_inode(path, fd):
            break
        os.close(fd)  # released and removed by its owner meanwhile: lock the file now at path
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(owner) + "\n").encode("utf-8"))
    except BaseException:
        FileLock(path, fd).release()
        raise
    return FileLock(path, fd)


def lock_owner(path: str | Path) -> dict[str, Any] | None:
    """The ``owner`` that :func:`try_lock` wrote into ``path``; ``None`` when it cannot be read (yet)."""
    try:
        owner = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None
