"""The kaggle writer: shared indexes found exactly in bounded memory, and its error message's grammar."""

from __future__ import annotations

import io
import pathlib
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner

from garmentcv.infer.rows import sort_key, write_rows

from .conftest import write_image


def _rows(paths: list[str]) -> list[dict]:
    return [{"path": p, "label": "x", "probs": [1.0], "error": None} for p in paths]


def _duplicates(paths: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    write_rows(io.StringIO(), _rows(paths), ["x"], "kaggle", duplicates=found)
    return found


def _reference(paths: list[str]) -> dict[str, list[str]]:
    """Shared indexes the plain way: every index kept in a dict (memory grows with the rows)."""
    seen: dict[str, str] = {}
    found: dict[str, list[str]] = {}
    for path in paths:
        index = str(PurePosixPath(path).with_suffix(""))
        if index in seen:
            found.setdefault(index, [seen[index]]).append(path)
        seen.setdefault(index, path)
    return found


def test_shared_indexes_found_when_other_files_sort_between_them() -> None:
    # 10.k.jpg (index 10.k) and the folder 10.k/ sort between 10.jpg and 10.png
    paths = ["10/1.jpg", "10-x.jpg", "10.jpg", "10.k/1.jpg", "10.k.jpg", "10.k.png", "10.kz.jpg", "10.png",
             "10.zip.jpg", "11.jpg"]
    assert sorted(paths, key=sort_key) == paths
    assert _duplicates(paths) == {"10.k": ["10.k.jpg", "10.k.png"], "10": ["10.jpg", "10.png"]}


def test_shared_indexes_found_across_spellings_of_a_manifest() -> None:
    # a manifest may name one folder several ways; the index is the normalised path without its extension
    paths = sorted(["./a.jpg", "a.png", "d//x.jpg", "d/x.png", "d/./y.jpg", "d/y.png", "-x.jpg", "./-x.png",
                    "e/-f/g.jpg", "e/./-f/g.png", "/abs/1.jpg", "/abs//1.png", "a.png"], key=sort_key)
    assert _duplicates(paths) == _reference(paths) == {
        "-x": ["-x.jpg", "./-x.png"], "/abs/1": ["/abs//1.png", "/abs/1.jpg"], "a": ["./a.jpg", "a.png", "a.png"],
        "d/x": ["d//x.jpg", "d/x.png"], "d/y": ["d/./y.jpg", "d/y.png"], "e/-f/g": ["e/-f/g.jpg", "e/./-f/g.png"],
    }


def test_shared_indexes_of_random_sorted_paths_match_the_plain_way() -> None:
    rng = random.Random(7)
    parts = ["", ".", "a", "a.b", "-a", " a", "10", "10.k", "(1)", "b", "..", ".h"]
    names = ["1.jpg", "1.png", "1", "1.k.jpg", "-1.jpg", "a.jpg", "a.b.png", "a.jpg.png", "10.jpg", "(1).png"]
    for case in range(2000):
        paths = ["/".join([*rng.choices(parts, k=rng.randint(0, 3)), rng.choice(names)])
                 for _ in range(rng.randint(1, 12))]
        paths = sorted((p for p in paths if PurePosixPath(p).name), key=sort_key)
        assert _duplicates(paths) == _reference(paths), (case, paths)


def test_rows_out_of_row_order_are_refused() -> None:
    with pytest.raises(ValueError, match="row order"):
        _duplicates(["b.jpg", "a.jpg"])


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _held_at_end(n: int) -> int:
    """Bytes allocated while ``n`` kaggle rows (one pair sharing an index) go through the writer and still alive
    when the last one has been read: a structure keeping every index is counted, one keeping a few is not."""
    snapshots = []

    def rows() -> Iterator[dict]:
        for i in range(n):
            if i == 1:
                snapshots.append(tracemalloc.take_snapshot())
            yield {"path": f"sub/{i:06d}.jpg", "label": "x", "probs": [1.0], "error": None}
        yield {"path": f"sub/{n - 1:06d}.png", "label": "x", "probs": [1.0], "error": None}
        snapshots.append(tracemalloc.take_snapshot())

    found: dict[str, list[str]] = {}
    tracemalloc.start()
    try:
        assert write_rows(_Discard(), rows(), ["x"], "kaggle", duplicates=found) == n + 1
    finally:
        tracemalloc.stop()
    assert found == {f"sub/{n - 1:06d}": [f"sub/{n - 1:06d}.jpg", f"sub/{n - 1:06d}.png"]}
    # pathlib (Python 3.11) interns every name it parses: its table of interned names may be reallocated in between
    others = [tracemalloc.Filter(False, pathlib.__file__)]
    end, start = (snapshot.filter_traces(others) for snapshot in snapshots[::-1])
    return sum(stat.size_diff for stat in end.compare_to(start, "filename"))


def test_memory_of_the_shared_index_check_does_not_grow_with_the_rows() -> None:
    small, large = _held_at_end(4_000), _held_at_end(16_000)
    # every index in a dict: about 90 B a row (its table and the paths), 1.4 MB at 16,000 rows
    assert large < 20_000 and large - small < 10_000, (small, large)


@pytest.mark.parametrize(("errors", "expected"), [
    (1, ("1 image could not be decoded and has an empty label in the kaggle file out.csv: a.jpg; replace or remove "
         "it and run again, or pass --on-error continue to accept the empty label")),
    (2, ("2 images could not be decoded and have an empty label in the kaggle file out.csv: a.jpg, b.jpg; replace "
         "or remove them and run again, or pass --on-error continue to accept the empty labels")),
])
def test_kaggle_message_agrees_with_the_number_of_images(errors: int, expected: str) -> None:
    from garmentcv.infer.rows import kaggle_empty_labels_message

    assert kaggle_empty_labels_message(errors, ", ".join(["a.jpg", "b.jpg"][:errors]), Path("out.csv")) == expected


def test_kaggle_run_with_one_unreadable_image_says_has(tmp_path: Path, onnx_model: Path) -> None:
    from garmentcv.infer.cli import classify_main

    folder = tmp_path / "imgs"
    write_image(folder / "1.png")
    (folder / "2.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "k.csv"
    result = CliRunner().invoke(classify_main, [str(folder), "--model", str(onnx_model), "--device", "cpu",
                                                "--format", "kaggle", "-q", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert (f"Error: 1 image could not be decoded and has an empty label in the kaggle file {out}: 2.jpg; replace "
            "or remove it and run again") in result.stderr


def test_kaggle_indexes_shared_by_two_files_exit_1_unless_allowed(tmp_path: Path, onnx_model: Path) -> None:
    """10.jpg and 10.png both become index 10: a submission with a duplicate id must not pass silently."""
    from garmentcv.infer.cli import classify_main

    folder = tmp_path / "imgs"
    write_image(folder / "10.jpg", seed=1)
    write_image(folder / "10.png", seed=2)
    write_image(folder / "11.jpg", seed=3)
    args = [str(folder), "--model", str(onnx_model), "--device", "cpu", "--format", "kaggle", "-q"]
    result = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 1, result.output
    assert "1 index is shared by several files: 10 (10.jpg, 10.png)" in result.output
    assert [line.split(",")[0] for line in (tmp_path / "s.csv").read_text().splitlines()] == ["index", "10", "10", "11"]
    allowed = CliRunner().invoke(classify_main, [*args, "--out", str(tmp_path / "t.csv"), "--on-error", "continue"])
    assert allowed.exit_code == 0, allowed.output
