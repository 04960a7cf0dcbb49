"""benchmarks/experiments/transfer.py: its image sets (nested, disjoint, exact counts) and its summary table."""

from __future__ import annotations

import csv
from pathlib import Path

from benchmarks.experiments import transfer as experiment
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist


def _read(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["path"], row["label"]) for row in csv.DictReader(handle)]


def test_the_sets_are_nested_disjoint_and_exact(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_fashion_mnist(data, DEFAULT_SOURCE, max_per_class=12, pretraining_set=True)
    sets = experiment.make_sets(
        data, [2, 5], val_per_class=3, test_per_class=4, pretrain_per_class=2, out=tmp_path / "sets"
    )
    train2, train5, val, test, pre = (_read(sets[k]) for k in ("train_2", "train_5", "val", "test", "pretrain"))
    by_label = lambda rows, label: [p for p, lab in rows if lab == label]  # noqa: E731
    bluzy = sorted(str(p.resolve()) for p in (data / "train").glob("*_bluzy.jpg"))
    assert by_label(train5, "bluzy") == bluzy[:5] and by_label(train2, "bluzy") == bluzy[:2]  # nested, file order
    assert by_label(val, "bluzy") == bluzy[5:8]  # after the largest training subset: disjoint from every one
    assert [len(by_label(rows, c)) for rows in (train2, train5, val, test) for c in ("bluzy", "bryuki")] == [
        2,
        2,
        5,
        5,
        3,
        3,
        4,
        4,
    ]
    labels = {row["index"]: row["label"] for row in csv.DictReader(open(data / "test_labels.csv", encoding="utf-8"))}
    assert all(labels[Path(p).stem] == lab for p, lab in test)
    assert sorted({lab for _, lab in pre}) == ["ankle-boot", "bag", "coat", "dress", "pullover", "sandal", "sneaker"]
    assert len(pre) == 14 and not {p for p, _ in pre} & {p for p, _ in train5 + val + test}


def test_the_summary_reports_epoch_one_and_the_first_best_validation_epoch() -> None:
    Row = experiment.Row
    rows = [
        Row("resnet18", 20, "pretrained", 1, 0.90, 0.88, 1.0),
        Row("resnet18", 20, "pretrained", 2, 0.95, 0.94, 1.0),
        Row("resnet18", 20, "pretrained", 3, 0.95, 0.96, 1.0),
        Row("resnet18", 20, "scratch", 1, 0.50, 0.50, 1.0),
        Row("resnet18", 20, "scratch", 2, 0.70, 0.71, 1.0),
        Row("resnet18", 20, "scratch", 3, 0.65, 0.66, 1.0),
    ]
    assert experiment.summary_table(rows).splitlines()[2:] == [
        "| resnet18 | 20 | pretrained | 0.9000 | 0.8800 | 0.9500 (2) | 0.9400 |",
        "| resnet18 | 20 | scratch | 0.5000 | 0.5000 | 0.7000 (2) | 0.7100 |",
    ]
