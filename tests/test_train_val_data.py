"""gcv-train --val-data (a fixed validation set) and train()'s per-epoch callback (used by the transfer experiment)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from garmentcv.errors import DatasetError
from garmentcv.train.cli import main as train_main
from garmentcv.train.config import TrainConfig
from garmentcv.train.loop import train

COMMON = ["--arch", "resnet18", "--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "4", "-q"]


def _paths(csv_file: Path) -> list[tuple[str, str]]:
    with open(csv_file, newline="", encoding="utf-8") as handle:
        return [(row["path"], row["label"]) for row in csv.DictReader(handle)]


def test_val_data_validates_on_the_given_set_and_trains_on_all_of_data(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=5, name="train")
    val = make_lamoda(per_class=3, name="val")
    run = tmp_path / "run"
    result = CliRunner().invoke(train_main, [str(data), "--val-data", str(val), "--out", str(run), *COMMON])
    assert result.exit_code == 0, result.output
    assert _paths(run / "train.csv") == [(str(p.resolve()), p.stem.split("_")[1]) for p in sorted(data.iterdir())]
    assert _paths(run / "val.csv") == [(str(p.resolve()), p.stem.split("_")[1]) for p in sorted(val.iterdir())]
    metrics = json.loads((run / "resnet18" / "metrics.json").read_text())
    assert [h["count"] for h in metrics["history"]] == [6, 6]  # every validation image, each epoch
    assert json.loads((run / "config.json").read_text())["val_data"] == str(val)
    assert "10 train / 6 validation images" in (run / "comparison.md").read_text()
    # --resume compares it like every other setting
    other = make_lamoda(per_class=2, name="val2")
    again = CliRunner().invoke(train_main, [str(data), "--val-data", str(other), "--out", str(run), "--resume",
                                            *COMMON])
    assert again.exit_code == 1 and "val_data" in again.output


def test_val_data_with_an_unknown_class_or_a_shared_file_is_refused(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=4, name="train")
    odd = make_lamoda(classes=("bluzy", "platya"), per_class=2, name="odd")
    cfg = TrainConfig(data=data, out=tmp_path / "a", archs=("resnet18",), weights="none", image_size=32, epochs=1,
                      batch_size=4, val_data=odd)
    with pytest.raises(DatasetError,
                       match=r"odd: validation class\(es\) platya are not among the training classes bluzy, bryuki"):
        train(cfg, progress=False)
    shared = tmp_path / "shared.csv"
    first = sorted(data.iterdir())[0]
    own = make_lamoda(per_class=1, name="own")
    shared.write_text("path,label\n"
                      + "".join(f"{p},{p.stem.split('_')[1]}\n" for p in [first, *sorted(own.iterdir())]),
                      encoding="utf-8")
    cfg = TrainConfig(data=data, out=tmp_path / "b", archs=("resnet18",), weights="none", image_size=32, epochs=1,
                      batch_size=4, val_data=shared)
    with pytest.raises(DatasetError, match=f"1 validation image also in the training data {data} \\({first}\\)"):
        train(cfg, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_epoch_callback_sees_each_epoch_in_eval_mode_and_changes_nothing(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=5)
    calls: list[tuple[str, int, bool]] = []

    def score(arch: str, epoch: int, model: torch.nn.Module) -> None:
        calls.append((arch, epoch, model.training))
        with torch.inference_mode():
            model(torch.rand(3, 3, 32, 32))

    base = dict(data=data, archs=("resnet18",), weights="none", image_size=32, epochs=2, batch_size=4)
    with_cb = train(TrainConfig(out=tmp_path / "cb", **base), progress=False, on_epoch_end=score)
    without = train(TrainConfig(out=tmp_path / "plain", **base), progress=False)
    assert calls == [("resnet18", 1, False), ("resnet18", 2, False)]
    a = torch.load(tmp_path / "cb" / "resnet18" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "plain" / "resnet18" / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert with_cb.archs[0].history[-1]["accuracy"] == without.archs[0].history[-1]["accuracy"]
    shutil.rmtree(tmp_path / "cb")
