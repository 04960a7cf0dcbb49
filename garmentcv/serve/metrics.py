"""The service's Prometheus metrics (prometheus-client), in a registry of their own per app.

Names (all prefixed ``gcv_serve_``):

* ``requests_total{route, status}``: requests answered, by route and HTTP status.
* ``request_seconds{route}``: request latency histogram, s, from the first byte read to the answer.
* ``images_total{outcome}``: images in requests, ``classified`` or ``error`` (an error row).
* ``batch_images``: histogram of images per model call.
* ``model_seconds``: histogram of model call time, s (runtime and softmax; not decoding).
* ``queue_depth``: images waiting for the model now.
* ``errors_total{kind}``: refused requests and error rows by kind: ``empty_body``, ``too_large``,
  ``too_many_images``, ``unsupported_media_type``, ``bad_request``, ``queue_full``, ``timeout``, ``unauthorized``,
  ``not_ready``, ``model``, ``shutting_down``, and the decode failures of :data:`garmentcv.serve.handler.REASON_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "ServeMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Latency buckets, s: from a small image on a fast CPU to a request that waits out a full queue.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Batch size buckets, images.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The metrics of one app (see the module docstring); ``depth`` reads the queue depth when scraped."""

    def __init__(self, depth: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gcv_serve_requests", "Requests answered, by route and HTTP status.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("gcv_serve_request_seconds", "Request latency, s.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("gcv_serve_images", "Images received, by outcome (classified or error row).",
                              ["outcome"], registry=r)
        self.batch = Histogram("gcv_serve_batch_images", "Images per model call.", buckets=BATCH_BUCKETS, registry=r)
        self.model_seconds = Histogram("gcv_serve_model_seconds", "Model call time (runtime and softmax), s.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("gcv_serve_queue_depth", "Images waiting for the model.", registry=r)
        if depth is not None:
            self.queue.set_function(depth)
        self.errors = Counter("gcv_serve_errors", "Refused requests and error rows, by kind.", ["kind"], registry=r)

    def observe_batch(self, images: int, seconds: float) -> None:
        """Record one model call of ``images`` images taking ``seconds``."""
        self.batch.observe(images)
        self.model_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
