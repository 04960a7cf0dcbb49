"""What gcv classify writes cannot destroy its inputs, storage failures are the user's to fix (not bugs), and a
training checkpoint given as --model is named as one."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from garmentcv.cli_utils import handle_errors
from garmentcv.infer.cli import classify_main
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.partial import PartialResults
from garmentcv.infer.rows import OutputFormat

from .conftest import write_image
from .test_classify import make_folder, run
from .test_classify_runs import python_env

# storage failures ------------------------------------------------------------------------------------------------


def _failing(exc: BaseException) -> click.Command:
    @click.command()
    @handle_errors
    def cmd() -> None:
        """A command whose storage fails."""
        raise exc

    return cmd


@pytest.mark.parametrize(("code", "advice"), [
    (errno.ENOSPC, "free some space (or raise the quota) where it is written, or write elsewhere, and run again"),
    (errno.EDQUOT, "free some space (or raise the quota) where it is written, or write elsewhere, and run again"),
    (errno.EFBIG, ("the file is over the size limit of its file system or of this process (ulimit -f); write it "
                   "elsewhere or raise the limit, and run again")),
    (errno.EROFS, "the file system is read-only; choose a writable place and run again"),
    (errno.EACCES, "check the permissions of that file and of its folder, or choose another place, and run again"),
    (errno.EIO, "the disk or network storage failed to read or write it; check that storage and run again"),
])
def test_storage_errors_exit_1_naming_the_path_and_what_to_do(code: int, advice: str) -> None:
    exc = OSError(code, os.strerror(code), "/data/runs/last.pt")
    result = CliRunner().invoke(_failing(exc))
    assert result.exit_code == 1
    assert result.output == f"Error: /data/runs/last.pt: {os.strerror(code)}; {advice}\n"


def test_other_os_errors_are_still_bugs() -> None:
    result = CliRunner().invoke(_failing(OSError(errno.EBADF, "Bad file descriptor")))
    assert result.exit_code == 70 and "Internal error (a bug in garmentcv)" in result.output


class _FullDisk:
    """A segment file handle whose disk fills up after ``rows`` row lines."""

    def __init__(self, handle: Any, rows: int) -> None:
        self.handle, self.left = handle, rows + 1  # the header line first

    def write(self, text: str) -> int:
        lines = text.count("\n")
        if lines > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= lines
        return self.handle.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def test_full_disk_mid_run_says_rows_saved_and_resume(tmp_path: Path, onnx_model: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.csv"
    new_segment = PartialResults.new_segment

    def filling(self: PartialResults) -> tuple[Path, Any]:
        path, handle = new_segment(self)
        return path, _FullDisk(handle, rows=4)

    monkeypatch.setattr(PartialResults, "new_segment", filling)
    args = [str(folder), "--out", str(out), "--model", str(onnx_model), "--device", "cpu", "--batch-size", "2", "-q"]
    result = CliRunner().invoke(classify_main, args)
    assert result.exit_code == 1, result.output
    segment = tmp_path / "out.csv.partial" / "run-000.jsonl"
    assert result.stderr.splitlines()[-1] == (
        f"Error: {segment}: No space left on device; free some space (or raise the quota) where it is written, or "
        f"write elsewhere, and run again; 4 rows are saved in {tmp_path / 'out.csv.partial'}: then run the same "
        "command with --resume to continue")
    assert "Internal error" not in result.stderr and not out.exists()
    assert len(segment.read_text().splitlines()) == 1 + 4
    monkeypatch.undo()
    result = CliRunner().invoke(classify_main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "(4 rows from the interrupted run)" in result.stderr
    run(folder, tmp_path / "full.csv", onnx_model)
    assert out.read_bytes() == (tmp_path / "full.csv").read_bytes()


def test_a_file_size_limit_of_the_process_is_a_storage_error(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    out = tmp_path / "out.jsonl"

    def limit() -> None:  # writes past 1 kB fail with EFBIG (a real write error of the kernel)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    code = "import sys; from garmentcv.infer.cli import classify_main; sys.exit(classify_main())"
    args = [str(folder), "--out", str(out), "--model", str(onnx_model), "--device", "cpu", "--batch-size", "1",
            "--format", "jsonl", "-q"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env=python_env(), preexec_fn=limit, check=False)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {tmp_path / 'out.jsonl.partial' / 'run-000.jsonl'}: File too large; ")
    assert "rows are saved in" in last and "--resume to continue" in last
    result = CliRunner().invoke(classify_main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    run(folder, tmp_path / "full.jsonl", onnx_model, format=OutputFormat.JSONL)
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes()


# outputs that would destroy or pollute the inputs ------------------------------------------------------------------

def _invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(classify_main, [str(a) for a in args] + ["--device", "cpu", "-q"])


def test_out_cannot_be_the_model_or_the_manifest(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg", seed=1)
    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_model.read_bytes())
    original = model.read_bytes()
    result = _invoke(folder, "--model", model, "--out", model)
    assert result.exit_code == 2
    assert f"Error: --out {model} is the model file --model; give the results another name" in result.stderr
    (tmp_path / "link.csv").symlink_to(model)
    result = _invoke(folder, "--model", model, "--out", tmp_path / "link.csv")
    assert result.exit_code == 2 and "is the model file --model" in result.stderr
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\nimgs/a.jpg\n")
    result = _invoke(manifest, "--model", model, "--out", tmp_path / "." / "list.csv")
    assert result.exit_code == 2
    assert f"is the manifest SOURCE {manifest}; give the results another name" in result.stderr
    result = _invoke(folder, "--model", model, "--out", tmp_path / "o.csv", "--list-skipped", model)
    assert result.exit_code == 2 and f"Error: --list-skipped {model} is the model file --model" in result.stderr
    assert model.read_bytes() == original and manifest.read_text() == "path\nimgs/a.jpg\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "link.csv", "list.csv", "m.onnx"]


def test_outputs_cannot_lie_inside_the_source_folder(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg", seed=1)
    (tmp_path / "via").symlink_to(folder)
    for option, path in [("--out", folder / "results.csv"), ("--out", tmp_path / "via" / "sub" / "results.csv"),
                         ("--report", folder / "page.html"), ("--list-skipped", folder / "skipped.csv")]:
        extra = ["--out", tmp_path / "o.csv"] if option != "--out" else []
        result = _invoke(folder, "--model", onnx_model, option, path, *extra)
        assert result.exit_code == 2, (option, path, result.output)
        assert f"Error: {option} {path} lies inside SOURCE {folder}; the next run would classify what is written " \
               "there: write it outside SOURCE" in result.stderr
    # the report's thumbnails folder: imgs_files beside imgs.html would be fine, but not the source itself
    shots = tmp_path / "page_files"
    write_image(shots / "b.jpg", seed=2)
    result = _invoke(shots, "--model", onnx_model, "--out", tmp_path / "o.csv", "--report", tmp_path / "page.html")
    assert result.exit_code == 2
    assert (f"Error: --report {tmp_path / 'page.html'}: its thumbnails folder {shots} is SOURCE or holds it; give the "
            "page another name") in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg"]
    assert sorted(p.name for p in shots.iterdir()) == ["b.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "page_files", "via"]


# a training checkpoint given as the model --------------------------------------------------------------------------

@pytest.mark.parametrize("zipped", [True, False])
def test_a_training_checkpoint_is_named_as_one(tmp_path: Path, zipped: bool) -> None:
    import torch

    checkpoint = tmp_path / "best.pt"
    torch.save({"arch": "resnet18", "model": {"w": torch.zeros(2)}}, checkpoint,
               _use_new_zipfile_serialization=zipped)
    hint = (f"{checkpoint}: a PyTorch training checkpoint (as gcv train writes), not an ONNX model; export it with "
            f"'gcv export {checkpoint} --out model.onnx' and pass that file to --model")
    from garmentcv.errors import ModelFileError

    with pytest.raises(ModelFileError) as caught:
        read_model_info(checkpoint)
    assert str(caught.value) == hint
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg", seed=1)
    result = _invoke(folder, "--model", checkpoint, "--out", tmp_path / "o.csv")
    assert result.exit_code == 1 and f"Error: {hint}" in result.stderr
    assert "not a readable ONNX model" not in result.stderr
