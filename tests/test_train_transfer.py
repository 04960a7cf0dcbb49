"""gcv-train --weights with a GarmentCV checkpoint: the backbone of another run, a fresh head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from garmentcv.errors import WeightsError
from garmentcv.train import loop
from garmentcv.train.checkpoint import load_checkpoint
from garmentcv.train.cli import main as train_main
from garmentcv.train.config import TrainConfig
from garmentcv.train.transfer import build_for_training

TINY = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}


@pytest.fixture
def pretrained(make_lamoda, tmp_path: Path) -> Path:
    """best.pt of a resnet18 run on three classes."""
    data = make_lamoda(classes=("pullover", "coat", "bag"), per_class=5, name="pre")
    loop.train(TrainConfig(data=data, out=tmp_path / "pre-run", **TINY), progress=False)
    return tmp_path / "pre-run" / "resnet18" / "best.pt"


def test_the_backbone_comes_from_the_checkpoint_and_the_head_is_new(pretrained: Path) -> None:
    saved = load_checkpoint(pretrained)["state_dict"]
    torch.manual_seed(5)
    built = build_for_training("resnet18", 2, str(pretrained))
    state = built.model.state_dict()
    backbone = [k for k in saved if not k.startswith("fc.")]
    assert len(backbone) > 100 and all(torch.equal(state[k], saved[k]) for k in backbone)
    assert state["fc.weight"].shape == (2, 512) and state["fc.bias"].shape == (2,)
    torch.manual_seed(5)
    fresh = build_for_training("resnet18", 2, "none").model.state_dict()
    assert torch.equal(state["fc.weight"], fresh["fc.weight"]) and torch.equal(state["fc.bias"], fresh["fc.bias"])
    assert built.weights_source == "garmentcv:best.pt (resnet18, classes bag,coat,pullover)"


def test_a_checkpoint_of_another_arch_is_refused(pretrained: Path) -> None:
    with pytest.raises(WeightsError,
                       match=r"best.pt: a GarmentCV checkpoint of resnet18, not resnet34.*--arch resnet18"):
        build_for_training("resnet34", 2, str(pretrained))


def test_fine_tuning_from_a_checkpoint_records_its_source(pretrained: Path, make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    args = [str(data), "--out", str(tmp_path / "ft"), "--weights", str(pretrained), "--image-size", "32",
            "--epochs", "1", "--batch-size", "4", "-q"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(tmp_path / "ft" / "resnet18" / "best.pt")
    assert ckpt["weights_source"] == "garmentcv:best.pt (resnet18, classes bag,coat,pullover)"
    assert ckpt["classes"] == ["bluzy", "bryuki"] and ckpt["state_dict"]["fc.weight"].shape == (2, 512)
