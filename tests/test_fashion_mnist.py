"""The Fashion-MNIST stand-in built from Debian's dataset-fashion-mnist (installed by .ci/run)."""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from garmentcv.data.cli import main as data_main
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, read_idx, write_fashion_mnist
from garmentcv.data.layouts import load_dataset
from garmentcv.errors import DatasetError
from garmentcv.image import decode_image


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_debian_files_are_present() -> None:
    assert (DEFAULT_SOURCE / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"


def test_stand_in_has_lamoda_layout_and_exact_counts(tmp_path: Path) -> None:
    summary = write_fashion_mnist(tmp_path / "fm", max_per_class=5)
    assert summary.train_counts == {"bluzy": 5, "bryuki": 5}
    assert summary.test_counts == {"bluzy": 5, "bryuki": 5}
    ds = load_dataset(tmp_path / "fm" / "train")
    assert ds.classes == ("bluzy", "bryuki")
    assert ds.class_counts() == {"bluzy": 5, "bryuki": 5}
    assert sorted(p.name for p in (tmp_path / "fm" / "test").iterdir()) == sorted(f"{i}.jpg" for i in range(10))
    with open(tmp_path / "fm" / "test_labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["index", "label"]
    assert len(rows) == 11 and {r[1] for r in rows[1:]} == {"bluzy", "bryuki"}


def test_labels_follow_the_source_labels(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path / "fm", max_per_class=20)
    labels = read_idx(DEFAULT_SOURCE / "train-labels-idx1-ubyte.gz")
    wanted = [i for i, v in enumerate(labels.tolist()) if v in (0, 1, 6)]
    images = read_idx(DEFAULT_SOURCE / "train-images-idx3-ubyte.gz")
    files = sorted((tmp_path / "fm" / "train").iterdir())
    first = files[0]
    # The first kept source image is written first, inverted (dark garment on white) and lossy-compressed.
    expected = 255 - images[wanted[0]].astype(np.int16)
    got = decode_image(first)[:, :, 0].astype(np.int16)
    assert first.name == f"0001_{'bryuki' if labels[wanted[0]] == 1 else 'bluzy'}.jpg"
    assert np.abs(got - expected).mean() < 4
    assert got[0, 0] > 240  # white background


def test_output_is_deterministic(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path / "a", max_per_class=8)
    write_fashion_mnist(tmp_path / "b", max_per_class=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_all_classes_keeps_ten(tmp_path: Path) -> None:
    summary = write_fashion_mnist(tmp_path / "fm", max_per_class=2, all_classes=True)
    assert len(summary.train_counts) == 10 and set(summary.train_counts.values()) == {2}
    assert len(load_dataset(tmp_path / "fm" / "train").classes) == 10


def test_refuses_to_overwrite_and_reports_missing_source(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path / "fm", max_per_class=1)
    with pytest.raises(DatasetError, match="not empty"):
        write_fashion_mnist(tmp_path / "fm", max_per_class=1)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        write_fashion_mnist(tmp_path / "other", source=tmp_path)


def test_read_idx_rejects_truncated_files(tmp_path: Path) -> None:
    raw = gzip.decompress((DEFAULT_SOURCE / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "cut").write_bytes(raw[:100])
    with pytest.raises(DatasetError, match="truncated IDX file"):
        read_idx(tmp_path / "cut")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX file"):
        read_idx(tmp_path / "junk")


def test_cli_writes_and_summarises(tmp_path: Path) -> None:
    args = ["fashion-mnist", "--out", str(tmp_path / "fm"), "--max-per-class", "3", "-q"]
    result = CliRunner().invoke(data_main, args)
    assert result.exit_code == 0, result.output
    assert "train: {'bluzy': 3, 'bryuki': 3}" in result.output
    again = CliRunner().invoke(data_main, args)
    assert again.exit_code == 1 and "not empty" in again.output


def test_unwritable_out_is_a_clear_error_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--out under a file: exit 1 naming the file, and not one image is written or even read."""
    import garmentcv.data.cli as data_cli

    monkeypatch.setattr(data_cli, "write_fashion_mnist", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(data_main, ["fashion-mnist", "--out", str(tmp_path / "afile" / "sub"), "-q"])
    assert result.exit_code == 1, result.output
    assert "afile is not a folder but a file" in result.output and "Traceback" not in result.output
