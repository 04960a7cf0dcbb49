"""What ``gcv classify`` reads: a local folder, a manifest of paths, or an object-storage prefix (both engines).

``SOURCE`` is one of:

* a folder: every image below it (:func:`garmentcv.data.layouts.scan_images`: hidden files and non-images
  skipped, symlinked folders not followed); rows name files relative to the folder, ``/``-separated.
* a manifest: a ``.txt`` or ``.lst`` file with one path per line (blank lines and lines starting with ``#``
  ignored), or a ``.csv`` file with a ``path`` column. Read as ``gcv train`` reads its manifests: UTF-8 with or
  without a byte-order mark, each line or ``path`` value stripped of surrounding white space. Relative paths are
  relative to the manifest's folder. Every listed file gets a row named as written in the manifest (stripped); a
  missing or non-image file is an error row.
* an object-storage prefix ``SCHEME://BUCKET/PREFIX`` (``s3://``, ``gs://``, any scheme
  ``pyarrow.fs.FileSystem.from_uri`` knows): every image object below the prefix, with the folder rules
  (hidden names and non-images skipped; keys with an empty path segment, ``a//b.jpg``, skipped too: pyarrow
  cannot read them); rows name objects relative to the prefix. Credentials and endpoint come
  from the usual environment of the SDK (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for S3-compatible stores such as
  MinIO; an instance role), on every machine that reads: with ``--engine ray``, every Ray node.

Entries come in row order (:func:`garmentcv.infer.rows.sort_key`). A folder streams; a manifest and an object
listing are sorted in memory (about 200 B per file: 5 million files take about 1 GB).

Reading an object (:func:`read_object`) is one HEAD (pyarrow asks for the size when it opens an object) and one
GET of the whole object. A read that fails is tried again with backoff (:class:`ReadRetry`); one that still
fails gives an error row whose reason starts with ``cannot read`` (:data:`READ_ERROR`), never a decode error:
``gcv classify`` does not reuse such a row on ``--resume``, stops a run after a stretch of them (the storage is
failing) and does not exit 0 while one remains. Objects are fetched by threads of their own
(:mod:`garmentcv.infer.pipeline`), as many as wait on the network, apart from the decoding threads, and decoded
by the shared image contract from memory (:func:`garmentcv.image.load_crop`/:func:`garmentcv.image.load_input` with
``data``), so an object gives the same array as a local copy of the file, in the input the model file declares
(uint8 crops for format 2, normalised float32 for format 1; :func:`load_file`).
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from garmentcv.artifact import INPUT_FLOAT32, INPUT_FORMATS, INPUT_UINT8
from garmentcv.data.layouts import MANIFEST_ENCODING, SkippedFile, scan_images
from garmentcv.errors import (
    DatasetError,
    GarmentCVError,
    ImageDecodeError,
    PathNotFoundError,
)
from garmentcv.image import Preprocessing, is_image_file, load_crop, load_input
from garmentcv.infer.rows import sort_key
from garmentcv.installs import pip_install
from garmentcv.text import plural

logger = logging.getLogger(__name__)

#: Manifest file extensions: ``.csv`` has a ``path`` column, the others one path per line.
MANIFEST_SUFFIXES = (".csv", ".txt", ".lst")
PYARROW_HINT = pip_install("s3")


class MissingPyarrowError(GarmentCVError, ImportError):
    """pyarrow, needed for object storage (and parquet output), is not installed."""


def import_pyarrow_fs() -> Any:
    """``pyarrow.fs``, or a :class:`MissingPyarrowError` naming the extra to install."""
    try:
        from pyarrow import fs
    except ImportError as exc:
        raise MissingPyarrowError(
            f"object-storage sources need pyarrow, which is not installed: {PYARROW_HINT}"
        ) from exc
    return fs


def is_uri(spec: str | Path) -> bool:
    """Whether ``spec`` names object storage (``scheme://...``) rather than a local path."""
    return isinstance(spec, str) and "://" in spec


def _split_uri(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ``("s3", "bucket", "a/b")`` (no leading or trailing ``/`` on the key)."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key.strip("/")


@functools.lru_cache(maxsize=16)
def bucket_filesystem(scheme: str, bucket: str, reads: bool = False) -> Any:
    """The ``pyarrow.fs`` filesystem of one bucket, made once per process from the environment's settings.

    With ``reads``, the one that reads objects: for S3 the same settings with the SDK's own retries off (one
    attempt), so that every retry of a read is :func:`read_object`'s, bounded by its :class:`ReadRetry` (the
    listing keeps the SDK's retries); other stores as without ``reads``.

    Raises:
        MissingPyarrowError: pyarrow is not installed.
        DatasetError: the scheme is unknown or the filesystem cannot be made (bad settings).
    """
    fs = import_pyarrow_fs()
    if reads:
        base = bucket_filesystem(scheme, bucket)
        s3 = getattr(fs, "S3FileSystem", None)
        if s3 is None or not isinstance(base, s3):
            return base
        _, (settings,) = base.__reduce__()  # what from_uri resolved: region, endpoint, where credentials come from
        return s3(**{**settings, "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=1)})
    try:
        filesystem, _ = fs.FileSystem.from_uri(f"{scheme}://{bucket}")
    except (OSError, ValueError) as exc:  # pyarrow.lib.ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DatasetError(f"{scheme}://{bucket}: cannot open this object store ({exc}); {_CREDENTIALS_HINT}") from exc
    return filesystem


_CREDENTIALS_HINT = (
    "check the bucket name and the credentials and endpoint in the environment (for S3: AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL)"
)


#: The reason kind of an error row whose object could not be read (network, credentials, throttling): the
#: storage failed, not the image. Such a row is never reused by ``--resume``.
READ_ERROR = "cannot read"


def is_read_error(reason: str | None) -> bool:
    """Whether an error row's reason is a :data:`READ_ERROR` (``cannot read: ...``), not a decode failure."""
    return reason is not None and reason.split(":", 1)[0] == READ_ERROR


class ObjectReadError(ImageDecodeError):
    """An object could not be read (after :class:`ReadRetry`'s attempts); ``reason`` is ``cannot read: DETAIL``."""

    def __init__(self, path: object, detail: str) -> None:
        super().__init__(path, f"{READ_ERROR}: {detail}")
        self.args = (f"{self.path}: {READ_ERROR} ({detail})",)


class StorageReadError(GarmentCVError, RuntimeError):
    """Objects could not be read: the storage failed during a run (exit code 1; ``--resume`` reads them again).

    Attributes:
        summary: the run's summary when the results file was written nonetheless, else ``None``.
    """

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class ReadRetry:
    """How often a failed object read is tried again before its row gets a ``cannot read`` error.

    The wait before try ``k + 1`` (``k`` from 1) is ``min(max_backoff_s, backoff_s * 2 ** (k - 1))``, drawn
    uniformly from its upper half (jitter, so that threads failing together do not retry together): at most
    0.5 + 1 + 2 = 3.5 s in all for the defaults, on top of the reads themselves.

    Attributes:
        attempts: reads in all (1: no retry).
        backoff_s: the first wait, s.
        max_backoff_s: no wait is longer, s.
    """

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"{self}: attempts must be at least 1 and waits not negative")

    def wait_s(self, tries: int) -> float:
        """The wait after ``tries`` failed reads, s."""
        longest = min(self.max_backoff_s, self.backoff_s * 2 ** (tries - 1))
        return random.uniform(longest / 2, longest)


#: The retries of every read unless a caller gives others (``gcv classify``: :class:`ClassifyConfig`'s).
DEFAULT_READ_RETRY = ReadRetry()


def read_object(file: RemoteFile, retry: ReadRetry = DEFAULT_READ_RETRY) -> bytes:
    """The bytes of one object: :meth:`RemoteFile.read`, tried again after an I/O error as ``retry`` says.

    Raises:
        ImageDecodeError: ``file not found`` (no such object; not retried).
        ObjectReadError: it could not be read: an I/O error on every try, or a key the client refuses (not
            retried).
    """
    from pyarrow.lib import ArrowException

    for tries in range(1, retry.attempts + 1):
        try:
            return file.read()
        except FileNotFoundError as exc:
            raise ImageDecodeError(file.uri, "file not found") from exc
        except OSError as exc:  # network, credentials, throttling: may pass
            if tries == retry.attempts:
                raise ObjectReadError(file.uri, str(exc)) from exc
            wait = retry.wait_s(tries)
            logger.debug("%s: read failed (%s); trying again in %.2f s", file.uri, exc, wait)
            time.sleep(wait)
        except ArrowException as exc:  # the key itself is refused (pyarrow.lib.ArrowInvalid): no retry mends it
            raise ObjectReadError(file.uri, str(exc)) from exc
    raise AssertionError("unreachable: ReadRetry.attempts is at least 1")


@dataclass(frozen=True)
class RemoteFile:
    """One object in object storage, fetched when it is decoded (plain strings: cheap to send to Ray workers).

    Attributes:
        uri: ``scheme://bucket/key``.
    """

    uri: str

    def read(self) -> bytes:
        """The object's bytes, once (no retry: :func:`read_object` retries): pyarrow's object file asks for the
        size (HEAD), then one GET reads the whole object (a stream would read it in 256 KiB ranges).

        Raises:
            FileNotFoundError: no such object.
            OSError: it cannot be read (network, credentials, throttling).
            pyarrow.lib.ArrowInvalid: a key pyarrow refuses (an empty path segment).
        """
        scheme, bucket, _ = _split_uri(self.uri)
        key = self.uri.partition("://")[2]
        with bucket_filesystem(scheme, bucket, reads=True).open_input_file(key) as handle:
            return handle.read()

    def decode(self, data: bytes, pp: Preprocessing, out: np.ndarray | None = None,
               input_format: str | None = None) -> np.ndarray:
        """Preprocess the object's ``data`` (from :func:`read_object`) as :func:`load_file` does.

        Raises:
            ImageDecodeError: not a decodable image.
        """
        return _decode(self.uri, pp, data, out, input_format)

    def load(self, pp: Preprocessing, out: np.ndarray | None = None, input_format: str | None = None,
             retry: ReadRetry = DEFAULT_READ_RETRY) -> np.ndarray:
        """Fetch (:func:`read_object`) and preprocess, as :func:`load_file` for a local file (``out`` and
        ``input_format`` as there).

        Raises:
            ImageDecodeError: the object is missing (``file not found``) or not a decodable image;
                :class:`ObjectReadError` when it cannot be read.
        """
        return self.decode(read_object(self, retry), pp, out, input_format)


#: What a decoder reads: a local file or an object.
File = Path | RemoteFile


@dataclass(frozen=True)
class Entry:
    """One file to classify.

    Attributes:
        name: the row's ``path``: relative to the folder or prefix, or as written in the manifest.
        file: where the bytes are.
        size: bytes when listed, ``None`` when unknown (a missing manifest entry).
        mtime_ns: modification time when listed, ns since the epoch; ``None`` when unknown.
    """

    name: str
    file: File
    size: int | None
    mtime_ns: int | None


class Source(Protocol):
    """Where the images come from (see the module docstring)."""

    #: How the partial results' header records the source (resume refuses rows of another source).
    identity: str
    #: The local folder for a folder source (``--report`` shows its files), else ``None``.
    folder: Path | None

    def entries(self, recursive: bool, skipped: list[SkippedFile]) -> Iterator[Entry]:
        """The files in row order; files passed over are appended to ``skipped``."""
        ...


def _stat_entry(name: str, path: Path) -> Entry:
    try:
        st = path.stat()
    except OSError:  # gone since listed: never reused on resume; decoding it gives the error row
        return Entry(name, path, None, None)
    return Entry(name, path, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class FolderSource:
    """Every image file below a local folder."""

    root: Path

    @property
    def identity(self) -> str:
        return str(self.root.resolve())

    @property
    def folder(self) -> Path:
        return self.root

    def entries(self, recursive: bool, skipped: list[SkippedFile]) -> Iterator[Entry]:
        for path in scan_images(self.root, recursive=recursive, skipped=skipped):
            yield _stat_entry(path.relative_to(self.root).as_posix(), path)


@dataclass(frozen=True)
class ManifestSource:
    """The files listed in a ``.txt``/``.lst`` (one path a line) or ``.csv`` (``path`` column) manifest."""

    manifest: Path

    @property
    def identity(self) -> str:
        return f"manifest:{self.manifest.resolve()}"

    folder = None

    def names(self) -> list[str]:
        """The listed paths, in file order.

        Raises:
            DatasetError: unreadable, a CSV without a ``path`` column, or an empty path in a CSV row.
        """
        try:
            with self.manifest.open(newline="", **MANIFEST_ENCODING) as handle:
                if self.manifest.suffix.lower() != ".csv":
                    lines = (line.strip() for line in handle)
                    return [line for line in lines if line and not line.startswith("#")]
                reader = csv.DictReader(handle)
                if "path" not in (reader.fieldnames or []):
                    raise DatasetError(f"{self.manifest}: a CSV manifest needs a 'path' column; its columns are "
                                       f"{reader.fieldnames or []}")
                names = []
                for row in reader:
                    row["path"] = (row["path"] or "").strip()
                    if not row["path"]:
                        raise DatasetError(f"{self.manifest}, line {reader.line_num}: empty path; give one file a row")
                    names.append(row["path"])
                return names
        except OSError as exc:
            raise DatasetError(f"{self.manifest}: cannot read the manifest ({exc.strerror or exc})") from exc

    def entries(self, recursive: bool, skipped: list[SkippedFile]) -> Iterator[Entry]:
        base = self.manifest.parent
        for name in sorted(self.names(), key=sort_key):
            yield _stat_entry(name, base / name)


#: The skip reason of an object whose key has an empty path segment (``a//b.jpg``).
EMPTY_SEGMENT = "key with an empty path segment"


@dataclass(frozen=True)
class ObjectSource:
    """Every image object below a ``scheme://bucket/prefix``."""

    uri: str

    @property
    def identity(self) -> str:
        scheme, bucket, key = _split_uri(self.uri)
        return f"{scheme}://{bucket}/{key}"

    folder = None

    def entries(self, recursive: bool, skipped: list[SkippedFile]) -> Iterator[Entry]:
        """Raises: DatasetError: the prefix cannot be listed (no such bucket, credentials) or holds no object."""
        fs = import_pyarrow_fs()
        scheme, bucket, key = _split_uri(self.uri)
        base = f"{bucket}/{key}" if key else bucket
        try:
            infos = bucket_filesystem(scheme, bucket).get_file_info(fs.FileSelector(base, recursive=recursive))
        except FileNotFoundError as exc:
            raise DatasetError(f"{self.uri}: no objects under this prefix; check the bucket and prefix") from exc
        except OSError as exc:
            raise DatasetError(f"{self.uri}: cannot list the objects ({exc}); {_CREDENTIALS_HINT}") from exc
        found: list[Entry] = []
        hidden: set[str] = set()
        unreadable: list[str] = []
        for info in infos:
            rel = info.path[len(base) + 1:]
            parts = rel.split("/")
            first_hidden = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
            if first_hidden is not None:  # counted once, at its top-most hidden folder, as a folder scan does
                hidden.add("/".join(parts[: first_hidden + 1]))
                continue
            if info.type != fs.FileType.File:
                continue
            if "" in parts:  # pyarrow refuses to open such a key ("Empty path component")
                unreadable.append(rel)
                skipped.append(SkippedFile(Path(rel), EMPTY_SEGMENT))
                continue
            if not is_image_file(Path(parts[-1])):
                skipped.append(SkippedFile(Path(rel), "not an image"))
                continue
            found.append(Entry(rel, RemoteFile(f"{scheme}://{info.path}"), info.size, info.mtime_ns))
        for name in sorted(hidden):
            skipped.append(SkippedFile(Path(name), "hidden"))
        if unreadable:
            more = len(unreadable) - 5
            shown = ", ".join(sorted(unreadable)[:5]) + (f" and {more} more" if more > 0 else "")
            logger.warning("%s: skipped %s whose key has an empty path segment ('//'), which pyarrow cannot "
                           "read: %s; copy them to keys without '//' to classify them", self.uri,
                           plural(len(unreadable), "object"), shown)
        yield from sorted(found, key=lambda e: sort_key(e.name))


def open_source(spec: str | Path) -> FolderSource | ManifestSource | ObjectSource:
    """The :class:`Source` that ``spec`` names (see the module docstring).

    Raises:
        PathNotFoundError: a local path that does not exist (exit code 2).
        DatasetError: a file that is not a manifest (wrong extension).
        MissingPyarrowError: an object-storage URI without pyarrow installed.
    """
    if is_uri(spec):
        import_pyarrow_fs()
        return ObjectSource(str(spec))
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if not path.exists():
        raise PathNotFoundError(f"{path}: no such folder or file; give a folder of images, a manifest "
                                f"({', '.join(MANIFEST_SUFFIXES)}) or an object-storage prefix such as s3://bucket/photos/")
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise DatasetError(f"{path}: not a folder and not a manifest; a manifest is a .txt or .lst file of paths "
                           "(one a line) or a .csv file with a 'path' column")
    return ManifestSource(path)


def _decode(
    name: str | Path, pp: Preprocessing, data: bytes | None, out: np.ndarray | None, input_format: str | None
) -> np.ndarray:
    """:func:`load_file`'s decode of a file (``data`` ``None``) or of its bytes."""
    if input_format is None:
        input_format = INPUT_UINT8 if out is not None and out.dtype == np.uint8 else INPUT_FLOAT32
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"unknown input format {input_format!r}; use one of {INPUT_FORMATS}")
    if input_format == INPUT_UINT8:
        return load_crop(name, pp, out=out, data=data)
    chw = load_input(name, pp, data=data)
    if out is None:
        return chw
    out[...] = chw
    return out


def load_file(
    file: File, pp: Preprocessing, out: np.ndarray | None = None, input_format: str | None = None
) -> np.ndarray:
    """Decode and preprocess a local file or an object into the input a model file declares.

    Args:
        file: a local path or a :class:`RemoteFile`.
        pp: the model's preprocessing.
        out: an array to write into (one row of a reused batch buffer, :mod:`garmentcv.infer.pipeline`); it is
            returned. Its dtype chooses the input when ``input_format`` is ``None``: ``uint8`` the crop,
            otherwise the normalised float32.
        input_format: :data:`garmentcv.artifact.INPUT_UINT8` (format 2): the RGB ``uint8 (crop, crop, 3)`` crop of
            :func:`garmentcv.image.load_crop`; :data:`garmentcv.artifact.INPUT_FLOAT32` (format 1): the
            normalised ``float32 (3, crop, crop)`` of :func:`garmentcv.image.load_input`. ``None``: by ``out``'s
            dtype, float32 without ``out``.

    Returns:
        ``out``, or a new array.

    Raises:
        ImageDecodeError: as :func:`garmentcv.image.load_crop` (and ``file not found`` for a missing object,
            :class:`ObjectReadError` for one that cannot be read, after :class:`ReadRetry`'s default tries).
        ValueError: an unknown ``input_format``.
    """
    if isinstance(file, RemoteFile):
        return file.load(pp, out=out, input_format=input_format)
    return _decode(file, pp, None, out, input_format)


def encode_file(file: File) -> bytes:
    """``file`` as bytes for a Ray dataset column (any local file name, even one that is not UTF-8)."""
    return file.uri.encode("utf-8") if isinstance(file, RemoteFile) else os.fsencode(Path(file).absolute())


def decode_file(data: bytes) -> File:
    """The inverse of :func:`encode_file`: absolute local paths start with ``/``, objects with a scheme."""
    return Path(os.fsdecode(data)) if data.startswith(b"/") else RemoteFile(data.decode("utf-8"))
