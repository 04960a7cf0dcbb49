"""gcv train under torchrun: two gloo processes on generated images, a failing rank, resume, the helpers.

The torchrun tests start real jobs (``python -m torch.distributed.run --nproc_per_node=2 --standalone``) on 24
tiny images; each job takes a few seconds of training and mostly process start-up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from garmentcv.data.layouts import load_dataset
from garmentcv.errors import CheckpointError
from garmentcv.export.exporter import ExportConfig, export_checkpoint
from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model
from garmentcv.metrics import classification_metrics
from garmentcv.models.registry import build_model, default_preprocessing
from garmentcv.train import distributed, loop
from garmentcv.train.checkpoint import load_checkpoint
from garmentcv.train.cli import main as train_main
from garmentcv.train.config import ARCHS, TrainConfig
from garmentcv.train.data import EvalImages
from garmentcv.train.distributed import (
    Dist,
    DistributedError,
    DistributedWeightedSampler,
    launch_info,
    metrics_from_confusion,
    timeout_seconds,
)
from tests.conftest import COLOURS, write_image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("bluzy", "bryuki", "platya")
#: The options of every job here: 19 training and 5 validation images, 32 px, from scratch, 2 epochs, the first
#: with the backbone frozen (so DDP is rebuilt when the trainable parameters change).
OPTIONS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "4", "--lr", "0.001",
           "--freeze-backbone-epochs", "1"]  # fmt: skip
PER_ARCH = ("best.pt", "confusion_matrix.png", "curves.png", "last.pt", "metrics.json")


def make_data(root: Path, per_class: int = 8) -> Path:
    """A lamoda folder of ``per_class`` 24x32 images per class, one colour per class."""
    number = 0
    for c, label in enumerate(CLASSES):
        for _ in range(per_class):
            number += 1
            write_image(root / f"{number:04d}_{label}.jpg", (24, 32), COLOURS[c], seed=number)
    return root


def torchrun(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc_per_node=2 --standalone ARGS`` (gloo, 2 processes) with this checkout first on the path.

    A job that does not end within ``timeout`` seconds fails the test (subprocess.TimeoutExpired): never a hang.
    """
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: "60", **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", *args]
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted 2-process ``--arch all`` job, its output per rank in ``logs/`` and its writes recorded."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_data(root / "data")
    writes = root / "writes.tsv"
    job = torchrun(
        ["--log-dir", str(root / "logs"), "--redirects", "3", "-m", "tests.ddp_worker", str(data), "--out",
         str(root / "run"), "--arch", "all", *OPTIONS],
        cwd=root, env={"GCV_TEST_WRITES": str(writes)},
    )  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    return {"root": root, "data": data, "run": root / "run", "writes": writes, "logs": root / "logs"}


@pytest.mark.slow
def test_two_processes_train_every_arch_and_only_rank_0_writes(straight_run: dict[str, Path]) -> None:
    run = straight_run["run"]
    expected = sorted(
        ["comparison.md", "config.json", "train.csv", "val.csv", *[f"{a}/{f}" for a in ARCHS for f in PER_ARCH]]
    )
    assert _files(run) == expected
    assert _files(straight_run["root"]) == sorted(
        [*(f"run/{f}" for f in expected), *(f"data/{p.name}" for p in straight_run["data"].iterdir()), "writes.tsv",
         *(p.relative_to(straight_run["root"]).as_posix() for p in straight_run["logs"].rglob("*") if p.is_file())]
    )  # nothing written outside the run folder (e.g. no runs/train/<time> of another rank)
    records = [line.split("\t") for line in straight_run["writes"].read_text().splitlines()]
    assert {rank for rank, _ in records} == {"0"}
    assert sorted({Path(path).relative_to(run).as_posix() for _, path in records}) == expected

    (rank0,) = straight_run["logs"].glob("*/attempt_0/0")
    (rank1,) = straight_run["logs"].glob("*/attempt_0/1")
    assert (rank1 / "stdout.log").read_text() == (rank1 / "stderr.log").read_text() == ""  # quiet
    summary = (rank0 / "stdout.log").read_text()
    assert [line for line in summary.splitlines() if "best epoch" in line and "->" in line] == [
        f"{a}: best epoch {json.loads((run / a / 'metrics.json').read_text())['best_epoch']} -> {run / a / 'best.pt'}"
        for a in ARCHS
    ]
    assert "data-parallel: 2 processes over gloo, this is rank 0 on cpu" in (rank0 / "stderr.log").read_text()

    config = json.loads((run / "config.json").read_text())
    assert (config["world_size"], config["batch_size"], config["global_batch_size"]) == (2, 4, 8)
    assert config["archs"] == list(ARCHS)
    for arch in ARCHS:
        history = json.loads((run / arch / "metrics.json").read_text())["history"]
        assert [h["epoch"] for h in history] == [1, 2]
        assert [h["count"] for h in history] == [5, 5]  # every validation image exactly once, no padding
        assert [int(np.sum(h["confusion_matrix"])) for h in history] == [5, 5]


@pytest.mark.slow
def test_validation_figures_equal_single_process_and_gcv_evaluate(
    straight_run: dict[str, Path], tmp_path: Path
) -> None:
    """metrics.json of the 2-process run == one process evaluating best.pt == gcv evaluate of the exported model."""
    run = straight_run["run"]
    metrics = json.loads((run / "resnet18" / "metrics.json").read_text())
    recorded = metrics["history"][metrics["best_epoch"] - 1]
    matrix = np.asarray(recorded["confusion_matrix"])
    assert sum(1 for column in matrix.T if column.sum()) >= 2  # not a constant model

    ckpt = load_checkpoint(run / "resnet18" / "best.pt")
    model = build_model("resnet18", len(CLASSES), weights="none").model
    model.load_state_dict(ckpt["state_dict"])
    val = load_dataset(run / "val.csv")
    loader = DataLoader(EvalImages(val.samples, CLASSES, default_preprocessing("resnet18", 32)), batch_size=3)
    loss, single = loop.evaluate(model, loader, torch.device("cpu"), len(CLASSES))
    assert single.confusion_matrix == recorded["confusion_matrix"]
    assert (single.accuracy, single.precision, single.recall, single.f1) == (
        recorded["accuracy"], recorded["precision"], recorded["recall"], recorded["f1"])  # fmt: skip
    assert loss == pytest.approx(recorded["val_loss"], rel=1e-6)  # a sum in another order

    exported = export_checkpoint(
        ExportConfig(checkpoint=run / "resnet18" / "best.pt", out=tmp_path / "m.onnx"), progress=False
    )
    evaluated = evaluate_model(EvaluateConfig(data=run / "val.csv", out=tmp_path / "ev", model=exported.out,
                                              provider="cpu", batch_size=2, progress=False))  # fmt: skip
    assert evaluated.count == 5
    assert evaluated.confusion_matrix == recorded["confusion_matrix"]
    assert (evaluated.accuracy, evaluated.precision, evaluated.recall, evaluated.f1) == pytest.approx(
        (recorded["accuracy"], recorded["precision"], recorded["recall"], recorded["f1"]), abs=1e-12)


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_and_resume_continues_from_last_pt(straight_run: dict[str, Path]) -> None:
    root, data = straight_run["root"], straight_run["data"]
    out = root / "broken"
    args = [str(data), "--out", str(out), "--arch", "resnet18", *OPTIONS]
    failed = torchrun(["-m", "tests.ddp_worker", *args], cwd=root, env={"GCV_TEST_FAULT": "raise"}, timeout=180)
    assert failed.returncode != 0
    assert "RuntimeError: injected failure on rank 1" in failed.stderr
    assert load_checkpoint(out / "resnet18" / "last.pt")["epoch"] == 1

    resumed = torchrun(["-m", "garmentcv.train", *args, "--resume", "-q"], cwd=root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("resnet18: best epoch") == 1  # rank 0's summary only
    straight = load_checkpoint(straight_run["run"] / "resnet18" / "last.pt")
    again = load_checkpoint(out / "resnet18" / "last.pt")
    assert straight["state_dict"].keys() == again["state_dict"].keys()
    assert all(torch.equal(straight["state_dict"][k], again["state_dict"][k]) for k in straight["state_dict"])
    strip = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    assert strip(again["history"]) == strip(straight["history"])


@pytest.mark.slow
def test_torchrun_restarts_continue_the_run_with_resume_auto(straight_run: dict[str, Path], tmp_path: Path) -> None:
    """One command line for every attempt: the first starts the run, rank 1 dies in epoch 2, the restart continues."""
    once = tmp_path / "rank-1-failed"
    args = [
        str(straight_run["data"]),
        "--out",
        str(tmp_path / "run"),
        "--arch",
        "resnet18",
        *OPTIONS,
        "--resume",
        "auto",
    ]
    job = torchrun(["--max-restarts", "1", "-m", "tests.ddp_worker", *args], cwd=tmp_path,
                   env={"GCV_TEST_FAULT": "raise", "GCV_TEST_FAULT_ONCE": str(once)}, timeout=300)  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    assert once.is_file()  # the first attempt did fail
    assert "RuntimeError: injected failure on rank 1" in job.stderr
    assert job.stdout.count("resnet18: best epoch") == 1  # the restart's summary, rank 0's only
    straight = load_checkpoint(straight_run["run"] / "resnet18" / "last.pt")
    again = load_checkpoint(tmp_path / "run" / "resnet18" / "last.pt")
    assert all(torch.equal(straight["state_dict"][k], again["state_dict"][k]) for k in straight["state_dict"])
    strip = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    assert strip(again["history"]) == strip(straight["history"])


@pytest.mark.slow
def test_resume_with_another_world_size_is_refused(straight_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text((straight_run["run"] / "config.json").read_text())
    cfg = TrainConfig(data=straight_run["data"], out=out, archs=ARCHS, resume=True, weights="none", image_size=32,
                      epochs=2, batch_size=4, lr=0.001, freeze_backbone_epochs=1)  # fmt: skip
    with pytest.raises(
        CheckpointError,
        match=r"trained by 2 process\(es\) \(world size 2\), this job has 1; .*torchrun with 2 processes in all",
    ):
        loop.train(cfg, progress=False)
    assert _files(out) == ["config.json"]


def test_metrics_from_summed_confusion_matrices_equal_one_evaluation() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 3, 40), rng.integers(0, 4, 40)  # class 3 is never true: an absent class
    whole = classification_metrics(y_true, y_pred, 4)
    shards = [classification_metrics(y_true[r::3], y_pred[r::3], 4).confusion_matrix for r in range(3)]
    assert metrics_from_confusion(np.sum(shards, axis=0)) == whole
    with pytest.raises(ValueError, match="non-zero"):
        metrics_from_confusion(np.zeros((2, 2), dtype=int))


def test_sharded_evaluation_of_one_process_equals_the_loop_evaluation(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", per_class=3)
    torch.manual_seed(0)
    model = build_model("resnet18", len(CLASSES), weights="none").model
    ds = load_dataset(data)
    loader = DataLoader(EvalImages(ds.samples, CLASSES, default_preprocessing("resnet18", 32)), batch_size=4)
    expected = loop.evaluate(model, loader, torch.device("cpu"), len(CLASSES))
    assert distributed.evaluate_sharded(model, loader, torch.device("cpu"), len(CLASSES), Dist()) == expected


def test_launch_environment_is_read_and_checked() -> None:
    assert launch_info({}) == distributed.LaunchInfo(0, 1, 0)
    info = launch_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.is_primary, info.distributed) == (3, 4, 1, False, True)
    with pytest.raises(DistributedError, match=r"RANK=4, WORLD_SIZE=4, LOCAL_RANK=0 .* start gcv train with torchrun"):
        launch_info({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    with pytest.raises(DistributedError, match="WORLD_SIZE='two' is not an integer"):
        launch_info({"WORLD_SIZE": "two"})
    assert timeout_seconds({}) == distributed.DEFAULT_TIMEOUT_S == 1800
    assert timeout_seconds({distributed.TIMEOUT_ENV: "12.5"}) == 12.5
    with pytest.raises(DistributedError, match="GCV_DIST_TIMEOUT_S='0': expected a positive number"):
        timeout_seconds({distributed.TIMEOUT_ENV: "0"})
    one = Dist()  # no torchrun: every collective returns its input
    assert (one.enabled, one.is_primary, one.broadcast({"a": 1}), one.all_gather(5), one.mean(0.5, 2.0)) == (
        False, True, {"a": 1}, [5], (0.5, 2.0))  # fmt: skip
    assert one.run_record(32) == {"world_size": 1, "global_batch_size": 32}


def test_balanced_sampler_shards_one_weighted_draw_per_epoch() -> None:
    weights = [1.0] * 6 + [5.0] * 3  # 9 images, 2 ranks: 5 each, the draw padded to 10
    ranks = [DistributedWeightedSampler(weights, rank, 2, seed=7) for rank in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    drawn = [list(s) for s in ranks]
    assert [len(d) for d in drawn] == [len(s) for s in ranks] == [5, 5]
    generator = torch.Generator().manual_seed(7 + 3)
    whole = torch.multinomial(
        torch.tensor(weights, dtype=torch.float64), 10, replacement=True, generator=generator
    ).tolist()
    assert drawn == [whole[0::2], whole[1::2]]
    ranks[0].set_epoch(4)
    assert list(ranks[0]) != drawn[0]


def test_python_dash_m_garmentcv_train_has_the_options_of_gcv_train() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    module = subprocess.run(
        [sys.executable, "-m", "garmentcv.train", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert module.returncode == 0, module.stderr
    text = CliRunner().invoke(train_main, ["--help"]).output
    options = lambda help_text: re.findall(r"(?m)^  (?:-\w, )?(--[a-z][\w-]*)",  # noqa: E731
                                           help_text.split("\nOptions:\n", 1)[1])  # the option list, not the prose
    assert options(module.stdout) == options(text)
    assert {"--arch", "--batch-size", "--resume", "--out"} <= set(
        options(text)
    ) and "Images per step in each process (at least 2" in " ".join(text.split())
