"""The review app: a web page, served by ``gcv serve``, to review classifications and export corrections.

:func:`create_review_router` returns a FastAPI router that the service mounts (under any prefix; the page uses
relative URLs). In the page a reviewer picks a model (the ``.onnx`` files of ``models_dir``), drops photos or
picks a folder under ``root`` (the server lists it; nothing outside ``root`` is ever listed, read or served),
or opens a rows file GarmentCV wrote (gcv classify's csv or jsonl, or a fix list with extra columns); then
accepts, relabels or drops each photo, mostly from the keyboard, and downloads the decisions as a corrections file
that ``gcv train --corrections`` reads (:mod:`garmentcv.data.corrections`). How to use it: docs/review.md.

Routes, relative to the mount point:

* ``GET /``: the page (``static/review.html``, the request token written into it); ``GET /static/NAME``: its
  script and style sheet. Nothing is loaded from elsewhere (the page's Content-Security-Policy says so).
* ``GET /api/models``, ``GET /api/models/{name}``: the model files, and one model's classes.
* ``GET /api/folders?path=``: a folder under ``root``: its sub-folders, image count and rows files.
* ``GET /api/thumbnail?path=``: a JPEG thumbnail of an image under ``root``, re-encoded (never the file's bytes).
* ``GET /api/rows?path=&images=``: a rows file under ``root`` as review items.
* ``POST /api/classify/upload`` (multipart ``model``, ``files``, optional ``names``: a JSON list of the files'
  names as they are), ``POST /api/classify/folder`` (JSON ``model``,
  ``path``, ``recursive``): photos classified by the model; ``POST /api/rows/upload`` (multipart ``file``,
  ``images``): an uploaded rows file; ``POST /api/export`` (JSON ``decisions``): the corrections file.

Safety: every path from a request is resolved and must stay under ``root`` (``..``, absolute paths, hidden names
and symlinks that lead out are refused with 403); file names and labels are shown with ``textContent`` only. Every
POST must carry the header :data:`TOKEN_HEADER` with the token of the page (a cross-site page can neither read the
token nor send a custom header without a CORS preflight, which this router never grants), and a request whose
``Origin`` is not the server's own is refused; both with 403.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel

from garmentcv.data.corrections import ACTIONS, RELABEL, Correction, CorrectionsError, write_corrections
from garmentcv.data.layouts import scan_images
from garmentcv.errors import ImageDecodeError, PathNotFoundError
from garmentcv.image import decode_image, is_image_file
from garmentcv.serve.handler import RowClassifier as Classifier

logger = logging.getLogger(__name__)

#: The header every POST must carry, holding the token written into the page.
TOKEN_HEADER = "X-GarmentCV-Review"
#: The page's policy: its own script, style sheet and images only; uploaded photos are shown from ``blob:`` URLs.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                           "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
#: Files the page loads from ``static/`` (nothing else there is served).
STATIC_FILES: dict[str, str] = {"review.js": "text/javascript", "review.css": "text/css",
                                "favicon.svg": "image/svg+xml"}
#: Largest photo accepted by an upload or read from a folder, bytes.
MAX_IMAGE_BYTES = 32 * 1024 * 1024
#: Most photos classified by one request (an upload or a folder).
MAX_IMAGES = 2000
#: Photos handed to the model at once when classifying a folder (bounds the bytes held in memory).
CHUNK = 32
#: Most rows read from a rows file, and entries listed in a folder.
MAX_ROWS = 50_000
MAX_ENTRIES = 5000
#: Largest rows file uploaded, bytes.
MAX_ROWS_BYTES = 64 * 1024 * 1024
#: Side of the square thumbnails fit in, px; JPEG quality.
THUMBNAIL_PX = 256
THUMBNAIL_QUALITY = 85
#: Models kept open at once (the least recently used is closed first).
MAX_OPEN_MODELS = 4
#: The file suffixes of rows files (gcv classify's csv and jsonl).
ROWS_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class ReviewItem:
    """One photo to review, as the page gets it.

    Attributes:
        path: the name the corrections file uses: relative to the classified folder (as gcv classify writes
            it), the uploaded file's name, or the rows file's ``path``.
        label: the label proposed (the model's, or a fix list's suggested label); ``None`` for an error row.
        given: the label the dataset gives it, when the rows say (a fix list's ``given_label``).
        confidence: the proposed label's probability, 0..1.
        needs_review: the rows' flag (``None``: the rows have none).
        unknown: the rows' unknown flag (``None``: the rows have none).
        error: why the photo could not be classified.
        image: the photo's path under the root, for its thumbnail; ``None`` when there is none.
        extra: the other columns of a rows file, as text.
    """

    path: str
    label: str | None = None
    given: str | None = None
    confidence: float | None = None
    needs_review: bool | None = None
    unknown: bool | None = None
    error: str | None = None
    image: str | None = None
    extra: Mapping[str, str] | None = None


class FolderRequest(BaseModel):
    """``POST /api/classify/folder``'s body."""

    model: str
    path: str = ""
    recursive: bool = False


class Decision(BaseModel):
    """One reviewer's decision: ``relabel`` (to ``label``) or ``drop``."""

    path: str
    action: str
    label: str = ""


class ExportRequest(BaseModel):
    """``POST /api/export``'s body."""

    decisions: list[Decision]


def _refuse(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def resolve_under(root: Path, relative: str) -> Path:
    """``root / relative``, resolved, refusing anything that would lead outside ``root``.

    ``relative`` is a ``/``-separated path; ``""`` is the root itself.

    Raises:
        HTTPException: 403 for an absolute path, a ``..`` or hidden (``.``-prefixed) part, or a path whose resolved
            target (symlinks followed) is outside ``root``; 400 for a NUL byte.
    """
    if "\x00" in relative:
        raise _refuse(400, "a path with a NUL byte")
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or any(part == ".." or part.startswith(".") for part in rel.parts):
        raise _refuse(403, f"{relative!r}: give a path inside the review root, without '..' or hidden names")
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        raise _refuse(403, f"{relative!r} leads outside the review root")
    return target


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else ""


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def _number(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


#: Row fields a review item takes over; every other column goes to :attr:`ReviewItem.extra`.
_KNOWN = {"path", "label", "suggested_label", "given_label", "confidence", "needs_review", "unknown", "error",
          "probs", "top_labels", "top_probs"}


def _cell(value: Any) -> str:
    """A row value as the csv rows file writes it: a list (a jsonl prediction set) joined with ``|``."""
    if isinstance(value, (list, tuple)):
        return "|".join(str(v) for v in value)
    return str(value)


def review_item(row: Mapping[str, Any], image: str | None = None) -> ReviewItem:
    """A review item from one row of gcv classify (csv cells or a jsonl record) or of a fix list.

    The proposed label is ``label``, else ``suggested_label``; ``given_label`` is the dataset's. ``prob_*`` and
    ``top*_`` columns are left out (the confidence stands for them); other columns are kept as text in ``extra``.
    """
    cells = {k: _cell(v) for k, v in row.items() if k not in _KNOWN and v is not None}
    extra = {k: v for k, v in cells.items() if v and not k.startswith(("prob_", "top"))}
    return ReviewItem(
        path=str(row.get("path") or ""), label=_text(row.get("label")) or _text(row.get("suggested_label")),
        given=_text(row.get("given_label")), confidence=_number(row.get("confidence")),
        needs_review=_flag(row.get("needs_review")), unknown=_flag(row.get("unknown")), error=_text(row.get("error")),
        image=image, extra=extra or None,
    )


def read_rows(text: str, name: str) -> tuple[list[dict[str, Any]], list[str], bool]:
    """The rows of a rows file's ``text`` (jsonl when it starts with ``{``, else csv with a header), at most
    :data:`MAX_ROWS`; the classes it names (``prob_<class>`` columns or the keys of jsonl ``probs``); whether rows
    were left out.

    Raises:
        HTTPException: 422 when a line is not JSON, or there is no ``path`` column (``name`` and line given).
    """
    rows: list[dict[str, Any]] = []
    classes: list[str] = []
    truncated = False
    if text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if len(rows) == MAX_ROWS:
                truncated = True
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _refuse(422, f"{name}, line {number}: not JSON ({exc.msg}); give a rows file GarmentCV "
                                   "wrote") from exc
            if not isinstance(record, dict) or "path" not in record:
                raise _refuse(422, f"{name}, line {number}: a record without 'path'; give a rows file GarmentCV wrote")
            if not classes and isinstance(record.get("probs"), dict):
                classes = list(record["probs"])
            rows.append(record)
        return rows, classes, truncated
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if "path" not in (reader.fieldnames or []):
        raise _refuse(422, f"{name}, line 1: no 'path' column (got {reader.fieldnames}); give a rows file GarmentCV "
                           "wrote (csv or jsonl)")
    classes = [c[5:] for c in reader.fieldnames or [] if c.startswith("prob_")]
    for row in reader:
        if len(rows) == MAX_ROWS:
            truncated = True
            break
        rows.append({k: v for k, v in row.items() if k is not None})
    return rows, classes, truncated


class _Models:
    """The model files of a folder, each opened by ``open_model`` on first use and kept (up to
    :data:`MAX_OPEN_MODELS`)."""

    def __init__(self, open_model: Callable[[Path], Classifier], folder: Path | None,
                 extra: Mapping[str, Path]) -> None:
        self.open_model = open_model
        self.folder = folder.resolve() if folder is not None else None
        self.extra = dict(extra)
        self.lock = threading.Lock()
        self.open: OrderedDict[str, Classifier] = OrderedDict()

    def files(self) -> dict[str, Path]:
        """Name -> file: the given models, then the ``.onnx`` files directly in the folder, sorted (as the service
        lists them)."""
        found = dict(self.extra)
        if self.folder is not None and self.folder.is_dir():
            for path in sorted(self.folder.glob("*.onnx")):
                name = _relative(self.folder, path)
                if path.is_file() and path.resolve().is_relative_to(self.folder) and not name.startswith("."):
                    found.setdefault(name, path)
        return found

    def get(self, name: str) -> Classifier:
        """The open model ``name`` (one of :meth:`files`).

        Raises:
            HTTPException: 404 for a name that is not listed.
        """
        path = self.files().get(name)
        if path is None:
            raise _refuse(404, f"no model {name!r}; choose one of the list")
        with self.lock:
            if name not in self.open:
                self.open[name] = self.open_model(path)
                while len(self.open) > MAX_OPEN_MODELS:
                    self.open.popitem(last=False)
            self.open.move_to_end(name)
            return self.open[name]


def _thumbnail(path: Path) -> bytes:
    """A JPEG of ``path`` fitting :data:`THUMBNAIL_PX`, decoded the way GarmentCV decodes images.

    Raises:
        ImageDecodeError, OSError: the file cannot be decoded.
    """
    rgb = Image.fromarray(decode_image(path))
    rgb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise _refuse(413, f"{upload.filename}: larger than {limit // (1024 * 1024)} MB")
    return data


def _upload_names(names: str | None, count: int) -> list[str] | None:
    """The file names the page sent beside an upload (a JSON list, one per file): browsers percent-encode some
    characters of the multipart file name (``"`` as ``%22``), so the page sends them as they are.

    Raises:
        HTTPException: 422 when ``names`` is not a list of ``count`` non-empty strings.
    """
    if names is None:
        return None
    try:
        parsed = json.loads(names)
    except json.JSONDecodeError:
        parsed = None
    if not (isinstance(parsed, list) and len(parsed) == count and all(isinstance(n, str) and n for n in parsed)):
        raise _refuse(422, f"'names' must be a JSON list of {count} file names, one per file")
    return parsed


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _row_image(root: Path | None, folder: Path | None, raw: str) -> str | None:
    """The root-relative path of a rows file's photo ``raw`` (relative to ``folder``, or absolute) when it is a file
    inside ``root``; else ``None`` (no thumbnail)."""
    if root is None or folder is None or not raw:
        return None
    try:
        found = Path(raw).resolve() if PurePosixPath(raw).is_absolute() else resolve_under(folder, raw)
    except HTTPException:
        return None
    return _relative(root, found) if found.is_relative_to(root) and found.is_file() else None


def _folder_images(folder: Path, root: Path, recursive: bool) -> Iterator[Path]:
    """Image files of ``folder`` (sorted as gcv classify lists them), skipping any that resolve outside ``root``."""
    for path in scan_images(folder, recursive=recursive):
        if path.resolve().is_relative_to(root):
            yield path


class ReviewApp:
    """The review app's work, apart from HTTP: each method takes plain values and returns what its route sends.

    Errors are :class:`fastapi.HTTPException` with the status and a message for the page.

    Args:
        open_model: opens a model file (called once per model, on first use, from a worker thread).
        models_dir: the folder whose ``.onnx`` files the page offers; ``None``: none.
        root: the folder whose photos and rows files the page may open; ``None``: photos can only be uploaded.
        models: more models to offer, name -> file (the service's own model), listed first.

    Raises:
        PathNotFoundError: ``models_dir`` or ``root`` is given but is not a folder.
    """

    def __init__(self, open_model: Callable[[Path], Classifier], models_dir: Path | None, root: Path | None,
                 models: Mapping[str, Path] | None = None) -> None:
        for option, folder in (("models folder", models_dir), ("review root", root)):
            if folder is not None and not Path(folder).is_dir():
                raise PathNotFoundError(f"{folder}: the {option} is not a folder; give an existing folder")
        self.root = Path(root).resolve() if root is not None else None
        self.models = _Models(open_model, models_dir, models or {})

    def need_root(self) -> Path:
        """The root. Raises: HTTPException 404 without one."""
        if self.root is None:
            raise _refuse(404, "the server was started without a review root; upload photos instead")
        return self.root

    def under_root(self, relative: str, kind: str) -> Path:
        """:func:`resolve_under` the root, then a ``folder`` or ``file`` that exists (404 otherwise)."""
        target = resolve_under(self.need_root(), relative)
        if kind == "folder" and not target.is_dir():
            raise _refuse(404, f"{relative!r}: no such folder under the review root")
        if kind == "file" and not target.is_file():
            raise _refuse(404, f"{relative!r}: no such file under the review root")
        return target

    def model_info(self, name: str) -> dict[str, Any]:
        """Model ``name``'s arch, precision and classes (opening it)."""
        model = self.models.get(name)
        return {"name": name, "arch": model.info.arch, "precision": model.info.precision,
                "classes": list(model.class_names)}

    def list_folder(self, path: str) -> dict[str, Any]:
        """Folder ``path`` of the root: its sub-folders, number of images and rows files (sorted names; hidden
        entries, names that are not UTF-8 and links leading out of the root are left out; at most
        :data:`MAX_ENTRIES` entries looked at)."""
        base = self.need_root()
        folder = self.under_root(path, "folder")
        folders, rows_files, images = [], [], 0
        for entry in sorted(folder.iterdir(), key=lambda p: p.name)[:MAX_ENTRIES]:
            if entry.name.startswith(".") or not _is_utf8(entry.name) or not entry.resolve().is_relative_to(base):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif entry.is_file() and is_image_file(entry):
                images += 1
            elif entry.is_file() and entry.suffix.lower() in ROWS_SUFFIXES:
                rows_files.append(entry.name)
        parent = None if folder == base else _relative(base, folder.parent)
        return {"path": _relative(base, folder), "parent": parent, "folders": folders, "images": images,
                "rows_files": rows_files}

    def thumbnail(self, path: str) -> bytes:
        """A JPEG thumbnail of image ``path`` of the root (:func:`_thumbnail`); 422 when it cannot be decoded."""
        image = self.under_root(path, "file")
        if not is_image_file(image):
            raise _refuse(404, f"{path!r} is not an image file")
        try:
            return _thumbnail(image)
        except (ImageDecodeError, OSError) as exc:
            raise _refuse(422, f"{path}: cannot decode ({getattr(exc, 'reason', None) or exc})") from exc

    def rows(self, text: str, name: str, images: str | None) -> dict[str, Any]:
        """The review items of a rows file's ``text``; photos are looked up in folder ``images`` of the root."""
        rows, classes, truncated = read_rows(text, name)
        folder = self.under_root(images, "folder") if images is not None and self.root is not None else None
        items = [review_item(row, _row_image(self.root, folder, str(row.get("path") or ""))) for row in rows]
        labels = sorted({i.label for i in items if i.label} | {i.given for i in items if i.given})
        return {"source": name, "classes": classes or labels, "items": items, "truncated": truncated,
                "folder": images}

    def open_rows(self, path: str, images: str | None) -> dict[str, Any]:
        """Rows file ``path`` of the root; its photos in ``images`` (default: the rows file's folder)."""
        file = self.under_root(path, "file")
        if file.suffix.lower() not in ROWS_SUFFIXES:
            raise _refuse(422, f"{path}: not a rows file ({', '.join(ROWS_SUFFIXES)})")
        text = file.read_text(encoding="utf-8-sig", errors="replace")
        return self.rows(text, path, images if images is not None else _relative(self.need_root(), file.parent))

    def classify(self, model_name: str, items: Sequence[tuple[str, bytes]],
                 images: Sequence[str | None]) -> list[ReviewItem]:
        """Review items of ``(name, bytes)`` photos classified by model ``model_name``, each with its thumbnail path
        (``images``, or ``None``)."""
        rows = self.models.get(model_name).classify_bytes(list(items))
        if len(rows) != len(items):
            raise _refuse(500, f"the model returned {len(rows)} rows for {len(items)} photos")
        return [review_item({**row, "path": name}, image)
                for (name, _), row, image in zip(items, rows, images, strict=True)]

    def classify_uploads(self, model_name: str, files: Sequence[UploadFile], names: str | None) -> dict[str, Any]:
        """Uploaded photos classified, :data:`CHUNK` at a time (bounded memory); 413 over the limits."""
        if len(files) > MAX_IMAGES:
            raise _refuse(413, f"{len(files)} photos in one request; send at most {MAX_IMAGES}")
        given = _upload_names(names, len(files))
        result: list[ReviewItem] = []
        for start in range(0, len(files), CHUNK):
            items = [(given[i] if given else files[i].filename or f"photo-{i + 1}",
                      _read_limited(files[i], MAX_IMAGE_BYTES)) for i in range(start, min(start + CHUNK, len(files)))]
            result += self.classify(model_name, items, [None] * len(items))
        return {"source": "upload", "classes": list(self.models.get(model_name).class_names), "items": result,
                "truncated": False, "folder": None}

    def classify_folder(self, model_name: str, path: str, recursive: bool) -> dict[str, Any]:
        """The photos of folder ``path`` of the root, in gcv classify's order and with its relative paths, classified
        :data:`CHUNK` at a time; a name that is not UTF-8 gets an error row in its place; 413 over the limits."""
        base = self.need_root()
        folder = self.under_root(path, "folder")
        paths = []
        for image in _folder_images(folder, base, recursive):
            if len(paths) == MAX_IMAGES:
                raise _refuse(413, f"{path or 'the root'} holds more than {MAX_IMAGES} photos; classify it with "
                                   "gcv classify and open its rows file here")
            paths.append(image)
        result: list[ReviewItem] = []
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start:start + CHUNK]
            items, images, odd = [], [], {}
            for i, image in enumerate(chunk):
                name = image.relative_to(folder).as_posix()
                if not _is_utf8(name):  # cannot travel in JSON as it is, nor be named in a corrections file
                    odd[i] = ReviewItem(os.fsencode(name).decode("utf-8", "replace"),
                                        error="the file name is not valid UTF-8; rename the file to review it")
                    continue
                if image.stat().st_size > MAX_IMAGE_BYTES:
                    raise _refuse(413, f"{_relative(base, image)}: larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
                items.append((name, image.read_bytes()))
                images.append(_relative(base, image))
            done = iter(self.classify(model_name, items, images) if items else [])
            result += [odd[i] if i in odd else next(done) for i in range(len(chunk))]
        return {"source": path, "classes": list(self.models.get(model_name).class_names), "items": result,
                "truncated": False, "folder": path}


def export_corrections(decisions: Sequence[Decision]) -> str:
    """The corrections file of ``decisions`` (:func:`garmentcv.data.corrections.write_corrections`).

    Raises:
        HTTPException: 422 for an unknown action, two decisions for one path, or a label that is not a class name.
    """
    seen: set[str] = set()
    for d in decisions:
        if d.action not in ACTIONS:
            raise _refuse(422, f"{d.path}: action {d.action!r}; use one of {', '.join(ACTIONS)}")
        if d.path in seen:
            raise _refuse(422, f"{d.path}: two decisions for one path; keep one")
        seen.add(d.path)
    try:
        return write_corrections(Correction(d.path, d.label if d.action == RELABEL else "", d.action)
                                 for d in decisions)
    except CorrectionsError as exc:
        raise _refuse(422, str(exc)) from exc


def _same_site_guard(secret: str) -> Callable[[Request], None]:
    """The check every POST passes: the page's token in :data:`TOKEN_HEADER`, no ``Origin`` of another host and no
    ``Sec-Fetch-Site: cross-site``; 403 otherwise."""

    def same_site(request: Request) -> None:
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise _refuse(403, f"missing or wrong {TOKEN_HEADER} header: send requests from the review page")
        origin = request.headers.get("origin")
        # the host only: behind a TLS proxy the page's scheme is https while this server sees http
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
            raise _refuse(403, f"cross-site request from {origin} refused")
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise _refuse(403, "cross-site request refused")

    return same_site


def create_review_router(*, open_model: Callable[[Path], Classifier], models_dir: Path | None, root: Path | None,
                         models: Mapping[str, Path] | None = None, token: str | None = None) -> APIRouter:
    """The review app's routes (see the module docstring), to mount on the service's app.

    Args:
        open_model: opens a model file (called once per model, on first use, from a worker thread).
        models_dir: the folder whose ``.onnx`` files the page offers; ``None``: none.
        root: the folder whose photos and rows files the page may open; ``None``: photos can only be uploaded.
        models: more models to offer, name -> file (the service's own model), listed first.
        token: the token POST requests must carry (:data:`TOKEN_HEADER`); ``None``: a random one.

    Returns:
        A router with no prefix; mount it with ``app.include_router(router, prefix="/review")``.

    Raises:
        PathNotFoundError: ``models_dir`` or ``root`` is given but is not a folder.
    """
    app = ReviewApp(open_model, models_dir, root, models)
    secret = token or secrets.token_urlsafe(32)
    router = APIRouter()
    guarded = [Depends(_same_site_guard(secret))]

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("garmentcv.serve").joinpath("static/review.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("__GCV_REVIEW_TOKEN__", secret), headers=_page_headers())

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise _refuse(404, f"no static file {name!r}")
        body = resources.files("garmentcv.serve").joinpath(f"static/{name}").read_bytes()
        return Response(body, media_type=STATIC_FILES[name], headers=_page_headers())

    @router.get("/api/models")
    def list_models() -> dict[str, Any]:
        return {"models": list(app.models.files()), "root": app.root is not None}

    @router.get("/api/models/{name}")
    def model_info(name: str) -> dict[str, Any]:
        return app.model_info(name)

    @router.get("/api/folders")
    def list_folder(path: str = "") -> dict[str, Any]:
        return app.list_folder(path)

    @router.get("/api/thumbnail")
    def thumbnail(path: str) -> Response:
        return Response(app.thumbnail(path), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})

    @router.get("/api/rows")
    def open_rows(path: str, images: str | None = None) -> dict[str, Any]:
        return app.open_rows(path, images)

    @router.post("/api/rows/upload", dependencies=guarded)
    def upload_rows(file: UploadFile = File(...), images: str | None = Form(None)) -> dict[str, Any]:  # noqa: B008
        text = _read_limited(file, MAX_ROWS_BYTES).decode("utf-8-sig", errors="replace")
        return app.rows(text, file.filename or "rows", images or None)

    @router.post("/api/classify/upload", dependencies=guarded)
    def classify_upload(model: str = Form(...), files: list[UploadFile] = File(...),  # noqa: B008
                        names: str | None = Form(None)) -> dict[str, Any]:
        return app.classify_uploads(model, files, names)

    @router.post("/api/classify/folder", dependencies=guarded)
    def classify_folder(body: FolderRequest) -> dict[str, Any]:
        return app.classify_folder(body.model, body.path, body.recursive)

    @router.post("/api/export", dependencies=guarded)
    def export(body: ExportRequest) -> Response:
        return Response(export_corrections(body.decisions).encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="corrections.csv"'})

    return router


def _page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
