"""The fine-tuning recipe's options: each does what it says, is recorded in config.json and checked on --resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from garmentcv.errors import CheckpointError
from garmentcv.models import build_model
from garmentcv.train import loop
from garmentcv.train.config import TrainConfig
from garmentcv.train.recipe import (
    class_weights,
    early_stop,
    lr_factor,
    make_criterion,
    make_optimizer,
    sampler_weights,
)

TINY = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}


def test_warmup_follows_the_documented_linear_curve_then_decays() -> None:
    assert [lr_factor(e, 0.5, 0) for e in (1, 2, 3)] == [1.0, 0.5, 0.25]
    assert [lr_factor(e, 0.5, 3) for e in (1, 2, 3, 4, 5, 6)] == [0.25, 0.5, 0.75, 1.0, 0.5, 0.25]


def test_the_backbone_gets_its_factor_of_the_learning_rate() -> None:
    model = build_model("resnet18", 2, "none").model
    opt = make_optimizer(model, "fc", lr=0.01, weight_decay=0.05, backbone_lr_factor=0.1, decay_norm_bias=True)
    head = {id(p) for p in model.fc.parameters()}
    for group in opt.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == pytest.approx(0.01 if in_head == {True} else 0.001, rel=1e-12)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_no_decay_norm_bias_exempts_exactly_the_norm_and_bias_parameters() -> None:
    model = build_model("resnet18", 2, "none").model
    opt = make_optimizer(model, "fc", lr=0.01, weight_decay=0.05, backbone_lr_factor=1.0, decay_norm_bias=False)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    expected = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
                for n in (f"{n}.weight", f"{n}.bias")}
    assert exempt == expected | {"fc.bias"}
    assert decayed == {n for n, _ in model.named_parameters()} - exempt and "fc.weight" in decayed
    default = make_optimizer(model, "fc", lr=0.01, weight_decay=0.05, backbone_lr_factor=1.0, decay_norm_bias=True)
    assert len(default.param_groups) == 1 and default.param_groups[0]["weight_decay"] == 0.05


def test_label_smoothing_gives_the_smoothed_cross_entropy() -> None:
    logits, target = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    log_p = torch.log_softmax(logits, 1)[0].tolist()
    expected = -(0.9 * log_p[0] + 0.1 * log_p[1])  # smoothing 0.2 over 2 classes: targets 0.9 / 0.1
    assert float(make_criterion(0.2, None)(logits, target)) == pytest.approx(expected, abs=1e-6)
    assert float(make_criterion(0.0, None)(logits, target)) == pytest.approx(-log_p[0], abs=1e-6)


def test_class_weights_are_n_over_c_times_n_c_and_weight_the_loss() -> None:
    assert class_weights([30, 10]) == pytest.approx([40 / 60, 40 / 20])
    logits, targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    per = nn.CrossEntropyLoss(reduction="none")(logits, targets).tolist()
    w = class_weights([30, 10])
    expected = (w[0] * per[0] + w[1] * per[1]) / (w[0] + w[1])
    assert float(make_criterion(0.0, torch.tensor(w))(logits, targets)) == pytest.approx(expected, abs=1e-6)


def test_the_balanced_sampler_weights_each_image_by_one_over_its_class_count() -> None:
    assert sampler_weights([0, 0, 0, 1]) == [1 / 3, 1 / 3, 1 / 3, 1.0]


@pytest.mark.parametrize(
    ("values", "patience", "higher", "stop_after"),
    [
        ([0.9, 0.8, 0.85, 0.81, 0.82], 2, False, 4),  # best at 2, no better at 3 and 4
        ([0.9, 0.8, 0.85, 0.7, 0.82, 0.83], 2, False, 6),
        ([0.5, 0.6, 0.6, 0.6], 2, True, 4),  # equal is not better
        ([0.5, 0.6, 0.7], 1, True, None),
        ([0.5, 0.4, 0.3], 0, True, None),  # patience 0: off
    ],
)
def test_early_stopping_stops_at_the_documented_epoch(values, patience, higher, stop_after) -> None:
    stops = [e for e in range(1, len(values) + 1) if early_stop(values[:e], patience, higher)]
    assert (stops[0] if stops else None) == stop_after


def test_frozen_backbone_parameters_do_not_move(make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_lamoda(per_class=5)
    snapshots = []
    real = loop.train_one_epoch

    def spy(model, *args, **kwargs):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        out = real(model, *args, **kwargs)
        snapshots.append({n: (before[n], p.detach().clone()) for n, p in model.named_parameters()})
        return out

    monkeypatch.setattr(loop, "train_one_epoch", spy)
    cfg = TrainConfig(data=data, out=tmp_path / "run", freeze_backbone_epochs=1, **{**TINY, "epochs": 2})
    loop.train(cfg, progress=False)
    first, second = snapshots
    assert all(torch.equal(a, b) for n, (a, b) in first.items() if not n.startswith("fc."))
    assert not torch.equal(*first["fc.weight"])
    assert not all(torch.equal(a, b) for n, (a, b) in second.items() if not n.startswith("fc."))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["freeze_backbone_epochs"] == 1


def test_early_stopping_ends_the_run_and_keeps_the_best_checkpoint(make_lamoda, tmp_path: Path, monkeypatch) -> None:
    data = make_lamoda(per_class=5)
    losses = iter([0.5, 0.4, 0.6, 0.7, 0.1, 0.1])
    real = loop.evaluate

    def scripted(*args, **kwargs):
        _, metrics = real(*args, **kwargs)
        return next(losses), metrics

    monkeypatch.setattr(loop, "evaluate", scripted)
    cfg = TrainConfig(data=data, out=tmp_path / "run", early_stopping_patience=2, **{**TINY, "epochs": 6})
    result = loop.train(cfg, progress=False)
    (only,) = result.archs
    assert [h["epoch"] for h in only.history] == [1, 2, 3, 4]
    metrics = json.loads((tmp_path / "run" / "resnet18" / "metrics.json").read_text())
    assert metrics["stopped_early_after"] == 4
    assert torch.load(tmp_path / "run" / "resnet18" / "best.pt", weights_only=True)["epoch"] == only.best_epoch


def test_the_balanced_sampler_and_class_weights_train_and_are_recorded(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=5)
    cfg = TrainConfig(data=data, out=tmp_path / "run", balanced_sampler=True, class_weights=True, label_smoothing=0.1,
                      warmup_epochs=1, backbone_lr_factor=0.5, decay_norm_bias=False, **TINY)
    result = loop.train(cfg, progress=False)
    assert result.archs[0].history[0]["lr"] == pytest.approx(0.005)  # warm-up: epoch 1 of 1 at lr x 1/2
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: stored[k] for k in ("balanced_sampler", "class_weights", "label_smoothing", "decay_norm_bias")} == {
        "balanced_sampler": True, "class_weights": True, "label_smoothing": 0.1, "decay_norm_bias": False}
    with pytest.raises(CheckpointError, match=r"label_smoothing: 0.1 -> 0.0"):
        loop.train(TrainConfig(data=data, out=tmp_path / "run", resume=True, balanced_sampler=True, class_weights=True,
                               warmup_epochs=1, backbone_lr_factor=0.5, decay_norm_bias=False, **TINY), progress=False)
    assert math.isfinite(result.archs[0].history[0]["train_loss"])


def test_the_balanced_sampler_draws_by_class_weight(make_lamoda, tmp_path: Path) -> None:
    from torch.utils.data import WeightedRandomSampler

    from garmentcv.data.layouts import load_dataset
    from garmentcv.models import default_preprocessing
    from garmentcv.train.data import build_loaders, split_dataset

    ds = load_dataset(make_lamoda(classes=("a", "b"), per_class=5))
    split = split_dataset(ds, 0.2, 0)
    samples = [s for s in split.train if s.label == "a"] + [s for s in split.train if s.label == "b"][:2]
    split = type(split)(tuple(samples), split.val, split.no_val_classes)
    cfg = TrainConfig(data=tmp_path, out=tmp_path, balanced_sampler=True, **TINY)
    loader, _ = build_loaders(split, ds.classes, default_preprocessing("resnet18", 32), cfg, 0)
    assert isinstance(loader.sampler, WeightedRandomSampler) and loader.sampler.num_samples == 6
    assert loader.sampler.weights.tolist() == pytest.approx([1 / 4] * 4 + [1 / 2] * 2)


def test_resuming_a_run_that_stopped_early_trains_no_further(make_lamoda, tmp_path: Path, monkeypatch) -> None:
    data = make_lamoda(per_class=5)
    losses = iter([0.5, 0.6, 0.7])
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: (next(losses), real(*a, **k)[1]))
    cfg = TrainConfig(data=data, out=tmp_path / "run", early_stopping_patience=2, **{**TINY, "epochs": 5})
    assert len(loop.train(cfg, progress=False).archs[0].history) == 3
    calls = []
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a, **k: calls.append(1))
    resumed = loop.train(TrainConfig(**{**cfg.__dict__, "resume": True}), progress=False)
    assert calls == [] and [h["epoch"] for h in resumed.archs[0].history] == [1, 2, 3]


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("early_stopping_metric", "f1", "early_stopping_metric must be val_loss or accuracy, got 'f1'"),
        ("label_smoothing", 1.0, "label_smoothing must be in [0, 1), got 1.0"),
        ("backbone_lr_factor", 0.0, "backbone_lr_factor must be > 0, got 0.0"),
        ("warmup_epochs", -1, "warmup_epochs must be >= 0, got -1"),
    ],
)
def test_the_library_refuses_recipe_settings_out_of_range(setting, value, words, make_lamoda, tmp_path: Path) -> None:
    from garmentcv.errors import GarmentCVError

    cfg = TrainConfig(data=make_lamoda(per_class=3), out=tmp_path / "run", **{**TINY, setting: value})
    with pytest.raises(GarmentCVError, match=words.replace("(", r"\(").replace("[", r"\[").replace(")", r"\)")):
        loop.train(cfg, progress=False)
    assert not (tmp_path / "run").exists()
