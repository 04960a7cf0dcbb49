"""gcv serve --engine ray: the same app and handler as a Ray Serve deployment with 2 replicas on a local Ray."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest

from garmentcv.serve.handler import HandlerSettings, ServeUsageError, open_handler
from garmentcv.serve.ray_serve import APP_NAME, run_ray_app
from garmentcv.serve.settings import ServeSettings, check_serve_settings

from .conftest import COLOURS, write_image
from .test_ray_engine import local_ray
from .test_serve import KEY, assert_rows_match
from .test_serve_server import free_port


def test_two_ray_serve_replicas_answer_with_the_local_handlers_rows(onnx_model: Path, tmp_path: Path) -> None:
    from ray import serve

    images = {f"{i}.jpg": write_image(tmp_path / f"{i}.jpg", colour=COLOURS[i % 5], seed=i).read_bytes()
              for i in range(8)}
    handler = open_handler(HandlerSettings(model=onnx_model, provider="cpu", threads=1))
    want = {name: handler.classify_bytes([(name, data)])[0] for name, data in images.items()}
    port = free_port()
    settings = ServeSettings(handler=HandlerSettings(model=onnx_model, provider="cpu", threads=1), port=port,
                             host="0.0.0.0", api_key=KEY, engine="ray", replicas=2, decode_threads=1)
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "image/jpeg"}
    with local_ray():
        try:
            run_ray_app(settings, ready_timeout_s=120)
            deployment = serve.status().applications[APP_NAME].deployments[APP_NAME]
            assert deployment.replica_states == {"RUNNING": 2}
            url = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
            assert httpx.post(f"{url}/v1/classify", content=images["0.jpg"], timeout=30,
                              headers={"Content-Type": "image/jpeg"}).status_code == 401

            def post(name: str) -> httpx.Response:
                return httpx.post(f"{url}/v1/classify", params={"name": name}, content=images[name], headers=auth,
                                  timeout=60)

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = dict(zip(images, pool.map(post, images), strict=True))
            for name, response in answers.items():
                assert response.status_code == 200, response.text
                assert_rows_match(response.json()["rows"], [want[name]])
            multipart = httpx.post(f"{url}/v1/classify", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                                   files=[("image", (n, images[n], "image/jpeg")) for n in images])
            assert_rows_match(multipart.json()["rows"], [want[n] for n in images])
        finally:
            serve.shutdown()


@pytest.mark.parametrize(("changes", "message"), [
    ({"replicas": 2}, "--replicas and --address only go with --engine ray"),
    ({"ray_address": "auto"}, "--replicas and --address only go with --engine ray"),
    ({"engine": "ray", "models_dir": Path(".")}, "--models works with --engine local"),
])
def test_ray_options_are_refused_where_they_do_not_apply(onnx_model: Path, changes: dict, message: str) -> None:
    with pytest.raises(ServeUsageError, match=message):
        check_serve_settings(ServeSettings(handler=HandlerSettings(model=onnx_model), **changes))


def test_build_app_makes_the_deployment_of_a_serve_config_file(onnx_model: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.serve import Application

    from garmentcv.serve.ray_serve import build_app

    monkeypatch.setenv("MY_KEY", KEY)
    app = build_app({"model": str(onnx_model), "replicas": 2, "threads": 1, "max_wait_ms": 2, "max_image_mb": 1,
                     "api_key_env": "MY_KEY"})
    assert isinstance(app, Application)
    with pytest.raises(ServeUsageError, match="unknown colour"):
        build_app({"model": str(onnx_model), "colour": "red"})
    with pytest.raises(ServeUsageError, match="accepts connections from other machines"):
        build_app({"model": str(onnx_model)})  # the proxy binds 0.0.0.0 unless told otherwise: a key is required
    assert isinstance(build_app({"model": str(onnx_model), "host": "127.0.0.1"}), Application)


def test_gcv_serve_engine_ray_serves_until_sigterm(onnx_model: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    image = write_image(tmp_path / "a.jpg").read_bytes()
    command = [sys.executable, "-c", "from garmentcv.cli import main; main()", "serve", str(onnx_model), "--engine",
               "ray", "--replicas", "1", "--threads", "1", "--port", str(port), "--device", "cpu", "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gcv serve --engine ray was not ready within 120 s"
            time.sleep(0.5)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/classify?name=a.jpg", content=image, timeout=60,
                       headers={"Content-Type": "image/jpeg"})
        handler = open_handler(HandlerSettings(model=onnx_model, provider="cpu", threads=1))
        assert_rows_match(r.json()["rows"], handler.classify_bytes([("a.jpg", image)]))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
