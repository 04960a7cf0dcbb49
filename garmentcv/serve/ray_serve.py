"""``gcv serve --engine ray``: the same app and handler as a Ray Serve deployment, one model per replica.

Each replica opens the model once (:func:`garmentcv.serve.handler.open_handler`, in the replica's constructor, so
Ray counts it as started only when the model is open and warmed) and serves the app of
:func:`garmentcv.serve.app.create_app` around it: the same routes, limits, API key, micro-batching and metrics (per
replica). Ray Serve's HTTP proxy spreads requests over the replicas (``settings.replicas``, each reserving
``settings.handler.threads`` CPUs, 1 when unset). docs/serve.md shows a cluster deployment and autoscaling.

Ray is imported only when a deployment is built (``pip install 'garmentcv[ray-serve]'``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from garmentcv.installs import MissingRuntimeError, pip_install
from garmentcv.serve.settings import ServeSettings

__all__ = ["APP_NAME", "RAY_SERVE_INSTALL", "build_app", "build_deployment", "run_ray_app", "serve_ray"]

logger = logging.getLogger(__name__)

#: The Ray Serve application and deployment name.
APP_NAME = "garmentcv"
RAY_SERVE_INSTALL = pip_install("ray-serve")


def _import_serve() -> Any:
    """``ray.serve``, or a :class:`MissingRuntimeError` naming the extra."""
    try:
        from ray import serve
    except ImportError as exc:
        raise MissingRuntimeError(f"--engine ray needs Ray Serve, which is not installed: {RAY_SERVE_INSTALL} "
                                  "(or use the default --engine local)") from exc
    return serve


class GarmentCVReplica:
    """One Ray Serve replica: the model opened in the constructor, the app built around it."""

    def __init__(self, settings: ServeSettings) -> None:
        from garmentcv.serve.handler import open_handler

        self.settings = settings
        self.handler = open_handler(settings.handler)

    def __serve_build_asgi_app__(self) -> Any:
        """The ASGI app Ray Serve runs in this replica (called after the constructor)."""
        from garmentcv.serve.app import create_app

        return create_app(self.settings, self.handler)


def build_deployment(settings: ServeSettings, fixed_replicas: bool = True) -> Any:
    """The Ray Serve deployment of :class:`GarmentCVReplica`; bind it with ``settings``
    (``build_deployment(s).bind(s)``).

    Each replica reserves ``settings.handler.threads`` CPUs (1 when unset) and takes at most ``settings.max_queue``
    requests at once (Ray Serve's ``max_ongoing_requests``; beyond it the proxy queues them). With
    ``fixed_replicas`` it has ``settings.replicas`` replicas; without, the number is left to Ray Serve (one, or what
    a config file's ``autoscaling_config`` decides: Ray refuses a fixed number beside autoscaling).

    Raises:
        MissingRuntimeError: Ray Serve is not installed.
    """
    serve = _import_serve()
    ingress = serve.ingress()(GarmentCVReplica)
    options: dict[str, Any] = {"num_replicas": settings.replicas} if fixed_replicas else {}
    return serve.deployment(
        ingress, name=APP_NAME, ray_actor_options={"num_cpus": settings.handler.threads or 1},
        max_ongoing_requests=settings.max_queue, graceful_shutdown_timeout_s=settings.shutdown_timeout_s, **options,
    )


#: ``build_app`` arguments that set :class:`~garmentcv.serve.settings.ServeSettings` fields of the same name.
_SETTINGS_ARGS = ("max_batch_size", "max_wait_ms", "max_queue", "max_images", "decode_threads", "replicas")
#: ``build_app`` arguments that set :class:`~garmentcv.serve.handler.HandlerSettings` fields of the same name.
_HANDLER_ARGS = ("runtime", "threads", "calibration", "min_confidence", "topk")


def build_app(args: Mapping[str, Any]) -> Any:
    """Ray Serve's application builder for a Serve config file (``import_path:
    garmentcv.serve.ray_serve:build_app``), see docs/serve.md.

    ``args`` holds the options of ``gcv serve`` by their Python names: ``model`` (required), ``device``,
    ``runtime``, ``threads``, ``calibration``, ``min_confidence``, ``topk``, ``max_batch_size``, ``max_wait_ms``,
    ``max_queue``, ``max_images``, ``max_image_mb``, ``max_request_mb``, ``request_timeout``, ``shutdown_timeout``,
    ``decode_threads``, ``replicas`` (a fixed number; leave it out to autoscale with the config file's
    ``autoscaling_config``), ``api_key_env`` (the variable holding the API key, read on the machine that builds the
    app) and ``host``, the address Ray Serve's proxy binds (default ``0.0.0.0``: the key is required unless it is
    loopback).

    Raises:
        ServeUsageError: an unknown argument, no ``model``, or settings :func:`check_serve_settings` refuses.
        MissingRuntimeError: Ray Serve is not installed.
    """
    from dataclasses import replace

    from garmentcv.serve.handler import HandlerSettings, ServeUsageError
    from garmentcv.serve.settings import MIB, check_serve_settings

    known = {"model", "device", "host", "api_key_env", "max_image_mb", "max_request_mb", "request_timeout",
             "shutdown_timeout", *_SETTINGS_ARGS, *_HANDLER_ARGS}
    unknown = sorted(set(args) - known)
    if unknown or "model" not in args:
        raise ServeUsageError(f"build_app arguments: {'unknown ' + ', '.join(unknown) if unknown else 'no model'}; "
                              f"give model and any of {', '.join(sorted(known - {'model'}))}")
    handler = HandlerSettings(model=Path(args["model"]), provider=args.get("device", "auto"),
                              **{k: args[k] for k in _HANDLER_ARGS if k in args})
    env = args.get("api_key_env")
    settings = ServeSettings(handler=handler, host=args.get("host", "0.0.0.0"), engine="ray",
                             api_key=(os.environ.get(env) or None) if env else None,
                             **{k: args[k] for k in _SETTINGS_ARGS if k in args})
    for name, field, scale in (("max_image_mb", "max_image_bytes", MIB), ("max_request_mb", "max_request_bytes", MIB),
                               ("request_timeout", "request_timeout_s", 1), ("shutdown_timeout", "shutdown_timeout_s",
                                                                              1)):
        if name in args:
            value = args[name] * scale
            settings = replace(settings, **{field: int(value) if scale != 1 else float(value)})
    check_serve_settings(settings)
    return build_deployment(settings, fixed_replicas="replicas" in args).bind(settings)


def run_ray_app(settings: ServeSettings, ready_timeout_s: float = 300.0, stop: threading.Event | None = None) -> None:
    """Deploy the service on the Ray cluster this process is connected to (``ray.init`` first) and return once
    every replica runs (or ``stop`` is set); Ray Serve's proxy listens on ``settings.host:settings.port``.

    Raises:
        MissingRuntimeError: Ray Serve is not installed.
        RuntimeError: the application did not start within ``ready_timeout_s`` (the message has Ray's status).
    """
    serve = _import_serve()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_deployment(settings).bind(settings), name=APP_NAME, route_prefix="/", blocking=False)
    deadline = time.monotonic() + ready_timeout_s
    while stop is None or not stop.is_set():
        status = serve.status().applications[APP_NAME]
        if str(status.status).endswith("RUNNING"):
            return
        if time.monotonic() > deadline or str(status.status).endswith(("DEPLOY_FAILED", "UNHEALTHY")):
            raise RuntimeError(f"the Ray Serve application did not start: {status.status}: {status.message}")
        time.sleep(0.5)


def serve_ray(settings: ServeSettings) -> None:
    """Serve on Ray until interrupted: join ``settings.ray_address`` (``None``: ``RAY_ADDRESS``, else start a local
    Ray), deploy (:func:`run_ray_app`), wait for Ctrl-C or SIGTERM, then shut Ray Serve down (its replicas finish
    the requests they hold, at most ``settings.shutdown_timeout_s``) and disconnect.

    Raises:
        MissingRuntimeError: Ray Serve is not installed.
        RuntimeError: the application did not start.
    """
    serve = _import_serve()
    import ray

    ray.init(address=settings.ray_address, logging_level="WARNING")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # after ray.init, which sets its own
    try:
        run_ray_app(settings, stop=stop)
        if not stop.is_set():
            logger.info("serving %s on http://%s:%d with %d Ray Serve replicas", settings.handler.model,
                        settings.host, settings.port, settings.replicas)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
