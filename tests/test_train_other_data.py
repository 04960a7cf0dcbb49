"""gcv-train --other-data: the outlier-exposure loss, its batches in training, config.json and --resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from garmentcv.errors import CheckpointError, DatasetError
from garmentcv.train import loop
from garmentcv.train.cli import main
from garmentcv.train.config import TrainConfig
from garmentcv.train.recipe import outlier_exposure_loss

TINY = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}


def _others(root: Path, image_writer, count: int = 3) -> Path:
    for i in range(count):
        image_writer(root / "shoes" / f"{i}.png", colour=(90, 90, 90), seed=100 + i)
    return root


def test_outlier_exposure_loss_is_the_cross_entropy_to_uniform() -> None:
    # [2, 0]: -(1/2)(log p1 + log p2) = logsumexp - mean = log(e^2 + 1) - 1; [0, 0]: log 2 (its minimum).
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    want = (math.log(math.e**2 + 1) - 1 + math.log(2)) / 2
    assert float(outlier_exposure_loss(logits)) == pytest.approx(want, rel=1e-6)
    uniform = torch.full((1, 2), 0.5)
    explicit = -(uniform * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert float(outlier_exposure_loss(logits)) == pytest.approx(float(explicit), rel=1e-6)


def test_training_with_other_data_adds_the_weighted_term_and_records_it(make_lamoda, image_writer, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_lamoda(per_class=5)  # 8 train images: batches of 4 and 4, each joined by other images
    other = _others(tmp_path / "other", image_writer)
    seen: list[tuple[int, ...]] = []
    real = loop.outlier_exposure_loss
    monkeypatch.setattr(loop, "outlier_exposure_loss", lambda logits: seen.append(tuple(logits.shape)) or real(logits))
    cfg = TrainConfig(data=data, out=tmp_path / "run", other_data=other, other_weight=0.25, **TINY)
    result = loop.train(cfg, progress=False)
    assert seen == [(3, 2), (3, 2)]  # every step: all 3 other images (one shuffled pass each), 2 classes
    assert math.isfinite(result.archs[0].history[0]["train_loss"])
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (stored["other_data"], stored["other_weight"]) == (str(other), 0.25)
    with open(tmp_path / "run" / "other.csv", newline="") as handle:
        assert [row["path"] for row in csv.DictReader(handle)] == [
            str((other / "shoes" / f"{i}.png").resolve()) for i in range(3)]
    assert TrainConfig.from_dict(stored).other_data == other


def test_resume_refuses_another_other_data_folder_or_changed_images(make_lamoda, image_writer, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    other = _others(tmp_path / "other", image_writer)
    loop.train(TrainConfig(data=data, out=tmp_path / "run", other_data=other, **TINY), progress=False)
    elsewhere = _others(tmp_path / "elsewhere", image_writer)
    more = {**TINY, "epochs": 2}
    with pytest.raises(CheckpointError, match=r"other_data: PosixPath\('.*other'\) -> PosixPath\('.*elsewhere'\)"):
        loop.train(TrainConfig(data=data, out=tmp_path / "run", other_data=elsewhere, resume=True, **more),
                   progress=False)
    with pytest.raises(CheckpointError, match=r"other_data: PosixPath\('.*other'\) -> None"):
        loop.train(TrainConfig(data=data, out=tmp_path / "run", resume=True, **more), progress=False)
    image_writer(other / "bag.png", seed=7)
    with pytest.raises(CheckpointError, match=r"--other-data images changed since the run started: 1 image added"):
        loop.train(TrainConfig(data=data, out=tmp_path / "run", other_data=other, resume=True, **more),
                   progress=False)


def test_other_data_that_is_also_training_data_is_refused(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    with pytest.raises(DatasetError, match=r"6 images also labelled in the training data"):
        loop.train(TrainConfig(data=data, out=tmp_path / "run", other_data=data, **TINY), progress=False)


def test_cli_passes_other_data_and_weight(make_lamoda, image_writer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_lamoda(per_class=3)
    other = _others(tmp_path / "other", image_writer)
    got: list[TrainConfig] = []
    monkeypatch.setattr(loop, "train", lambda cfg, progress: got.append(cfg) or (_ for _ in ()).throw(SystemExit(0)))
    CliRunner().invoke(main, [str(data), "--out", str(tmp_path / "run"), "--other-data", str(other),
                              "--other-weight", "0.3", "-q"])
    assert (got[0].other_data, got[0].other_weight) == (other, 0.3)
    assert TrainConfig(data=data, out=tmp_path).other_weight == 0.5
