"""gcv-classify --engine ray under faults, on a local Ray instance (2 CPUs): a file whose decoding kills its worker,
workers that die opening the model, the driver's memory bound (items read ahead of the rows saved), and a healthy
run's stderr free of Ray's own warnings."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from garmentcv.infer.classify import ClassifyRun, classify_folder
from garmentcv.infer.engines import ray as ray_engine
from garmentcv.infer.engines.ray import WORKER_DIED, RayOptions, classify_ray

from .conftest import write_image
from .test_ray_engine import assert_same_rows, config, local_ray, read_csv

#: Seconds a faulty run may take here before it counts as hung (a healthy one takes a few).
HUNG = 90

#: Ray job setup: in every worker of the job, decoding a file whose name contains "kills-its-decoder" crashes
#: the process (SIGSEGV, as a decoder bug would), and opening a model dies when GCV_TEST_DIE_OPENING is set.
#: Worker processes only: the driver and the local engine decode the same file normally.
FAULTY_WORKERS = textwrap.dedent("""
    import os, signal
    import ray

    def faulty_worker():
        from garmentcv.infer import pipeline
        from garmentcv.infer.runtimes import onnxruntime as session
        load_file, open_model = pipeline.load_file, session.open_model

        def crashing_load_file(path, *args, **kwargs):
            if "kills-its-decoder" in str(path):
                os.kill(os.getpid(), signal.SIGSEGV)
            return load_file(path, *args, **kwargs)

        def crashing_open_model(*args, **kwargs):
            if os.environ.get("GCV_TEST_DIE_OPENING"):
                os._exit(1)
            return open_model(*args, **kwargs)

        pipeline.load_file, session.open_model = crashing_load_file, crashing_open_model

    ray.init(address=ADDRESS, logging_level="WARNING", runtime_env={"worker_process_setup_hook": faulty_worker,
             "env_vars": ENV})
""")


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[str]:
    """One local Ray instance for the module; yields its GCS address."""
    with local_ray() as address:
        yield address


def run_faulty(address: str, folder: Path, out: Path, model: Path, env: dict[str, str] | None = None,
               **kw: object) -> subprocess.CompletedProcess[str]:
    """``classify_ray`` in a driver of its own whose Ray workers crash as :data:`FAULTY_WORKERS` says."""
    script = FAULTY_WORKERS.replace("ADDRESS", repr(address)).replace("ENV", repr(env or {})) + textwrap.dedent(f"""
        import logging, sys
        from pathlib import Path
        from garmentcv.errors import GarmentCVError
        from garmentcv.infer.classify import ClassifyConfig
        from garmentcv.infer.engines.ray import RayOptions, classify_ray
        logging.basicConfig(level=logging.INFO)
        cfg = ClassifyConfig(folder=Path({str(folder)!r}), out=Path({str(out)!r}), model=Path({str(model)!r}),
                             provider="cpu", progress=False, **{kw!r})
        try:
            s = classify_ray(cfg, RayOptions(num_workers=2))
        except GarmentCVError as exc:
            print("ERROR", exc, file=sys.stderr)
            sys.exit(exc.exit_code)
        print("SUMMARY", s.files, s.errors, dict(s.error_reasons))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HUNG)


def images(folder: Path, count: int) -> Path:
    for i in range(count):
        write_image(folder / f"{i:03d}.jpg", seed=i, size=(30 + i % 5, 40))
    return folder


def test_a_file_that_kills_its_worker_gets_an_error_row_and_every_other_row(tmp_path: Path, onnx_model: Path,
                                                                           ray_instance: str) -> None:
    folder = images(tmp_path / "imgs", 14)
    write_image(folder / "006-kills-its-decoder.jpg", seed=99)  # mid-folder: rows after it must be saved too
    classify_folder(config(folder, tmp_path / "local.csv", onnx_model))
    proc = run_faulty(ray_instance, folder, tmp_path / "ray.csv", onnx_model, batch_size=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"SUMMARY 15 1 {{'{WORKER_DIED}': 1}}" in proc.stdout
    got, want = read_csv(tmp_path / "ray.csv"), read_csv(tmp_path / "local.csv")
    assert [r[0] for r in got] == [r[0] for r in want]
    poison = [r for r in got if r[0] == "006-kills-its-decoder.jpg"]
    assert poison == [["006-kills-its-decoder.jpg", "", "", "", "", WORKER_DIED]]
    assert [r for r in got[1:] if r[-1]] == poison
    for name, rows in (("ray-rest.csv", got), ("local-rest.csv", want)):
        with (tmp_path / name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(r for r in rows if r != poison[0] and r[0] != poison[0][0])
    assert_same_rows(tmp_path / "ray-rest.csv", tmp_path / "local-rest.csv")
    assert "a Ray worker died while decoding 006-kills-its-decoder.jpg alone, 2 times" in proc.stderr
    assert not (tmp_path / "ray.csv.partial").exists()


def test_workers_that_die_opening_the_model_stop_the_run(tmp_path: Path, onnx_model: Path, ray_instance: str) -> None:
    folder = images(tmp_path / "imgs", 6)
    proc = run_faulty(ray_instance, folder, tmp_path / "ray.csv", onnx_model, env={"GCV_TEST_DIE_OPENING": "1"},
                      batch_size=2)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert re.search(r"ERROR the Ray workers died \d+ times in a row without classifying a block", proc.stderr)
    assert "--resume" in proc.stderr
    assert not (tmp_path / "ray.csv").exists()


def test_the_driver_holds_a_bounded_window_of_files(tmp_path: Path, onnx_model: Path, ray_instance: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are read from the source only a window ahead of the rows saved, whatever the number of files."""
    folder = images(tmp_path / "imgs", 40)
    classify_folder(config(folder, tmp_path / "local.csv", onnx_model))
    monkeypatch.setattr(ray_engine, "BATCHES_PER_BLOCK", 1)
    listed = [0]
    ahead: list[int] = []
    items = ClassifyRun.items

    def counted(run: ClassifyRun) -> Iterator[object]:
        for item in items(run):
            listed[0] += 1
            yield item

    monkeypatch.setattr(ClassifyRun, "items", counted)
    summary = classify_ray(config(folder, tmp_path / "ray.csv", onnx_model, batch_size=2), RayOptions(num_workers=2),
                           on_batch=lambda saved: ahead.append(listed[0] - saved))
    window = ray_engine.window_files(workers=2, rows_per_block=2)
    assert window == 12  # 3 blocks per worker x 2 files
    assert summary.files == 40 and ahead and max(ahead) <= window
    assert_same_rows(tmp_path / "ray.csv", tmp_path / "local.csv")


def test_a_healthy_run_prints_no_ray_warnings(tmp_path: Path, onnx_model: Path) -> None:
    """A new local Ray instance (no --address): stderr has the run's own lines, not Ray's auth warning or E lines."""
    folder = images(tmp_path / "imgs", 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    gcv = Path(sys.executable).with_name("gcv-classify")
    proc = subprocess.run([str(gcv), str(folder), "--out", str(tmp_path / "o.csv"), "--model", str(onnx_model),
                           "--engine", "ray", "--num-workers", "1"], capture_output=True, text=True, timeout=HUNG,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(read_csv(tmp_path / "o.csv")) == 4
    assert "Token authentication" not in proc.stderr
    assert not re.search(r"^\[[^\]]* E \d+ \d+\]", proc.stderr, re.MULTILINE), proc.stderr  # Ray's C++ error lines
    assert "3 image files: 3 classified, 0 errors" in proc.stderr


def test_an_unreachable_cluster_releases_the_run_lock(tmp_path: Path, onnx_model: Path, make_lamoda,
                                                      monkeypatch) -> None:
    from garmentcv.infer.classify import LOCK_FILE, ClassifyConfig
    from garmentcv.infer.engines.ray import RayEngineError

    def unreachable(self):
        raise RayEngineError("cannot connect to the Ray cluster at 127.0.0.1:1")

    monkeypatch.setattr(ray_engine._Engine, "start", unreachable)
    folder = make_lamoda(per_class=1)
    out = tmp_path / "rows.csv"
    cfg = ClassifyConfig(folder=folder, out=out, model=onnx_model, progress=False)
    with pytest.raises(RayEngineError, match="cannot connect"):
        classify_ray(cfg, RayOptions(address="127.0.0.1:1"))
    assert not (out.parent / f"{out.name}.partial" / LOCK_FILE).exists()
    assert not out.exists()


def test_workers_read_objects_with_the_run_s_retry_and_fetch_threads(onnx_model: Path, monkeypatch) -> None:
    from garmentcv.infer.engines import ray as ray_engine
    from garmentcv.infer.sources import ReadRetry

    seen: dict[str, object] = {}

    def fake_predict_batches(model, items, batch_size, workers, temperature, **kwargs):
        seen.update(kwargs)
        return iter(())

    retry = ReadRetry(attempts=2, backoff_s=0.01, max_backoff_s=0.01)
    worker = ray_engine.ClassifyWorker(onnx_model.read_bytes(), 1, 1.0, retry, 3)
    monkeypatch.setattr(ray_engine, "predict_batches", fake_predict_batches)
    worker.classify([])
    assert seen == {"fetch_threads": 3, "read_retry": retry}


def test_workers_open_the_model_from_memory_and_write_no_copy(onnx_model: Path, monkeypatch, tmp_path: Path) -> None:
    """A worker killed while it starts leaves nothing behind, and a node whose temp folder is unusable still runs."""
    import tempfile

    from garmentcv.infer.engines import ray as ray_engine

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    worker = ray_engine.ClassifyWorker(onnx_model.read_bytes(), 1, 1.0, name=str(onnx_model))
    assert worker.model.path == onnx_model and worker.model.info.classes == ("bluzy", "bryuki")
    assert not (tmp_path / "missing").exists()
