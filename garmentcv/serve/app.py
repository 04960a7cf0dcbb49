"""The HTTP service: a FastAPI app around :class:`~garmentcv.serve.handler.ModelHandler` (needs ``garmentcv[serve]``).

Routes (docs/serve.md has the statuses and examples):

* ``POST /v1/classify``: one image as the raw body (``Content-Type: image/...`` or ``application/octet-stream``,
  ``?name=`` names its row) or several as ``multipart/form-data`` file parts (each row is named by its part's file
  name); ``?model=NAME`` picks a file of ``--models DIR``. Answers ``{"rows": [...]}``, one row per image in
  order, with the fields and values ``gcv classify --format jsonl`` writes.
* ``GET /v1/models``: the model files that can be picked, and what serves the default one.
* ``GET /healthz`` (the process runs), ``GET /readyz`` (the model is open and warmed), ``GET /metrics``
  (Prometheus, :mod:`garmentcv.serve.metrics`), ``GET /openapi.json`` and ``GET /docs`` (a page of the routes that
  loads nothing from elsewhere).

Limits are checked before work: the declared ``Content-Length`` first (413 before any byte is read), then the bytes
as they arrive; then the number of images, the queue (503 with Retry-After), the time (503). A bad image in a
multipart request is an error row (as in ``gcv classify``) and the others are classified; a bad raw body is 422 (not
an image, truncated, corrupt, too many pixels) or 415 (a format GarmentCV does not decode), with its error row.

Images are decoded on a pool of threads, then queued for the model (:class:`~garmentcv.serve.batching.MicroBatcher`),
which runs those of concurrent requests together. On shutdown the server stops accepting connections, requests in
flight finish (uvicorn's graceful shutdown), then the queue is drained and the model closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from garmentcv import __version__
from garmentcv import cpus as _cpus
from garmentcv.errors import ImageDecodeError
from garmentcv.serve.batching import BatcherClosedError, MicroBatcher, QueueFullError
from garmentcv.serve.handler import ModelHandler, open_handler, reason_kind
from garmentcv.serve.metrics import CONTENT_TYPE, ServeMetrics
from garmentcv.serve.settings import ServeSettings, check_serve_settings

__all__ = ["Refused", "create_app"]

logger = logging.getLogger(__name__)

#: Seconds a client is told to wait (``Retry-After``) when the queue is full or the model is not ready.
RETRY_AFTER_S = 1
#: Content types of a raw body holding one image (the image itself is recognised by its content).
RAW_TYPES = ("image/", "application/octet-stream")
#: Routes measured by name; any other path counts as ``other`` (metrics keep a bounded set of labels).
_ROUTES = ("/v1/classify", "/v1/models", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


class Refused(Exception):
    """A request answered with an error status: ``{"detail": message, "kind": kind}`` (and ``rows``, when the
    request's one image got an error row).

    Attributes:
        status: the HTTP status.
        kind: a short name for metrics and clients (``too_large``, ``queue_full``, ...).
        message: what was wrong and what to do.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
        rows: the error rows to return with it, or ``None``.
    """

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None,
                 rows: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers, self.rows = status, kind, message, headers or {}, rows


def _busy(kind: str, message: str) -> Refused:
    return Refused(503, kind, message, {"Retry-After": str(RETRY_AFTER_S)})


@dataclass
class _Served:
    """One open model and its batcher."""

    handler: ModelHandler
    batcher: MicroBatcher


class _Service:
    """The app's state: the default model (opened in the background at startup), models of ``models_dir`` opened on
    first use, the decoding threads and the metrics."""

    def __init__(self, settings: ServeSettings, handler: ModelHandler | None) -> None:
        self.settings = settings
        self.metrics = ServeMetrics(depth=self.depth)
        self.served: dict[str, _Served] = {}
        self.default = Path(settings.handler.model).name
        self.given = handler
        self.error: str | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.loading: asyncio.Task[None] | None = None
        self.locks: dict[str, asyncio.Lock] = {}

    def depth(self) -> int:
        return sum(s.batcher.depth for s in self.served.values())

    @property
    def ready(self) -> bool:
        return self.default in self.served

    async def start(self) -> None:
        threads = self.settings.decode_threads or _cpus.available_cpus()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gcv-serve-decode")
        if self.given is not None:
            self._attach(self.default, self.given)
        else:
            self.loading = asyncio.get_running_loop().create_task(self._load_default())

    async def _load_default(self) -> None:
        try:
            handler = await asyncio.to_thread(open_handler, self.settings.handler)
        except Exception as exc:  # noqa: BLE001 - reported by /healthz and /readyz, the process stays up to say so
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("the model %s could not be opened: %s", self.settings.handler.model, self.error)
            return
        self._attach(self.default, handler)

    def _attach(self, name: str, handler: ModelHandler) -> _Served:
        s = self.settings
        batcher = MicroBatcher(handler.predict, s.max_batch_size, s.max_wait_ms / 1000, s.max_queue,
                               on_batch=self.metrics.observe_batch)
        batcher.start()
        served = self.served[name] = _Served(handler, batcher)
        return served

    async def model(self, name: str | None) -> _Served:
        """The served model ``name`` (``None``: the default), opening a file of ``models_dir`` on first use.

        Raises:
            Refused: 503 while the default model opens or after it failed; 404 for a name that is not a model
                file directly in ``models_dir``; 422 for a file that cannot be opened.
        """
        if name is None or name == self.default:
            if self.error is not None:
                raise Refused(503, "not_ready", f"the model could not be opened: {self.error}")
            if not self.ready:
                raise _busy("not_ready", "the model is still opening; try again shortly")
            return self.served[self.default]
        if name in self.served:
            return self.served[name]
        path = self.model_path(name)
        async with self.locks.setdefault(name, asyncio.Lock()):
            if name not in self.served:
                settings = replace(self.settings.handler, model=path)
                try:
                    handler = await asyncio.to_thread(open_handler, settings)
                except Exception as exc:  # noqa: BLE001 - one bad file in the folder must not take the service down
                    raise Refused(422, "bad_model", f"the model {name} cannot be opened: {exc}") from exc
                self._attach(name, handler)
        return self.served[name]

    def model_path(self, name: str) -> Path:
        """The file ``name`` of ``models_dir`` (a plain ``.onnx`` file name, nothing else).

        Raises:
            Refused: 404 without ``models_dir``, or when ``name`` is not one of :meth:`model_names`.
        """
        if name not in self.model_names():
            raise Refused(404, "unknown_model", f"no model named {name!r}; GET /v1/models lists them")
        return Path(self.settings.models_dir or ".") / name

    def model_names(self) -> list[str]:
        """The default model's file name, then the ``.onnx`` files directly in ``models_dir`` (sorted)."""
        names = [self.default]
        folder = self.settings.models_dir
        if folder is not None:
            names += sorted(p.name for p in Path(folder).iterdir()
                            if p.suffix == ".onnx" and p.is_file() and p.name != self.default)
        return names

    async def stop(self) -> None:
        if self.loading is not None and not self.loading.done():
            self.loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loading
        for served in self.served.values():
            await served.batcher.close(self.settings.shutdown_timeout_s)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class _Measured:
    """ASGI middleware counting requests by route and status and observing their latency (a plain ASGI wrapper
    rather than ``@app.middleware``, whose extra task and streams cost a lone request measurable time)."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in _ROUTES else "other"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def _authorizer(settings: ServeSettings) -> Callable[[Request], None]:
    """A check of ``Authorization: Bearer KEY`` against the API key, in constant time (:func:`hmac.compare_digest`)."""
    key = None if settings.api_key is None else settings.api_key.encode("utf-8")

    def authorize(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8"), key):
            raise Refused(401, "unauthorized", "send the API key as 'Authorization: Bearer KEY'",
                          {"WWW-Authenticate": "Bearer"})

    return authorize


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 when it declares or turns out to have more than ``limit`` bytes; the
    declared length is checked before any byte is read, the bytes as they arrive (a body sent without a length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise Refused(400, "bad_request", f"Content-Length {declared!r} is not a number") from None
        if length > limit:
            raise Refused(413, "too_large", f"the {what} has {length} bytes, the most is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "too_large", f"the {what} has more than {limit} bytes, the most is {limit}")
    return bytes(body)


async def _multipart_items(request: Request, body: bytes, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """The file parts of a multipart body as ``(file name, bytes)``, in order (parts without a file name are
    ignored).

    Raises:
        Refused: 413 for more than ``max_images`` files or a file over ``max_image_bytes``; 400 for a body that is
            not valid multipart or holds no file.
    """

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=settings.max_images, max_fields=64)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if str(exc).startswith("Too many files"):
            raise Refused(413, "too_many_images", f"more than {settings.max_images} images in one request; send "
                          "them in several requests") from exc
        raise Refused(400, "bad_request", f"not a valid multipart/form-data body: {exc}") from exc
    items: list[tuple[str, bytes]] = []
    try:
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue
            data = await value.read()
            name = value.filename or field
            if len(data) > settings.max_image_bytes:
                raise Refused(413, "too_large", f"the image {name!r} has {len(data)} bytes, the most is "
                              f"{settings.max_image_bytes}")
            items.append((name, data))
    finally:
        await form.close()
    if not items:
        raise Refused(400, "empty_body", "the multipart body holds no file part; send each image as a file part "
                      "(curl -F image=@photo.jpg)")
    return items


def _docs_page(app: FastAPI) -> str:
    """A page listing the routes of the OpenAPI schema, self-contained (no script, style or font from elsewhere)."""
    schema = app.openapi()
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op.get('summary', ''))}</td>"
                f"<td>{html.escape(op.get('description', '')).replace(chr(10), '<br>')}</td></tr>"
            )
    title = html.escape(schema.get("info", {}).get("title", "GarmentCV"))
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "td{vertical-align:top;padding:.3em .8em;border-bottom:1px solid #ccc}</style></head>"
        f"<body><h1>{title}</h1><p>The machine-readable schema: <a href=\"openapi.json\">openapi.json</a>.</p>"
        "<table><thead><tr><th>Method</th><th>Path</th><th>Summary</th><th>Description</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></body></html>"
    )


_CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "additionalProperties": {
                "type": "string", "format": "binary"}}},
        },
    },
    "responses": {
        "400": {"description": "empty body, or a multipart body without a file part"},
        "401": {"description": "the API key is missing or wrong"},
        "413": {"description": "too many bytes or too many images"},
        "415": {"description": "a content type other than image/*, application/octet-stream or multipart/form-data;"
                               " or a raw image of a format GarmentCV does not decode"},
        "422": {"description": "the raw body is not a decodable image (its error row is in rows)"},
        "503": {"description": "the queue is full, the model is not ready, or the request timed out (Retry-After)"},
    },
}


def _review_router(settings: ServeSettings, service: _Service) -> APIRouter:
    """The review app (:mod:`garmentcv.serve.review`) on this service's models: the served model is offered first
    and, once open, reused rather than opened again; ``--models`` files and ``settings.review_root`` as given."""
    from garmentcv.serve.review import create_review_router

    default = Path(settings.handler.model)

    def open_model(path: Path) -> ModelHandler:
        served = service.served.get(service.default)
        if served is not None and path.resolve() == default.resolve():
            return served.handler
        return open_handler(replace(settings.handler, model=path))

    return create_review_router(open_model=open_model, models_dir=settings.models_dir, root=settings.review_root,
                                models={default.name: default})


def create_app(settings: ServeSettings, handler: ModelHandler | None = None) -> FastAPI:
    """The service as an ASGI app (see the module docstring); run it with uvicorn (:func:`garmentcv.serve.run.serve`).

    Args:
        settings: the service's settings (checked here).
        handler: an open model to serve as ``settings.handler.model``; ``None`` opens it in the background when the
            app starts (``/readyz`` says when it is ready).

    Other modules may add routes to the app; ``app.state.authorize(request)`` applies the same API key check
    (raising :class:`Refused`, answered 401), and ``app.state.service`` holds the served models.

    Raises:
        ServeUsageError: see :func:`garmentcv.serve.settings.check_serve_settings` (a host other than loopback
            without an API key, among others).
    """
    check_serve_settings(settings)
    service = _Service(settings, handler)
    authorize = _authorizer(settings)
    metrics = service.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="GarmentCV classification service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.service = service
    #: the API key check of /v1/... (raises :class:`Refused` 401), for routes added to this app by other modules
    app.state.authorize = authorize
    app.include_router(_review_router(settings, service), prefix="/review", dependencies=[Depends(authorize)])

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        metrics.errors.labels(exc.kind).inc()
        body: dict[str, Any] = {"detail": exc.message, "kind": exc.kind}
        if exc.rows is not None:
            body["rows"] = exc.rows
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    app.add_middleware(_Measured, metrics=metrics)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> JSONResponse:
        """200 while the service runs; 503 when the model could not be opened (restart it with another file)."""
        if service.error is not None:
            return JSONResponse({"status": "failed", "detail": service.error}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", summary="The model is open and warmed")
    async def readyz() -> JSONResponse:
        """200 once the default model is open and has run one warm-up batch; 503 before (and after a failure)."""
        if service.error is not None:
            return JSONResponse({"status": "failed", "detail": service.error}, status_code=503)
        if not service.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse({"status": "ready", "model": service.served[service.default].handler.describe()})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus(request: Request) -> Response:
        """Requests, images, latency and batch-size histograms, queue depth and errors by kind (text format)."""
        authorize(request)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app))

    @app.get("/v1/models", summary="The models that can be picked")
    async def models(request: Request) -> JSONResponse:
        """The file names ``?model=`` accepts (the default first) and what serves the default model."""
        authorize(request)
        default = service.served.get(service.default)
        return JSONResponse({"models": service.model_names(), "default": service.default,
                             "served": None if default is None else default.handler.describe()})

    @app.post("/v1/classify", summary="Classify one or several images", openapi_extra=_CLASSIFY_BODY)
    async def classify(request: Request, name: str = "image", model: str | None = None) -> JSONResponse:
        """One image as the raw body (``?name=`` names its row), or several as multipart/form-data file parts.
        Answers ``{"rows": [...]}`` in order, each row as ``gcv classify --format jsonl`` writes it."""
        authorize(request)
        try:
            rows = await asyncio.wait_for(_classify(request, name, model), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise _busy("timeout", f"no answer within {settings.request_timeout_s:g} s; try again later") from None
        return JSONResponse({"rows": rows})

    async def _classify(request: Request, name: str, model: str | None) -> list[dict[str, Any]]:
        served = await service.model(model)
        if not served.batcher.has_room():
            raise _busy("queue_full", "the queue is full; try again later")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            body = await _read_body(request, settings.max_request_bytes, "request body")
            items = await _multipart_items(request, body, settings)
            raw = False
        elif content_type.startswith(RAW_TYPES):
            body = await _read_body(request, settings.max_image_bytes, "image")
            if not body:
                raise Refused(400, "empty_body", "the request body is empty; send the image's bytes")
            items, raw = [(name, body)], True
        else:
            raise Refused(415, "unsupported_media_type",
                          f"Content-Type {content_type or '(none)'!r}: send one image as image/... or "
                          "application/octet-stream, or several as multipart/form-data")
        return await _rows(served, items, raw)

    async def _batched(served: _Served, items: list[tuple[str, bytes]],
                       decode: Callable[[tuple[str, bytes]], np.ndarray | str]) -> tuple[list[Any], list[Any]]:
        """Decode ``items`` on the pool, queue them for the batcher; what each decode gave and the predictions of
        the decoded ones, in order."""
        loop = asyncio.get_running_loop()
        with served.batcher.incoming(len(items)):
            decoded = await asyncio.gather(*(loop.run_in_executor(service.pool, decode, item) for item in items))
            arrays = [d for d in decoded if not isinstance(d, str)]
            try:
                futures = served.batcher.submit(arrays)
            except QueueFullError:
                raise _busy("queue_full", "the queue is full; try again later") from None
        return decoded, list(await asyncio.gather(*futures))

    async def _rows(served: _Served, items: list[tuple[str, bytes]], raw: bool) -> list[dict[str, Any]]:
        handler = served.handler

        def decode(item: tuple[str, bytes]) -> np.ndarray | str:
            try:
                return handler.decode(*item)
            except ImageDecodeError as exc:
                return exc.reason

        try:
            if len(items) == 1 and served.batcher.idle:  # a lone image: decode and model in one hand-over
                only, prob = await served.batcher.run_alone(lambda: decode(items[0]))
                decoded, probs = [only], [] if prob is None else [prob]
            else:
                decoded, probs = await _batched(served, items, decode)
        except BatcherClosedError:
            raise _busy("shutting_down", "the service is shutting down; try again later") from None
        except Refused:
            raise
        except Exception as exc:
            raise Refused(500, "model", f"the model failed: {type(exc).__name__}: {exc}") from exc
        rows, slot = [], 0
        for (item_name, _), d in zip(items, decoded, strict=True):
            if isinstance(d, str):
                rows.append(handler.row(item_name, None, d))
                metrics.images.labels("error").inc()
                if not raw:  # a raw body's error is counted with the refusal
                    metrics.errors.labels(reason_kind(d)).inc()
            else:
                rows.append(handler.row(item_name, probs[slot]))
                metrics.images.labels("classified").inc()
                slot += 1
        if raw and isinstance(decoded[0], str):
            kind = reason_kind(decoded[0])
            status = 415 if kind == "unsupported_format" else 422
            raise Refused(status, kind, f"the body is not an image GarmentCV can classify: {decoded[0]}", rows=rows)
        return rows

    return app
