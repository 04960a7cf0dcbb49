"""Out-of-sample probabilities by K-fold training (garmentcv.curate.kfold) and gcv data audit --probs kfold-training,
on 2 x 6 generated two-colour images and a random-init resnet18 at 32 px trained for one epoch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from garmentcv.curate.fixes import FIX_COLUMNS
from garmentcv.curate.kfold import kfold_training_probs
from garmentcv.data.cli import main as data_main
from garmentcv.data.layouts import load_dataset
from garmentcv.errors import DatasetError
from tests.curate_fixtures import CLASS_COLOURS, SIZE, build_embedding_model, colour_image

PER_CLASS = 6
FOLDS = 2
#: Learning rate of the fine-tunings.
LR = 0.001


def test_importing_the_audit_and_kfold_modules_imports_no_torch() -> None:
    code = "import sys, garmentcv.curate.audit, garmentcv.curate.kfold; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lamoda-layout set of 2 x 6 images, ``<c><i>_<label>.png``."""
    folder = tmp_path_factory.mktemp("kfold-data") / "data"
    for c, (label, colour) in enumerate(CLASS_COLOURS.items()):
        for i in range(PER_CLASS):
            colour_image(folder / f"{c}{i:02d}_{label}.png", colour, seed=300 + 10 * c + i)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """gcv train's best.pt of a random-init resnet18 trained one epoch at 32 px on ``data``."""
    from garmentcv.train.config import TrainConfig
    from garmentcv.train.loop import train

    out = tmp_path_factory.mktemp("kfold-checkpoint") / "run"
    cfg = TrainConfig(data=data, out=out, archs=("resnet18",), weights="none", epochs=1, image_size=SIZE,
                      batch_size=4, lr=1e-3, seed=0)
    return train(cfg, progress=False).archs[0].run_dir / "best.pt"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data: Path,
        checkpoint: Path) -> tuple[np.ndarray, list[dict[str, list[str]]], Path]:
    """A K-fold run at lr 0.001 (0.01 diverges from this barely trained checkpoint), with each fold's training and
    held-out image names as gcv train read them from its manifests (``train`` wrapped). Returns the probabilities,
    the folds and the work dir."""
    import garmentcv.train.loop as loop
    from garmentcv.train.config import TrainConfig

    dataset = load_dataset(data)
    paths = [s.path for s in dataset.samples]
    labels = np.asarray([dataset.classes.index(s.label) for s in dataset.samples])
    work = tmp_path_factory.mktemp("kfold-work")
    seen: list[dict[str, list[str]]] = []
    real = loop.train

    def recording(cfg: TrainConfig, *args: object, **kwargs: object) -> loop.TrainResult:
        assert (cfg.epochs, cfg.lr, Path(cfg.weights), cfg.archs) == (1, LR, checkpoint.resolve(), ("resnet18",))
        seen.append({"train": [s.path.name for s in load_dataset(cfg.data).samples],
                     "held": [s.path.name for s in load_dataset(cfg.val_data).samples]})
        return real(cfg, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train", recording)
        probs = kfold_training_probs(paths, labels, dataset.classes, checkpoint=checkpoint, folds=FOLDS, seed=0,
                                     epochs=1, lr=LR, work_dir=work)
    return probs, seen, work


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_embedding_model(tmp_path_factory.mktemp("kfold-model") / "model.onnx")


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, data: Path, model: Path, checkpoint: Path) -> Path:
    """gcv data audit --probs kfold-training with the library run's settings; returns its --out."""
    out = tmp_path_factory.mktemp("kfold-audit") / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--model", str(model), "--out", str(out),
                                          "--probs", "kfold-training", "--checkpoint", str(checkpoint),
                                          "--kfold-epochs", "1", "--kfold-lr", str(LR), "--folds", str(FOLDS),
                                          "--no-report", "-q"])
    assert done.exit_code == 0, done.output
    return out


def _written_probs(out: Path) -> tuple[list[str], np.ndarray]:
    with open(out / "out_of_sample.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["path"] for r in rows], np.asarray([[float(r["prob_bluzy"]), float(r["prob_bryuki"])] for r in rows])


def test_kfold_probabilities_have_one_row_per_image_that_sums_to_one(run) -> None:
    probs, _, work = run
    assert probs.shape == (2 * PER_CLASS, 2) and probs.dtype == np.float64
    assert np.abs(probs.sum(axis=1) - 1.0).max() <= 1e-6
    assert (probs > 1e-6).all()  # not saturated: the comparisons below compare real numbers
    assert list(work.iterdir()) == []  # the fold runs' temporary folder is removed


def test_every_image_is_held_out_and_scored_by_exactly_one_fold_that_did_not_train_on_it(run, data: Path) -> None:
    from sklearn.model_selection import StratifiedKFold

    _, seen, _ = run
    names = sorted(p.name for p in data.iterdir())
    assert len(seen) == FOLDS
    held = [name for fold in seen for name in fold["held"]]
    assert sorted(held) == names  # every image held out once, none twice
    for fold in seen:
        assert sorted(fold["train"] + fold["held"]) == names and not set(fold["train"]) & set(fold["held"])
        per_class = PER_CLASS // FOLDS
        assert sorted(n.split("_")[1] for n in fold["held"]) == ["bluzy.png"] * per_class + ["bryuki.png"] * per_class
    labels = np.asarray([int(n[0]) for n in names])
    expected = [sorted(names[i] for i in h) for _, h in
                StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(np.zeros(len(names)), labels)]
    assert [sorted(fold["held"]) for fold in seen] == expected


def test_kfold_probabilities_repeat_for_a_seed(run, audited: Path, data: Path) -> None:
    """Two runs with the same seed, the second through gcv data audit (which writes them with 6 decimals, a rounding
    of at most 5e-7): equal within 1e-6."""
    probs, _, _ = run
    paths, written = _written_probs(audited)
    assert paths == sorted(p.name for p in data.iterdir())
    assert np.abs(written - probs).max() <= 1e-6


def test_kfold_training_refuses_a_class_with_fewer_images_than_folds(data: Path, checkpoint: Path,
                                                                     tmp_path: Path) -> None:
    paths = sorted(data.iterdir())[:PER_CLASS + 2]  # 6 bluzy, 2 bryuki
    labels = np.asarray([int(p.name[0]) for p in paths])
    with pytest.raises(DatasetError, match=r"3 folds needs at least 2 classes of at least 3 images each, got "
                                           r"\{'bluzy': 6, 'bryuki': 2\}"):
        kfold_training_probs(paths, labels, tuple(CLASS_COLOURS), checkpoint=checkpoint, folds=3, seed=0, epochs=1,
                             work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_audit_kfold_training_without_a_checkpoint_is_a_usage_error(data: Path, model: Path, checkpoint: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "audit"
    args = ["audit", str(data), "--model", str(model), "--out", str(out), "-q"]
    done = CliRunner().invoke(data_main, [*args, "--probs", "kfold-training"])
    assert done.exit_code == 2, done.output
    assert done.stderr == ("Error: --probs kfold-training needs --checkpoint: give a gcv train checkpoint (best.pt) "
                           "of the same classes as the dataset, or use --probs linear-head\n")
    alone = CliRunner().invoke(data_main, [*args, "--checkpoint", str(checkpoint)])  # the default --probs linear-head
    assert alone.exit_code == 2, alone.output
    assert alone.stderr.startswith("Error: --checkpoint goes with --probs kfold-training (the linear-head method ")
    assert not out.exists()


def test_audit_refuses_a_checkpoint_whose_classes_are_not_the_datasets_in_order(data: Path, model: Path,
                                                                                checkpoint: Path,
                                                                                tmp_path: Path) -> None:
    from garmentcv.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    swapped = tmp_path / "swapped.pt"
    save_checkpoint(swapped, {**state, "classes": ["bryuki", "bluzy"]})
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--model", str(model), "--out", str(out),
                                          "--probs", "kfold-training", "--checkpoint", str(swapped), "-q"])
    assert done.exit_code == 1, done.output
    assert done.stderr == (f"Error: --checkpoint {swapped}: its classes ['bryuki', 'bluzy'] are not the dataset's "
                           "['bluzy', 'bryuki']; give a gcv train checkpoint trained on the same classes, in the "
                           "same order\n")
    assert not (out / "fix_list.csv").exists()


def test_audit_with_kfold_training_writes_the_fix_list_and_records_the_method(audited: Path,
                                                                             checkpoint: Path) -> None:
    assert sorted(p.name for p in audited.iterdir()) == ["audit.json", "duplicates.csv", "fix_list.csv",
                                                         "out_of_sample.csv"]  # no fold run left behind
    lines = (audited / "fix_list.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(FIX_COLUMNS)
    summary = json.loads((audited / "audit.json").read_text(encoding="utf-8"))
    assert (summary["method"], summary["checkpoint"], summary["folds"]) == ("kfold-training", str(checkpoint), FOLDS)
    assert (summary["settings"]["kfold_epochs"], summary["settings"]["kfold_lr"]) == (1, LR)
    assert summary["images"] == 2 * PER_CLASS and sum(summary["flagged"].values()) == len(lines) - 1


def test_audit_with_kfold_training_from_a_classify_runs_embeddings_writes_the_same_findings(
        audited: Path, data: Path, model: Path, checkpoint: Path, tmp_path: Path) -> None:
    """--probs kfold-training trains from --checkpoint, not from the embeddings: with --embeddings (a gcv classify run
    of the same model file over DATA) the probabilities repeat the --model route's within 1e-6 (two K-fold runs, each
    written with 6 decimals) and the fix list names the same images and issues."""
    from garmentcv.infer.cli import classify_main

    rows, embeddings = tmp_path / "rows.csv", tmp_path / "emb.npy"
    done = CliRunner().invoke(classify_main, [str(data), "--model", str(model), "--out", str(rows), "--embeddings",
                                              str(embeddings), "--device", "cpu", "-q"])
    assert done.exit_code == 0, done.output
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--embeddings", str(embeddings), "--out", str(out),
                                          "--probs", "kfold-training", "--checkpoint", str(checkpoint),
                                          "--kfold-epochs", "1", "--kfold-lr", str(LR), "--folds", str(FOLDS),
                                          "--no-report", "-q"])
    assert done.exit_code == 0, done.output
    paths, probs = _written_probs(out)
    expected_paths, expected = _written_probs(audited)
    assert paths == expected_paths and np.abs(probs - expected).max() <= 1e-6
    fixes = [(r["path"], r["issue"]) for r in csv.DictReader((out / "fix_list.csv").open(encoding="utf-8"))]
    assert fixes == [(r["path"], r["issue"]) for r in csv.DictReader((audited / "fix_list.csv").open(encoding="utf-8"))]
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert (summary["route"], summary["method"], summary["checkpoint"]) == ("embeddings", "kfold-training",
                                                                           str(checkpoint))
