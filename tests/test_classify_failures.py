"""gcv-classify when inputs, storage or installs go wrong: bounded resume batches, stale rows, kept partial results,
provider fallback and install conflicts, thread split, kaggle errors, unwritable --out, missing model, non-UTF-8 file
names in jsonl."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import garmentcv.cpus
import garmentcv.infer.pipeline
import garmentcv.infer.runtimes.onnxruntime
from garmentcv.errors import ModelFileError, OutputPathError, PathNotFoundError
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.cli import classify_main
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.pipeline import predict_batches, split_cpus
from garmentcv.infer.rows import OutputFormat
from garmentcv.infer.runtimes.onnxruntime import ProviderError, open_model

from .conftest import write_image
from .test_classify import Interrupt, expected_probs, make_folder, run

CUDA_AND_CPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def stop_after(rows: int):
    def hook(saved: int) -> None:
        if saved >= rows:
            raise Interrupt()
    return hook


def config(folder: Path, out: Path, model: Path, **kw: object) -> ClassifyConfig:
    return ClassifyConfig(folder=folder, out=out, model=model, provider="cpu", batch_size=2, progress=False, **kw)  # type: ignore[arg-type]


# 1. reused rows flow through in batches of at most batch_size -------------------------------------------------

def test_pass_through_items_are_yielded_in_bounded_batches(onnx_model: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "one.jpg", seed=3)
    consumed = 0

    def items():
        nonlocal consumed
        for i in range(1000):
            consumed += 1
            yield None, i
        consumed += 1
        yield image, "new"
        for i in range(1000, 1010):
            consumed += 1
            yield None, i

    model = open_model(onnx_model, "cpu", threads=1)
    batches = predict_batches(model, items(), batch_size=4, workers=1, prefetch=2)
    first = next(batches)
    assert consumed <= 4 * 3  # pass-throughs count toward a batch: no read-ahead of the whole stream
    everything = [first, *batches]
    assert max(len(b) for b in everything) == 4 and sum(map(len, everything)) == 1011
    predictions = [p for b in everything for p in b]
    assert [p.item for p in predictions] == [*range(1000), "new", *range(1000, 1010)]
    assert all(p.passed and p.probs is None for p in predictions if p.item != "new")
    (new,) = [p for p in predictions if p.item == "new"]
    assert not new.passed and new.error is None
    np.testing.assert_allclose(new.probs, expected_probs(onnx_model, image), rtol=0, atol=1e-6)


# 2. a replaced file gets a new row on --resume -------------------------------------------------------------------

def test_resume_recomputes_files_replaced_since_the_interrupted_run(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):  # rows saved: 0001.jpg, a/x.JPG, a/z/deep.png, a-b.jpg
        classify_folder(config(folder, out, onnx_model), on_batch=stop_after(4))
    lines = (tmp_path / "out.csv.partial" / "run-000.jsonl").read_text().splitlines()[1:]
    old = {r["path"]: r for r in map(json.loads, lines)}
    assert old["0001.jpg"]["size"] == (folder / "0001.jpg").stat().st_size
    assert old["0001.jpg"]["mtime_ns"] == (folder / "0001.jpg").stat().st_mtime_ns
    write_image(folder / "0001.jpg", seed=77, size=(60, 50))  # another image under the same name
    touched = folder / "a" / "x.JPG"  # same bytes, newer modification time
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    summary = classify_folder(config(folder, out, onnx_model, resume=True))
    assert summary.reused == 2 and summary.files == 9
    run(folder, tmp_path / "fresh.csv", onnx_model)
    assert out.read_bytes() == (tmp_path / "fresh.csv").read_bytes()
    row = next(r for r in csv.reader(out.open(newline="")) if r[0] == "0001.jpg")
    probs = expected_probs(onnx_model, folder / "0001.jpg")
    assert row[3:5] == [f"{p:.6f}" for p in probs]
    assert [f"{p:.6f}" for p in old["0001.jpg"]["probs"]] != row[3:5]


# 3. a run without --resume keeps the earlier partial rows until it completes ---------------------------------------

def test_run_without_resume_keeps_earlier_partial_rows_until_it_completes(
        tmp_path: Path, onnx_model: Path, onnx_model_factory, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.csv"
    partial = tmp_path / "out.csv.partial"
    run(folder, tmp_path / "full.csv", onnx_model)
    with pytest.raises(KeyboardInterrupt):
        classify_folder(config(folder, out, onnx_model), on_batch=stop_after(4))
    first = (partial / "run-000.jsonl").read_bytes()
    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt):  # forgot --resume, interrupted again
        classify_folder(config(folder, out, onnx_model), on_batch=stop_after(2))
    assert f"{partial} holds partial results of an earlier run; they are kept until this run completes" in caplog.text
    caplog.clear()
    assert sorted(p.name for p in partial.iterdir()) == ["run-000.jsonl", "run-001.jsonl"]
    assert (partial / "run-000.jsonl").read_bytes() == first
    # a run with another model, interrupted: its segment sits beside the others, which stay usable
    other = onnx_model_factory(classes=("a", "b", "c"))
    with pytest.raises(KeyboardInterrupt):
        classify_folder(config(folder, out, other), on_batch=stop_after(2))
    assert len(list(partial.iterdir())) == 3
    with caplog.at_level("WARNING"):
        summary = classify_folder(config(folder, out, onnx_model, resume=True))
    assert summary.reused == 4 and summary.files == 9
    assert "ignoring 1 partial segment of a run with another model" in caplog.text
    assert out.read_bytes() == (tmp_path / "full.csv").read_bytes()
    assert not partial.exists()  # discarded only now that a run has completed


# 4 and 12. providers -----------------------------------------------------------------------------------------------

def test_cuda_session_failure_under_auto_falls_back_to_cpu(onnx_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    real = ort.InferenceSession

    def cuda_fails(path: str, sess_options=None, providers=None):  # noqa: ANN001
        if "CUDAExecutionProvider" in (providers or []):
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(garmentcv.infer.runtimes.onnxruntime.ort, "get_available_providers", lambda: CUDA_AND_CPU)
    monkeypatch.setattr(garmentcv.infer.runtimes.onnxruntime.ort, "InferenceSession", cuda_fails)
    with caplog.at_level("INFO"):
        assert open_model(onnx_model, "auto").provider == "cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "CUDA is not usable, classifying on the CPU" in warnings[0]
    assert "no CUDA-capable device is detected" in warnings[0]
    with pytest.raises(ProviderError, match="no CUDA-capable device is detected") as raised:
        open_model(onnx_model, "cuda")
    assert not isinstance(raised.value, ModelFileError)
    (tmp_path / "junk.onnx").write_bytes(b"junk")  # a real model problem stays a model problem
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        open_model(tmp_path / "junk.onnx", "auto")


def _installed(monkeypatch: pytest.MonkeyPatch, versions: dict[str, str]) -> None:
    def version(name: str) -> str:
        if name in versions:
            return versions[name]
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"


def test_both_runtimes_installed_is_named_with_its_fix(onnx_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(
        garmentcv.infer.runtimes.onnxruntime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"]
    )
    _installed(monkeypatch, {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.1"})
    with pytest.raises(ProviderError) as raised:
        open_model(onnx_model, "cuda")
    assert "both onnxruntime 1.22.0 and onnxruntime-gpu 1.22.1 are installed" in str(raised.value)
    assert FIX in str(raised.value)
    with caplog.at_level("WARNING"):
        assert open_model(onnx_model, "auto").provider == "cpu"
    assert "both onnxruntime 1.22.0 and onnxruntime-gpu 1.22.1 are installed" in caplog.text and FIX in caplog.text
    # only the CPU runtime: no conflict to report; auto uses the CPU quietly, cuda says what to install
    caplog.clear()
    _installed(monkeypatch, {"onnxruntime": "1.22.0"})
    with caplog.at_level("WARNING"):
        assert open_model(onnx_model, "auto").provider == "cpu"
    assert caplog.records == []
    with pytest.raises(ProviderError, match="install onnxruntime-gpu instead of onnxruntime") as raised:
        open_model(onnx_model, "cuda")
    assert "pip uninstall" not in str(raised.value)


# 5. threads --------------------------------------------------------------------------------------------------------

def test_split_cpus_rule() -> None:
    """Each pool defaults to every available CPU (measured fastest, benchmarks/threads.py); given values are kept."""
    assert split_cpus(None, None, cpus=8) == (8, 8)
    assert split_cpus(None, None, cpus=2) == (2, 2)
    assert split_cpus(None, None, cpus=1) == (1, 1)
    assert split_cpus(3, None, cpus=8) == (3, 8)
    assert split_cpus(None, 5, cpus=8) == (8, 5)
    assert split_cpus(4, 4, cpus=2) == (4, 4)


class PoolSpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        spy = self

        class Pool(ThreadPoolExecutor):
            def __init__(self, max_workers: int | None = None, **kw: object) -> None:
                spy.sizes.append(max_workers)  # type: ignore[arg-type]
                super().__init__(max_workers=max_workers, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(garmentcv.infer.pipeline, "ThreadPoolExecutor", Pool)


def test_thread_defaults_follow_available_cpus_and_workers_reach_the_pool(
        tmp_path: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "imgs"
    for i in range(3):
        write_image(folder / f"{i}.jpg", seed=i)
    monkeypatch.setattr(garmentcv.cpus, "available_cpus", lambda *a: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # never the machine's core count
    pools = PoolSpy(monkeypatch)
    sessions: list[int] = []
    real_options = garmentcv.infer.runtimes.onnxruntime._session_options
    monkeypatch.setattr(garmentcv.infer.runtimes.onnxruntime, "_session_options",
                        lambda threads: sessions.append(threads) or real_options(threads))
    summary = run(folder, tmp_path / "a.csv", onnx_model)
    assert (summary.threads, summary.workers) == (8, 8)
    assert pools.sizes == [8] and sessions == [8]
    assert open_model(onnx_model, "cpu").session.get_session_options().intra_op_num_threads == 8
    pools.sizes.clear()
    sessions.clear()
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "b.csv"), "--model",
                                                str(onnx_model), "--device", "cpu", "--decode-threads", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert pools.sizes == [3] and sessions == [8]
    help_text = CliRunner().invoke(classify_main, ["--help"]).output
    assert "--decode-threads" in help_text and "the CPUs this process may use" in help_text


# 6. kaggle submissions with blank labels ---------------------------------------------------------------------------

def test_kaggle_with_unreadable_files_exits_1_unless_allowed(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    args = [str(folder), "--model", str(onnx_model), "--device", "cpu", "--format", "kaggle", "--no-recursive", "-q"]
    runner = CliRunner()
    result = runner.invoke(classify_main, [*args, "--out", str(tmp_path / "k.csv")])
    assert result.exit_code == 1
    assert ("Error: 2 images could not be decoded and have an empty label in the kaggle file "
            f"{tmp_path / 'k.csv'}: corrupt.jpg, trunc.jpg") in result.stderr
    assert "--on-error continue" in result.stderr
    rows = list(csv.reader((tmp_path / "k.csv").open(newline="")))
    assert ["corrupt", ""] in rows and ["trunc", ""] in rows and len(rows) == 8  # still written
    result = runner.invoke(classify_main, [*args, "--out", str(tmp_path / "k2.csv"), "--on-error", "continue"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "k2.csv").read_bytes() == (tmp_path / "k.csv").read_bytes()
    result = runner.invoke(classify_main, [*args[:-4], "--no-recursive", "-q", "--out", str(tmp_path / "c.csv")])
    assert result.exit_code == 0, result.output  # csv keeps its error column and exits 0


def test_summary_says_one_error_not_one_errors(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg", seed=1)
    (folder / "b.jpg").write_bytes(b"broken")
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "o.csv"), "--model",
                                                str(onnx_model), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "2 image files: 1 classified, 1 error; skipped none" in result.stderr


# 7. an --out that cannot be written fails before any work ----------------------------------------------------------

def test_unwritable_out_fails_before_the_model_is_opened(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg", seed=1)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "junk.onnx").write_bytes(b"junk")  # opening it would fail: the --out check must come first
    out = tmp_path / "file.txt" / "out.csv"
    with pytest.raises(OutputPathError, match="is not a folder but a file"):
        classify_folder(config(folder, out, tmp_path / "junk.onnx"))
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(out), "--model", str(tmp_path / "junk.onnx")])
    assert result.exit_code == 1
    assert f"Error: --out {out}: {tmp_path / 'file.txt'} is not a folder but a file" in result.stderr
    assert "ONNX" not in result.stderr and "Traceback" not in result.stderr


# 8. a model file that does not exist is wrong usage ----------------------------------------------------------------

def test_missing_model_is_exit_2_with_the_export_hint(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg", seed=1)
    missing = tmp_path / "none.onnx"
    with pytest.raises(PathNotFoundError, match="model file not found; export one with 'gcv export"):
        open_model(missing, "cpu")
    with pytest.raises(PathNotFoundError, match="model file not found"):
        read_model_info(missing)
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "o.csv"), "--model", str(missing)])
    assert result.exit_code == 2
    assert f"Error: {missing}: model file not found; export one with 'gcv export CHECKPOINT" in result.stderr
    assert not (tmp_path / "o.csv").exists()
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ModelFileError, match="is a folder"):
        open_model(tmp_path / "dir.onnx", "cpu")


def test_jsonl_rows_of_non_utf8_file_names_are_valid_json(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / os.fsdecode(b"caf\xe9.jpg"), seed=1)
    out = tmp_path / "rows.jsonl"
    classify_folder(ClassifyConfig(folder=folder, out=out, model=onnx_model, provider="cpu",
                                   format=OutputFormat.JSONL, progress=False))
    line = out.read_bytes().splitlines()[0]
    row = json.loads(line)  # the raw byte 0xE9 made this line invalid UTF-8 and invalid JSON
    assert os.fsencode(row["path"]) == b"caf\xe9.jpg"
