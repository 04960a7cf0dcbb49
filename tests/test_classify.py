"""gcv-classify: exact rows, formats, bad files, discovery, resume, batch independence, providers, no torch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import garmentcv.image
from garmentcv.errors import GarmentCVError, ModelFileError
from garmentcv.image import load_input
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.cli import classify_main
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH, read_model_info
from garmentcv.infer.pipeline import predict_batches
from garmentcv.infer.rows import OutputFormat
from garmentcv.infer.runtimes.onnxruntime import ProviderError, open_model

from .conftest import write_image

CLASSES = ("bluzy", "bryuki")
GOOD = ["0001.jpg", "a-b.jpg", "a/x.JPG", "a/z/deep.png", "b.PNG", 'we,ird "name"\nnew.jpg', "z.webp"]


def make_folder(root: Path, order: list[str] | None = None) -> Path:
    """Images GOOD (created in ``order``), one corrupt, one truncated, hidden and non-image files, a link loop."""
    for i, name in sorted(enumerate(GOOD), key=lambda t: (order or GOOD).index(t[1])):
        write_image(root / name, seed=i, size=(40 + i, 56))
    (root / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    whole = (root / "0001.jpg").read_bytes()
    (root / "trunc.jpg").write_bytes(whole[: len(whole) // 2])
    write_image(root / ".hidden.jpg", seed=50)
    write_image(root / ".cache" / "in_hidden.jpg", seed=51)
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "readme.md").write_text("not an image")
    os.symlink(root, root / "a" / "loop")
    return root


def expected_probs(model: Path, image: Path) -> np.ndarray:
    """Reference: the model run alone on one image (batch of 1) through the shared preprocessing."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    pp = read_model_info(model).preprocessing
    logits = session.run(["logits"], {"input": load_input(image, pp)[None]})[0][0].astype(np.float64)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def run(folder: Path, out: Path, model: Path, **kw: object) -> object:
    cfg = ClassifyConfig(folder=folder, out=out, model=model, provider="cpu", progress=False, **kw)  # type: ignore[arg-type]
    return classify_folder(cfg)


def test_rows_are_exact_sorted_and_bad_files_are_rows(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    summary = run(folder, tmp_path / "out.csv", onnx_model, batch_size=3)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "label", "confidence", "prob_bluzy", "prob_bryuki", "error"]
    paths = [r[0] for r in rows[1:]]
    # sorted folder name by folder name: a/... before a-b.jpg although '-' < '/' in plain string order
    assert paths == ["0001.jpg", "a/x.JPG", "a/z/deep.png", "a-b.jpg", "b.PNG", "corrupt.jpg", "trunc.jpg",
                     'we,ird "name"\nnew.jpg', "z.webp"]
    assert paths == sorted(paths, key=lambda p: Path(p).parts)
    by_path = {r[0]: r for r in rows[1:]}
    for name in GOOD:
        probs = expected_probs(onnx_model, folder / name)
        want = [name, CLASSES[int(probs.argmax())], f"{probs.max():.6f}", *(f"{p:.6f}" for p in probs), ""]
        assert by_path[name] == want
    assert by_path["corrupt.jpg"] == ["corrupt.jpg", "", "", "", "", "not a recognised image format"]
    assert by_path["trunc.jpg"] == ["trunc.jpg", "", "", "", "", "truncated file"]
    assert (summary.files, summary.classified, summary.errors) == (9, 7, 2)
    assert summary.skipped == {"hidden": 2, "not an image": 2, "symlinked folder (not followed)": 1}
    assert not (tmp_path / "out.csv.partial").exists()


def test_oversized_and_unsupported_images_are_error_rows(tmp_path: Path, onnx_model: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "imgs"
    write_image(folder / "big.jpg", seed=1, size=(80, 80))
    write_image(folder / "ok.jpg", seed=2, size=(30, 30))
    (folder / "fake.tiff").write_bytes(b"II*\x00" + b"\x00" * 20)  # TIFF magic, no image inside
    monkeypatch.setattr(garmentcv.image, "MAX_IMAGE_PIXELS", 50 * 50)
    summary = run(folder, tmp_path / "out.csv", onnx_model)
    rows = list(csv.reader((tmp_path / "out.csv").open(newline="")))
    assert rows[1][0] == "big.jpg" and rows[1][1] == "" and rows[1][-1].startswith("oversized: 80x80 px")
    assert rows[2][0] == "fake.tiff" and rows[2][1] == "" and rows[2][-1] != ""
    assert rows[3][0] == "ok.jpg" and rows[3][1] in CLASSES and rows[3][-1] == ""
    assert summary.errors == 2 and summary.error_reasons["oversized"] == 1


def test_output_is_independent_of_batch_size_and_creation_order(tmp_path: Path, onnx_model: Path) -> None:
    first = make_folder(tmp_path / "one")
    second = make_folder(tmp_path / "two", order=list(reversed(GOOD)))
    outputs = []
    for i, (folder, batch) in enumerate([(first, 1), (first, 4), (second, 64), (second, 3)]):
        run(folder, tmp_path / f"out{i}.csv", onnx_model, batch_size=batch, workers=1 + i % 2)
        outputs.append((tmp_path / f"out{i}.csv").read_bytes())
    assert all(o == outputs[0] for o in outputs[1:])


def test_no_recursive_classifies_top_level_only(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    summary = run(folder, tmp_path / "out.csv", onnx_model, recursive=False)
    paths = [r[0] for r in csv.reader((tmp_path / "out.csv").open(newline=""))][1:]
    assert paths == ["0001.jpg", "a-b.jpg", "b.PNG", "corrupt.jpg", "trunc.jpg", 'we,ird "name"\nnew.jpg', "z.webp"]
    assert summary.files == 7


def test_jsonl_and_kaggle_formats(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    run(folder, tmp_path / "out.csv", onnx_model)
    run(folder, tmp_path / "out.jsonl", onnx_model, format=OutputFormat.JSONL)
    run(folder, tmp_path / "sub.csv", onnx_model, format=OutputFormat.KAGGLE)
    rows = list(csv.DictReader((tmp_path / "out.csv").open(newline="")))
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["path"] for r in records] == [r["path"] for r in rows]
    for row, rec in zip(rows, records, strict=True):
        if row["error"]:
            assert rec == {"path": row["path"], "label": None, "confidence": None, "probs": None, "error": row["error"]}
        else:
            assert rec["label"] == row["label"] and rec["error"] is None
            assert rec["confidence"] == pytest.approx(float(row["confidence"]), abs=1e-6)
            assert list(rec["probs"]) == list(CLASSES)
            assert [rec["probs"][c] for c in CLASSES] == pytest.approx(
                [float(row[f"prob_{c}"]) for c in CLASSES], abs=1e-6)
    kaggle = list(csv.reader((tmp_path / "sub.csv").open(newline="")))
    assert kaggle[0] == ["index", "label"]
    assert kaggle[1:] == [[str(Path(r["path"]).with_suffix("")), r["label"]] for r in rows]
    assert kaggle[1] == ["0001", rows[0]["label"]] and ["corrupt", ""] in kaggle


class Interrupt(KeyboardInterrupt):
    pass


def test_resume_after_ctrl_c_equals_uninterrupted_run(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    run(folder, tmp_path / "full.csv", onnx_model, batch_size=2)
    out = tmp_path / "out.csv"

    def stop_after(rows: int):
        def hook(saved: int) -> None:
            if saved >= rows:
                raise Interrupt()
        return hook

    cfg = ClassifyConfig(folder=folder, out=out, model=onnx_model, provider="cpu", batch_size=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        classify_folder(cfg, on_batch=stop_after(2))
    assert not out.exists() and len(list((tmp_path / "out.csv.partial").glob("run-*.jsonl"))) == 1
    # interrupted again while resuming: the rows of both partial segments still count
    resumed = ClassifyConfig(**{**cfg.__dict__, "resume": True, "batch_size": 3})
    with pytest.raises(KeyboardInterrupt):
        classify_folder(resumed, on_batch=stop_after(5))
    summary = classify_folder(resumed)
    # the second run saved 2 reused + 4 new rows: reused rows count toward --batch-size, so its
    # batches were [reused, reused, new] and [new, new, new] when the hook stopped it at 6 >= 5 rows
    assert summary.reused == 6 and summary.files == 9
    assert out.read_bytes() == (tmp_path / "full.csv").read_bytes()
    assert not (tmp_path / "out.csv.partial").exists()


def test_resume_after_kill_9_with_torn_last_line(tmp_path: Path, onnx_model: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    run(folder, tmp_path / "full.jsonl", onnx_model, format=OutputFormat.JSONL)
    out = tmp_path / "out.jsonl"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from garmentcv.infer.classify import ClassifyConfig, classify_folder
        from garmentcv.infer.rows import OutputFormat
        cfg = ClassifyConfig(folder=Path({str(folder)!r}), out=Path({str(out)!r}), model=Path({str(onnx_model)!r}),
                             provider="cpu", batch_size=2, format=OutputFormat.JSONL, progress=False)
        def hook(saved):
            if saved >= 4:
                os.kill(os.getpid(), signal.SIGKILL)
        classify_folder(cfg, on_batch=hook)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    (segment,) = (tmp_path / "out.jsonl.partial").glob("run-*.jsonl")
    lines = segment.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 1 + 4
    with segment.open("a", encoding="utf-8") as handle:  # a row torn by the kill
        handle.write('{"path": "trunc.jpg", "lab')
    cfg = ClassifyConfig(folder=folder, out=out, model=onnx_model, provider="cpu", format=OutputFormat.JSONL,
                         resume=True, progress=False)
    summary = classify_folder(cfg)
    assert summary.reused == 4
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def test_resume_refuses_partial_rows_of_another_model(tmp_path: Path, onnx_model: Path,
                                                      onnx_model_factory) -> None:
    folder = make_folder(tmp_path / "imgs")
    cfg = ClassifyConfig(folder=folder, out=tmp_path / "o.csv", model=onnx_model, provider="cpu", batch_size=2,
                         progress=False)

    def stop(saved: int) -> None:
        raise Interrupt()

    with pytest.raises(KeyboardInterrupt):
        classify_folder(cfg, on_batch=stop)
    other = onnx_model_factory(classes=("a", "b", "c"))
    with pytest.raises(GarmentCVError, match="another model"):
        classify_folder(ClassifyConfig(**{**cfg.__dict__, "model": other, "resume": True}))
    # without --resume the run classifies everything again (the old rows are kept only until it completes)
    summary = classify_folder(ClassifyConfig(**{**cfg.__dict__, "model": other}))
    assert summary.reused == 0 and summary.files == 9


def test_pipeline_streams_with_bounded_read_ahead(onnx_model: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "one.jpg", seed=0)
    consumed = 0

    def items():
        nonlocal consumed
        for i in range(10_000):
            consumed += 1
            yield image, i

    model = open_model(onnx_model, "cpu")
    batches = predict_batches(model, items(), batch_size=4, workers=2, prefetch=2)
    first = next(batches)
    assert [p.item for p in first] == [0, 1, 2, 3]
    assert consumed <= 4 * 3  # the batch being run plus two decoded ahead, never the whole stream
    batches.close()


def test_provider_cuda_is_never_a_silent_fallback(onnx_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ProviderError, match="onnxruntime-gpu"):
            open_model(onnx_model, "cuda")
    # onnxruntime claims CUDA but cannot start it (no GPU, no libraries): cuda fails, auto falls back to the CPU
    import garmentcv.infer.runtimes.onnxruntime as session

    real = ort.InferenceSession

    def no_cuda(path: str, sess_options=None, providers=None):  # noqa: ANN001
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(session.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(session.ort, "InferenceSession", no_cuda)
    with pytest.raises(ProviderError, match="could not start"):
        open_model(onnx_model, "cuda")
    with caplog.at_level("INFO"):
        assert open_model(onnx_model, "auto").provider == "cpu"
    assert "CUDA is not usable" in caplog.text and "provider cpu" in caplog.text


def test_model_without_metadata_or_missing_is_refused(tmp_path: Path, onnx_model_factory) -> None:
    bare = onnx_model_factory(metadata=False)
    with pytest.raises(ModelFileError, match="gcv export"):
        open_model(bare, "cpu")
    with pytest.raises(ModelFileError, match="gcv export"):
        read_model_info(bare)
    with pytest.raises(ModelFileError, match="not found"):
        read_model_info(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        open_model(tmp_path / "junk.onnx", "cpu")
    assert DEFAULT_MODEL_PATH == Path("runs/export/model.onnx")


def test_cli_end_to_end(tmp_path: Path, onnx_model: Path, onnx_model_factory) -> None:
    folder = make_folder(tmp_path / "imgs")
    runner = CliRunner()
    args = [str(folder), "--model", str(onnx_model), "--device", "cpu", "--batch-size", "4"]
    result = runner.invoke(classify_main, [*args, "--out", str(tmp_path / "r.csv"), "-q"])
    assert result.exit_code == 0, result.output
    assert "9 image files: 7 classified, 2 errors; skipped 2 hidden, 2 not an image" in result.stderr
    run(folder, tmp_path / "lib.csv", onnx_model)
    assert (tmp_path / "r.csv").read_bytes() == (tmp_path / "lib.csv").read_bytes()
    result = runner.invoke(classify_main, [*args, "--out", str(tmp_path / "k.csv"), "--format", "kaggle",
                                           "--on-error", "fail", "--no-recursive", "-q"])
    assert result.exit_code == 1 and "2 images could not be decoded: corrupt.jpg, trunc.jpg" in result.stderr
    assert (tmp_path / "k.csv").read_text().splitlines()[0] == "index,label"
    bare = onnx_model_factory(metadata=False)
    result = runner.invoke(classify_main, [str(folder), "--out", str(tmp_path / "x.csv"), "--model", str(bare)])
    assert result.exit_code == 1 and "gcv export" in result.stderr and not (tmp_path / "x.csv").exists()
    result = runner.invoke(classify_main, [str(folder), "--out", str(tmp_path / "x.csv"), "--format", "xml"])
    assert result.exit_code == 2


def test_infer_never_imports_torch(tmp_path: Path, onnx_model: Path) -> None:
    folder = tmp_path / "imgs"
    for i in range(3):
        write_image(folder / f"{i}.jpg", seed=i)
    out = tmp_path / "out.csv"
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision"):
                    raise ImportError("torch is not installed here")
        sys.meta_path.insert(0, NoTorch())
        import garmentcv.infer, garmentcv.infer.cli, garmentcv.infer.classify, garmentcv.infer.evaluate
        import garmentcv.infer.model_file
        from garmentcv.infer.cli import classify_main
        try:
            classify_main([{str(folder)!r}, "--out", {str(out)!r}, "--model", {str(onnx_model)!r}, "-q"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
        assert not bad, bad
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 4


def test_load_input_jpeg_shortcut_stays_within_a_grey_level(tmp_path: Path) -> None:
    from PIL import Image

    from garmentcv.image import Preprocessing, decode_image, normalize, preprocess, resize_and_crop

    pp = Preprocessing(resize=256, crop=224)
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (29, 20, 3)), np.ones((30, 30, 1))).astype(np.uint8)  # 600x870, 30 px blocks
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=92)
    Image.fromarray(smooth).save(tmp_path / "big.png")
    decoded = decode_image(tmp_path / "big.jpg")
    assert decoded.shape == (870, 600, 3)  # decode_image stays full resolution (training augmentation)
    # resize all, then crop (torchvision's order and arithmetic), pixel for pixel
    full = np.asarray(Image.fromarray(decoded).resize((256, 371), Image.Resampling.BILINEAR))[74:298, 16:240]
    assert np.array_equal(resize_and_crop(decoded, pp), full)
    # no JPEG: exactly preprocess(decode_image); JPEG >= 2x the resize: DCT-scaled decode, ~1 level on average
    # (0.45 on photo-like 600x866 JPEGs)
    assert np.array_equal(load_input(tmp_path / "big.png", pp), preprocess(decode_image(tmp_path / "big.png"), pp))
    grey_levels = np.abs(load_input(tmp_path / "big.jpg", pp) - preprocess(decoded, pp)) * 0.229 * 255
    assert 0 < grey_levels.mean() < 1.5
    assert normalize(full, pp).shape == (3, 224, 224)
