"""benchmarks/experiments/curate.py: its seeded label flips and its summary table."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.experiments import curate as experiment
from garmentcv.curate.fixes import DEFAULT_DUPLICATE_COSINE

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
    rows.append(experiment.Row("linear-head", "one-way", 0.05, 0, 10000, 500, 450, 0.9, 0.81, 0.8, 3.0, "ten-class"))
    retrained = [experiment.RetrainRow("symmetric", 0.05, 0, labels, n, acc, 60.0)
                 for labels, n, acc in (("noisy", 0, 0.95), ("fixed", 310, 0.985), ("clean", 0, 0.99))]
    copies = experiment.Duplicates(
        [experiment.CopyCosines("resized", 25, 0.99812, 0.99931, 0.99998)],
        [experiment.DuplicateRow(0.95, 25, {"exact": 25, "resized": 25, "re-encoded": 25, "cropped": 20}, 5954, 21.5),
         experiment.DuplicateRow(DEFAULT_DUPLICATE_COSINE, 25, {"exact": 25, "resized": 24, "re-encoded": 25,
                                                                "cropped": 0}, 3, 20.0),
         experiment.DuplicateRow(0.9999, 25, {"exact": 25, "resized": 20, "re-encoded": 21, "cropped": 0}, 0, 19.0)])
    text = experiment.summary_table(rows, {"embedder_seconds": 12.0, "embed_seconds": 1.5, "images": 600.0},
                                    retrained, copies)
    lines = text.splitlines()
    assert lines[2] == "| two-class | linear-head | symmetric | 5% | 600 | 2 | 0.700 | 0.800 | 2.0 |"
    assert lines[3] == "| two-class | kfold-training | symmetric | 5% | 600 | 1 | 0.500 | 0.600 | 100.0 |"
    assert lines[4] == "| ten-class | linear-head | one-way | 5% | 10,000 | 1 | 0.900 | 0.810 | 3.0 |"
    assert "the K-fold linear head and cleanlab 2.3 s per setting" in text
    assert "| symmetric | 5% | 0.9500 | 0.9850 (310) | 0.9900 |" in lines
    assert "| resized | 25 | 0.99812 | 0.99931 | 0.99998 |" in lines
    assert "| --duplicate-cosine | exact | resized | re-encoded | cropped | other pairs | seconds |" in lines
    assert "| 0.95 | 25 of 25 | 25 of 25 | 25 of 25 | 20 of 25 | 5,954 | 21.5 |" in lines
    assert f"| {DEFAULT_DUPLICATE_COSINE:g} (default) | 25 of 25 | 24 of 25 | 25 of 25 | 0 of 25 | 3 | 20.0 |" in lines
    assert "| 0.9999 | 25 of 25 | 20 of 25 | 21 of 25 | 0 of 25 | 0 | 19.0 |" in lines


def test_summary_of_the_duplicates_alone_has_no_label_table() -> None:
    copies = experiment.Duplicates([], [experiment.DuplicateRow(0.99, 2, dict.fromkeys(experiment.COPY_KINDS, 2), 0,
                                                                1.0)])
    text = experiment.summary_table([], {"embedder_seconds": 3.0, "images": 600.0}, (), copies)
    assert text.splitlines()[0] == ("Writing the data, training and exporting the embedder took 3 s (the data and "
                                    "embedder are reused from --work when present).")
    assert "| set |" not in text and "| 0.99 | 2 of 2 | 2 of 2 | 2 of 2 | 2 of 2 | 0 | 1.0 |" in text.splitlines()


def test_copy_cosines_are_the_min_median_and_max_per_kind_of_each_copy_to_its_original() -> None:
    originals = np.eye(3)[[0, 0, 1, 2]]
    copies = np.asarray([[1.0, 0, 0], [0.6, 0.8, 0], [0, 0.8, 0.6], [0, 0, 1.0]])
    cosines = experiment.copy_cosines(copies, originals, ["exact", "resized", "resized", "resized"])
    assert cosines == [experiment.CopyCosines("exact", 1, 1.0, 1.0, 1.0),
                       experiment.CopyCosines("resized", 3, 0.6, 0.8, 1.0)]


def test_found_copies_count_planted_pairs_either_way_round_and_the_others() -> None:
    planted = {"copy-exact-0000.jpg": ("exact", "a.jpg"), "copy-resized-0001.jpg": ("resized", "b.jpg"),
               "copy-cropped-0002.jpg": ("cropped", "c.jpg")}
    pairs = [("copy-exact-0000.jpg", "a.jpg"), ("b.jpg", "copy-resized-0001.jpg"), ("copy-cropped-0002.jpg", "d.jpg"),
             ("e.jpg", "f.jpg")]
    assert experiment.found_copies(planted, pairs) == ({"exact": 1, "resized": 1, "re-encoded": 0, "cropped": 0}, 2)


def test_section_rows_name_each_section_and_mark_the_audits_default() -> None:
    copies = experiment.Duplicates(
        [experiment.CopyCosines("exact", 2, 1.0, 1.0, 1.0)],
        [experiment.DuplicateRow(t, 2, {"exact": 2}, n, 1.5) for t, n in ((0.95, 40), (DEFAULT_DUPLICATE_COSINE, 0))])
    rows = experiment.section_rows([], copies)
    assert rows == [{"section": "cosines", "kind": "exact", "copies": 2, "min": 1.0, "median": 1.0, "max": 1.0},
                    {"section": "duplicates", "threshold": 0.95, "planted": 2, "found": {"exact": 2}, "other": 40,
                     "seconds": 1.5, "default": False},
                    {"section": "duplicates", "threshold": DEFAULT_DUPLICATE_COSINE, "planted": 2,
                     "found": {"exact": 2}, "other": 0, "seconds": 1.5, "default": True}]
    assert DEFAULT_DUPLICATE_COSINE in experiment.THRESHOLDS


def test_only_duplicates_needs_copies_to_plant(tmp_path) -> None:
    from click.testing import CliRunner

    done = CliRunner().invoke(experiment.main, ["--only", "duplicates", "--copies-per-kind", "0", "--work",
                                                str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and "--only duplicates plants the copies: give --copies-per-kind" in done.output
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_one_way_flips_of_the_ten_class_set_take_shirts_to_trousers() -> None:
    classes = ("shirt", "sneaker", "trouser")
    labels = np.asarray([0] * 50 + [1] * 50 + [2] * 50)
    noisy, flipped = experiment.flip_labels(labels, classes, "one-way", 0.10, 1, experiment.ONE_WAY["ten-class"])
    assert len(flipped) == 15 and set(labels[flipped].tolist()) == {0} and set(noisy[flipped].tolist()) == {2}


def test_planted_copies_are_the_kinds_asked_of_distinct_originals(tmp_path) -> None:
    from PIL import Image

    originals = []
    for i in range(12):
        path = tmp_path / "src" / f"{i:03d}_x.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((28, 28, 3), i * 20, dtype=np.uint8)).save(path)
        originals.append(path)
    planted = experiment.plant_copies(originals, tmp_path / "val", per_kind=2, seed=0)
    assert sorted(kind for kind, _ in planted.values()) == sorted(experiment.COPY_KINDS * 2)
    assert len({original for _, original in planted.values()}) == 8
    sizes = {kind: Image.open(tmp_path / "val" / name).size for name, (kind, _) in planted.items()}
    assert sizes == {"exact": (28, 28), "resized": (56, 56), "re-encoded": (28, 28), "cropped": (24, 24)}
    exact = [name for name, (kind, _) in planted.items() if kind == "exact"][0]
    assert (tmp_path / "val" / exact).read_bytes() == (tmp_path / "src" / planted[exact][1]).read_bytes()


def test_label_next_experiment_rounds_add_the_labels_asked_and_repeat_for_a_seed() -> None:
    from benchmarks.experiments import label_next

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + 0.8 * rng.normal(size=(120, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for method in label_next.METHODS:
        rows = label_next.run_method(method, x[:90], y[:90], x[90:], y[90:], 3, seed=0, start_per_class=2,
                                     per_round=5, rounds=3)
        assert [r.labelled for r in rows] == [6, 11, 16, 21] and [r.round for r in rows] == [0, 1, 2, 3]
        again = label_next.run_method(method, x[:90], y[:90], x[90:], y[90:], 3, seed=0, start_per_class=2,
                                      per_round=5, rounds=3)
        assert again == rows
    rows = [label_next.Row(m, 0, r, 100 + 100 * r, acc) for m, accs in (("random", (0.5, 0.6, 0.7)),
                                                                       ("label-next", (0.55, 0.7, 0.8)))
            for r, acc in enumerate(accs)]
    assert label_next.labels_to_reach(rows, "label-next", 0.7) == 200
    means = label_next.mean_rows(rows + [label_next.Row("uncertainty", 0, r, 100 + 100 * r, 0.5) for r in range(3)]
                                 + [label_next.Row("random", 1, r, 100 + 100 * r, 0.7) for r in range(3)])
    first = next(m for m in means if m["method"] == "random" and m["round"] == 0)
    assert first == {"section": "mean", "method": "random", "round": 0, "labelled": 100, "seeds": 2,
                     "test_accuracy": pytest.approx(0.6), "min": 0.5, "max": 0.7}
    assert label_next.labels_to_reach(rows, "random", 0.75) is None
