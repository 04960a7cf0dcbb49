"""``gcv serve``: classify photos over HTTP with an exported model (the rows ``gcv classify`` writes, as JSON).

Parses the options, builds :class:`~garmentcv.serve.settings.ServeSettings` and calls
:func:`garmentcv.serve.run.serve`; errors are exceptions that :func:`garmentcv.cli_utils.handle_errors` turns into
exit codes.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from garmentcv.cli_utils import docs_epilog, handle_errors, quiet_option, setup_logging, verbose_option, version_option
from garmentcv.installs import require_onnxruntime

_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
_CPUS = "the CPUs this process may use"
MIB = 1024 * 1024


@click.command(context_settings=_CONTEXT, epilog=docs_epilog("serve"),
               short_help="Serve an exported model over HTTP: POST images, get rows.")
@version_option("gcv serve")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path), metavar="MODEL.onnx")
@click.option("--host", default="127.0.0.1", help="Address to bind; other than loopback needs an API key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="TCP port.")
@click.option("--api-key-env", default="GCV_API_KEY", metavar="VAR",
              help="Environment variable holding the API key callers send as 'Authorization: Bearer KEY'.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32,
              help="Images per model call, from one or several requests.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0,
              help="How long an image waits for others being decoded to share its model call, ms.")
@click.option("--max-queue", type=click.IntRange(min=1), default=256,
              help="Images waiting for the model at most; more get 503 with Retry-After.")
@click.option("--max-images", type=click.IntRange(min=1), default=64, help="Images per request at most (413).")
@click.option("--max-image-mb", type=click.FloatRange(min=0, min_open=True), default=20.0,
              help="MB (MiB) per image at most (413).")
@click.option("--max-request-mb", type=click.FloatRange(min=0, min_open=True), default=100.0,
              help="MB (MiB) per request body at most (413, before it is read).")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              help="Seconds before an unanswered request gets 503.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=30.0,
              help="Seconds requests in flight may take to finish on shutdown.")
@click.option("--max-connections", type=click.IntRange(min=1), default=256,
              help="Connections served at once; more get 503.")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              show_default="none: only MODEL", help="Folder of .onnx files callers may pick with ?model=NAME.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: CUDA when onnxruntime can run it, else the CPU; cuda: CUDA or an error.")
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto",
              help="auto: the fastest installed runtime for this CPU and model file.")
@click.option("--threads", type=click.IntRange(min=1), default=None, show_default=_CPUS,
              help="Runtime CPU threads (onnxruntime or OpenVINO).")
@click.option("--decode-threads", type=click.IntRange(min=1), default=None, show_default=_CPUS,
              help="Image decoding threads.")
@click.option("--calibration", type=click.Choice(["temperature", "none"]), default="temperature",
              help="temperature: softmax(logits / T) with the model file's T; none: the raw softmax.")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None, show_default="none",
              help="Rows below this confidence get needs_review true.")
@click.option("--topk", type=click.IntRange(min=1), default=None, show_default="every class",
              help="Rows list the K most probable labels instead of every class.")
@click.option("--prediction-sets", type=click.Choice(["auto", "off"]), default="auto",
              help="auto: each row's prediction set when the model file has them; off: never.")
@click.option("--unknown", type=click.Choice(["auto", "off"]), default="auto",
              help="auto: unknown and ood_score fields when the model file has a detector; off: never.")
@click.option("--root", "review_root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              show_default="none: uploads only", help="Folder whose photos and rows files the review app may open.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="local: uvicorn in this process; ray: a Ray Serve deployment (garmentcv[ray-serve]).")
@click.option("--replicas", type=click.IntRange(min=1), default=1, help="--engine ray: replicas, each with the model.")
@click.option("--address", default=None, metavar="ADDRESS", show_default="RAY_ADDRESS, else a new local Ray",
              help="--engine ray: the Ray cluster to join.")
@quiet_option
@verbose_option
@handle_errors
def main(model: Path, host: str, port: int, api_key_env: str, max_batch_size: int, max_wait_ms: float, max_queue: int,
         max_images: int, max_image_mb: float, max_request_mb: float, request_timeout: float, shutdown_timeout: float,
         max_connections: int, models_dir: Path | None, device: str, runtime: str, threads: int | None,
         decode_threads: int | None, calibration: str, min_confidence: float | None, topk: int | None,
         prediction_sets: str, unknown: str, review_root: Path | None, engine: str, replicas: int, address: str | None,
         quiet: bool, verbose: bool) -> None:
    """Serve MODEL.onnx over HTTP: POST /v1/classify with one image (raw body) or several (multipart) and get one
    row per image as JSON, with the fields and values gcv classify writes (--format jsonl).

    /healthz, /readyz, /metrics (Prometheus), /docs (offline) and the review app (/review/) come with it. Bound
    to 127.0.0.1 unless --host says otherwise, which needs an API key in the environment variable --api-key-env
    names. Ctrl-C or SIGTERM stops it after requests in flight are answered.
    """
    setup_logging(quiet, verbose)
    require_onnxruntime()
    from garmentcv.serve.handler import HandlerSettings
    from garmentcv.serve.run import serve
    from garmentcv.serve.settings import ServeSettings

    handler = HandlerSettings(model=model, runtime=runtime, provider=device, threads=threads, calibration=calibration,
                              min_confidence=min_confidence, topk=topk, prediction_sets=prediction_sets,
                              unknown=unknown)
    settings = ServeSettings(
        handler=handler, host=host, port=port, api_key=os.environ.get(api_key_env) or None,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue, max_images=max_images,
        max_image_bytes=int(max_image_mb * MIB), max_request_bytes=int(max_request_mb * MIB),
        request_timeout_s=request_timeout, decode_threads=decode_threads, max_connections=max_connections,
        shutdown_timeout_s=shutdown_timeout, models_dir=models_dir, review_root=review_root, engine=engine,
        replicas=replicas, ray_address=address,
    )
    serve(settings, log_level="debug" if verbose else "warning" if quiet else "info")
