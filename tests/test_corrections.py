"""Corrections files: reading and its errors, applying relabels and drops, gcv train --corrections and --resume."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentcv.data.corrections import (
    Correction,
    CorrectionsError,
    apply_corrections,
    read_corrections,
    write_corrections,
)
from garmentcv.data.layouts import load_dataset
from garmentcv.errors import CheckpointError
from garmentcv.train import loop
from garmentcv.train.cli import main as train_main
from garmentcv.train.config import TrainConfig

TINY = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _split_rows(out: Path) -> dict[str, str]:
    """``file name -> label`` of every image the run trained or validated on (its train.csv and val.csv)."""
    rows: dict[str, str] = {}
    for name in ("train.csv", "val.csv"):
        with open(out / name, newline="", encoding="utf-8") as handle:
            rows.update({Path(r["path"]).name: r["label"] for r in csv.DictReader(handle)})
    return rows


def test_read_corrections_keeps_rows_in_order_and_ignores_extra_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", 'path,label,action,note\r\n"a,b.jpg",bryuki,relabel,x\r\nc.jpg,,DROP,\r\n')
    read = read_corrections(path)
    assert read.rows == (Correction("a,b.jpg", "bryuki", "relabel", 2), Correction("c.jpg", "", "drop", 3))
    assert read.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read.source == path


@pytest.mark.parametrize(("text", "message"), [
    ("path,label\r\na.jpg,x\r\n", r"c.csv, line 1: expected a header with the columns path,label,action.*missing "
                                  r"action"),
    ("path,label,action\r\n,x,relabel\r\n", r"c.csv, line 2: empty path"),
    ("path,label,action\r\na.jpg,x,rename\r\n", r"c.csv, line 2: action 'rename' for a.jpg; use one of relabel, drop"),
    ("path,label,action\r\na.jpg,,relabel\r\n", r"c.csv, line 2: relabel of a.jpg to '', which is not a class name"),
    ("path,label,action\r\na.jpg,x,drop\r\n./a.jpg,y,relabel\r\n", r"c.csv, line 3: \./a.jpg was already corrected "
                                                                  r"on line 2"),
    ("path,label,action\r\na,b.jpg,x,drop\r\n", r"c.csv, line 2: more cells than the header has columns"),
])
def test_a_bad_corrections_file_is_refused_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CorrectionsError, match=message):
        read_corrections(_write(tmp_path / "c.csv", text))


def test_a_missing_corrections_file_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(CorrectionsError, match=r"nothing.csv: cannot read the corrections file"):
        read_corrections(tmp_path / "nothing.csv")


def test_write_corrections_round_trips_through_read(tmp_path: Path) -> None:
    rows = [Correction('odd, "name".jpg', "bluzy", "relabel"), Correction("sub/b.jpg", "", "drop")]
    path = tmp_path / "c.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        text = write_corrections(rows, handle)
    assert text == 'path,label,action\r\n"odd, ""name"".jpg",bluzy,relabel\r\nsub/b.jpg,,drop\r\n'
    assert [(r.path, r.label, r.action) for r in read_corrections(path).rows] == [
        ('odd, "name".jpg', "bluzy", "relabel"), ("sub/b.jpg", "", "drop")]


def test_apply_corrections_relabels_and_drops_exactly_the_named_samples(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    path = _write(tmp_path / "c.csv", f"path,label,action\r\n0001_bluzy.jpg,bryuki,relabel\r\n"
                                      f"{data / '0005_bryuki.jpg'},,drop\r\n")
    before = load_dataset(data)
    after, applied = apply_corrections(before, read_corrections(path))
    assert [(s.path.name, s.label) for s in after.samples] == [
        ("0001_bluzy.jpg", "bryuki"), ("0002_bluzy.jpg", "bluzy"), ("0003_bluzy.jpg", "bluzy"),
        ("0004_bryuki.jpg", "bryuki"), ("0006_bryuki.jpg", "bryuki")]
    assert applied.relabelled == ((data / "0001_bluzy.jpg", "bluzy", "bryuki"),)
    assert applied.dropped == (data / "0005_bryuki.jpg",)
    assert after.classes == before.classes


@pytest.mark.parametrize(("rows", "message"), [
    ("9999_bluzy.jpg,,drop", r"c.csv, line 2: 9999_bluzy.jpg is not an image of the dataset"),
    ("0001_bluzy.jpg,shorty,relabel", r"c.csv, line 2: relabel of 0001_bluzy.jpg to 'shorty', which is not a class"),
    ("0001_bluzy.jpg,,drop\r\n0002_bluzy.jpg,,drop\r\n0003_bluzy.jpg,,drop",
     r"c.csv: after its corrections, class\(es\) bluzy of .* have no image left"),
])
def test_corrections_that_do_not_fit_the_dataset_are_refused(make_lamoda, tmp_path: Path, rows: str,
                                                              message: str) -> None:
    data = make_lamoda(per_class=3)
    path = _write(tmp_path / "c.csv", f"path,label,action\r\n{rows}\r\n")
    with pytest.raises(CorrectionsError, match=message):
        apply_corrections(load_dataset(data), read_corrections(path))


def test_train_with_corrections_sees_exactly_the_corrected_samples_and_records_the_file(
    make_lamoda, tmp_path: Path
) -> None:
    data = make_lamoda(per_class=4)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    corrections = _write(tmp_path / "c.csv", "path,label,action\r\n0002_bluzy.jpg,bryuki,relabel\r\n"
                                             "0007_bryuki.jpg,,drop\r\n")
    out = tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, corrections=corrections, **TINY), progress=False)
    expected = {f"{i:04d}_{'bluzy' if i <= 4 else 'bryuki'}.jpg": "bluzy" if i <= 4 else "bryuki" for i in range(1, 9)}
    expected["0002_bluzy.jpg"] = "bryuki"
    del expected["0007_bryuki.jpg"]
    assert _split_rows(out) == expected
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # images untouched
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["corrections"] == str(corrections)
    assert config["corrections_sha256"] == hashlib.sha256(corrections.read_bytes()).hexdigest()


def test_resume_refuses_another_or_a_changed_corrections_file(make_lamoda, tmp_path: Path) -> None:
    data, out = make_lamoda(per_class=4), tmp_path / "run"
    first = _write(tmp_path / "c.csv", "path,label,action\r\n0007_bryuki.jpg,,drop\r\n")
    loop.train(TrainConfig(data=data, out=out, corrections=first, **TINY), progress=False)
    other = _write(tmp_path / "other.csv", "path,label,action\r\n0008_bryuki.jpg,,drop\r\n")
    with pytest.raises(CheckpointError, match=r"settings that differ from the run's \(corrections: .*c.csv'\) -> "
                                              r".*other.csv'\)\)"):
        loop.train(TrainConfig(data=data, out=out, corrections=other, resume=True, **TINY), progress=False)
    with pytest.raises(CheckpointError, match=r"corrections: .*c.csv'\) -> None"):
        loop.train(TrainConfig(data=data, out=out, resume=True, **TINY), progress=False)
    _write(first, "path,label,action\r\n0008_bryuki.jpg,,drop\r\n")
    with pytest.raises(CheckpointError, match=r"the corrections file .*c.csv changed since the run started \(sha256 "):
        loop.train(TrainConfig(data=data, out=out, corrections=first, resume=True, **TINY), progress=False)
    _write(first, "path,label,action\r\n0007_bryuki.jpg,,drop\r\n")
    done = loop.train(TrainConfig(data=data, out=out, corrections=first, resume=True, **TINY), progress=False)
    assert done.already_complete


def test_cli_takes_corrections_and_a_bad_file_exits_1_naming_its_line(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    bad = _write(tmp_path / "c.csv", "path,label,action\r\n0001_bluzy.jpg,nope,relabel\r\n")
    result = CliRunner().invoke(train_main, [str(data), "--out", str(tmp_path / "run"), "--corrections", str(bad),
                                             "--weights", "none", "--image-size", "32", "--epochs", "1"])
    assert result.exit_code == 1, result.output
    assert "c.csv, line 2: relabel of 0001_bluzy.jpg to 'nope', which is not a class of" in result.output
    assert not (tmp_path / "run").exists()


def test_paths_of_a_csv_manifest_dataset_start_at_the_manifests_folder(tmp_path: Path) -> None:
    from tests.conftest import write_image

    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write_image(tmp_path / "data" / "img" / name, seed=ord(name[0]))
    manifest = _write(tmp_path / "data" / "labels.csv",
                      "path,label\nimg/a.jpg,bluzy\nimg/b.jpg,bluzy\nimg/c.jpg,bryuki\nimg/d.jpg,bryuki\n")
    corrections = _write(tmp_path / "c.csv", "path,label,action\nimg/b.jpg,bryuki,relabel\n")
    after, applied = apply_corrections(load_dataset(manifest), read_corrections(corrections))
    assert [(s.path.name, s.label) for s in after.samples] == [
        ("a.jpg", "bluzy"), ("b.jpg", "bryuki"), ("c.jpg", "bryuki"), ("d.jpg", "bryuki")]
    assert applied.relabelled == ((tmp_path / "data" / "img" / "b.jpg", "bluzy", "bryuki"),)


#: What an error about corrections that leave too little tells the user to do.
ADVICE = ("review the corrections file and delete the rows you disagree with, or write it again from the fix list "
          "acting on fewer issue kinds (gcv data corrections FIX_LIST --issue label, for example)")


def _drops_and_relabels(tmp_path: Path, drop: list[str], relabel: dict[str, str] | None = None) -> Path:
    rows = [f"{name},,drop" for name in drop] + [f"{name},{label},relabel" for name, label in (relabel or {}).items()]
    return _write(tmp_path / "c.csv", "path,label,action\r\n" + "\r\n".join(rows) + "\r\n")


def test_train_refuses_corrections_that_leave_a_class_too_few_images_to_validate(make_lamoda, tmp_path: Path) -> None:
    # 0001-0004 bluzy, 0005-0008 bryuki, 0009-0012 futbolki; without the corrections each class has a validation image
    data = make_lamoda(classes=("bluzy", "bryuki", "futbolki"), per_class=4)
    corrections = _drops_and_relabels(
        tmp_path, ["0003_bluzy.jpg", "0004_bluzy.jpg", "0008_bryuki.jpg", "0010_futbolki.jpg", "0011_futbolki.jpg",
                   "0012_futbolki.jpg"], {"0007_bryuki.jpg": "bluzy"})
    result = CliRunner().invoke(train_main, [str(data), "--out", str(tmp_path / "run"), "--corrections",
                                             str(corrections), "--weights", "none", "--image-size", "32",
                                             "--epochs", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: {corrections}: after its corrections, class(es) futbolki of {data} have fewer than 2 images, too few "
        "to split for validation (images per class before -> after: bluzy 4 -> 3 (2 dropped, 1 relabelled in), "
        f"bryuki 4 -> 2 (1 dropped, 1 relabelled out), futbolki 4 -> 1 (3 dropped)); {ADVICE}")
    assert not (tmp_path / "run").exists()


def test_corrections_that_empty_a_class_name_the_counts_before_and_after(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)  # 0001-0003 bluzy, 0004-0006 bryuki
    corrections = _drops_and_relabels(tmp_path, ["0001_bluzy.jpg", "0002_bluzy.jpg"], {"0003_bluzy.jpg": "bryuki"})
    with pytest.raises(CorrectionsError) as raised:
        apply_corrections(load_dataset(data), read_corrections(corrections))
    assert str(raised.value) == (
        f"{corrections}: after its corrections, class(es) bluzy of {data} have no image left (images per class "
        f"before -> after: bluzy 3 -> 0 (2 dropped, 1 relabelled out), bryuki 3 -> 4 (1 relabelled in)); {ADVICE}, "
        "or remove the class from the dataset")


def test_a_class_that_had_a_single_image_before_the_corrections_is_left_to_the_split(make_lamoda,
                                                                                     tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    for name in ("0002_bluzy.jpg", "0003_bluzy.jpg"):  # bluzy has one image without any correction
        (data / name).unlink()
    corrections = _drops_and_relabels(tmp_path, ["0006_bryuki.jpg"])
    dataset, _ = loop.training_dataset(TrainConfig(data=data, out=tmp_path / "run", corrections=corrections, **TINY))
    assert dataset.class_counts() == {"bluzy": 1, "bryuki": 2}  # split_dataset warns about bluzy, as without the file


def test_with_val_data_corrections_may_leave_a_class_a_single_image(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    corrections = _drops_and_relabels(tmp_path, ["0001_bluzy.jpg", "0002_bluzy.jpg"])
    cfg = TrainConfig(data=data, out=tmp_path / "run", corrections=corrections, val_data=tmp_path / "val", **TINY)
    dataset, _ = loop.training_dataset(cfg)  # no split: every image of DATA trains
    assert dataset.class_counts() == {"bluzy": 1, "bryuki": 3}


def test_corrections_that_drop_more_than_half_the_images_warn_with_the_counts_per_class(
    make_lamoda, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_lamoda(per_class=6)  # 0001-0006 bluzy, 0007-0012 bryuki
    half = ["0001_bluzy.jpg", "0002_bluzy.jpg", "0003_bluzy.jpg", "0007_bryuki.jpg", "0008_bryuki.jpg",
            "0009_bryuki.jpg"]
    corrections = _drops_and_relabels(tmp_path, half)
    cfg = TrainConfig(data=data, out=tmp_path / "run", corrections=corrections, **TINY)
    with caplog.at_level("WARNING", logger="garmentcv"):
        loop.training_dataset(cfg)
    assert caplog.records == []  # exactly half is not more than half
    _drops_and_relabels(tmp_path, [*half, "0004_bluzy.jpg"], {"0010_bryuki.jpg": "bluzy"})
    with caplog.at_level("WARNING", logger="garmentcv"):
        dataset, _ = loop.training_dataset(cfg)
    assert dataset.class_counts() == {"bluzy": 3, "bryuki": 2}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "WARNING",
        f"{corrections}: the corrections drop 7 of 12 images (58%), more than half; images per class before -> "
        "after: bluzy 6 -> 3 (4 dropped, 1 relabelled in), bryuki 6 -> 2 (3 dropped, 1 relabelled out); check that "
        "the file acts on the issues you meant")]
