"""GarmentCV checkpoints: plain types that load with ``torch.load(..., weights_only=True)``.

A checkpoint holds the weights, the arch, the class names in index order, the preprocessing, the training
config, the metrics and the library versions, so that export needs nothing else. ``last.pt`` also holds the
optimizer, scheduler and RNG states for ``--resume``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision

import garmentcv
from garmentcv.errors import CheckpointError, GarmentCVError, OutputPathError
from garmentcv.fsutil import atomic_path
from garmentcv.image import Preprocessing
from garmentcv.models.registry import unreadable_torch_file

logger = logging.getLogger(__name__)

FORMAT = "garmentcv-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("arch", "classes", "preprocessing", "state_dict", "epoch", "metrics", "weights_source")


def versions() -> dict[str, str]:
    """Versions of the libraries that produced an artifact."""
    return {"garmentcv": garmentcv.__version__, "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__)}


#: Words of the RuntimeError torch raises when its stream writer cannot write a file it was given by path
#: (``PytorchStreamWriter failed writing file ...: file write failed``, or ``unexpected pos`` on a full disk).
_STREAM_WRITER_FAILURES = ("PytorchStreamWriter failed", "file write failed", "unexpected pos")

#: What each storage errno means for the user, after the strerror.
_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file system takes no file this large",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.EIO: "the disk or the network file system reported an input/output error",
}


class RunFileError(OutputPathError):
    """A file of a run folder could not be written: a full disk, a quota, a read-only or failing disk.

    An :class:`OSError` with the real ``errno`` (``ENOSPC`` when torch did not say) and ``filename`` (the file
    being written), and a :class:`~garmentcv.errors.GarmentCVError` (exit 1) whose message says what to do.
    Files written before it are intact (every write is atomic).
    """

    def __init__(self, code: int, path: Path, cause: str) -> None:
        super().__init__(code, os.strerror(code), str(path))
        hint = _ERRNO_HINTS.get(code)
        self.message = (
            f"{path}: cannot write ({os.strerror(code)}{': ' + hint if hint else ''}{cause}). The files written "
            "before are intact: make room or fix the disk (or choose an --out elsewhere), then run the same command "
            "with --resume auto, which continues from the last saved epoch or starts again if none was saved"
        )

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failure to write ``path`` into :class:`RunFileError` naming it.

    Converts an :class:`OSError` with an errno (Python's own carry no file name when a write or a flush fails)
    and torch's stream-writer :class:`RuntimeError` (no errno: reported as ``ENOSPC``, its usual cause). Our
    errors and anything else pass through.
    """
    try:
        yield
    except GarmentCVError:
        raise
    except OSError as exc:
        if exc.errno is None:
            raise
        raise RunFileError(exc.errno, path, "") from exc
    except RuntimeError as exc:
        if not any(words in str(exc) for words in _STREAM_WRITER_FAILURES):
            raise
        first = str(exc).strip().splitlines()[0]
        raise RunFileError(errno.ENOSPC, path, f"; torch: {first}") from exc


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` plus format and version fields to ``path`` atomically (temp file, then rename).

    torch writes into an unbuffered file that is flushed to the disk (``fsync``) before the rename, so a full
    disk or a quota surfaces as the OSError of the failing write (given a path, torch reports only a
    RuntimeError), and ``path`` is either the old checkpoint or the complete new one.

    Raises:
        RunFileError: ``path`` cannot be written (see :func:`writing`); ``path`` is untouched.
    """
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **payload}
    with writing(path), atomic_path(path) as tmp, open(tmp, "wb", buffering=0) as handle:
        torch.save(data, handle)
        os.fsync(handle.fileno())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated or corrupt file; not a GarmentCV checkpoint; a newer format
            version than this release reads; required fields missing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; give a best.pt or last.pt from a gcv train run folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; the raw one stays chained for --debug
        raise CheckpointError(
            f"{path}: not a readable checkpoint: {unreadable_torch_file(path)}. Give a best.pt or last.pt "
            "written by gcv train (copy it again if it was cut short), or train again"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a GarmentCV checkpoint (no format {FORMAT!r}); "
                              "use a file written by gcv train")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this garmentcv "
            f"({garmentcv.__version__}) reads (up to {FORMAT_VERSION}); upgrade garmentcv"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; it is incomplete or damaged")
    try:
        Preprocessing.from_dict(data["preprocessing"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad preprocessing in checkpoint ({exc})") from exc
    return data
