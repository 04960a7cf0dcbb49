"""gcv train when things go wrong: a run that learned nothing, a full disk, Ctrl-C, restarts, a finished run, a dead
rank's neighbours, Pillow's warnings under -q."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from garmentcv.errors import CheckpointError, OutputPathError, PathNotFoundError
from garmentcv.train import checkpoint, distributed, loop
from garmentcv.train.checkpoint import load_checkpoint, save_checkpoint
from garmentcv.train.cli import main as train_main
from garmentcv.train.config import TrainConfig
from garmentcv.train.health import AT_CHANCE, DIVERGED, epoch_warnings, run_warnings
from tests.conftest import write_image

REPO = Path(__file__).resolve().parents[1]
TINY = ["--weights", "none", "--image-size", "32", "--batch-size", "4"]
#: The same tiny run as TrainConfig settings, one epoch.
TINY_SETTINGS = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}
CLASSES = ("a", "b", "c")


def _entry(epoch: int, matrix: list[list[int]], val_loss: float = 1.0) -> dict:
    n = int(np.sum(matrix))
    return {"epoch": epoch, "confusion_matrix": matrix, "count": n, "val_loss": val_loss,
            "accuracy": float(np.trace(np.asarray(matrix))) / n}  # fmt: skip


# --- a run that learned nothing says so ------------------------------------------------------------------------------


def test_chance_and_divergence_rules() -> None:
    # 100 images, 60 of class a: guessing 'a' scores 0.6; margin max(0.05, sqrt(.6 * .4 / 100) = 0.049) = 0.05
    at_70 = _entry(3, [[60, 0, 0], [10, 10, 0], [20, 0, 0]])  # 70 of 100
    assert at_70["accuracy"] == 0.7 and epoch_warnings(at_70, CLASSES) == []
    at_64 = _entry(3, [[50, 10, 0], [6, 14, 0], [20, 0, 0]])  # 64 of 100, within 0.05 of 0.6
    (warning,) = epoch_warnings(at_64, CLASSES)
    assert (warning.code, warning.epoch, warning.value, warning.limit) == (AT_CHANCE, 3, 0.64, pytest.approx(0.65))
    assert "within 0.050 of 0.600, what answering 'a' for all 100 validation images scores" in warning.message
    # 5 images, 2 of the most common class: the margin is one standard error, sqrt(.4 * .6 / 5) = 0.219
    constant = [[0, 2, 0], [0, 2, 0], [0, 1, 0]]
    small = _entry(1, constant)
    (warning,) = epoch_warnings(small, CLASSES)
    assert (
        warning.limit == pytest.approx(0.4 + math.sqrt(0.24 / 5))
        and "it answers 'b' for every image" in warning.message
    )
    assert epoch_warnings(_entry(1, [[2, 0, 0], [0, 2, 0], [0, 0, 1]]), CLASSES) == []  # 5 of 5 is not chance
    # diverged: above 10 x ln 3 = 10.99, or not finite
    good = [[2, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert epoch_warnings(_entry(1, good, val_loss=10.9), CLASSES) == []
    (warning,) = epoch_warnings(_entry(2, good, val_loss=11.0), CLASSES)
    assert (warning.code, warning.limit) == (DIVERGED, pytest.approx(10 * math.log(3)))
    assert "validation loss 11 is above 11 (10 x ln 3" in warning.message and "lower --lr" in warning.message
    assert [w.code for w in epoch_warnings(_entry(2, good, val_loss=float("nan")), CLASSES)] == [DIVERGED]
    # a run: its best epoch on both checks, its last on divergence
    history = [_entry(1, good, 0.5), _entry(2, constant, float("inf"))]
    assert [(w.code, w.epoch) for w in run_warnings(history, 1, CLASSES)] == [(DIVERGED, 2)]
    assert [(w.code, w.epoch) for w in run_warnings(history, 2, CLASSES)] == [(DIVERGED, 2), (AT_CHANCE, 2)]


def _unlearnable(root: Path, per_class: int = 8) -> Path:
    """24 images of 3 classes in random colours: nothing to learn."""
    rng, number = np.random.default_rng(0), 0
    for label in CLASSES:
        for _ in range(per_class):
            number += 1
            write_image(
                root / f"{number:04d}_{label}.jpg",
                (24, 32),
                tuple(int(v) for v in rng.integers(0, 255, 3)),
                seed=number,
            )
    return root


def test_a_run_at_chance_that_diverged_says_so_in_its_summary_metrics_and_checkpoints(tmp_path: Path) -> None:
    data, out = _unlearnable(tmp_path / "data"), tmp_path / "run"
    result = CliRunner().invoke(train_main, [str(data), "--out", str(out), *TINY, "--epochs", "1", "--lr", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "WARNING garmentcv.train.loop: resnet18: epoch 1: validation loss" in result.stderr
    assert "training diverged" in result.stderr and "the model is at chance" in result.stderr
    assert "**Warning**: resnet18, epoch 1: validation loss" in result.stdout  # the summary
    metrics = json.loads((out / "resnet18" / "metrics.json").read_text())
    assert [(w["code"], w["epoch"]) for w in metrics["warnings"]] == [(DIVERGED, 1), (AT_CHANCE, 1)]
    for name in ("best.pt", "last.pt"):  # what gcv export reads
        assert load_checkpoint(out / "resnet18" / name)["metrics"]["warnings"] == metrics["warnings"]
    assert "**Warning**: resnet18, epoch 1: validation loss" in (out / "comparison.md").read_text()


# --- a full disk ----------------------------------------------------------------------------------------------------

STREAM_WRITER_FAILURE = ("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                         "data/3: file write failed")  # fmt: skip


def test_a_checkpoint_that_cannot_be_written_is_an_os_error_naming_it_and_the_old_one_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "best.pt"
    save_checkpoint(target, {"arch": "resnet18", "epoch": 1})
    before = target.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError(STREAM_WRITER_FAILURE)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(target, {"arch": "resnet18", "epoch": 2})
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(target))
    assert isinstance(info.value, OutputPathError)  # exit 1, not a bug
    message = str(info.value)
    assert message.startswith(f"{target}: cannot write") and "disk is full" in message and "--resume" in message
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]

    def over_quota(obj, f, *args, **kwargs):
        f.write(b"PK")
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(torch, "save", over_quota)
    with pytest.raises(OSError) as info:
        save_checkpoint(target, {"arch": "resnet18", "epoch": 2})
    assert (info.value.errno, info.value.filename) == (errno.EDQUOT, str(target))
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("something else")))
    with pytest.raises(RuntimeError, match="something else"):  # not every RuntimeError is a full disk
        save_checkpoint(target, {"arch": "resnet18"})


class _FullDisk(io.RawIOBase):
    """An unbuffered file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return len(data)


def test_checkpoints_are_written_through_a_file_that_reports_the_real_errno(tmp_path: Path, monkeypatch) -> None:
    """torch.save given a path turns a full disk into 'unexpected pos'; given an unbuffered file it raises the
    OSError."""
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        assert mode == "wb" and kwargs.get("buffering", args[0] if args else -1) == 0
        real_open(path, mode, *args, **kwargs).close()
        return _FullDisk(room=1000)

    monkeypatch.setattr(checkpoint, "open", full_disk, raising=False)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path / "last.pt", {"arch": "resnet18", "state_dict": {"w": torch.zeros(100_000)}})
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(tmp_path / "last.pt"))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_training_exits_1_naming_the_file(make_lamoda, tmp_path: Path, monkeypatch) -> None:
    data, out = make_lamoda(per_class=4), tmp_path / "run"
    real = torch.save
    calls = {"n": 0}

    def full_on_the_third(obj, f, *args, **kwargs):  # epoch 1: best.pt, last.pt; epoch 2: best.pt or last.pt
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError(STREAM_WRITER_FAILURE)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_the_third)
    result = CliRunner().invoke(train_main, [str(data), "--out", str(out), *TINY, "--epochs", "2", "-q"])
    assert result.exit_code == 1, result.output
    assert f"Error: {out / 'resnet18'}" in result.stderr and "cannot write" in result.stderr
    assert "Internal error" not in result.output
    assert load_checkpoint(out / "resnet18" / "last.pt")["epoch"] == 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    monkeypatch.setattr(
        loop, "write_json", lambda path, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
    )
    result = CliRunner().invoke(train_main, [str(data), "--out", str(out), *TINY, "--epochs", "2", "--resume", "-q"])
    assert result.exit_code == 1, result.output
    assert f"Error: {out / 'config.json'}: cannot write (No space left on device: the disk is full)" in result.stderr


# --- Ctrl-C, restarts and finished runs -----------------------------------------------------------------------------


def _interrupt_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    real, calls = loop.train_one_epoch, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", interrupted)


def test_ctrl_c_says_how_to_continue_with_resume(make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = make_lamoda(per_class=4), tmp_path / "run"
    _interrupt_in_epoch(monkeypatch, 2)
    result = CliRunner().invoke(train_main, [str(data), "--out", str(out), *TINY, "--epochs", "2", "-q"])
    assert result.exit_code == 130
    assert f"Interrupted: {out} keeps every finished epoch. Continue the run with: gcv train {data} --out {out} " \
           "[the same options] --resume" in result.stderr  # fmt: skip
    assert load_checkpoint(out / "resnet18" / "last.pt")["epoch"] == 1

    _interrupt_in_epoch(monkeypatch, 1)  # before any checkpoint: nothing to continue
    result = CliRunner().invoke(train_main, [str(data), "--out", str(tmp_path / "new"), *TINY, "--epochs", "2", "-q"])
    assert result.exit_code == 130 and "--resume" not in result.output
    assert "Interrupted: no epoch was saved yet; run the command again to start over" in result.stderr
    assert not (tmp_path / "new").exists()


def test_resume_auto_starts_a_missing_or_empty_run_and_continues_a_started_one(
        make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = make_lamoda(per_class=4), tmp_path / "run"
    args = [str(data), "--out", str(out), *TINY, "--epochs", "2", "--resume", "auto"]
    _interrupt_in_epoch(monkeypatch, 2)
    first = CliRunner().invoke(train_main, args)  # no run yet: starts one
    assert first.exit_code == 130 and "--resume auto: no run in" in first.stderr
    assert load_checkpoint(out / "resnet18" / "last.pt")["epoch"] == 1
    monkeypatch.undo()
    again = CliRunner().invoke(train_main, args)  # the same command line: continues it
    assert again.exit_code == 0, again.output
    assert "resnet18: resuming after epoch 1 of 2" in again.stderr
    assert [h["epoch"] for h in json.loads((out / "resnet18" / "metrics.json").read_text())["history"]] == [1, 2]

    (tmp_path / "empty").mkdir()
    cfg = TrainConfig(
        data=data, out=tmp_path / "empty", resume="auto", image_size=32, weights="none", batch_size=4, epochs=1
    )
    assert [len(r.history) for r in loop.train(cfg, progress=False).archs] == [1]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(OutputPathError, match="already holds files"):
        loop.train(dataclasses.replace(cfg, out=tmp_path / "other"), progress=False)
    with pytest.raises(
        CheckpointError, match="no config.json, so there is no run to resume"
    ):  # --resume alone: as before
        loop.train(dataclasses.replace(cfg, out=tmp_path / "missing", resume=True), progress=False)


def test_resume_is_a_flag_with_an_optional_auto(make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_lamoda(per_class=3)
    seen: list[TrainConfig] = []
    monkeypatch.setattr(loop, "train", lambda cfg, progress=True: (seen.append(cfg), sys.exit(0)))
    for args, expected in (([str(data), "--out", "r", "--resume"], True), (["--resume", str(data), "--out", "r"], True),
                           ([str(data), "--resume", "auto", "--out", "r"], "auto"),
                           ([str(data), "--resume=auto", "--out", "r"], "auto"),
                           ([str(data), "--out", "r"], False)):  # fmt: skip
        result = CliRunner().invoke(train_main, args)
        assert result.exit_code == 0, result.output
        assert (seen[-1].resume, seen[-1].data) == (expected, data)
    bad = CliRunner().invoke(train_main, [str(data), "--out", "r", "--resume=later"])
    assert bad.exit_code == 2 and "'later'" in bad.output and "auto" in bad.output
    text = " ".join(CliRunner().invoke(train_main, ["--help"]).output.split())
    assert "--resume [auto]" in text and "'auto': continue it or start it" in text
    assert (
        "Restarts (torchrun --max-restarts N): give --out RUN and --resume auto; the first attempt starts the run"
        in text
    )


def test_resume_of_a_finished_run_says_it_is_complete_and_how_to_train_longer(
        make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_lamoda(per_class=4)
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert (
        CliRunner().invoke(train_main, [str(data), "--out", str(straight), *TINY, "--epochs", "2", "-q"]).exit_code == 0
    )
    assert CliRunner().invoke(train_main, [str(data), "--out", str(run), *TINY, "--epochs", "1", "-q"]).exit_code == 0
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    monkeypatch.setattr(
        distributed, "find_bad_images_sharded", lambda *a, **k: pytest.fail("decoded the images of a finished run")
    )
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a, **k: pytest.fail("trained a finished run"))
    for mode in ("--resume", "--resume=auto"):
        done = CliRunner().invoke(train_main, [str(data), "--out", str(run), *TINY, "--epochs", "1", mode, "-q"])
        assert done.exit_code == 0, done.output
        assert f"{run}: the run is already complete (resnet18: all 1 epoch done); nothing was trained. To train " \
               "longer, run the same command with a larger --epochs (e.g. --epochs 2) and --resume" in done.stdout
        assert f"resnet18: best epoch 1 -> {run / 'resnet18' / 'best.pt'}" in done.stdout
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == files  # nothing rewritten

    monkeypatch.undo()
    longer = CliRunner().invoke(train_main, [str(data), "--out", str(run), *TINY, "--epochs", "2", "--resume", "-q"])
    assert longer.exit_code == 0, longer.output
    one, two = (load_checkpoint(r / "resnet18" / "last.pt") for r in (straight, run))
    assert all(
        torch.equal(one["state_dict"][k], two["state_dict"][k]) for k in one["state_dict"]
    )  # = 2 epochs straight
    fewer = CliRunner().invoke(train_main, [str(data), "--out", str(run), *TINY, "--epochs", "1", "--resume", "-q"])
    assert fewer.exit_code == 1 and "epochs: 2 -> 1" in fewer.output


# --- a rank that fails because another exited ----------------------------------------------------------------------


def test_a_collective_that_fails_because_another_rank_exited_says_so_not_a_wait() -> None:
    from garmentcv.train.distributed import collective_failure_message

    gone = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:64642. This is typically caused by a remote worker crashing.")  # fmt: skip
    message = collective_failure_message("rank 0 of 2", gone, 1800)
    assert message.startswith("rank 0 of 2: another process of the job exited or failed (Connection closed by peer")
    assert (
        "The other's own error, in its output or log, says why" in message
        and "1800" not in message
        and "waited" not in message
    )
    reset = RuntimeError("[../gloo/transport/tcp/pair.cc:598] Read error [10.0.0.2]:40386: Connection reset by peer")
    assert "another process of the job exited or failed" in collective_failure_message("rank 3 of 4", reset, 60)
    slow = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms for recv operation")
    message = collective_failure_message("rank 1 of 2", slow, 1800)
    assert "waited more than 1800 s for the other processes" in message and "GCV_DIST_TIMEOUT_S" in message
    other = RuntimeError("gloo: unexpected")
    assert collective_failure_message("rank 1 of 2", other, 60).startswith("rank 1 of 2: a collective with the other "
                                                                           "processes failed (gloo: unexpected)")


# --- Pillow's warnings under -q -------------------------------------------------------------------------------------


def test_quiet_hides_pillows_decompression_bomb_warning(make_lamoda, tmp_path: Path) -> None:
    """Pillow warns above its MAX_IMAGE_PIXELS (made small here); GarmentCV's own limit decides and says so."""
    data = make_lamoda(per_class=3)  # 24 x 32 = 768 px images, over a limit of 500 and under twice it
    script = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 500; import garmentcv.image as gi; "
              "gi.MAX_IMAGE_PIXELS = int(sys.argv.pop(1)); from garmentcv.train.cli import main; main()")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    args = [str(data), *TINY, "--epochs", "1", "--batch-size", "2", "-q"]

    def gcv_train(limit: int, *more: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, str(limit), *args, *more], capture_output=True, text=True,
                              env=env, timeout=300)  # fmt: skip

    accepted = gcv_train(10_000, "--out", str(tmp_path / "a"))  # GarmentCV's limit lets them through
    assert accepted.returncode == 0, accepted.stderr
    assert "DecompressionBomb" not in accepted.stderr and "exceeds limit" not in accepted.stderr
    refused = gcv_train(700, "--out", str(tmp_path / "b"))  # GarmentCV's limit refuses them: the decision is said
    assert refused.returncode == 1
    assert "6 images cannot be decoded" in refused.stderr and "oversized" in refused.stderr
    assert "DecompressionBomb" not in refused.stderr


def test_resume_refuses_another_arch_list(make_lamoda, tmp_path: Path) -> None:
    """--resume with other --arch values rewrote comparison.md without the earlier arch; refuse like other settings."""
    data, out = make_lamoda(per_class=3), tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, **TINY_SETTINGS), progress=False)
    with pytest.raises(CheckpointError, match=r"archs: \('resnet18',\) -> \('resnet34',\)"):
        loop.train(TrainConfig(data=data, out=out, resume=True, archs=("resnet34",), **TINY_SETTINGS), progress=False)


def test_a_missing_weights_file_is_usage_exit_2_before_any_image_is_read(make_lamoda, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import garmentcv.train.distributed as train_distributed

    # images are checked through the (DDP-sharded) checker, which calls find_bad_images in garmentcv.train.distributed
    monkeypatch.setattr(train_distributed, "find_bad_images", lambda *a, **k: pytest.fail("images read first"))
    with pytest.raises(PathNotFoundError, match="no-such.pth"):
        loop.train(TrainConfig(data=make_lamoda(per_class=3), out=tmp_path / "r1",
                               **{**TINY_SETTINGS, "weights": str(tmp_path / "no-such.pth")}), progress=False)
    result = CliRunner().invoke(train_main, [str(make_lamoda(per_class=3, name="d2")), "--out", str(tmp_path / "r2"),
                                             "--weights", str(tmp_path / "no-such.pth")])
    assert result.exit_code == 2 and "no-such.pth" in result.output
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_imagenet_weights_of_every_arch_are_fetched_before_any_work(make_lamoda, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With --arch resnet18 --arch resnet34 offline and only resnet18 cached, resnet34's missing file used to stop
    the run after resnet18 had trained; now it stops before any image is read, naming the file."""
    import urllib.error

    import torch

    import garmentcv.train.distributed as train_distributed
    from garmentcv.errors import WeightsError
    from garmentcv.models.registry import get_spec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = get_spec("resnet18").cache_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"present")  # only its presence matters before training

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    # images are checked through the (DDP-sharded) checker, which calls find_bad_images in garmentcv.train.distributed
    monkeypatch.setattr(train_distributed, "find_bad_images", lambda *a, **k: pytest.fail("images read first"))
    out = tmp_path / "run"
    with pytest.raises(WeightsError, match=r"resnet34.*resnet34-b627a593\.pth"):
        loop.train(TrainConfig(data=make_lamoda(per_class=3), out=out, archs=("resnet18", "resnet34"),
                               **{**TINY_SETTINGS, "weights": "imagenet"}), progress=False)
    assert not out.exists()
