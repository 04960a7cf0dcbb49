"""benchmarks/experiments/curate.py: its seeded label flips and its summary table."""

from __future__ import annotations

import numpy as np

from benchmarks.experiments import curate as experiment

CLASSES = ("bluzy", "bryuki")


def test_symmetric_flips_change_exactly_the_share_asked_and_repeat_for_a_seed() -> None:
    labels = np.asarray([0] * 120 + [1] * 80)
    noisy, flipped = experiment.flip_labels(labels, CLASSES, "symmetric", 0.05, seed=3)
    assert len(flipped) == 10 and np.flatnonzero(noisy != labels).tolist() == flipped.tolist()
    again, same = experiment.flip_labels(labels, CLASSES, "symmetric", 0.05, seed=3)
    assert np.array_equal(again, noisy) and np.array_equal(same, flipped)
    assert not np.array_equal(experiment.flip_labels(labels, CLASSES, "symmetric", 0.05, seed=4)[1], flipped)


def test_one_way_flips_take_bluzy_to_bryuki_only() -> None:
    labels = np.asarray([0] * 120 + [1] * 80)
    noisy, flipped = experiment.flip_labels(labels, CLASSES, "one-way", 0.10, seed=0)
    assert len(flipped) == 20
    assert set(labels[flipped].tolist()) == {0} and set(noisy[flipped].tolist()) == {1}
    assert np.array_equal(np.delete(noisy, flipped), np.delete(labels, flipped))


def test_summary_table_averages_each_method_and_setting_over_the_seeds() -> None:
    rows = [experiment.Row("linear-head", "symmetric", 0.05, seed, 600, 30, 32, p, r, 0.9, 2.0)
            for seed, (p, r) in enumerate([(0.8, 0.9), (0.6, 0.7)])]
    rows.append(experiment.Row("kfold-training", "symmetric", 0.05, 0, 600, 30, 40, 0.5, 0.6, 0.8, 100.0))
    text = experiment.summary_table(rows, {"embedder_seconds": 12.0, "embed_seconds": 1.5, "images": 600.0})
    lines = text.splitlines()
    assert lines[2] == "| linear-head | symmetric | 5% | 600 | 2 | 0.700 | 0.800 | 2.0 |"
    assert lines[3] == "| kfold-training | symmetric | 5% | 600 | 1 | 0.500 | 0.600 | 100.0 |"
    assert "the K-fold linear head and cleanlab 2.0 s per setting" in text
