"""gcv serve's app through FastAPI's test client: the rows gcv classify writes, every bad input's status, the API key,
readiness, metrics and an offline docs page."""

from __future__ import annotations

import re
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from fastapi import Request
from fastapi.testclient import TestClient

from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.rows import OutputFormat
from garmentcv.serve import app as app_module
from garmentcv.serve.app import create_app
from garmentcv.serve.handler import HandlerSettings, ModelHandler, RowClassifier, ServeUsageError, open_handler
from garmentcv.serve.settings import ServeSettings

from .conftest import write_image

#: Probabilities of the service and of gcv classify agree within this (6-decimal text; batches of other sizes).
TOLERANCE = 1e-6
KEY = "k" * 12 + "-secret-key"


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` px, in a few dozen bytes (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"


def photo_folder(root: Path) -> Path:
    """Good photos in three formats, and one file of each kind of bad input, all with image extensions."""
    for i, (name, fmt) in enumerate([("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.webp", "WEBP"), ("d.jpg", "JPEG")]):
        write_image(root / name, size=(40 + 7 * i, 56), colour=[(200, 40, 40), (40, 160, 60)][i % 2], seed=i,
                    fmt=fmt)
    whole = (root / "a.jpg").read_bytes()
    (root / "e_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "f_corrupt.jpg").write_bytes(b"this is not a jpeg")
    (root / "g_empty.jpg").write_bytes(b"")
    (root / "h_eps.jpg").write_bytes(EPS)
    (root / "i_bomb.png").write_bytes(png_header(20000, 20000))
    return root


def with_temperature(model: Path, out: Path, temperature: float) -> Path:
    """A copy of ``model`` whose metadata carries a fitted temperature."""
    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    props["garmentcv.temperature"] = repr(temperature)
    onnx.helper.set_model_props(proto, props)
    onnx.save_model(proto, str(out))
    return out


def classify_jsonl(folder: Path, model: Path, out: Path, **options: object) -> list[dict]:
    """The rows gcv classify writes with --format jsonl."""
    import json

    cfg = ClassifyConfig(folder=folder, out=out, model=model, provider="cpu", progress=False,
                         format=OutputFormat.JSONL, **options)  # type: ignore[arg-type]
    classify_folder(cfg)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def assert_rows_match(got: list[dict], want: list[dict]) -> None:
    """Same keys in the same order and the same values; probabilities and confidences within :data:`TOLERANCE`."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w), (g, w)
        for key in w:
            if key in ("confidence", "top_probs", "ood_score") and w[key] is not None:
                assert g[key] == pytest.approx(w[key], abs=TOLERANCE), key
            elif key == "probs" and w[key] is not None:
                assert list(g[key]) == list(w[key])
                assert list(g[key].values()) == pytest.approx(list(w[key].values()), abs=TOLERANCE)
            else:
                assert g[key] == w[key], (key, g, w)


@pytest.fixture(scope="module")
def handler(onnx_model: Path) -> ModelHandler:
    return open_handler(HandlerSettings(model=onnx_model, provider="cpu", threads=1))


def settings_for(model: Path, **kw: object) -> ServeSettings:
    return ServeSettings(handler=HandlerSettings(model=model, provider="cpu", threads=1), decode_threads=2,
                         **kw)  # type: ignore[arg-type]


@pytest.fixture
def client(handler: ModelHandler) -> Iterator[TestClient]:
    app = create_app(settings_for(handler.settings.model, max_images=4, max_image_bytes=4096,
                                  max_request_bytes=16384, max_queue=8), handler)
    with TestClient(app) as c:
        yield c


def files(folder: Path, names: list[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (name, (folder / name).read_bytes(), "application/octet-stream")) for name in names]


@pytest.fixture(scope="module")
def sets_and_detector_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file with prediction sets and an energy-score unknown-item detector (the ``ood_score`` output), as gcv export
    writes them."""
    from garmentcv.export.exporter import ExportConfig, export_checkpoint
    from tests.test_export import make_run

    root = tmp_path_factory.mktemp("detector")
    ckpt = make_run(root / "run", "resnet18")
    cfg = ExportConfig(checkpoint=ckpt, out=root / "model.onnx", unknown_score="energy", unknown_recall=0.75,
                       coverage=0.8)
    return export_checkpoint(cfg, progress=False).out


@pytest.mark.parametrize("variant", ["float32", "uint8 file, temperature, --min-confidence, --topk",
                                     "prediction sets and unknown items"])  # fmt: skip
def test_service_rows_equal_gcv_classify_rows_for_the_same_files(variant: str, tmp_path: Path, onnx_model: Path,
                                                                   uint8_onnx_model: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    folder = photo_folder(tmp_path / "photos")
    names = sorted(p.name for p in folder.iterdir())
    if variant == "float32":
        model, options = onnx_model, {}
    elif variant == "prediction sets and unknown items":
        model, options = request.getfixturevalue("sets_and_detector_model"), {}
    else:
        model = with_temperature(uint8_onnx_model, tmp_path / "t.onnx", 2.5)
        options = {"min_confidence": 0.6, "topk": 2}
    want = classify_jsonl(folder, model, tmp_path / "out.jsonl", **options)
    assert [r["path"] for r in want] == names
    assert [r["error"] is None for r in want] == [True] * 4 + [False] * 5
    if variant == "prediction sets and unknown items":
        assert {"prediction_set", "needs_review", "unknown", "ood_score"} <= set(want[0])
        assert all(isinstance(r["prediction_set"], list) and isinstance(r["unknown"], bool) for r in want[:4])
    handler_settings = HandlerSettings(model=model, provider="cpu", threads=1, **options)  # type: ignore[arg-type]
    app = create_app(ServeSettings(handler=handler_settings, max_images=16, max_queue=16))
    with TestClient(app) as c:
        wait_ready(c)
        response = c.post("/v1/classify", files=files(folder, names))
        assert response.status_code == 200, response.text
        assert_rows_match(response.json()["rows"], want)
        for name, row in zip(names[:4], want[:4], strict=True):  # one image as the raw body: the same row
            raw = c.post(f"/v1/classify?name={name}", content=(folder / name).read_bytes(),
                         headers={"Content-Type": "image/jpeg"})
            assert raw.status_code == 200
            assert_rows_match(raw.json()["rows"], [row])
    handler = open_handler(handler_settings)
    assert isinstance(handler, RowClassifier)
    three = variant == "prediction sets and unknown items"  # tests/test_export.py's run has a third class
    assert handler.class_names == (("bluzy", "bryuki", "platya") if three else ("bluzy", "bryuki"))
    assert_rows_match(handler.classify_bytes([(n, (folder / n).read_bytes()) for n in names]), want)


def wait_ready(c: TestClient, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = c.get("/readyz")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"not ready after {seconds} s: {r.json()}")


@pytest.mark.parametrize(("body", "content_type", "status", "kind"), [
    (b"", "image/jpeg", 400, "empty_body"),
    (b"this is not a jpeg", "image/jpeg", 422, "not_an_image"),
    ("truncated", "image/jpeg", 422, "truncated"),
    (EPS, "application/octet-stream", 415, "unsupported_format"),
    (png_header(20000, 20000), "image/png", 422, "oversized"),
    (b"x" * 5000, "image/jpeg", 413, "too_large"),
    (b"{}", "application/json", 415, "unsupported_media_type"),
    (b"abc", None, 415, "unsupported_media_type"),
])
def test_each_bad_raw_body_gets_its_status_and_the_service_goes_on(
        client: TestClient, tmp_path: Path, body: bytes | str, content_type: str | None, status: int,
        kind: str) -> None:
    if body == "truncated":
        whole = write_image(tmp_path / "a.jpg").read_bytes()
        body = whole[: len(whole) // 2]
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/v1/classify?name=x.jpg", content=body, headers=headers)
    assert (response.status_code, response.json()["kind"]) == (status, kind), response.text
    if status == 422 or kind == "unsupported_format":  # an image that cannot be decoded: its error row comes with it
        [row] = response.json()["rows"]
        assert row["path"] == "x.jpg" and row["label"] is None and row["error"]
    good = client.post("/v1/classify", content=write_image(tmp_path / "ok.jpg").read_bytes(),
                       headers={"Content-Type": "image/jpeg"})
    assert good.status_code == 200 and good.json()["rows"][0]["error"] is None


def test_a_body_over_the_limit_sent_without_a_length_is_refused_while_read(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = client.post("/v1/classify", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 413 and response.json()["kind"] == "too_large"
    assert "more than 4096 bytes" in response.json()["detail"]


def test_multipart_limits_and_bad_parts(client: TestClient, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    for i in range(5):
        write_image(folder / f"{i}.jpg", seed=i)
    too_many = client.post("/v1/classify", files=files(folder, [f"{i}.jpg" for i in range(5)]))
    assert (too_many.status_code, too_many.json()["kind"]) == (413, "too_many_images")
    (folder / "big.jpg").write_bytes(b"x" * 5000)
    big = client.post("/v1/classify", files=files(folder, ["0.jpg", "big.jpg"]))
    assert (big.status_code, big.json()["kind"]) == (413, "too_large")
    assert "'big.jpg' has 5000 bytes" in big.json()["detail"]
    no_file = client.post("/v1/classify", data={"note": "no image here"}, files=[])
    assert no_file.status_code == 415
    fields_only = client.post("/v1/classify", content=b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
                              b"--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert (fields_only.status_code, fields_only.json()["kind"]) == (400, "empty_body")
    garbage = client.post("/v1/classify", content=b"garbage", headers={"Content-Type": "multipart/form-data"})
    assert (garbage.status_code, garbage.json()["kind"]) == (400, "bad_request")
    (folder / "empty.jpg").write_bytes(b"")
    mixed = client.post("/v1/classify", files=files(folder, ["0.jpg", "empty.jpg"]))
    assert mixed.status_code == 200
    assert [r["error"] for r in mixed.json()["rows"]] == [None, "empty file (0 bytes)"]


def test_an_api_key_is_required_off_loopback_and_enforced(handler: ModelHandler, tmp_path: Path) -> None:
    model = handler.settings.model
    with pytest.raises(ServeUsageError, match="--host 0.0.0.0 accepts connections from other machines"):
        create_app(settings_for(model, host="0.0.0.0"))
    with pytest.raises(ServeUsageError, match="at least 16"):
        create_app(settings_for(model, host="0.0.0.0", api_key="short"))
    create_app(settings_for(model, host="::1"))  # loopback needs none
    image = write_image(tmp_path / "a.jpg").read_bytes()
    app = create_app(settings_for(model, host="0.0.0.0", api_key=KEY), handler)

    @app.get("/extra")
    async def extra(request: Request) -> dict:  # a route another module adds, under the same key
        app.state.authorize(request)
        return {"ok": True}

    with TestClient(app) as c:
        assert c.get("/extra").status_code == 401
        assert c.get("/extra", headers={"Authorization": f"Bearer {KEY}"}).json() == {"ok": True}
        for headers in ({}, {"Authorization": "Bearer " + KEY[:-1] + "X"}, {"Authorization": KEY},
                        {"Authorization": "Basic " + KEY}):
            for method, path in (("POST", "/v1/classify"), ("GET", "/metrics"), ("GET", "/v1/models")):
                r = c.request(method, path, content=image, headers={"Content-Type": "image/jpeg", **headers})
                assert r.status_code == 401, (headers, path)
                assert r.headers["WWW-Authenticate"] == "Bearer"
        ok = c.post("/v1/classify", content=image, headers={"Content-Type": "image/jpeg",
                                                           "Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["rows"][0]["label"] in ("bluzy", "bryuki")
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes stay open
    assert KEY not in repr(settings_for(model, api_key=KEY))


def test_readyz_waits_for_the_model_and_classify_says_retry_meanwhile(onnx_model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    opened = threading.Event()
    real = app_module.open_handler

    def slow_open(settings: HandlerSettings) -> ModelHandler:
        opened.wait(30)
        return real(settings)

    monkeypatch.setattr(app_module, "open_handler", slow_open)
    image = write_image(tmp_path / "a.jpg").read_bytes()
    with TestClient(create_app(settings_for(onnx_model))) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert (c.get("/readyz").status_code, c.get("/readyz").json()["status"]) == (503, "loading")
        early = c.post("/v1/classify", content=image, headers={"Content-Type": "image/jpeg"})
        assert (early.status_code, early.json()["kind"], early.headers["Retry-After"]) == (503, "not_ready", "1")
        opened.set()
        ready = wait_ready(c)
        assert ready["model"]["classes"] == ["bluzy", "bryuki"] and ready["model"]["runtime"] == "onnxruntime"
        assert c.post("/v1/classify", content=image, headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_a_model_that_cannot_be_opened_fails_health_and_readiness(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with TestClient(create_app(settings_for(broken))) as c:
        deadline = time.monotonic() + 30
        while c.get("/healthz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = c.get("/healthz")
        assert health.status_code == 503 and "not a readable ONNX model" in health.json()["detail"]
        assert c.get("/readyz").json()["status"] == "failed"
        r = c.post("/v1/classify", content=b"x", headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 503 and "could not be opened" in r.json()["detail"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text``."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, value = line.rsplit(" ", 1)
        base, _, rest = sample.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and got == want:
            return float(value)
    raise AssertionError(f"no sample {name}{{{want}}}")


def test_metrics_count_requests_images_batches_and_errors(client: TestClient, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    for i in range(3):
        write_image(folder / f"{i}.jpg", seed=i)
    (folder / "bad.jpg").write_bytes(b"nope")
    assert client.post("/v1/classify", files=files(folder, ["0.jpg", "1.jpg", "bad.jpg"])).status_code == 200
    assert client.post("/v1/classify", content=(folder / "2.jpg").read_bytes(),
                       headers={"Content-Type": "image/jpeg"}).status_code == 200
    assert client.post("/v1/classify", content=b"", headers={"Content-Type": "image/jpeg"}).status_code == 400
    assert client.post("/v1/classify", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    text = client.get("/metrics").text
    assert metric(text, "gcv_serve_requests_total", route="/v1/classify", status="200") == 2
    assert metric(text, "gcv_serve_requests_total", route="/v1/classify", status="400") == 1
    assert metric(text, "gcv_serve_images_total", outcome="classified") == 3
    assert metric(text, "gcv_serve_images_total", outcome="error") == 1
    assert metric(text, "gcv_serve_errors_total", kind="not_an_image") == 1
    assert metric(text, "gcv_serve_errors_total", kind="empty_body") == 1
    assert metric(text, "gcv_serve_errors_total", kind="unsupported_media_type") == 1
    assert metric(text, "gcv_serve_batch_images_sum") == 3  # every classified image went through a model call
    assert metric(text, "gcv_serve_request_seconds_count", route="/v1/classify") == 4
    assert metric(text, "gcv_serve_queue_depth") == 0


def test_docs_and_schema_load_nothing_from_other_hosts(client: TestClient) -> None:
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/v1/classify", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(paths)
    body = paths["/v1/classify"]["post"]["requestBody"]["content"]
    assert set(body) == {"image/*", "application/octet-stream", "multipart/form-data"}
    page = client.get("/docs")
    assert page.status_code == 200 and "/v1/classify" in page.text and 'href="openapi.json"' in page.text
    for text in (page.text, schema.text):
        assert re.findall(r"(?:https?:)?//[\w.-]+", text) == []
        assert "<script" not in text
    assert client.get("/redoc").status_code == 404


def test_models_folder_serves_each_file_by_name_and_nothing_outside(handler: ModelHandler, tmp_path: Path,
                                                                     onnx_model_factory) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(onnx_model_factory(classes=("a", "b", "c"), seed=1), folder / "three.onnx")
    (folder / "notes.txt").write_text("not a model")
    image = write_image(tmp_path / "a.jpg").read_bytes()
    with TestClient(create_app(settings_for(handler.settings.model, models_dir=folder), handler)) as c:
        assert c.get("/v1/models").json()["models"] == ["model.onnx", "three.onnx"]
        r = c.post("/v1/classify?model=three.onnx&name=a.jpg", content=image, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200 and list(r.json()["rows"][0]["probs"]) == ["a", "b", "c"]
        default = c.post("/v1/classify", content=image, headers={"Content-Type": "image/jpeg"})
        assert list(default.json()["rows"][0]["probs"]) == ["bluzy", "bryuki"]
        for name in ("notes.txt", "../model.onnx", str(folder / "three.onnx"), "missing.onnx"):
            refused = c.post("/v1/classify", params={"model": name}, content=image,
                             headers={"Content-Type": "image/jpeg"})
            assert (refused.status_code, refused.json()["kind"]) == (404, "unknown_model"), name


def test_gcv_serve_refuses_a_public_host_without_a_key_before_reading_the_model(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    from garmentcv.cli import main

    monkeypatch.delenv("GCV_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "missing.onnx"), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--host 0.0.0.0 accepts connections from other machines" in result.output
    missing = CliRunner().invoke(main, ["serve", str(tmp_path / "missing.onnx")])
    assert missing.exit_code == 2 and "model file not found" in missing.output


def test_the_batcher_waits_only_for_images_on_their_way() -> None:
    import asyncio

    import numpy as np

    from garmentcv.serve.batching import MicroBatcher, QueueFullError

    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch * 10

    async def scenario() -> tuple[float, list[np.ndarray]]:
        batcher = MicroBatcher(predict, max_batch_size=8, max_wait_s=5.0, max_queue=3)
        batcher.start()
        started = time.perf_counter()
        [alone] = batcher.submit([np.zeros(2)])
        await alone
        lone = time.perf_counter() - started  # nothing else on its way: it ran at once, not after 5 s
        with batcher.incoming(2):  # two images decoding: the first to arrive waits for the second
            [first] = batcher.submit([np.ones(2)])
            await asyncio.sleep(0.2)
            [second] = batcher.submit([np.full(2, 2.0)])
        values = await asyncio.gather(first, second)
        with pytest.raises(QueueFullError):
            batcher.submit([np.zeros(2)] * 4)
        await batcher.close()
        return lone, values

    lone, values = asyncio.run(scenario())
    assert lone < 1.0
    assert calls == [1, 2]
    assert [v.tolist() for v in values] == [[10.0, 10.0], [20.0, 20.0]]


def test_a_lone_image_runs_on_the_model_thread_and_images_sent_meanwhile_batch_behind_it() -> None:
    import asyncio
    import threading

    import numpy as np

    from garmentcv.serve.batching import MicroBatcher

    calls: list[tuple[int, str]] = []
    batches: list[int] = []
    release = threading.Event()

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append((len(batch), threading.current_thread().name))
        if len(calls) == 1:
            release.wait(10)  # the lone image holds the model until the others are queued
        return batch * 10

    async def scenario() -> tuple[list[bool], tuple, list[np.ndarray], str, tuple, list[int]]:
        batcher = MicroBatcher(predict, max_batch_size=8, max_wait_s=0.0, max_queue=8,
                               on_batch=lambda n, _: batches.append(n))
        batcher.start()
        idle = [batcher.idle]
        decoder: list[str] = []
        depth: list[int] = []

        def decode() -> np.ndarray:
            decoder.append(threading.current_thread().name)
            return np.ones(2)

        alone = asyncio.ensure_future(batcher.run_alone(decode))
        await asyncio.sleep(0.1)
        idle.append(batcher.idle)  # running alone: the next lone image queues instead
        queued = batcher.submit([np.full(2, 2.0), np.full(2, 3.0)])
        await asyncio.sleep(0.1)
        depth.append(batcher.depth)  # they wait in the queue, within its bound, until the lone image is done
        release.set()
        first = await alone
        rest = await asyncio.gather(*queued)
        error = await batcher.run_alone(lambda: "cannot decode")
        idle.append(batcher.idle)
        await batcher.close()
        return idle, first, rest, decoder[0], error, depth

    idle, (decoded, prediction), rest, decoder, error, depth = asyncio.run(scenario())
    assert idle == [True, False, True] and depth == [2]
    assert decoded.tolist() == [1.0, 1.0] and prediction.tolist() == [10.0, 10.0]
    assert [r.tolist() for r in rest] == [[20.0, 20.0], [30.0, 30.0]]
    assert [n for n, _ in calls] == [1, 2] and batches == [1, 2]  # the two queued images shared one call
    assert decoder == calls[0][1] == calls[1][1]  # decode and model on the one model thread
    assert error == ("cannot decode", None)  # no array: the model does not run


def test_the_handler_imports_no_web_framework_and_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import garmentcv.serve.handler, garmentcv.serve.settings, garmentcv.serve.batching, "
            "garmentcv.serve.cli; print(sorted(m for m in ('torch', 'fastapi', 'starlette', 'uvicorn', 'ray', "
            "'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_service_mounts_the_review_app_on_its_own_model_behind_its_key(handler: ModelHandler,
                                                                            tmp_path: Path) -> None:
    from garmentcv.serve.review import TOKEN_HEADER

    model = handler.settings.model
    folder = photo_folder(tmp_path / "root" / "photos")
    good = sorted(p.name for p in folder.iterdir())[:4]  # photo_folder's first four decode
    app = create_app(settings_for(model, review_root=tmp_path / "root"), handler)
    with TestClient(app) as c:
        wait_ready(c)
        page = c.get("/review/")
        assert page.status_code == 200
        token = re.search(r'name="gcv-review-token" content="([^"]+)"', page.text).group(1)
        assert c.get("/review/api/models").json()["models"][0] == model.name
        listed = c.post("/review/api/classify/folder", json={"model": model.name, "path": "photos"},
                        headers={TOKEN_HEADER: token})
        assert listed.status_code == 200, listed.text
        items = {i["path"]: i for i in listed.json()["items"]}
        want = handler.classify_bytes([(n, (folder / n).read_bytes()) for n in good])
        assert [(items[n]["label"], items[n]["confidence"]) for n in good] == [
            (w["label"], w["confidence"]) for w in want]
        assert c.post("/review/api/classify/folder", json={"model": model.name, "path": "photos"}).status_code == 403
    keyed = create_app(settings_for(model, host="0.0.0.0", api_key=KEY), handler)
    with TestClient(keyed) as c:
        assert c.get("/review/").status_code == 401
        assert c.get("/review/", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    with pytest.raises(ServeUsageError, match="--root"):
        create_app(settings_for(model, engine="ray", review_root=tmp_path / "root"))
