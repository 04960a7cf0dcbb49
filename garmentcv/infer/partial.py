"""The partial results of a classify run, shared by both engines: what makes a run safe to stop and resume.

Nothing lost: rows go, flushed batch by batch, to numbered segment files ``run-NNN.jsonl`` in the folder
``<out>.partial`` (:class:`PartialResults`; one JSON row per line, a header line first). Only when every file has a
row is ``<out>`` written (atomically) from the last segment and the partial folder removed. After Ctrl-C or a kill,
``resume=True`` merges the rows of all segments of a run with the same model, folder and options (each is sorted),
reuses those of files still present and unchanged (:class:`Reuse`, a merge-join against the sorted stream of
files), and classifies the rest, writing a new complete segment, so the final file is byte for byte the one an
uninterrupted run writes (an image's probabilities do not depend on its batch).

Unchanged means the same size and modification time (ns) as when the row was made: each partial row stores them
(``size``, ``mtime_ns``; the final output does not), so a file replaced between runs is classified again.

A run without ``resume`` never deletes earlier partial results up front: it writes its own segment beside them, and
they are removed only when it completes. Interrupted as well, every segment is still there for a later ``resume``;
segments of a run with another model, folder or options are then ignored with a warning (and refused when no segment
matches).

One run at a time: a run holds an exclusive lock, ``<out>.partial/lock`` (:class:`RunLock`, ``flock``, naming its
pid, host and start time), from before any work to its end, and a second run on the same ``<out>`` is refused
(:class:`RunLockedError`). Segments are created exclusively (``open(..., "x")``).

A file that kills the process decoding it (a decoder crash, the OOM killer): the local engine records the files it
hands to the decoders, batch by batch, in ``<out>.partial/in-flight.json`` (:class:`InFlight`); the next run decodes
each recorded file it must classify alone in a child process first (:func:`decodes_alone`), and a file whose child
dies gets the error row :data:`WORKER_DIED` instead of killing the run again.

The run itself (the stream of files, the rows saved, the final file, the summary) is
:class:`garmentcv.infer.classify.ClassifyRun`.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import json
import logging
import multiprocessing
import os
import socket
from collections.abc import Iterable, Iterator
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from garmentcv.artifact import ModelInfo
from garmentcv.errors import GarmentCVError
from garmentcv.fsutil import FileLock, lock_owner, try_lock
from garmentcv.image import Preprocessing
from garmentcv.infer.rows import Row, sort_key
from garmentcv.infer.sources import File, load_file
from garmentcv.text import plural

logger = logging.getLogger(__name__)

PARTIAL_FORMAT = "garmentcv-classify-partial"
IN_FLIGHT_FORMAT = "garmentcv-classify-in-flight"
_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
#: In ``<out>.partial``: the lock file of the run writing ``<out>`` and the record of the files it is decoding.
LOCK_FILE = "lock"
IN_FLIGHT_FILE = "in-flight.json"
#: The error of a row whose file killed the process decoding it (a decoder crash, the OOM killer).
WORKER_DIED = "worker died while decoding"
#: ``errno`` values of a file system without locks: a run there goes on unlocked, with a warning.
_NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP})


class RunLockedError(GarmentCVError):
    """Another run is writing the same results file (exit code 1); the message names it."""


def partial_dir(out: Path) -> Path:
    """The folder of the partial results of the run writing ``out``: ``<out>.partial``."""
    return out.with_name(out.name + ".partial")


class RunLock:
    """The exclusive lock of the run writing ``out``: ``<out>.partial/lock``, held from before any work to the end.

    The file says who holds it (pid, host, start time), for the message that refuses a second run. The lock is
    ``flock`` (:func:`garmentcv.fsutil.try_lock`): a killed run releases it; on a file system without locks the
    run goes on unlocked, with a warning.

    Raises:
        RunLockedError: another run holds it.
        OSError: the folder cannot be created or written.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.dir = partial_dir(self.out)
        path = self.dir / LOCK_FILE
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": datetime.now().astimezone().isoformat(timespec="seconds")}
        self.lock: FileLock | None = None
        for attempt in itertools.count():
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                self.lock = try_lock(path, owner)
            except FileNotFoundError:  # the folder went with a run finishing just now
                if attempt < 3:
                    continue
                raise
            except OSError as exc:
                if exc.errno not in _NO_LOCKS:
                    raise
                logger.warning("%s: this file system cannot lock files (%s); nothing keeps another run from writing "
                               "%s at the same time", path, exc.strerror, self.out)
                return
            break
        if self.lock is None:
            held = lock_owner(path)
            who = (f"pid {held.get('pid')} on {held.get('host')}, started {held.get('started')}" if held
                   else "its details are not written yet")
            raise RunLockedError(f"{self.out} is being written by another run ({who}); wait until it ends, or give "
                                 "another --out")

    def release(self) -> None:
        """Remove the lock file and release the lock, then the folder if nothing else is left in it (idempotent)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        try:
            self.dir.rmdir()
        except OSError:  # not empty (partial results, another run's lock) or already gone
            pass


def _decode_in_child(file: File, pp: Preprocessing, input_format: str, done: Connection) -> None:
    """The child process of :func:`decodes_alone`: decode ``file``, then say so (a failure to decode is an
    ordinary error row of the main run: only dying matters here)."""
    try:
        load_file(file, pp, input_format=input_format)
        outcome = "decoded"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    done.send(outcome)
    done.close()


def decodes_alone(file: File, info: ModelInfo) -> bool:
    """Whether decoding ``file`` leaves its process alive: it is decoded (into ``info``'s input) in a fresh child
    process, forked from multiprocessing's fork server (single-threaded, so safe to fork), which must report back.

    Returns:
        False when the child died first (a decoder crash, ``os._exit``, the OOM killer); True otherwise, also when
        the file cannot be decoded (that is an error row of its own).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # children fork with the decoder already imported
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_decode_in_child, args=(file, info.preprocessing, info.input_format, writer),
                            name="gcv-decode-alone", daemon=True)
    child.start()
    writer.close()
    child.join()
    try:
        outcome = reader.recv() if reader.poll() else None
    except EOFError:
        outcome = None
    finally:
        reader.close()
    logger.debug("%s decoded alone: %s (exit code %s)", file, outcome or "died", child.exitcode)
    return outcome is not None


class InFlight:
    """The files the local engine is decoding, recorded in ``<out>.partial/in-flight.json`` before they are decoded.

    The record names the files of the batches handed to the decoders and not yet saved (at most ``prefetch + 1``
    batches of :func:`~garmentcv.infer.pipeline.predict_batches`), rewritten (atomically) once per batch. A process
    killed while decoding leaves it behind; the next run on the same ``out`` decodes each recorded file that it must
    classify alone first (:func:`decodes_alone`) and gives a file whose child died the error row :data:`WORKER_DIED`.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / IN_FLIGHT_FILE
        #: Files of a dead run's record not reached yet by this run.
        self.suspects: set[str] = self._read()

    def _read(self) -> set[str]:
        try:
            record = json.loads(self.path.read_text(**_ENCODING))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            logger.warning("%s: cannot read the files a stopped run was decoding (%s); ignored", self.path, exc)
            return set()
        if not (isinstance(record, dict) and record.get("format") == IN_FLIGHT_FORMAT
                and isinstance(record.get("paths"), list)):
            logger.warning("%s: not a record of the files a run was decoding; ignored", self.path)
            return set()
        suspects = {p for p in record["paths"] if isinstance(p, str)}
        if suspects:
            logger.info("%s: a run died while decoding one of %s; each is decoded alone first", self.path,
                        plural(len(suspects), "file"))
        return suspects

    def write(self, paths: Iterable[str]) -> None:
        """Record ``paths`` (and the suspects not reached yet) as being decoded; flushed before this returns."""
        tmp = self.path.with_name(f".{IN_FLIGHT_FILE}.tmp")
        with tmp.open("w", **_ENCODING) as handle:
            json.dump({"format": IN_FLIGHT_FORMAT, "paths": [*self.suspects, *paths]}, handle)
        os.replace(tmp, self.path)

    def settle(self) -> None:
        """After a run that stopped alive: nothing it decoded killed it; keep only the suspects it did not reach."""
        if self.suspects:
            self.write(())
        else:
            self.path.unlink(missing_ok=True)


class PartialResults:
    """The ``<out>.partial`` folder of segment files (see the module docstring)."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        self.dir = partial_dir(out)
        self.header = header

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("run-*.jsonl")) if self.dir.is_dir() else []

    @staticmethod
    def _number(segment: Path) -> int:
        try:
            return int(segment.stem.split("-", 1)[1])
        except ValueError:
            return -1

    @staticmethod
    def header_of(segment: Path) -> dict[str, Any] | None:
        """The header of a segment; ``None`` when it is empty or torn (killed as it started)."""
        with segment.open(**_ENCODING) as handle:
            first = handle.readline()
        try:
            header = json.loads(first) if first.endswith("\n") else None
        except json.JSONDecodeError:
            return None
        return header if isinstance(header, dict) else None

    def rows(self, segment: Path) -> Iterator[Row]:
        """Complete rows of one segment, header skipped; stops at a torn last line (a kill mid-write)."""
        with segment.open(**_ENCODING) as handle:
            handle.readline()
            for line in handle:
                if not line.endswith("\n"):
                    return
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return

    def previous_rows(self, segments: list[Path]) -> Iterator[Row]:
        """Rows of ``segments`` merged in row order (duplicates possible, rows of one path adjacent)."""
        return heapq.merge(*(self.rows(s) for s in segments), key=lambda r: sort_key(r["path"]))

    def reusable(self, resume: bool) -> list[Path]:
        """The segments whose rows a run may reuse: with ``resume``, those made with this run's header.

        Raises:
            GarmentCVError: ``resume`` and every segment with rows is of another model, folder or options.
        """
        segments = self.segments()
        if not segments:
            return []
        if not resume:
            logger.warning(
                "%s holds partial results of an earlier run; they are kept until this run completes "
                "(use --resume to reuse them)", self.dir,
            )
            return []
        headers = {s: self.header_of(s) for s in segments}
        matching = [s for s in segments if headers[s] == self.header]
        others = [s for s in segments if headers[s] is not None and headers[s] != self.header]
        if others and not matching:
            raise GarmentCVError(
                f"{others[0]}: partial results of a run with another model, folder or options; run with the "
                f"same ones, or without --resume to start again ({self.dir} is removed when that run completes)"
            )
        if others:
            logger.warning("ignoring %s of a run with another model, folder or options in %s",
                           plural(len(others), "partial segment"), self.dir)
        return matching

    def new_segment(self) -> tuple[Path, IO[str]]:
        """A new segment, numbered after the last one, created exclusively (a name taken meanwhile: the next one),
        open for writing."""
        self.dir.mkdir(parents=True, exist_ok=True)
        number = max(map(self._number, self.segments()), default=-1) + 1
        while True:
            segment = self.dir / f"run-{number:03d}.jsonl"
            try:
                return segment, segment.open("x", **_ENCODING)
            except FileExistsError:
                number += 1


class Reuse:
    """Merge-join of the sorted previous rows against the sorted stream of files."""

    def __init__(self, rows: Iterator[Row]) -> None:
        self.rows = rows
        self.head = next(rows, None)

    def take(self, key: tuple[str, ...]) -> list[Row]:
        """The previous rows of the path with ``key`` (several after repeated interruptions), oldest first."""
        while self.head is not None and sort_key(self.head["path"]) < key:
            self.head = next(self.rows, None)
        found = []
        while self.head is not None and sort_key(self.head["path"]) == key:
            found.append(self.head)
            self.head = next(self.rows, None)
        return found
