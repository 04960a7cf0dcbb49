"""Dataset layouts: detection, reading, skipping and the errors users see."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from garmentcv.data.layouts import Layout, detect_layout, lamoda_label, load_dataset, scan_images
from garmentcv.errors import DatasetError


def test_lamoda_layout_reads_labels_after_the_last_underscore(make_lamoda) -> None:
    root = make_lamoda(per_class=3)
    (root / "0100_extra_bryuki.jpg").write_bytes((root / "0001_bluzy.jpg").read_bytes())
    ds = load_dataset(root)
    assert ds.layout is Layout.LAMODA
    assert ds.classes == ("bluzy", "bryuki")
    assert ds.class_counts() == {"bluzy": 3, "bryuki": 4}
    assert [s.path.name for s in ds.samples][:4] == [
        "0001_bluzy.jpg", "0002_bluzy.jpg", "0003_bluzy.jpg", "0004_bryuki.jpg",
    ]
    assert ds.targets == [0, 0, 0, 1, 1, 1, 1]


def test_class_order_is_sorted_for_any_number_of_classes(make_lamoda) -> None:
    ds = load_dataset(make_lamoda(classes=("zeta", "alpha", "mid"), per_class=2))
    assert ds.classes == ("alpha", "mid", "zeta")
    assert len(ds.samples) == 6


def test_hidden_and_non_image_files_are_skipped_with_reasons(make_lamoda) -> None:
    root = make_lamoda(per_class=2)
    (root / ".DS_Store").write_bytes(b"x")
    (root / ".0009_bluzy.jpg").write_bytes((root / "0001_bluzy.jpg").read_bytes())
    (root / "notes.txt").write_text("hello")
    (root / "0010_bluzy.JPG").write_bytes((root / "0001_bluzy.jpg").read_bytes())  # upper case is an image
    ds = load_dataset(root)
    assert len(ds.samples) == 5
    assert sorted((s.path.name, s.reason) for s in ds.skipped) == [
        (".0009_bluzy.jpg", "hidden"),
        (".DS_Store", "hidden"),
        ("notes.txt", "not an image"),
    ]


def test_folders_layout_reads_nested_images_and_skips_hidden_folders(tmp_path: Path, image_writer) -> None:
    root = tmp_path / "ds"
    image_writer(root / "shirt" / "a.jpg")
    image_writer(root / "shirt" / "deeper" / "b.png")
    image_writer(root / "trouser" / "c.jpg")
    image_writer(root / ".cache" / "d.jpg")
    ds = load_dataset(root)
    assert ds.layout is Layout.FOLDERS
    assert ds.classes == ("shirt", "trouser")
    assert [(s.path.relative_to(root).as_posix(), s.label) for s in ds.samples] == [
        ("shirt/a.jpg", "shirt"),
        ("shirt/deeper/b.png", "shirt"),
        ("trouser/c.jpg", "trouser"),
    ]
    assert [(s.path.name, s.reason) for s in ds.skipped] == [(".cache", "hidden")]


def test_folders_layout_refuses_an_empty_class(tmp_path: Path, image_writer) -> None:
    image_writer(tmp_path / "ds" / "a" / "1.jpg")
    image_writer(tmp_path / "ds" / "b" / "2.jpg")
    (tmp_path / "ds" / "empty").mkdir()
    (tmp_path / "ds" / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match=r"1 class folder without any image: .*empty"):
        load_dataset(tmp_path / "ds")


def test_csv_manifest_resolves_paths_relative_to_itself(tmp_path: Path, image_writer) -> None:
    image_writer(tmp_path / "img" / "x.jpg")
    image_writer(tmp_path / "img" / "y.jpg")
    absolute = image_writer(tmp_path / "elsewhere" / "z.jpg")
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\nimg/x.jpg,coat\nimg/y.jpg,dress\n{absolute},coat\nimg/readme.txt,coat\n")
    ds = load_dataset(manifest)
    assert ds.layout is Layout.CSV
    assert ds.class_counts() == {"coat": 2, "dress": 1}
    assert [s.reason for s in ds.skipped] == ["not an image"]


def test_csv_manifest_reports_missing_files_and_bad_header(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nmissing.jpg,a\n")
    with pytest.raises(DatasetError, match=r"1 listed file does not exist: .*missing.jpg \(line 2\)"):
        load_dataset(manifest)
    manifest.write_text("file,class\nx.jpg,a\n")
    with pytest.raises(DatasetError, match="expected a header with 'path' and 'label'"):
        load_dataset(manifest)


def test_one_class_is_refused(make_lamoda) -> None:
    with pytest.raises(DatasetError, match=r"in 1 class \['bluzy'\]; training needs at least 2"):
        load_dataset(make_lamoda(classes=("bluzy",), per_class=3))


def test_file_without_label_is_refused_with_its_name(make_lamoda) -> None:
    root = make_lamoda(per_class=1)
    (root / "0003.jpg").write_bytes((root / "0001_bluzy.jpg").read_bytes())
    with pytest.raises(DatasetError, match=r"0003.jpg: file name has no label"):
        load_dataset(root)


def test_invalid_class_name_is_refused_naming_a_file(tmp_path: Path, image_writer) -> None:
    image_writer(tmp_path / "ds" / "good" / "a.jpg")
    image_writer(tmp_path / "ds" / "-bad" / "b.jpg")
    with pytest.raises(DatasetError, match=r"an invalid class name \['-bad'\] \(e.g. .*b.jpg\)"):
        load_dataset(tmp_path / "ds")


def test_ambiguous_folder_needs_layout(make_lamoda, image_writer) -> None:
    root = make_lamoda(per_class=2)
    image_writer(root / "sub" / "x.jpg")
    with pytest.raises(DatasetError, match="layout is ambiguous; pass --layout"):
        load_dataset(root)
    assert load_dataset(root, layout="lamoda").class_counts() == {"bluzy": 2, "bryuki": 2}


def test_detect_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        detect_layout(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images and no class folders found; the dataset layouts: docs/data.md"):
        detect_layout(tmp_path / "empty")


def test_lamoda_label() -> None:
    assert lamoda_label(Path("15732_bryuki.jpg")) == "bryuki"
    assert lamoda_label(Path("a_b_c.png")) == "c"
    with pytest.raises(DatasetError):
        lamoda_label(Path("123_.jpg"))


def test_scan_images_never_follows_symlink_loops(tmp_path: Path, image_writer) -> None:
    image_writer(tmp_path / "a" / "1.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    assert [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)] == ["a/1.jpg"]


# --- unreadable input, unwritable output ------------------------------------------------------------------------------


def test_csv_manifest_with_a_utf8_byte_order_mark_loads(tmp_path: Path, image_writer) -> None:
    """Spreadsheet programs save "CSV UTF-8" with a BOM; the header must still read 'path'."""
    image_writer(tmp_path / "img" / "x.jpg")
    image_writer(tmp_path / "img" / "y.jpg")
    manifest = tmp_path / "labels.csv"
    manifest.write_bytes("path,label\r\nimg/x.jpg,платье\r\nimg/y.jpg,coat\r\n".encode("utf-8-sig"))
    ds = load_dataset(manifest)
    assert ds.classes == ("coat", "платье")
    assert [(s.path.name, s.label) for s in ds.samples] == [("x.jpg", "платье"), ("y.jpg", "coat")]


def test_csv_manifest_with_a_non_utf8_file_name_round_trips(tmp_path: Path, image_writer) -> None:
    """gcv-train writes train.csv/val.csv with surrogateescape; such a name must read back to the same file."""
    image_writer(tmp_path / "ok.jpg")
    name = os.fsdecode(b"caf\xe9_\xff.jpg")  # Latin-1 bytes, not valid UTF-8
    odd = tmp_path / name
    odd.write_bytes((tmp_path / "ok.jpg").read_bytes())
    assert os.path.exists(os.path.join(os.fsencode(tmp_path), b"caf\xe9_\xff.jpg"))
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label\n" + os.fsencode(name) + b",bluzy\nok.jpg,bryuki\n")
    ds = load_dataset(manifest)
    assert [(s.path, s.label) for s in ds.samples] == [(odd, "bluzy"), (tmp_path / "ok.jpg", "bryuki")]
    assert ds.samples[0].path.is_file()


def test_symlinked_folders_are_reported_as_skipped(tmp_path: Path, image_writer) -> None:
    image_writer(tmp_path / "real" / "1.jpg")
    image_writer(tmp_path / "scan" / "2.jpg")
    os.symlink(tmp_path / "real", tmp_path / "scan" / "linked")
    skipped: list = []
    found = list(scan_images(tmp_path / "scan", skipped=skipped))
    assert [p.name for p in found] == ["2.jpg"]
    assert [(s.path.name, s.reason) for s in skipped] == [("linked", "symlinked folder (not followed)")]


def test_symlinked_class_folder_is_reported_as_skipped(tmp_path: Path, image_writer) -> None:
    image_writer(tmp_path / "ds" / "a" / "1.jpg")
    image_writer(tmp_path / "ds" / "b" / "2.jpg")
    image_writer(tmp_path / "elsewhere" / "3.jpg")
    os.symlink(tmp_path / "elsewhere", tmp_path / "ds" / "c")
    ds = load_dataset(tmp_path / "ds", "folders")
    assert ds.classes == ("a", "b")
    assert [(s.path.name, s.reason) for s in ds.skipped] == [("c", "symlinked folder (not followed)")]


def test_counts_in_messages_are_singular_or_plural(tmp_path: Path, make_lamoda) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nmissing.jpg,a\n")
    with pytest.raises(DatasetError, match=r": 1 listed file does not exist: "):
        load_dataset(manifest)
    manifest.write_text("path,label\nmissing.jpg,a\nmissing2.jpg,a\n")
    with pytest.raises(DatasetError, match=r": 2 listed files do not exist: "):
        load_dataset(manifest)
    with pytest.raises(DatasetError, match=r"found 3 images in 1 class \['bluzy'\]; training needs at least 2"):
        load_dataset(make_lamoda(classes=("bluzy",), per_class=3))


def test_jfif_and_jpe_are_images_in_scan_and_in_both_folder_layouts(tmp_path: Path, image_writer) -> None:
    """Pillow registers .jfif and .jpe for JPEG (and .apng for PNG): found like .jpg, not skipped."""
    jpeg = image_writer(tmp_path / "src.jpg").read_bytes()
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("0001_bluzy.jpg", "0002_bluzy.jfif", "0003_bryuki.JPE", "0004_bryuki.jpe", "0005_bryuki.mpo"):
        (flat / name).write_bytes(jpeg)
    assert [p.name for p in scan_images(flat)] == ["0001_bluzy.jpg", "0002_bluzy.jfif", "0003_bryuki.JPE",
                                                   "0004_bryuki.jpe"]
    ds = load_dataset(flat)
    assert ds.layout is Layout.LAMODA
    assert ds.class_counts() == {"bluzy": 2, "bryuki": 2}
    assert [(s.path.name, s.reason) for s in ds.skipped] == [("0005_bryuki.mpo", "not an image")]

    nested = tmp_path / "nested"
    for name in ("shirt/a.jfif", "shirt/deeper/b.jpe", "trouser/c.jpg", "trouser/d.apng"):
        (nested / name).parent.mkdir(parents=True, exist_ok=True)
        (nested / name).write_bytes(jpeg)
    ds = load_dataset(nested)
    assert ds.layout is Layout.FOLDERS
    assert [(s.path.relative_to(nested).as_posix(), s.label) for s in ds.samples] == [
        ("shirt/a.jfif", "shirt"), ("shirt/deeper/b.jpe", "shirt"), ("trouser/c.jpg", "trouser"),
        ("trouser/d.apng", "trouser"),
    ]
    assert ds.skipped == ()
    assert detect_layout(tmp_path / "flat") is Layout.LAMODA
