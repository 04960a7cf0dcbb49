"""gcv-classify sources and outputs at scale, local engine: manifests, an S3 prefix on a real S3 API (moto), parquet."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from garmentcv.errors import DatasetError
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.cli import classify_main
from garmentcv.infer.rows import OutputFormat
from garmentcv.installs import pip_install

from .s3_server import moto_s3, upload
from .test_classify import make_folder


def run(source: Path | str, out: Path, model: Path, **kw: object):
    cfg = ClassifyConfig(folder=source, out=out, model=model, provider="cpu", progress=False, **kw)  # type: ignore[arg-type]
    return classify_folder(cfg)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def folder_rows(tmp_path_factory: pytest.TempPathFactory, onnx_model: Path) -> tuple[Path, dict[str, list[str]]]:
    """make_folder's images and the local engine's csv rows for them, by path."""
    root = tmp_path_factory.mktemp("src")
    folder = make_folder(root / "imgs")
    run(folder, root / "folder.csv", onnx_model)
    return folder, {r[0]: r for r in read_csv(root / "folder.csv")[1:]}


def test_txt_and_csv_manifests_name_rows_as_given(tmp_path: Path, onnx_model: Path, folder_rows) -> None:
    folder, by_path = folder_rows
    shutil.copytree(folder, tmp_path / "imgs", symlinks=True)
    listed = ["imgs/z.webp", "imgs/a/x.JPG", "imgs/corrupt.jpg", "imgs/notes.txt", "gone.jpg", str(folder / "b.PNG")]
    (tmp_path / "list.txt").write_text("# photos to check\n" + "\n".join(listed) + "\n\n", encoding="utf-8")
    with (tmp_path / "list.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["sku", "path"], *([str(i), p] for i, p in enumerate(listed))])
    summary = run(tmp_path / "list.txt", tmp_path / "txt.csv", onnx_model)
    rows = read_csv(tmp_path / "txt.csv")
    assert [r[0] for r in rows[1:]] == [str(folder / "b.PNG"), "gone.jpg", "imgs/a/x.JPG", "imgs/corrupt.jpg",
                                        "imgs/notes.txt", "imgs/z.webp"]
    for row in rows[1:]:  # the same values as the folder run for the same files
        name = row[0].removeprefix("imgs/").removeprefix(f"{folder}/")
        if name in by_path:
            assert row[1:] == by_path[name][1:]
    assert rows[2] == ["gone.jpg", "", "", "", "", "file not found"]
    assert rows[5] == ["imgs/notes.txt", "", "", "", "", "not a recognised image format"]
    assert (summary.files, summary.errors, summary.skipped) == (6, 3, {})
    run(tmp_path / "list.csv", tmp_path / "csv.csv", onnx_model)
    assert (tmp_path / "csv.csv").read_bytes() == (tmp_path / "txt.csv").read_bytes()


def test_manifests_with_a_byte_order_mark_and_padded_lines_are_read_as_gcv_train_reads_them(
        tmp_path: Path, onnx_model: Path, folder_rows) -> None:
    """Spreadsheet exports start with a UTF-8 byte-order mark and may pad cells; neither is part of a path."""
    folder, by_path = folder_rows
    shutil.copytree(folder, tmp_path / "imgs", symlinks=True)
    (tmp_path / "list.txt").write_bytes("\ufeffimgs/0001.jpg\r\n  imgs/b.PNG  \r\n\t# a comment\r\n".encode("utf-8"))
    (tmp_path / "list.csv").write_bytes("\ufeffpath,sku\r\nimgs/0001.jpg,1\r\n imgs/b.PNG ,2\r\n".encode("utf-8"))
    for manifest in ("list.txt", "list.csv"):
        summary = run(tmp_path / manifest, tmp_path / f"{manifest}.out.csv", onnx_model)
        rows = read_csv(tmp_path / f"{manifest}.out.csv")
        assert rows[1:] == [["imgs/0001.jpg", *by_path["0001.jpg"][1:]], ["imgs/b.PNG", *by_path["b.PNG"][1:]]]
        assert (summary.files, summary.errors) == (2, 0)


def test_bad_sources_are_refused_with_what_to_do(tmp_path: Path, onnx_model: Path) -> None:
    (tmp_path / "list.csv").write_text("file,label\na.jpg,x\n")
    with pytest.raises(DatasetError,
                       match=r"list\.csv: a CSV manifest needs a 'path' column; its columns are \['file', 'label'\]"):
        run(tmp_path / "list.csv", tmp_path / "out.csv", onnx_model)
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"photo\.jpg: not a folder and not a manifest"):
        run(tmp_path / "photo.jpg", tmp_path / "out.csv", onnx_model)
    result = CliRunner().invoke(classify_main, [str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.csv"),
                                                "--model", str(onnx_model)])
    assert result.exit_code == 2 and "nowhere: no such folder or file" in result.stderr
    result = CliRunner().invoke(classify_main, [str(tmp_path), "--out", str(tmp_path / "o.csv"), "--model",
                                                str(onnx_model), "--num-workers", "2"])
    assert result.exit_code == 2 and "--num-workers only go with --engine ray" in result.stderr
    result = CliRunner().invoke(classify_main, [str(tmp_path), "--out", str(tmp_path / "o.csv"), "--model",
                                                str(onnx_model), "--engine", "ray", "--threads", "2"])
    assert result.exit_code == 2 and "--threads and --decode-threads are for --engine local" in result.stderr
    result = CliRunner().invoke(classify_main, [str(tmp_path), "--out", str(tmp_path / "o.csv"), "--model",
                                                str(onnx_model), "--engine", "ray", "--runtime", "openvino"])
    assert result.exit_code == 2 and "--engine ray runs onnxruntime in its workers" in result.stderr
    assert not (tmp_path / "o.csv").exists()
    result = CliRunner().invoke(classify_main, [str(tmp_path / "list.csv"), "--out", str(tmp_path / "o.csv"),
                                                "--model", str(onnx_model), "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "--report shows the images of a local folder" in result.stderr


def test_parquet_holds_the_csv_rows_typed(tmp_path: Path, onnx_model: Path, folder_rows) -> None:
    folder, by_path = folder_rows
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(tmp_path / "out.parquet"), "--model",
                                                str(onnx_model), "--format", "parquet", "-q"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["path", "label", "confidence", "prob_bluzy", "prob_bryuki", "error"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "double", "double", "double", "string"]
    records = table.to_pylist()
    assert [r["path"] for r in records] == list(by_path)
    for r in records:
        want = by_path[r["path"]]
        got = [r["path"], r["label"] or "", *("" if v is None else f"{v:.6f}" for v in
                                             (r["confidence"], r["prob_bluzy"], r["prob_bryuki"])), r["error"] or ""]
        assert got == want
    run(folder, tmp_path / "top.parquet", onnx_model, format=OutputFormat.PARQUET, topk=1, min_confidence=0.9)
    top = pq.read_table(tmp_path / "top.parquet")
    assert top.column_names == ["path", "label", "confidence", "needs_review", "top1_label", "top1_prob", "error"]
    first = top.to_pylist()[0]
    assert first["top1_label"] == by_path["0001.jpg"][1] and f"{first['top1_prob']:.6f}" == by_path["0001.jpg"][2]
    assert first["needs_review"] is (float(by_path["0001.jpg"][2]) < 0.9)


def test_s3_prefix_gives_the_rows_of_a_local_copy_and_resumes(tmp_path: Path, onnx_model: Path, folder_rows,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shutil.copytree(folder_rows[0], tmp_path / "copy", symlinks=True)
    (folder / 'we,ird "name"\nnew.jpg').unlink()  # moto refuses keys with a newline (S3 takes them)
    with moto_s3(monkeypatch, tmp_path):
        assert upload(folder, "shop", "catalogue/photos") == 12  # 8 rows, 2 hidden, 2 non-images (a link: none)
        local = run(folder, tmp_path / "local.csv", onnx_model)
        remote = run("s3://shop/catalogue/photos/", tmp_path / "s3.csv", onnx_model, batch_size=4)
        assert (tmp_path / "s3.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
        assert remote.skipped == {k: v for k, v in local.skipped.items() if not k.startswith("symlinked")}
        assert (remote.files, remote.errors, remote.error_reasons) == (local.files, local.errors, local.error_reasons)

        def stop(saved: int) -> None:
            if saved >= 4:
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            classify_folder(ClassifyConfig(folder="s3://shop/catalogue/photos", out=tmp_path / "r.csv",
                                           model=onnx_model, provider="cpu", progress=False, batch_size=2),
                            on_batch=stop)
        resumed = run("s3://shop/catalogue/photos", tmp_path / "r.csv", onnx_model, resume=True)
        assert resumed.reused == 4
        assert (tmp_path / "r.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
        with pytest.raises(DatasetError, match=r"s3://nobucket/x: cannot list the objects .*AWS_ENDPOINT_URL"):
            run("s3://nobucket/x", tmp_path / "n.csv", onnx_model)


def test_local_engine_imports_neither_ray_nor_pyarrow(tmp_path: Path, onnx_model: Path, folder_rows) -> None:
    folder, _ = folder_rows
    out = tmp_path / "out.csv"
    script = textwrap.dedent(f"""
        import sys
        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("ray", "pyarrow", "torch"):
                    raise ImportError(name + " is not installed here")
        sys.meta_path.insert(0, Blocked())
        import garmentcv.infer.engines.ray, garmentcv.infer.sources
        from garmentcv.infer.cli import classify_main
        try:
            classify_main([{str(folder)!r}, "--out", {str(out)!r}, "--model", {str(onnx_model)!r}, "-q"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        try:
            classify_main([{str(folder)!r}, "--out", {str(out)!r}, "--model", {str(onnx_model)!r}, "-q",
                           "--engine", "ray"])
        except SystemExit as exc:
            assert exc.code == 1, exc.code
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"--engine ray needs Ray, which is not installed: {pip_install('ray')}" in proc.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) > 9  # a row per file, one spans two lines


def test_load_file_gives_what_the_model_file_declares_from_a_file_or_its_bytes(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Format 2 gets load_crop's uint8 crop, format 1 load_input's floats, written into a batch row, whether the
    image is a local file or an object's bytes (a large JPEG takes the DCT-scaled path in both)."""
    import numpy as np
    from PIL import Image

    from garmentcv.artifact import INPUT_FLOAT32, INPUT_UINT8
    from garmentcv.image import Preprocessing, load_crop, load_input
    from garmentcv.infer.sources import RemoteFile, load_file

    pp = Preprocessing(resize=36, crop=32)
    rng = np.random.default_rng(7)
    photo, small = tmp_path / "big.jpg", tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (90, 80, 3), dtype=np.uint8)).save(photo, quality=90)  # >= 2x resize: DCT path
    Image.fromarray(rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)).save(small)
    for path in (photo, small):
        crop, chw = load_crop(path, pp), load_input(path, pp)
        data = path.read_bytes()
        monkeypatch.setattr(RemoteFile, "read", lambda self, data=data: data)
        remote = RemoteFile(f"s3://shop/{path.name}")
        for file in (path, remote):
            rows = np.full((2, 32, 32, 3), 9, np.uint8)
            row = rows[1]
            assert load_file(file, pp, out=row) is row
            assert np.array_equal(rows[1], crop) and (rows[0] == 9).all()
            assert np.array_equal(load_file(file, pp, input_format=INPUT_UINT8), crop)
            floats = np.zeros((2, 3, 32, 32), np.float32)
            load_file(file, pp, out=floats[0])
            assert np.array_equal(floats[0], chw)
            assert np.array_equal(load_file(file, pp, input_format=INPUT_FLOAT32), chw)
            assert np.array_equal(load_file(file, pp), chw)  # no buffer, no format: float32, format 1's input
    with pytest.raises(ValueError, match="unknown input format 'rgb'"):
        load_file(small, pp, input_format="rgb")


def test_s3_prefix_with_a_uint8_model_gives_the_rows_of_a_local_copy(tmp_path: Path, onnx_model: Path,
                                                                     uint8_onnx_model: Path, folder_rows,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A format-2 (uint8 input) file classifies an S3 prefix exactly as a local copy, and as the float32 file of
    the same network does (same labels, probabilities within 1e-4)."""
    folder = shutil.copytree(folder_rows[0], tmp_path / "copy", symlinks=True)
    (folder / 'we,ird "name"\nnew.jpg').unlink()  # moto refuses keys with a newline
    with moto_s3(monkeypatch, tmp_path):
        upload(folder, "shop", "u8")
        local = run(folder, tmp_path / "local.csv", uint8_onnx_model)
        remote = run("s3://shop/u8/", tmp_path / "s3.csv", uint8_onnx_model, batch_size=3)
    assert (tmp_path / "s3.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (remote.files, remote.errors) == (local.files, local.errors) and local.classified == 8 - local.errors
    _, float_rows = folder_rows
    rows = read_csv(tmp_path / "s3.csv")
    header = rows[0]
    assert header == read_csv(tmp_path / "local.csv")[0]
    for row in rows[1:]:
        expected = float_rows[row[0]]
        assert row[1] == expected[1]  # the label (or the error row's empty label)
        for i, name in enumerate(header):
            if name.startswith("prob_") or name == "top1_prob":
                assert (row[i] == expected[i] == "") or abs(float(row[i]) - float(expected[i])) <= 1e-4, (row, expected)
