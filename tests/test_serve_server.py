"""gcv serve on a real uvicorn server on loopback: concurrent clients each get their own rows, the queue bound answers
503, a request past its time answers 503, shutdown lets requests in flight finish, and the command itself serves
until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from garmentcv.serve.app import create_app
from garmentcv.serve.handler import HandlerSettings, ModelHandler, open_handler
from garmentcv.serve.settings import ServeSettings

from .conftest import COLOURS, write_image
from .test_serve import assert_rows_match, metric


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(settings: ServeSettings, handler: ModelHandler) -> Iterator[tuple[str, uvicorn.Server, threading.Thread]]:
    """The app served by uvicorn on a free loopback port in a thread; yields its URL, the server and the thread."""
    port = free_port()
    config = uvicorn.Config(create_app(settings, handler), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=settings.shutdown_timeout_s)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", server, thread
    finally:
        server.should_exit = True
        thread.join(30)


class GatedHandler(ModelHandler):
    """The real model, whose model calls wait until :attr:`gate` is set (so a test can hold a batch in the model)."""

    def __init__(self, handler: ModelHandler) -> None:
        super().__init__(handler.settings, handler.model)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().probabilities(batch)


@pytest.fixture(scope="module")
def handler(onnx_model: Path) -> ModelHandler:
    return open_handler(HandlerSettings(model=onnx_model, provider="cpu", threads=1))


def settings_for(handler: ModelHandler, **kw: object) -> ServeSettings:
    return ServeSettings(handler=handler.settings, decode_threads=2, **kw)  # type: ignore[arg-type]


JPEG = {"Content-Type": "image/jpeg"}


def test_concurrent_clients_each_get_their_own_rows_from_shared_batches(handler: ModelHandler,
                                                                        tmp_path: Path) -> None:
    images = {f"{i:02d}.jpg": write_image(tmp_path / f"{i:02d}.jpg", size=(30 + i, 40), colour=COLOURS[i % 5],
                                          seed=i).read_bytes() for i in range(36)}
    names = list(images)
    want = {name: handler.classify_bytes([(name, images[name])])[0] for name in names}
    # 12 clients send one image as the raw body, 12 send two as multipart: 36 images in 24 requests
    requests = [[n] for n in names[:12]] + [names[i:i + 2] for i in range(12, 36, 2)]

    async def client_run(url: str) -> list[tuple[list[str], httpx.Response]]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async def one(group: list[str]) -> tuple[list[str], httpx.Response]:
                if len(group) == 1:
                    return group, await client.post("/v1/classify", params={"name": group[0]},
                                                    content=images[group[0]], headers=JPEG)
                parts = [("image", (n, images[n], "image/jpeg")) for n in group]
                return group, await client.post("/v1/classify", files=parts)

            return await asyncio.gather(*(one(g) for g in requests))

    with running(settings_for(handler, max_batch_size=8, max_wait_ms=50), handler) as (url, _, _):
        answers = asyncio.run(client_run(url))
        text = httpx.get(f"{url}/metrics").text
    for group, response in answers:
        assert response.status_code == 200, response.text
        assert_rows_match(response.json()["rows"], [want[n] for n in group])
    assert metric(text, "gcv_serve_batch_images_sum") == 36
    batches = metric(text, "gcv_serve_batch_images_count")
    assert batches < 24, f"{batches:g} model calls for 24 concurrent requests: nothing was batched"
    assert metric(text, "gcv_serve_batch_images_bucket", le="8.0") == batches  # never above --max-batch-size


def test_a_full_queue_answers_503_with_retry_after(handler: ModelHandler, tmp_path: Path) -> None:
    gated = GatedHandler(handler)
    image = write_image(tmp_path / "a.jpg").read_bytes()
    settings = settings_for(handler, max_batch_size=1, max_wait_ms=0, max_queue=1, max_images=1)
    with running(settings, gated) as (url, _, _):
        results: dict[str, httpx.Response] = {}

        def post(key: str) -> None:
            results[key] = httpx.post(f"{url}/v1/classify", content=image, headers=JPEG, timeout=60)

        first = threading.Thread(target=post, args=("first",))
        first.start()
        assert gated.entered.wait(30)  # the first image is in the model, the queue is empty
        second = threading.Thread(target=post, args=("second",))
        second.start()
        deadline = time.monotonic() + 30
        while "gcv_serve_queue_depth 1.0" not in httpx.get(f"{url}/metrics").text:
            assert time.monotonic() < deadline, "the second image never reached the queue"
            time.sleep(0.02)
        refused = httpx.post(f"{url}/v1/classify", content=image, headers=JPEG, timeout=60)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["kind"] == "queue_full"
        gated.gate.set()
        first.join(30)
        second.join(30)
        assert results["first"].status_code == results["second"].status_code == 200
        assert results["first"].json() == results["second"].json()
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, "gcv_serve_errors_total", kind="queue_full") == 1


def test_a_request_past_its_time_gets_503_and_the_service_goes_on(handler: ModelHandler, tmp_path: Path) -> None:
    gated = GatedHandler(handler)
    image = write_image(tmp_path / "a.jpg").read_bytes()
    with running(settings_for(handler, request_timeout_s=0.5), gated) as (url, _, _):
        late = httpx.post(f"{url}/v1/classify", content=image, headers=JPEG, timeout=60)
        assert (late.status_code, late.json()["kind"], late.headers["Retry-After"]) == (503, "timeout", "1")
        gated.gate.set()
        ok = httpx.post(f"{url}/v1/classify", content=image, headers=JPEG, timeout=60)
        assert ok.status_code == 200 and ok.json()["rows"] == handler.classify_bytes([("image", image)])


def test_shutdown_answers_the_requests_in_flight(handler: ModelHandler, tmp_path: Path) -> None:
    gated = GatedHandler(handler)
    image = write_image(tmp_path / "a.jpg").read_bytes()
    with running(settings_for(handler, shutdown_timeout_s=20), gated) as (url, server, thread):
        answer: dict[str, httpx.Response] = {}
        client = threading.Thread(target=lambda: answer.setdefault(
            "r", httpx.post(f"{url}/v1/classify?name=a.jpg", content=image, headers=JPEG, timeout=60)))
        client.start()
        assert gated.entered.wait(30)
        server.should_exit = True  # what SIGTERM and Ctrl-C do
        time.sleep(0.3)
        assert thread.is_alive(), "the server stopped before its request in flight was answered"
        with pytest.raises(httpx.ConnectError):  # no new connection is accepted meanwhile
            httpx.get(f"{url}/healthz", timeout=5)
        gated.gate.set()
        client.join(30)
        thread.join(30)
        assert not thread.is_alive()
    assert answer["r"].status_code == 200
    assert answer["r"].json()["rows"] == handler.classify_bytes([("a.jpg", image)])


def test_gcv_serve_serves_until_sigterm(onnx_model: Path, tmp_path: Path) -> None:
    port = free_port()
    image = write_image(tmp_path / "a.jpg").read_bytes()
    command = [sys.executable, "-c", "from garmentcv.cli import main; main()", "serve", str(onnx_model), "--port",
               str(port), "--device", "cpu", "--threads", "1", "--decode-threads", "1", "--min-confidence", "0.9",
               "-q"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "gcv serve was not ready within 60 s"
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/classify?name=a.jpg", content=image, headers=JPEG, timeout=30)
        [row] = r.json()["rows"]
        assert list(row) == ["path", "label", "confidence", "needs_review", "probs", "error"]
        assert row["needs_review"] is (row["confidence"] < 0.9)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then lets SIGTERM end the process as it would have (status -SIGTERM)
    assert proc.returncode == -signal.SIGTERM, err
    assert "Traceback" not in err and "ERROR" not in err


def test_the_serve_benchmarks_wrk_scripts_post_photos_and_bad_bodies_and_count_answers(handler: ModelHandler,
                                                                                       tmp_path: Path) -> None:
    from benchmarks.serve import Service, bad_inputs, run_wrk, soak, wrk_script

    paths = [write_image(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    script = wrk_script(paths, tmp_path / "post.lua")
    bad = bad_inputs(tmp_path / "bad", paths[0])
    mixed = wrk_script([*paths, *(b[0] for b in bad)], tmp_path / "mixed.lua", ["image/jpeg"] * 3 + [b[1] for b in bad])
    with running(settings_for(handler), handler) as (url, _, _):
        figures = run_wrk(f"{url}/v1/classify", script, connections=2, seconds=1)
        text = httpx.get(f"{url}/metrics").text
        soaked = soak(Service(url, os.getpid()), mixed, connections=2, seconds=2, every_s=0.5)
    assert figures["requests"] >= 3 and figures["non_2xx"] == figures["socket_errors"] == figures["status_5xx"] == 0
    assert figures["status_2xx"] == figures["requests"]
    assert 0 < figures["p50_us"] <= figures["p95_us"] <= figures["p99_us"]
    served = metric(text, "gcv_serve_images_total", outcome="classified")
    assert served >= figures["requests"]  # every answered request was one photo classified (and a few in flight)
    # the bad bodies: every one answered 4xx, never 5xx; the photos 2xx
    assert soaked["status_5xx"] == soaked["socket_errors"] == 0
    assert soaked["status_4xx"] > 0 and soaked["status_2xx"] > 0
    assert soaked["status_2xx"] + soaked["status_4xx"] == soaked["requests"]
    assert soaked["status_4xx"] == soaked["non_2xx"]
    assert 0 < soaked["rss_mb_first"] <= soaked["rss_mb_max"]
