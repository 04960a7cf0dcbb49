"""Run the service: uvicorn on this machine, or a Ray Serve deployment (``engine="ray"``).

:func:`serve` checks the settings and reads the model file's metadata before anything listens, so a wrong file or
option fails at once with its exit code; then the app opens and warms the model while ``/healthz`` already answers
(``/readyz`` turns 200 when it is ready). uvicorn stops on SIGINT or SIGTERM: it stops accepting connections, lets
requests in flight finish (at most ``shutdown_timeout_s``), then the app drains its queue.
"""

from __future__ import annotations

import logging
from pathlib import Path

from garmentcv.installs import MissingRuntimeError, installed_version, pip_install
from garmentcv.serve.settings import ServeSettings, check_serve_settings

__all__ = ["SERVE_INSTALL", "require_serve", "serve"]

logger = logging.getLogger(__name__)

SERVE_INSTALL = pip_install("serve")


def require_serve() -> None:
    """Refuse to start without the service's packages.

    Raises:
        MissingRuntimeError: FastAPI, uvicorn, prometheus-client or python-multipart is missing; the message names
            the extra.
    """
    dists = ("fastapi", "uvicorn", "prometheus-client", "python-multipart")
    missing = [d for d in dists if installed_version(d) is None]
    if missing:
        raise MissingRuntimeError(f"gcv serve needs {', '.join(missing)}, not installed: {SERVE_INSTALL}")


def serve(settings: ServeSettings, log_level: str = "info") -> None:
    """Serve ``settings.handler.model`` until interrupted (see the module docstring).

    Args:
        settings: the service's settings.
        log_level: uvicorn's log level (``warning`` with ``-q``, ``debug`` with ``-v``).

    Raises:
        MissingRuntimeError: the [serve] extra (or, with ``engine="ray"``, Ray Serve) is not installed.
        ServeUsageError: see :func:`garmentcv.serve.settings.check_serve_settings`; ``topk`` above the number of
            classes.
        ModelFileNotFoundError, ModelFileError: the model file is missing or not a GarmentCV ONNX file.
        RuntimeUnavailableError: ``openvino`` asked for but not installed.
    """
    require_serve()
    check_serve_settings(settings)
    from garmentcv.infer.runtimes import plan_runtime
    from garmentcv.serve.handler import ServeUsageError

    plan = plan_runtime(Path(settings.handler.model), settings.handler.runtime, settings.handler.provider)
    topk = settings.handler.topk
    if topk is not None and topk > len(plan.info.classes):
        raise ServeUsageError(f"--topk {topk}: the model {settings.handler.model} has only "
                              f"{len(plan.info.classes)} classes; give at most {len(plan.info.classes)}")
    if settings.engine == "ray":
        from garmentcv.serve.ray_serve import serve_ray

        serve_ray(settings)
        return
    import uvicorn

    from garmentcv.serve.app import create_app

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level=log_level,
        limit_concurrency=settings.max_connections, timeout_graceful_shutdown=settings.shutdown_timeout_s,
        lifespan="on", server_header=False,
    )
    logger.info("serving %s on http://%s:%d (API key %s)", settings.handler.model, settings.host, settings.port,
                "required" if settings.api_key else "not required: loopback only")
    uvicorn.Server(config).run()
