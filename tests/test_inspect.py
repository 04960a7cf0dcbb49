"""gcv-data inspect: exact counts on a generated dataset with planted faults and on the Fashion-MNIST stand-in."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from garmentcv.data.cli import EXIT_NOT_READY, main
from garmentcv.data.fashion_mnist import write_fashion_mnist
from garmentcv.data.inspect import (
    COMMON_SIZES_IN_SUMMARY,
    DatasetReport,
    _size_report,
    inspect_dataset,
    render_text,
)
from garmentcv.data.layouts import Layout
from garmentcv.image import decode_image, decode_image_bytes

_RNG_SEED = 1234


def _jpeg(seed: int, size: tuple[int, int] = (32, 24), mode: str = "RGB", exif: bytes | None = None) -> bytes:
    """A noise JPEG, unique per seed; ``size`` is (width, height) px."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def _palette_png_with_transparency() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([255, 255, 255, 200, 30, 30] + [0] * (256 * 3 - 6))
    image.paste(1, (4, 4, 12, 12))
    buf = io.BytesIO()
    image.save(buf, format="PNG", transparency=0)
    return buf.getvalue()


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    return _jpeg(99, size=(40, 20), exif=exif.tobytes())


@pytest.fixture()
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A folders-layout dataset with 3 classes and every fault the report must find, plus a test folder.

    train/bluzy:  a0..a3 (32x24 JPEG), dup_a0.jpg and sub/dup_a0_again.jpg (= a0, same label),
                  truncated.jpg, text.jpg (text named .jpg), palette.png (P + transparency), cmyk.jpg (CMYK,
                  32x24), rotated.jpg (stored 40x20, EXIF orientation 6), .DS_Store (hidden), notes.txt
    train/bryuki: b0..b2, conflict.jpg (= bluzy/a1.jpg, different label)
    train/shorty: s0, s1
    test/:        leak.jpg (= bryuki/b0.jpg), own.jpg (unique)
    """
    train, test = tmp_path / "train", tmp_path / "test"
    bluzy, bryuki, shorty = train / "bluzy", train / "bryuki", train / "shorty"
    for folder in (bluzy / "sub", bryuki, shorty, test):
        folder.mkdir(parents=True)
    a = [_jpeg(_RNG_SEED + i) for i in range(4)]
    for i, data in enumerate(a):
        (bluzy / f"a{i}.jpg").write_bytes(data)
    (bluzy / "dup_a0.jpg").write_bytes(a[0])
    (bluzy / "sub" / "dup_a0_again.jpg").write_bytes(a[0])
    (bluzy / "truncated.jpg").write_bytes(a[3][: len(a[3]) // 2])
    (bluzy / "text.jpg").write_text("this is not an image\n")
    (bluzy / "palette.png").write_bytes(_palette_png_with_transparency())
    (bluzy / "cmyk.jpg").write_bytes(_jpeg(77, mode="CMYK"))
    (bluzy / "rotated.jpg").write_bytes(_rotated_jpeg())
    (bluzy / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (bluzy / "notes.txt").write_text("shot on a white background\n")
    b = [_jpeg(_RNG_SEED + 100 + i) for i in range(3)]
    for i, data in enumerate(b):
        (bryuki / f"b{i}.jpg").write_bytes(data)
    (bryuki / "conflict.jpg").write_bytes(a[1])
    for i in range(2):
        (shorty / f"s{i}.jpg").write_bytes(_jpeg(_RNG_SEED + 200 + i))
    (test / "leak.jpg").write_bytes(b[0])
    (test / "own.jpg").write_bytes(_jpeg(_RNG_SEED + 300))
    return train, test


def _rel(paths, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_planted_dataset_exact_findings(planted: tuple[Path, Path]) -> None:
    train, test = planted
    calls: list[tuple[int, int]] = []
    report = inspect_dataset(train, test=test, progress=lambda done, total: calls.append((done, total)))

    assert report.layout is Layout.FOLDERS
    assert report.classes == ("bluzy", "bryuki", "shorty")
    assert report.class_counts == {"bluzy": 11, "bryuki": 4, "shorty": 2}
    assert report.files == 17
    assert report.balance == pytest.approx(5.5)
    assert sorted((p.relative_to(train).as_posix(), r) for p, r in ((s.path, s.reason) for s in report.skipped)) == [
        ("bluzy/.DS_Store", "hidden"),
        ("bluzy/notes.txt", "not an image"),
    ]
    assert [(f.path.relative_to(train).as_posix(), f.label, f.reason) for f in report.decode_failures] == [
        ("bluzy/text.jpg", "bluzy", "not a recognised image format"),
        ("bluzy/truncated.jpg", "bluzy", "truncated file"),
    ]
    assert report.formats == {"JPEG/RGB": 13, "JPEG/CMYK": 1, "PNG/P with transparency": 1}
    assert [(r.path.relative_to(train).as_posix(), r.orientation) for r in report.exif_rotated] == [
        ("bluzy/rotated.jpg", 6)
    ]
    # Sizes as training sees them: the rotated 40x20 file becomes 20x40.
    assert report.sizes.distinct == 3
    assert report.sizes.counts == (((32, 24), 13), ((16, 16), 1), ((20, 40), 1))
    assert not report.sizes.summarised
    assert report.sizes.width == (16.0, 32.0, 32.0)
    assert report.sizes.height == (16.0, 24.0, 40.0)

    assert len(report.duplicates) == 1
    assert _rel(report.duplicates[0].paths, train) == ["bluzy/a0.jpg", "bluzy/dup_a0.jpg", "bluzy/sub/dup_a0_again.jpg"]
    assert report.duplicates[0].labels == ("bluzy", "bluzy", "bluzy")
    assert len(report.label_conflicts) == 1
    assert _rel(report.label_conflicts[0].paths, train) == ["bluzy/a1.jpg", "bryuki/conflict.jpg"]
    assert report.label_conflicts[0].labels == ("bluzy", "bryuki")
    assert report.label_conflicts[0].sha256 == hashlib.sha256((train / "bluzy/a1.jpg").read_bytes()).hexdigest()

    assert report.test_files == 2
    assert [(k.test_path.relative_to(test).as_posix(), _rel(k.train_paths, train)) for k in report.leaks] == [
        ("leak.jpg", ["bryuki/b0.jpg"])
    ]
    assert report.problems == (
        "2 files cannot be decoded; fix or remove them",
        "2 identical files in 1 group carry different labels; keep one copy with the right label",
        "1 test file also in the training data (leakage); remove them from one side",
    )
    assert report.warnings == (
        "2 redundant copies of training files (same label); they weigh double and can land in both the "
        "training and the validation split",
        "classes are imbalanced (5.5x largest/smallest); consider more data for the small classes",
    )
    assert not report.ready
    assert report.verdict.startswith("fix first: 2 files cannot be decoded; ")
    assert calls == [(i, 19) for i in range(1, 20)]
    read = [p for p in train.rglob("*") if p.is_file() and p.name not in (".DS_Store", "notes.txt")]
    assert len(read) == 17
    assert report.bytes_read == sum(p.stat().st_size for p in [*read, *test.iterdir()])


def test_decode_verdict_matches_training_decode(planted: tuple[Path, Path]) -> None:
    """decode_image_bytes gives the same array (or the same error reason) as decode_image on every file."""
    train, _ = planted
    for path in sorted(train.rglob("*.*")):
        if path.suffix not in (".jpg", ".png"):
            continue
        data = path.read_bytes()
        try:
            expected = decode_image(path)
        except ValueError as exc:
            with pytest.raises(type(exc)) as caught:
                decode_image_bytes(data, path)
            assert (caught.value.path, caught.value.reason) == (exc.path, exc.reason)  # type: ignore[attr-defined]
        else:
            np.testing.assert_array_equal(decode_image_bytes(data, path), expected)


def test_cli_text_json_exit_code_and_data_untouched(
    planted: tuple[Path, Path], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    train, test = planted
    before = _snapshot(tmp_path)
    out = tmp_path_factory.mktemp("report") / "report.json"
    result = CliRunner().invoke(main, ["inspect", str(train), "--test", str(test), "--json", str(out), "-q"])
    assert result.exit_code == EXIT_NOT_READY == 3, result.output
    assert _snapshot(tmp_path) == before  # nothing written, touched or added in the data
    lines = result.stdout.splitlines()
    assert lines[0] == f"dataset: {train} (layout folders, 17 files, 3 classes)"
    assert lines[1:16] == [
        "classes: bluzy 11, bryuki 4, shorty 2",
        "balance: 5.50 (largest / smallest class)",
        "skipped: 2 (hidden 1, not an image 1)",
        "  bluzy/.DS_Store: hidden",
        "  bluzy/notes.txt: not an image",
        "decode failures: 2",
        "  bluzy/text.jpg: not a recognised image format",
        "  bluzy/truncated.jpg: truncated file",
        "formats: JPEG/RGB 13, JPEG/CMYK 1, PNG/P with transparency 1",
        "exif rotated: 1",
        "  bluzy/rotated.jpg: orientation 6",
        "sizes: 3 distinct (width x height px):",
        "  32x24: 13",
        "  16x16: 1",
        "  20x40: 1",
    ]
    assert lines[16:] == [
        "duplicates (same label): 1 group, 3 files",
        "  bluzy/a0.jpg [bluzy], bluzy/dup_a0.jpg [bluzy], bluzy/sub/dup_a0_again.jpg [bluzy]",
        "duplicates with different labels: 1 group, 2 files",
        "  bluzy/a1.jpg [bluzy], bryuki/conflict.jpg [bryuki]",
        f"test: {test} (2 files); also in training data: 1",
        "  leak.jpg = bryuki/b0.jpg",
        "warning: 2 redundant copies of training files (same label); they weigh double and can land in both "
        "the training and the validation split",
        "warning: classes are imbalanced (5.5x largest/smallest); consider more data for the small classes",
        "verdict: fix first: 2 files cannot be decoded; fix or remove them; 2 identical files in 1 group carry "
        "different labels; keep one copy with the right label; 1 test file also in the training data "
        "(leakage); remove them from one side",
    ]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(inspect_dataset(train, test=test).to_dict()))
    assert data["class_counts"] == {"bluzy": 11, "bryuki": 4, "shorty": 2}
    assert [f["reason"] for f in data["decode_failures"]] == ["not a recognised image format", "truncated file"]
    assert data["formats"] == {"JPEG/RGB": 13, "JPEG/CMYK": 1, "PNG/P with transparency": 1}
    assert data["sizes"]["counts"][2] == {"width": 20, "height": 40, "files": 1}
    assert data["label_conflicts"][0]["files"] == [
        {"path": str(train / "bluzy/a1.jpg"), "label": "bluzy"},
        {"path": str(train / "bryuki/conflict.jpg"), "label": "bryuki"},
    ]
    assert data["test"]["leaks"] == [
        {"test_path": str(test / "leak.jpg"), "train_paths": [str(train / "bryuki/b0.jpg")]}
    ]
    assert (data["ready"], len(data["problems"]), len(data["warnings"])) == (False, 3, 2)


@pytest.fixture(scope="module")
def fashion_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fm")
    write_fashion_mnist(out, max_per_class=20)
    return out


def test_fashion_mnist_stand_in_is_ready(fashion_mnist: Path) -> None:
    # The numbers were cross-checked on the files: 40 train and 40 test files, and
    # `sha256sum train/* test/* | sort | uniq -w64 -d` prints nothing (no duplicates, no leakage).
    report = inspect_dataset(fashion_mnist / "train", test=fashion_mnist / "test")
    assert report.layout is Layout.LAMODA
    assert report.class_counts == {"bluzy": 20, "bryuki": 20}
    assert report.balance == 1.0
    assert report.skipped == ()
    assert report.decode_failures == ()
    assert report.formats == {"JPEG/L": 40}
    assert report.exif_rotated == ()
    assert report.sizes.counts == (((28, 28), 40),)
    assert (report.duplicates, report.label_conflicts, report.leaks) == ((), (), ())
    assert report.test_files == 40
    assert (report.problems, report.warnings, report.verdict) == ((), (), "ready to train")
    result = CliRunner().invoke(main, ["inspect", str(fashion_mnist / "train"), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "verdict: ready to train"


def test_same_label_copy_warns_but_cross_split_copy_blocks(fashion_mnist: Path, tmp_path: Path) -> None:
    train, test = tmp_path / "train", tmp_path / "test"
    shutil.copytree(fashion_mnist / "train", train)
    shutil.copytree(fashion_mnist / "test", test)
    shutil.copyfile(train / "0005_bryuki.jpg", train / "9999_bryuki.jpg")
    result = CliRunner().invoke(main, ["inspect", str(train), "-q"])
    assert result.exit_code == 0, result.output
    assert "duplicates (same label): 1 group, 2 files" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "verdict: ready to train"

    shutil.copyfile(train / "0002_bluzy.jpg", test / "copied.jpg")
    result = CliRunner().invoke(main, ["inspect", str(train), "--test", str(test), "-q"])
    assert result.exit_code == 3, result.output
    assert "  copied.jpg = 0002_bluzy.jpg" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == (
        "verdict: fix first: 1 test file also in the training data (leakage); remove them from one side"
    )


def test_class_with_only_broken_files_blocks(tmp_path: Path) -> None:
    (tmp_path / "0001_bluzy.jpg").write_bytes(_jpeg(1))
    (tmp_path / "0002_bryuki.jpg").write_bytes(b"GIF89a broken")
    report = inspect_dataset(tmp_path, layout="lamoda")
    assert report.class_counts == {"bluzy": 1, "bryuki": 1}
    assert [f.reason for f in report.decode_failures] == ["not a recognised image format"]
    assert report.problems[-1] == "only 1 class with a decodable image ['bluzy']; training needs at least 2"


def test_csv_manifest_conflicting_labels(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(i))
    (tmp_path / "labels.csv").write_text("path,label\n0.jpg,bluzy\n1.jpg,bryuki\n0.jpg,bryuki\n", encoding="utf-8")
    report = inspect_dataset(tmp_path / "labels.csv")
    assert report.layout is Layout.CSV
    assert [(g.labels, _rel(g.paths, tmp_path)) for g in report.label_conflicts] == [
        (("bluzy", "bryuki"), ["0.jpg", "0.jpg"])
    ]
    assert "  0.jpg [bluzy], 0.jpg [bryuki]" in render_text(report).splitlines()


def test_unreadable_dataset_exits_1_with_the_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "bluzy").mkdir()
    (tmp_path / "bryuki").mkdir()
    (tmp_path / "bluzy" / "a.jpg").write_bytes(_jpeg(0))
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert "1 class folder without any image" in result.stderr
    assert result.stdout == ""

    result = CliRunner().invoke(main, ["inspect", str(tmp_path), "--layout", "bogus"])
    assert result.exit_code == 2


def test_help_documents_exit_codes() -> None:
    result = CliRunner().invoke(main, ["inspect", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for expected in ("0 ready to train", "1 the dataset cannot be read", "3 problems to fix first",
                     "[default: (detected)]", "--json FILE"):
        assert expected in text, expected


def test_many_sizes_are_summarised() -> None:
    sizes = Counter({(w, 100 + w): 1 for w in range(1, 26)})  # 25 distinct sizes, one file each
    sizes[(7, 107)] += 4
    sizes[(3, 103)] += 2
    summary = _size_report(sizes)
    assert (summary.distinct, summary.summarised, len(summary.counts)) == (25, True, COMMON_SIZES_IN_SUMMARY)
    assert summary.counts[:3] == (((7, 107), 5), ((3, 103), 3), ((1, 101), 1))
    # 31 files; widths 1..25 plus four more 7s and two more 3s -> the median is the 16th smallest:
    # 1 2 3 3 3 4 5 6 7 7 7 7 7 8 9 [10]
    assert summary.width == (1.0, 10.0, 25.0)
    assert summary.height == (101.0, 110.0, 125.0)


def test_report_to_dict_is_json_ready(planted: tuple[Path, Path]) -> None:
    train, _ = planted
    report = inspect_dataset(train)
    assert isinstance(report, DatasetReport)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["test"] is None
    assert data["verdict"] == report.verdict


# --- unreadable input, unwritable output ------------------------------------------------------------------------------


def test_non_utf8_file_names_are_written_escaped_in_json_and_text(tmp_path: Path) -> None:
    """A file name that is not valid UTF-8 crashed --json after the whole scan; now written as \\xNN."""
    data = tmp_path / "data"
    (data / "bluzy").mkdir(parents=True)
    (data / "bryuki").mkdir()
    odd = os.fsdecode(os.path.join(os.fsencode(data / "bluzy"), b"caf\xe9.jpg"))
    Path(odd).write_bytes(_jpeg(1))
    (data / "bryuki" / "b.jpg").write_bytes(_jpeg(2))
    Path(os.fsdecode(os.path.join(os.fsencode(data / "bluzy"), b"bad\xff.jpg"))).write_bytes(b"")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["inspect", str(data), "--json", str(out), "-q"])
    assert result.exit_code == EXIT_NOT_READY, result.output
    assert "  bluzy/bad\\xff.jpg: empty file (0 bytes)" in result.stdout.splitlines()
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["decode_failures"] == [
        {"path": f"{data}/bluzy/bad\\xff.jpg", "label": "bluzy", "reason": "empty file (0 bytes)"}
    ]
    assert report["files"] == 3 and report["class_counts"] == {"bluzy": 2, "bryuki": 1}
    assert inspect_dataset(data).decode_failures[0].path.exists()


def test_symlinked_folders_are_counted_as_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i, label in enumerate(("bluzy", "bryuki")):
        (data / label).mkdir(parents=True)
        (data / label / "a.jpg").write_bytes(_jpeg(i))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.jpg").write_bytes(_jpeg(9))
    os.symlink(tmp_path / "elsewhere", data / "bluzy" / "more")
    report = inspect_dataset(data)
    assert [(s.path.name, s.reason) for s in report.skipped] == [("more", "symlinked folder (not followed)")]
    assert "skipped: 1 (symlinked folder (not followed) 1)" in render_text(report).splitlines()


def test_group_help_shows_whole_sentences() -> None:
    """`gcv-data --help` cut the inspect description off mid-sentence ("Report on the dataset ROOT before...")."""
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert lines["inspect"].split(None, 1)[1] == "Report on a dataset before training; never modifies it."
    assert lines["fashion-mnist"].split(None, 1)[1] == "Write a Lamoda-layout stand-in from Fashion-MNIST."
    assert not any(line.endswith("...") for line in lines.values())


def test_decode_reasons_and_counts_read_naturally(tmp_path: Path) -> None:
    (tmp_path / "0001_bluzy.jpg").write_bytes(_jpeg(1))
    (tmp_path / "0002_bryuki.jpg").write_bytes(b"")
    (tmp_path / "0003_bryuki.jpg").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    report = inspect_dataset(tmp_path, layout="lamoda")
    assert [f.reason for f in report.decode_failures] == [
        "empty file (0 bytes)",
        "format PPM is not one GarmentCV decodes (only JPEG, PNG, BMP, GIF, WEBP, TIFF, AVIF); "
        "convert the file or remove it",
    ]
    assert report.problems[-1] == "only 1 class with a decodable image ['bluzy']; training needs at least 2"


def test_jfif_jpe_and_avif_are_counted_like_jpg(tmp_path: Path) -> None:
    for name, seed in (("0001_bluzy.jpg", 1), ("0002_bluzy.jfif", 2), ("0003_bryuki.jpe", 3)):
        (tmp_path / name).write_bytes(_jpeg(seed))
    Image.new("RGB", (24, 16), (200, 40, 40)).save(tmp_path / "0004_bryuki.avif")
    (tmp_path / "0005_bryuki.txt").write_text("not an image")
    report = inspect_dataset(tmp_path, layout="lamoda")
    assert report.class_counts == {"bluzy": 2, "bryuki": 2}
    assert report.formats == {"JPEG/RGB": 3, "AVIF/RGB": 1}
    assert report.decode_failures == ()
    assert [(f.path.name, f.reason) for f in report.skipped] == [("0005_bryuki.txt", "not an image")]


def test_unwritable_json_is_refused_before_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--json under a file is refused before the scan, as an error naming the file (not an internal error)."""
    from click.testing import CliRunner

    import garmentcv.data.cli as data_cli

    monkeypatch.setattr(data_cli, "inspect_dataset", lambda *a, **k: pytest.fail("the scan started"))
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(data_cli.main, ["inspect", str(data), "--json", str(tmp_path / "afile" / "r.json")])
    assert result.exit_code == 1, result.output
    assert "--json" in result.output and "afile is not a folder but a file" in result.output
