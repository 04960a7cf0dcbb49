"""gcv-classify runs and their partial results: one run per --out, a file that kills the process, failing and
interrupted runs, empty sources, the list of skipped files, the order of an option error."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import garmentcv.infer.runtimes
from garmentcv.errors import GarmentCVError, ModelFileError
from garmentcv.infer.classify import (
    ClassifyConfig,
    ClassifyRun,
    classify_folder,
    open_checked_source,
)
from garmentcv.infer.cli import classify_main
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.partial import PartialResults
from garmentcv.infer.pipeline import Prediction

from .conftest import write_image
from .test_classify import Interrupt, make_folder, run

REPO = Path(__file__).resolve().parents[1]


def config(folder: Path | str, out: Path, model: Path, **kw: object) -> ClassifyConfig:
    return ClassifyConfig(folder=folder, out=out, model=model, provider="cpu", batch_size=2, progress=False, **kw)  # type: ignore[arg-type]


def python_env(hook: Path | None = None) -> dict[str, str]:
    """The environment of a child Python: this checkout first on the path, and ``hook`` (a sitecustomize folder)."""
    paths = [str(hook)] if hook else []
    paths += [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def gcv_classify(args: list[str], hook: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``gcv-classify ARGS`` in a child process (its real stderr order, its own exit)."""
    code = "import sys; from garmentcv.infer.cli import classify_main; sys.exit(classify_main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=python_env(hook), check=False)


def decoder_hook(folder: Path, body: str) -> Path:
    """A sitecustomize module in ``folder`` that wraps Pillow's ``Image.open`` in every Python started with it on
    the path (child processes included): ``body`` runs first with ``name``, the file being opened."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, time
        from PIL import Image
        _open = Image.open
        def _hooked(fp, *args, **kwargs):
            name = str(getattr(fp, "name", fp))
        {body}
            return _open(fp, *args, **kwargs)
        Image.open = _hooked
    """).replace("{body}", textwrap.indent(textwrap.dedent(body), "    ")))
    return folder


def rows_of(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(newline="", encoding="utf-8")))


# one run per --out ----------------------------------------------------------------------------------------------

def test_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.csv"
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from garmentcv.infer.classify import ClassifyConfig, classify_folder
        cfg = ClassifyConfig(folder=Path({str(folder)!r}), out=Path({str(out)!r}), model=Path({str(onnx_model)!r}),
                             provider="cpu", batch_size=2, progress=False)
        def hold(saved):
            Path({str(ready)!r}).touch()
            deadline = time.time() + 60
            while not Path({str(go)!r}).exists() and time.time() < deadline:
                time.sleep(0.05)
        classify_folder(cfg, on_batch=hold)
    """)
    first = subprocess.Popen([sys.executable, "-c", script], env=python_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), first.stderr.read() if first.poll() is not None else "the first run never saved a row"
        before = sorted(p.name for p in (tmp_path / "out.csv.partial").iterdir())
        result = CliRunner().invoke(classify_main, [str(folder), "--out", str(out), "--model", str(onnx_model),
                                                    "--device", "cpu", "-q"])
        assert result.exit_code == 1, result.output
        assert f"Error: {out} is being written by another run (pid {first.pid} on {socket.gethostname()}, started " \
            in result.stderr
        assert "wait until it ends, or give another --out" in result.stderr
        assert sorted(p.name for p in (tmp_path / "out.csv.partial").iterdir()) == before  # nothing of its own
        go.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        go.touch()
        first.wait(timeout=120)
    run(folder, tmp_path / "full.csv", onnx_model)
    assert out.read_bytes() == (tmp_path / "full.csv").read_bytes()
    assert not (tmp_path / "out.csv.partial").exists()
    summary = run(folder, out, onnx_model)  # the lock went with the first run
    assert summary.files == 9


def test_a_lock_held_elsewhere_is_refused_by_the_library_and_both_engines_share_it(
        tmp_path: Path, onnx_model: Path) -> None:
    from garmentcv.fsutil import try_lock

    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.csv"
    (tmp_path / "out.csv.partial").mkdir()
    held = try_lock(tmp_path / "out.csv.partial" / "lock", {"pid": 4242, "host": "elsewhere", "started": "noon"})
    assert held is not None
    cfg = config(folder, out, onnx_model)
    with pytest.raises(GarmentCVError, match=r"is being written by another run \(pid 4242 on elsewhere, started "
                                             r"noon\)"):
        classify_folder(cfg)
    with pytest.raises(GarmentCVError, match="pid 4242"):  # the Ray engine's way in: ClassifyRun itself
        ClassifyRun(cfg, open_checked_source(cfg), read_model_info(onnx_model))
    held.release()
    assert classify_folder(cfg).files == 9


def test_lock_file_is_exclusive_and_released_with_its_owner(tmp_path: Path) -> None:
    import gc

    from garmentcv.fsutil import lock_owner, try_lock

    path = tmp_path / "lock"
    first = try_lock(path, {"pid": 1})
    assert first is not None and first.held and lock_owner(path) == {"pid": 1}
    assert try_lock(path, {"pid": 2}) is None  # another open of the file: refused, its details untouched
    assert lock_owner(path) == {"pid": 1}
    first.release()
    assert not path.exists() and not first.held
    first.release()  # idempotent
    second = try_lock(path, {"pid": 3})
    assert second is not None
    del second  # dropped without release (an engine that failed): the lock goes with it, the file stays
    gc.collect()
    third = try_lock(path, {"pid": 4})
    assert third is not None and lock_owner(path) == {"pid": 4}
    third.release()


def test_finishing_run_removes_only_what_it_wrote_or_merged(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.csv"
    partial = tmp_path / "out.csv.partial"
    with pytest.raises(KeyboardInterrupt):  # an earlier run's segment: merged by the resume below
        classify_folder(config(folder, out, onnx_model), on_batch=lambda saved: (_ for _ in ()).throw(Interrupt()))
    assert sorted(p.name for p in partial.iterdir()) == ["run-000.jsonl"]
    foreign = partial / "run-005.jsonl"

    def write_foreign(saved: int) -> None:  # a segment that appears while the run goes: not this run's
        if not foreign.exists():
            foreign.write_text('{"format": "garmentcv-classify-partial", "folder": "elsewhere"}\n')

    summary = classify_folder(config(folder, out, onnx_model, resume=True), on_batch=write_foreign)
    assert summary.reused == 2 and summary.files == 9
    assert sorted(p.name for p in partial.iterdir()) == ["run-005.jsonl"]
    assert foreign.read_text() == '{"format": "garmentcv-classify-partial", "folder": "elsewhere"}\n'


def test_segments_are_created_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    partial = PartialResults(tmp_path / "out.csv", {"format": "x"})
    partial.dir.mkdir()
    (partial.dir / "run-000.jsonl").write_text("another process's segment\n")
    monkeypatch.setattr(PartialResults, "segments", lambda self: [])  # listed before the other process created its file
    path, handle = partial.new_segment()
    handle.close()
    assert path.name == "run-001.jsonl"
    assert (partial.dir / "run-000.jsonl").read_text() == "another process's segment\n"


# a file that kills the process ----------------------------------------------------------------------------------

def test_resume_after_a_file_kills_the_process_gives_it_an_error_row(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    run(folder, tmp_path / "full.csv", onnx_model)
    hook = decoder_hook(tmp_path / "hook", """
        if name.endswith("b.PNG"):
            os._exit(3)
    """)
    out = tmp_path / "out.csv"
    args = [str(folder), "--out", str(out), "--model", str(onnx_model), "--device", "cpu", "--batch-size", "2",
            "--decode-threads", "1", "-q"]
    died = gcv_classify(args, hook)
    assert died.returncode == 3, died.stderr
    assert not out.exists()
    record = json.loads((tmp_path / "out.csv.partial" / "in-flight.json").read_text())
    assert "b.PNG" in record["paths"]
    resumed = gcv_classify([*args, "--resume"], hook)
    assert resumed.returncode == 0, resumed.stderr
    assert "b.PNG: the process decoding it died; it gets an error row" in resumed.stderr
    assert "9 image files: 6 classified, 3 errors" in resumed.stderr  # with corrupt.jpg and trunc.jpg
    got, want = rows_of(out), rows_of(tmp_path / "full.csv")
    (dead,) = [r for r in got if r[-1] == "worker died while decoding"]
    assert dead == ["b.PNG", "", "", "", "", "worker died while decoding"]
    assert [r for r in got if r[0] != "b.PNG"] == [r for r in want if r[0] != "b.PNG"]
    assert not (tmp_path / "out.csv.partial").exists()
    again = gcv_classify([*args[:2], str(tmp_path / "o2.csv"), *args[3:], "--resume"], hook)  # no record: dies again
    assert again.returncode == 3


# failing and interrupted runs -------------------------------------------------------------------------------------

def test_failing_run_leaves_no_segment_lock_or_record_of_its_own(tmp_path: Path, onnx_model: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.csv"
    partial = tmp_path / "out.csv.partial"
    with pytest.raises(KeyboardInterrupt):
        classify_folder(config(folder, out, onnx_model), on_batch=lambda saved: (_ for _ in ()).throw(Interrupt()))
    earlier = (partial / "run-000.jsonl").read_bytes()
    cfg = config(folder, out, onnx_model, resume=True)
    run_ = ClassifyRun(cfg, open_checked_source(cfg), read_model_info(onnx_model))

    def failing() -> Iterator[list[Prediction]]:  # the source fails before the first row (a bad listing)
        raise GarmentCVError("cannot list the objects")
        yield []

    with pytest.raises(GarmentCVError, match="cannot list"):
        run_.save(failing())
    assert sorted(p.name for p in partial.iterdir()) == ["run-000.jsonl"]
    assert (partial / "run-000.jsonl").read_bytes() == earlier
    # the local engine, failing after the first batch was recorded and handed to the decoders: the model fails to
    # open in the background (as a runtime that cannot compile the file does) and says so at the first batch
    def cannot_open(plan: object, threads: object = None) -> None:
        raise ModelFileError("cannot open this file")

    monkeypatch.setattr(garmentcv.infer.runtimes, "open_planned", cannot_open)
    with pytest.raises(ModelFileError, match="cannot open"):
        classify_folder(config(folder, tmp_path / "m-out.csv", onnx_model))
    assert not (tmp_path / "m-out.csv.partial").exists()


def test_ctrl_c_names_resume_and_keeps_the_rows(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    hook = decoder_hook(tmp_path / "hook", """
        if "/imgs/" in name:
            time.sleep(0.3)
    """)
    out = tmp_path / "out.csv"
    code = "import sys; from garmentcv.infer.cli import classify_main; sys.exit(classify_main())"
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), "--out", str(out), "--model", str(onnx_model),
                             "--device", "cpu", "--batch-size", "1", "--decode-threads", "1", "-q"],
                            env=python_env(hook), stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a test run started as a background job ignores SIGINT, and a child
                            # that inherits that ignores Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    segment = tmp_path / "out.csv.partial" / "run-000.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (segment.exists() and len(segment.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    saved = len(segment.read_text().splitlines()) - 1
    assert 2 <= saved < 9
    assert stderr.strip().splitlines()[-1] == (
        f"Interrupted: {saved} rows are saved in {tmp_path / 'out.csv.partial'}; run the same command with --resume "
        "to continue")


# an option error comes before the model opens ------------------------------------------------------------------------

def test_topk_above_the_classes_is_the_only_message(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg", seed=1)
    result = gcv_classify([str(folder), "--out", str(tmp_path / "o.csv"), "--model", str(onnx_model),
                           "--device", "cpu", "--topk", "3"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"Error: --topk 3: the model {onnx_model} has only 2 classes; give at most 2"]
    assert not (tmp_path / "o.csv.partial").exists()


# empty sources -------------------------------------------------------------------------------------------------------

def test_a_source_without_images_is_an_error_unless_allowed(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "o.csv"
    args = [str(folder), "--model", str(onnx_model), "--device", "cpu", "-q"]
    result = CliRunner().invoke(classify_main, [*args, "--out", str(out), "--list-skipped", str(tmp_path / "s.csv")])
    assert result.exit_code == 1
    assert (f"Error: {folder}: no image files found (skipped 1 not an image); nothing written to {out}. Check "
            "SOURCE and --recursive, or pass --allow-empty to accept a results file without rows") in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]  # no results, partial folder or list
    with pytest.raises(GarmentCVError, match="no image files found"):
        classify_folder(config(folder, out, onnx_model))
    result = CliRunner().invoke(classify_main, [*args, "--out", str(out), "--allow-empty"])
    assert result.exit_code == 0, result.output
    assert f"WARNING garmentcv.infer.classify: {folder}: no image files found; {out} has no rows" in result.stderr
    assert out.read_text() == "path,label,confidence,prob_bluzy,prob_bryuki,error\n"


# the list of skipped files ---------------------------------------------------------------------------------------

def test_list_skipped_names_every_skipped_file(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    (folder / "a" / "no_extension").write_bytes((folder / "0001.jpg").read_bytes())
    listing = tmp_path / "lists" / "skipped.csv"
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "o.csv"), "--model",
                                                str(onnx_model), "--device", "cpu", "--list-skipped", str(listing),
                                                "-q"])
    assert result.exit_code == 0, result.output
    assert rows_of(listing) == [
        ["path", "reason"],
        [".cache", "hidden"],
        [".hidden.jpg", "hidden"],
        ["a/loop", "symlinked folder (not followed)"],
        ["a/no_extension", "not an image"],
        ["a/readme.md", "not an image"],
        ["notes.txt", "not an image"],
    ]
    assert f"(listed in {listing})" in result.stderr
    assert not [p for p in listing.parent.iterdir() if p.name != "skipped.csv"]  # no temporary file left
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "o2.csv"), "--model",
                                                str(onnx_model), "--device", "cpu", "-q"])
    assert "(--list-skipped FILE names them)" in result.stderr
