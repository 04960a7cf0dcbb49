"""benchmarks/experiments/unknowns.py: its image sets (the unseen classes reach no training or fitting stage) and its
table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from benchmarks.experiments import unknowns as experiment
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist


def _read(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["path"], row["label"]) for row in csv.DictReader(handle)]


def test_sets_keep_the_unseen_classes_out_of_training_exposure_and_fitting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_fashion_mnist(data, DEFAULT_SOURCE, max_per_class=9, all_classes=True)
    sets = experiment.make_sets(data, ("dress", "sandal"), train_per_class=4, val_per_class=3, test_per_class=2,
                                exposure_per_class=5, out=tmp_path / "sets", pretrain_per_class=2)  # fmt: skip
    train, val, test = _read(sets.train), _read(sets.val), _read(sets.test)
    fashion = lambda p: Path(p).stem.split("_", 1)[1]  # noqa: E731 (train/ files: <id>_<fashion-mnist class>.jpg)
    assert sorted(fashion(p) for p, _ in train) == ["shirt"] * 4 + ["trouser"] * 4 + ["tshirt-top"] * 4
    assert {(fashion(p), label) for p, label in train + val} == {
        ("shirt", "bluzy"), ("tshirt-top", "bluzy"), ("trouser", "bryuki")}
    assert len(val) == 9 and not {p for p, _ in train} & {p for p, _ in val}
    assert sorted(label for _, label in test) == ["bluzy"] * 4 + ["bryuki"] * 2
    exposure = sorted(p.relative_to(sets.exposure).parts[0] for p in sets.exposure.rglob("*.jpg"))
    assert exposure == ["dress"] * 5 + ["sandal"] * 5
    labels = {row["index"]: row["label"] for row in csv.DictReader(open(data / "test_labels.csv", encoding="utf-8"))}
    assert {name: [labels[p.stem] for p in paths] for name, paths in sets.others.items()} == {
        name: [name, name] for name in (*experiment.NEAR, *experiment.FAR)}
    assert all(p.parent == data / "test" for paths in sets.others.values() for p in paths)  # test file only
    assert sets.pretrain is not None
    pretrain = _read(sets.pretrain)
    assert sorted(label for _, label in pretrain) == sorted(["tshirt-top", "shirt", "trouser", "dress", "sandal"] * 2)
    assert all(fashion(p) == label for p, label in pretrain)  # each under its own Fashion-MNIST name
    assert not {p for p, _ in pretrain} & {p for p, _ in val + test}
    assert not {p for p, label in pretrain if label not in ("dress", "sandal")} & {p for p, _ in train}  # after val


def test_table_has_a_line_per_method_and_one_per_model() -> None:
    row = {"arch": "resnet18", "exposure": True, "method": "energy", "auroc_near": 0.81234, "auroc_far": 0.9,
           "let_through_near": 0.5, "let_through_far": 0.125, "let_through_exposed": 0.01, "test_recall": 0.95,
           "ms_per_image": 0.0012, "reference_kb": 0.0, "val_accuracy": 0.99, "test_accuracy": 0.98,
           "temperature": 1.25, "train_seconds": 60.0}  # fmt: skip
    lines = experiment.table([row]).splitlines()
    assert lines[2] == "| resnet18 | yes | energy | 0.812 | 0.900 | 50.0% | 12.5% | 1.0% | 95.0% | 0.0012 | 0 |"
    assert lines[-1] == "| resnet18 | none | yes | 0.9900 | 0.9800 | 1.250 | 60 |"


def test_set_rows_fit_on_the_held_out_half_and_cover_exchangeable_test_images_at_the_target() -> None:
    """Validation and test images drawn alike: every method's coverage lands within 0.03 of 0.9 (over four
    standard deviations of the calibration and test sampling at these sizes)."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[experiment.Outputs, np.ndarray]:
        y = np.arange(n) % 3
        logits = (2.0 * np.eye(3)[y] + rng.normal(0, 1.2, (n, 3))).astype(np.float32)
        return experiment.Outputs(logits, np.zeros((n, 1), np.float32)), y

    (val, val_y), (test, test_y) = draw(2400), draw(4000)
    rows = experiment.set_rows(val, val_y, test, test_y, ("a", "b", "c"), 0.9)
    assert [(r["sets"], r["class_conditional"]) for r in rows] == [
        ("lac", False), ("lac", True), ("aps", False), ("aps", True)]
    for r in rows:
        assert r["held_out_images"] == 1200 and r["test_images"] == 4000 and r["target_coverage"] == 0.9
        assert abs(r["coverage"] - 0.9) < 0.03, r
        gaps = [abs(r[f"coverage_{c}"] - 0.9) for c in "abc"]
        assert r["worst_class_gap"] == max(gaps)
        assert r["mean_size"] > 1.0 and r["empty"] + r["ambiguous"] > 0
    conditional = [r for r in rows if r["class_conditional"]]
    assert all(r["worst_class_gap"] < 0.04 for r in conditional)


def test_table_has_a_line_per_prediction_set_method() -> None:
    score = {"arch": "resnet18", "exposure": False, "method": "msp", "ms_per_image": 0.001, "reference_kb": 0.0,
             "val_accuracy": 0.99, "test_accuracy": 0.98, "temperature": 1.25, "train_seconds": 60.0}
    sets = {"arch": "resnet18", "exposure": False, "method": "sets-lac", "sets": "lac", "class_conditional": True,
            "target_coverage": 0.95, "coverage": 0.9512, "worst_class_gap": 0.012, "mean_size": 0.97, "empty": 30,
            "ambiguous": 2, "test_images": 900}
    lines = experiment.table([score, sets]).splitlines()
    assert lines[-1] == "| resnet18 | no | lac | yes | 0.950 | 0.951 | 0.012 | 0.970 | 30 | 2 | 900 |"
    assert lines[6] == "| resnet18 | none | no | 0.9900 | 0.9800 | 1.250 | 60 |"  # the sets' row is no model


def test_table_has_the_share_let_through_by_other_class() -> None:
    row = {"arch": "resnet18", "exposure": True, "method": "vim", "ms_per_image": 0.001, "reference_kb": 0.0,
           "val_accuracy": 0.99, "test_accuracy": 0.98, "temperature": 1.25, "train_seconds": 60.0,
           "let_through_class_coat": 0.875, "let_through_class_bag": 0.03125}
    lines = experiment.table([row]).splitlines()
    assert lines[8:11] == ["| arch | exposure | method | coat | bag |", "|---|---|---|---:|---:|",
                           "| resnet18 | yes | vim | 87.5% | 3.1% |"]


def test_supervised_reference_trains_on_every_other_class_under_its_own_name_and_no_test_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_fashion_mnist(data, DEFAULT_SOURCE, max_per_class=9, all_classes=True)
    sets = experiment.make_sets(data, ("dress",), train_per_class=4, val_per_class=3, test_per_class=2,
                                exposure_per_class=5, out=tmp_path / "sets")  # fmt: skip
    supervised, train = _read(sets.supervised), _read(sets.train)
    others = (*experiment.NEAR, *experiment.FAR)
    assert supervised[: len(train)] == train  # the stand-in's classes, as the other runs see them
    assert sorted(label for _, label in supervised[len(train) :]) == sorted([*others] * 5)
    fashion = lambda p: Path(p).stem.split("_", 1)[1]  # noqa: E731
    assert all(fashion(p) == label for p, label in supervised[len(train) :])
    assert all(Path(p).parent == data / "train" for p, _ in supervised)  # the training file only
    assert not {p for p, _ in supervised} & {p for p, _ in _read(sets.val)}


def test_background_class_labels_the_exposure_images_other_and_adds_no_unseen_class(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_fashion_mnist(data, DEFAULT_SOURCE, max_per_class=9, all_classes=True)
    sets = experiment.make_sets(data, ("dress", "sandal"), train_per_class=4, val_per_class=3, test_per_class=2,
                                exposure_per_class=5, out=tmp_path / "sets")  # fmt: skip
    background, train = _read(sets.background), _read(sets.train)
    assert background[: len(train)] == train
    fashion = lambda p: Path(p).stem.split("_", 1)[1]  # noqa: E731
    added = background[len(train) :]
    assert sorted(fashion(p) for p, _ in added) == ["dress"] * 5 + ["sandal"] * 5
    assert {label for _, label in added} == {experiment.BACKGROUND}
    exposure = {p.name for p in sets.exposure.rglob("*.jpg")}
    assert {Path(p).name for p, _ in added} == exposure  # the very images the exposure runs see


def test_table_shows_the_supervised_reference_by_what_it_was_trained_on() -> None:
    row = {"arch": "resnet18", "exposure": "every other class labelled", "method": "supervised", "auroc_near": 0.9,
           "auroc_far": 0.99, "let_through_near": 0.25, "let_through_far": 0.0, "test_recall": 0.95,
           "ms_per_image": 0.0, "reference_kb": 0.0, "val_accuracy": 0.97, "test_accuracy": 0.96,
           "temperature": 1.0, "train_seconds": 60.0}  # fmt: skip
    lines = experiment.table([row]).splitlines()
    assert lines[2] == ("| resnet18 | every other class labelled | supervised | 0.900 | 0.990 | 25.0% | 0.0% | - | "
                        "95.0% | 0.0000 | 0 |")
    assert lines[-1] == "| resnet18 | none | every other class labelled | 0.9700 | 0.9600 | 1.000 | 60 |"
