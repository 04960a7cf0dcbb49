"""gcv-data fashion-mnist --pretraining-set: the seven other classes beside the target set, no image shared."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from garmentcv.data.cli import main as data_main
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, PRETRAINING_CLASSES, write_fashion_mnist
from garmentcv.data.layouts import load_dataset
from garmentcv.errors import DatasetError


def _hashes(*folders: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in f.iterdir()}


def test_the_pretraining_set_holds_the_seven_other_classes_and_no_target_image(tmp_path: Path) -> None:
    summary = write_fashion_mnist(tmp_path, DEFAULT_SOURCE, max_per_class=5, pretraining_set=True)
    assert PRETRAINING_CLASSES == ("pullover", "dress", "coat", "sandal", "sneaker", "bag", "ankle-boot")
    pre = load_dataset(tmp_path / "pretrain")
    assert pre.layout.value == "lamoda" and len(pre.samples) == 35
    assert pre.class_counts() == {c: 5 for c in sorted(PRETRAINING_CLASSES)}
    assert summary.pretrain_counts == {c: 5 for c in sorted(PRETRAINING_CLASSES)}
    assert summary.pretrain_shared == 0
    assert not _hashes(tmp_path / "pretrain") & _hashes(tmp_path / "train", tmp_path / "test")
    assert summary.train_counts == {"bluzy": 5, "bryuki": 5}


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_an_image_also_in_the_target_set_is_left_out_of_the_pretraining_set_and_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(4, 28, 28))
    images[2] = images[0]  # a pullover (2) that is byte for byte the trouser (1) at index 0
    labels = np.array([1, 6, 2, 2])
    source = tmp_path / "src"
    source.mkdir()
    for prefix in ("train", "t10k"):
        _write_idx(source / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(source / f"{prefix}-labels-idx1-ubyte", labels)
    summary = write_fashion_mnist(tmp_path / "out", source, pretraining_set=True)
    assert summary.pretrain_counts == {"pullover": 1} and summary.pretrain_shared == 1
    assert not _hashes(tmp_path / "out" / "pretrain") & _hashes(tmp_path / "out" / "train", tmp_path / "out" / "test")


def test_all_classes_and_a_pretraining_set_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--all-classes.*--pretraining-set"):
        write_fashion_mnist(tmp_path, DEFAULT_SOURCE, max_per_class=1, all_classes=True, pretraining_set=True)


def test_cli_reports_the_pretraining_set_and_the_check(tmp_path: Path) -> None:
    args = ["fashion-mnist", "--out", str(tmp_path), "--max-per-class", "2", "--pretraining-set", "-q"]
    result = CliRunner().invoke(data_main, args)
    assert result.exit_code == 0, result.output
    counts = "{'ankle-boot': 2, 'bag': 2, 'coat': 2, 'dress': 2, 'pullover': 2, 'sandal': 2, 'sneaker': 2}"
    assert f"pretrain: {counts} -> {tmp_path / 'pretrain'}" in result.output
    assert "no image shared with train/ or test/ (SHA-256); 0 left out" in result.output
