"""The settings of ``gcv serve`` and their checks (standard library only, so the command and Ray import it cheaply).

Binding to an address other than loopback requires an API key: the service classifies for anyone who can reach it,
so off this machine a caller must send ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from garmentcv.serve.handler import HandlerSettings, ServeUsageError, check_handler_settings

__all__ = ["DEFAULT_HOST", "ENGINES", "MIN_API_KEY_LENGTH", "ServeSettings", "check_serve_settings", "is_loopback"]

DEFAULT_HOST = "127.0.0.1"
#: Where the service runs: this process (uvicorn) or a Ray Serve deployment.
ENGINES = ("local", "ray")
#: Shortest API key accepted (characters): a key is a secret, not a password to remember.
MIN_API_KEY_LENGTH = 16
MIB = 1024 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine: ``localhost`` or a loopback address (127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one service.

    Attributes:
        handler: the model file and the options that shape rows (:class:`~garmentcv.serve.handler.HandlerSettings`).
        host: the address to bind; anything but loopback needs ``api_key``.
        port: the TCP port.
        api_key: the bearer token callers must send to ``/v1/...`` and ``/metrics``; ``None``: none required
            (loopback only). Never shown in logs or ``repr``.
        max_batch_size: images per model call, from one or several requests.
        max_wait_ms: how long the first image of a batch waits for others still being decoded before the model
            runs, ms (with none being decoded it runs at once).
        max_queue: images waiting for the model at most; a request that would pass it gets 503 with Retry-After.
        max_images: images per request at most (413 above).
        max_image_bytes: bytes per image at most (413 above), the raw body or one multipart part.
        max_request_bytes: bytes per request body at most (413 above, before it is read in full).
        request_timeout_s: a request not answered within this time gets 503, s.
        decode_threads: threads decoding images; ``None``: the CPUs this process may use.
        max_connections: connections served at once; more get 503 from the server. ``None``: no limit.
        shutdown_timeout_s: on shutdown, how long requests in flight may take to finish, s.
        models_dir: a folder of model files a caller may pick by name (``?model=NAME``); ``None``: only ``handler``.
        review_root: the folder whose photos and rows files the review app (``/review/``) may open; ``None``: the
            page takes uploaded photos only.
        engine: ``local`` (this process) or ``ray`` (a Ray Serve deployment).
        replicas: Ray Serve replicas, each holding the model (``engine="ray"``).
        ray_address: the Ray cluster to join (``engine="ray"``); ``None``: ``RAY_ADDRESS`` or a new local Ray.
    """

    handler: HandlerSettings
    host: str = DEFAULT_HOST
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_images: int = 64
    max_image_bytes: int = 20 * MIB
    max_request_bytes: int = 100 * MIB
    request_timeout_s: float = 30.0
    decode_threads: int | None = None
    max_connections: int | None = 256
    shutdown_timeout_s: float = 30.0
    models_dir: Path | None = None
    review_root: Path | None = None
    engine: str = "local"
    replicas: int = 1
    ray_address: str | None = None


def check_serve_settings(settings: ServeSettings) -> None:
    """Refuse settings out of range or that do not go together, before any model is read.

    Raises:
        ServeUsageError: a host other than loopback without an API key; a key shorter than
            :data:`MIN_API_KEY_LENGTH`; a count, size or time below its minimum; ``max_queue`` below
            ``max_images`` (a full request could never fit); an unknown engine; ``models_dir`` not a folder; see
            :func:`~garmentcv.serve.handler.check_handler_settings`; ``replicas`` or ``ray_address`` with the local
            engine, ``models_dir`` or ``review_root`` with Ray.
    """
    check_handler_settings(settings.handler)
    if settings.engine not in ENGINES:
        raise ServeUsageError(f"--engine {settings.engine!r}: choose one of {', '.join(ENGINES)}")
    if settings.engine == "local" and (settings.replicas != 1 or settings.ray_address is not None):
        raise ServeUsageError("--replicas and --address only go with --engine ray")
    if settings.engine == "ray" and settings.models_dir is not None:
        raise ServeUsageError("--models works with --engine local; a Ray Serve deployment serves one model file")
    if settings.engine == "ray" and settings.review_root is not None:
        raise ServeUsageError("--root (the review app's folder) works with --engine local; the review app is not "
                              "part of a Ray Serve deployment")
    if settings.api_key is not None and len(settings.api_key) < MIN_API_KEY_LENGTH:
        raise ServeUsageError(f"the API key has {len(settings.api_key)} characters; use at least "
                              f"{MIN_API_KEY_LENGTH} random ones (python -c 'import secrets; "
                              "print(secrets.token_urlsafe(32))')")
    if settings.api_key is None and not is_loopback(settings.host):
        raise ServeUsageError(f"--host {settings.host} accepts connections from other machines: set an API key in "
                              "an environment variable (--api-key-env names it, GCV_API_KEY by default), or bind to "
                              f"{DEFAULT_HOST}")
    if not 0 <= settings.port <= 65535:
        raise ServeUsageError(f"--port {settings.port}: give 0..65535")
    counts = (("--max-batch-size", settings.max_batch_size), ("--max-queue", settings.max_queue),
              ("--max-images", settings.max_images), ("--max-image-bytes", settings.max_image_bytes),
              ("--max-request-bytes", settings.max_request_bytes), ("--replicas", settings.replicas),
              ("--decode-threads", settings.decode_threads), ("--max-connections", settings.max_connections))
    for option, value in counts:
        if value is not None and value < 1:
            raise ServeUsageError(f"{option} {value}: give at least 1")
    for option, seconds in (("--max-wait-ms", settings.max_wait_ms), ("--request-timeout", settings.request_timeout_s),
                            ("--shutdown-timeout", settings.shutdown_timeout_s)):
        if not seconds >= 0:
            raise ServeUsageError(f"{option} {seconds}: give a time of 0 or more")
    if settings.request_timeout_s <= 0:
        raise ServeUsageError(f"--request-timeout {settings.request_timeout_s}: give a time above 0")
    if settings.max_queue < settings.max_images:
        raise ServeUsageError(f"--max-queue {settings.max_queue} is below --max-images {settings.max_images}: a "
                              "request with that many images could never be queued; raise --max-queue")
    if settings.models_dir is not None and not Path(settings.models_dir).is_dir():
        raise ServeUsageError(f"--models {settings.models_dir}: not a folder; give the folder of .onnx files")
