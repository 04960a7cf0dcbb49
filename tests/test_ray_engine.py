"""gcv-classify --engine ray on a local Ray instance (2 CPUs, shared by the module): the local engine's rows with
corrupt, truncated and non-image files; a worker killed mid-run; --resume after the driver is killed; S3."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.cli import classify_main
from garmentcv.infer.engines.ray import RayOptions, classify_ray
from garmentcv.installs import pip_install

from .conftest import write_image
from .s3_server import moto_s3, upload
from .test_classify import make_folder

#: Probabilities of the two engines agree within this (onnxruntime with other thread counts; 6-decimal text).
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A moto S3 server for the whole module; started before Ray so that Ray's workers inherit its settings."""
    env = pytest.MonkeyPatch()
    with moto_s3(env, tmp_path_factory.mktemp("aws")):
        yield
    env.undo()


@contextlib.contextmanager
def local_ray() -> Iterator[str]:
    """A local Ray instance (2 CPUs, no dashboard, no usage stats) while the block runs; yields its GCS address."""
    import ray

    env = pytest.MonkeyPatch()
    env.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        env.undo()


@pytest.fixture(scope="module")
def ray_instance(s3_env: None) -> Iterator[str]:
    """One local Ray instance for the module, started after the S3 test server's environment."""
    with local_ray() as address:
        yield address


def config(source: Path | str, out: Path, model: Path, **kw: object) -> ClassifyConfig:
    return ClassifyConfig(folder=source, out=out, model=model, provider="cpu", progress=False, **kw)  # type: ignore[arg-type]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def assert_same_rows(got: Path, want: Path) -> None:
    """Same header, paths, labels and errors in the same order; probabilities within :data:`TOLERANCE`."""
    a, b = read_csv(got), read_csv(want)
    assert a[0] == b[0] and [r[0] for r in a] == [r[0] for r in b]
    for x, y in zip(a[1:], b[1:], strict=True):
        assert (x[0], x[1], x[-1]) == (y[0], y[1], y[-1])
        assert all(abs(float(p) - float(q)) <= TOLERANCE + 1e-12
                   for p, q in zip(x[2:-1], y[2:-1], strict=True) if p or q)


def many_images(folder: Path, count: int) -> Path:
    for i in range(count):
        write_image(folder / f"{i:03d}.jpg", seed=i, size=(30 + i % 7, 40))
    (folder / "zz-corrupt.jpg").write_bytes(b"not a jpeg")
    return folder


def test_rows_equal_the_local_engine_with_bad_files(tmp_path: Path, onnx_model: Path, ray_instance: str) -> None:
    folder = make_folder(tmp_path / "imgs")  # corrupt, truncated, hidden, non-image files, a link loop
    local = classify_folder(config(folder, tmp_path / "local.csv", onnx_model))
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "ray.csv"), "--model",
                                                str(onnx_model), "--engine", "ray", "--num-workers", "2",
                                                "--batch-size", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert_same_rows(tmp_path / "ray.csv", tmp_path / "local.csv")
    rows = {r[0]: r for r in read_csv(tmp_path / "ray.csv")}
    assert rows["corrupt.jpg"][1:] == ["", "", "", "", "not a recognised image format"]
    assert rows["trunc.jpg"][1:] == ["", "", "", "", "truncated file"]
    assert ("9 image files: 7 classified, 2 errors; skipped 2 hidden, 2 not an image, 1 symlinked folder"
            in result.stderr)
    ray_summary = classify_ray(config(folder, tmp_path / "ray.jsonl", onnx_model, format="jsonl"),
                               RayOptions(num_workers=1))
    assert (ray_summary.files, ray_summary.errors, ray_summary.skipped) == (local.files, local.errors, local.skipped)
    assert not (tmp_path / "ray.csv.partial").exists() and not (tmp_path / "ray.jsonl.partial").exists()


def _alive_worker_pids() -> dict[str, int]:
    """Actor id -> pid of the live classify workers (the GCS actor table; no dashboard needed)."""
    from ray._private import state

    return {actor_id: info["Pid"] for actor_id, info in state.actors().items()
            if info["State"] == "ALIVE" and info["ActorClassName"] == "ClassifyWorker"}


def test_a_worker_killed_mid_run_still_gives_every_row(tmp_path: Path, onnx_model: Path, ray_instance: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from ray._private import state

    folder = many_images(tmp_path / "imgs", 30)
    classify_folder(config(folder, tmp_path / "local.csv", onnx_model))
    killed: dict[str, int] = {}

    def kill_one_worker(saved: int) -> None:
        if not killed:
            actor_id, pid = sorted(_alive_worker_pids().items())[0]
            os.kill(pid, signal.SIGKILL)
            killed[actor_id] = pid

    summary = classify_ray(config(folder, tmp_path / "ray.csv", onnx_model, batch_size=1),
                           RayOptions(num_workers=2), on_batch=kill_one_worker)
    assert summary.files == 31 and summary.errors == 1
    assert_same_rows(tmp_path / "ray.csv", tmp_path / "local.csv")
    (actor_id,) = killed
    assert state.actors()[actor_id]["State"] == "DEAD"
    assert "a Ray worker died classifying" in caplog.text  # the kill landed during the run: its files were redone


def test_resume_after_the_driver_is_killed(tmp_path: Path, onnx_model: Path, ray_instance: str) -> None:
    folder = many_images(tmp_path / "imgs", 16)
    classify_folder(config(folder, tmp_path / "local.csv", onnx_model))
    out = tmp_path / "ray.csv"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from garmentcv.infer.classify import ClassifyConfig
        from garmentcv.infer.engines.ray import RayOptions, classify_ray
        cfg = ClassifyConfig(folder=Path({str(folder)!r}), out=Path({str(out)!r}), model=Path({str(onnx_model)!r}),
                             provider="cpu", batch_size=2, progress=False)
        def hook(saved):
            if saved >= 6:
                os.kill(os.getpid(), signal.SIGKILL)
        classify_ray(cfg, RayOptions(address={ray_instance!r}, num_workers=2), on_batch=hook)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    (segment,) = (tmp_path / "ray.csv.partial").glob("run-*.jsonl")
    assert len(segment.read_text(encoding="utf-8").splitlines()) == 1 + 6
    summary = classify_ray(config(folder, out, onnx_model, resume=True), RayOptions(num_workers=2))
    assert (summary.reused, summary.files) == (6, 17)
    assert_same_rows(out, tmp_path / "local.csv")
    assert not (tmp_path / "ray.csv.partial").exists()


def test_s3_prefix_gives_the_rows_of_a_local_copy(tmp_path: Path, onnx_model: Path, ray_instance: str) -> None:
    folder = make_folder(tmp_path / "imgs")
    (folder / 'we,ird "name"\nnew.jpg').unlink()  # moto refuses keys with a newline (S3 takes them)
    shutil.rmtree(folder / ".cache")
    upload(folder, "catalogue", "2026/photos")
    classify_folder(config(folder, tmp_path / "local.csv", onnx_model))
    summary = classify_ray(config("s3://catalogue/2026/photos", tmp_path / "s3.csv", onnx_model, batch_size=3),
                           RayOptions(num_workers=2))
    assert_same_rows(tmp_path / "s3.csv", tmp_path / "local.csv")
    assert (summary.files, summary.errors, summary.skipped) == (8, 2, {"hidden": 1, "not an image": 2})


def test_uint8_model_on_s3_gives_the_local_engine_rows(tmp_path: Path, uint8_onnx_model: Path,
                                                      ray_instance: str) -> None:
    """A format-2 file (uint8 crops in): Ray's workers fetch the objects and decode them into uint8 batches."""
    folder = many_images(tmp_path / "imgs", 5)
    upload(folder, "catalogue", "u8")
    classify_folder(config(folder, tmp_path / "local.csv", uint8_onnx_model))
    summary = classify_ray(config("s3://catalogue/u8", tmp_path / "s3.csv", uint8_onnx_model, batch_size=2),
                           RayOptions(num_workers=1))
    assert_same_rows(tmp_path / "s3.csv", tmp_path / "local.csv")
    assert (summary.files, summary.errors) == (6, 1)


def test_engine_ray_without_ray_says_how_to_install(tmp_path: Path, onnx_model: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    (tmp_path / "imgs").mkdir()
    result = CliRunner().invoke(classify_main, [str(tmp_path / "imgs"), "--out", str(tmp_path / "o.csv"), "--model",
                                                str(onnx_model), "--engine", "ray"])
    assert result.exit_code == 1
    assert f"--engine ray needs Ray, which is not installed: {pip_install('ray')}" in result.stderr
