"""Model files of format 2 take uint8 crops; every export gate holds; format-1 files still classify.

Also the shared decode path seen by all consumers: training validation, export parity and classification get
identical pixels for the same file (the DCT-scaled JPEG shortcut included).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from garmentcv.artifact import INPUT_FLOAT32, INPUT_NAME, INPUT_UINT8, ModelInfo
from garmentcv.data.layouts import Sample
from garmentcv.errors import ModelFileError
from garmentcv.export import checks
from garmentcv.export.exporter import ExportConfig, ImageStream, export_checkpoint, select_images
from garmentcv.image import Preprocessing, load_crop, load_input, normalize
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.pipeline import predict_batches
from garmentcv.infer.runtimes.onnxruntime import open_model
from garmentcv.train.data import EvalImages
from tests.test_export import CLASSES, make_run


@pytest.fixture(scope="module")
def both_formats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One resnet18 checkpoint exported FP32 twice: format 1 (float32 input) and format 2 (uint8, the default)."""
    root = tmp_path_factory.mktemp("formats")
    ckpt = make_run(root / "run", "resnet18")
    old = export_checkpoint(ExportConfig(checkpoint=ckpt, out=root / "f32.onnx", input_format=INPUT_FLOAT32),
                            progress=False)
    new = export_checkpoint(ExportConfig(checkpoint=ckpt, out=root / "u8.onnx"), progress=False)
    assert new.info.input_format == INPUT_UINT8 and old.info.input_format == INPUT_FLOAT32
    return ckpt, old.out, new.out


def test_uint8_file_declares_format_2_and_passes_the_gates(both_formats) -> None:
    ckpt, old, new = both_formats
    model = onnx.load(new)
    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [32, 32, 3]
    # preprocessing in the graph
    assert [n.op_type for n in model.graph.node][:4] == ["Transpose", "Cast", "Mul", "Sub"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["garmentcv.format_version"] == "2" and props["garmentcv.input"] == INPUT_UINT8
    old_props = {p.key: p.value for p in onnx.load(old).metadata_props}
    # readable by old releases
    assert old_props["garmentcv.format_version"] == "1" and "garmentcv.input" not in old_props
    info = read_model_info(new)
    assert info.input_format == INPUT_UINT8 and info.input_shape(5) == (5, 32, 32, 3) and info.input_dtype == "uint8"


def test_uint8_file_gives_the_logits_of_the_float_file(both_formats) -> None:
    """The same validation images: crops into the uint8 file, normalised floats into the float file, equal logits
    within FP32's tolerance; batch sizes and determinism hold for the uint8 file as checked at export."""
    ckpt, old, new = both_formats
    images = select_images(ckpt.parent.parent / "val.csv", CLASSES, 0, True, "val")
    pp = read_model_info(new).preprocessing
    crops = np.concatenate([b.inputs for b in ImageStream(images, pp, 5, progress=False, uint8=True)])
    floats = np.concatenate([b.inputs for b in ImageStream(images, pp, 5, progress=False)])
    assert crops.dtype == np.uint8 and crops.shape == (12, 32, 32, 3) and floats.shape == (12, 3, 32, 32)
    assert np.array_equal(floats, np.stack([normalize(c, pp) for c in crops]))
    u8 = checks.run_logits(checks.open_session(new), crops)
    f32 = checks.run_logits(checks.open_session(old), floats)
    assert np.abs(u8 - f32).max() <= checks.FP32_TOLERANCE * checks.logit_scale(f32).max()
    assert (u8.argmax(1) == f32.argmax(1)).all()
    checks.check_batch_behaviour(checks.open_session(new), crops[:5], u8[:5], checks.BATCH_TOLERANCE["fp32"], 2)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_and_int8_export_with_uint8_input(both_formats, tmp_path: Path, precision: str) -> None:
    """Every gate of gcv-export runs on the uint8 input: FP16 parity within its tolerance, INT8 ranges set on crops."""
    ckpt, _, _ = both_formats
    r = export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / f"{precision}.onnx", precision=precision,
                                       calibration_images=6, max_accuracy_drop=100.0), progress=False)
    assert r.info.input_format == INPUT_UINT8 and read_model_info(r.out) == r.info
    assert r.fp32_parity.rows_over_tolerance == 0 and r.val_images == 12
    session = ort.InferenceSession(str(r.out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)" and session.get_outputs()[0].type == "tensor(float)"
    if precision == "int8":
        assert r.calibration_images == 6 and r.parity.tolerance is None
        # the in-graph preprocessing stays float (no QDQ pair between its nodes: two passes fewer per pixel)
        from garmentcv.export import convert

        chain = convert.input_preprocessing_nodes(onnx.load(r.out))
        assert [n.op_type for n in onnx.load(r.out).graph.node if n.name in chain] == [
            "Transpose", "Cast", "Mul", "Sub"]
    else:
        assert r.parity.tolerance == checks.FP16_TOLERANCE and r.parity.rows_over_tolerance == 0
        assert r.parity.top1_mismatches == 0


def test_both_formats_classify_a_folder_alike(both_formats, tmp_path: Path) -> None:
    """The pipeline hands each file what its model declares; both files give the same classes and probabilities."""
    _, old, new = both_formats
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(7):  # 7 images in batches of 3: a short last batch, reused buffers
        paths.append(photos / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40 + i, 36, 3), dtype=np.uint8)).save(paths[-1])
    (photos / "bad.png").write_bytes(b"not an image")
    items = [(p, p.name) for p in [*paths[:3], photos / "bad.png", *paths[3:]]]
    results = {}
    for name, path in (("old", old), ("new", new)):
        model = open_model(path, "cpu", threads=1)
        results[name] = [p for batch in predict_batches(model, items, batch_size=3, workers=2) for p in batch]
    assert [p.item for p in results["new"]] == [p.item for p in results["old"]] == [name for _, name in items]
    assert results["new"][3].error == results["old"][3].error and results["new"][3].error
    for a, b in zip(results["old"], results["new"], strict=True):
        if a.error is None:
            np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-4)
            assert a.probs.argmax() == b.probs.argmax()


def test_reading_metadata_of_either_format() -> None:
    from garmentcv.models.registry import default_preprocessing

    info = ModelInfo("resnet18", ("a", "b"), default_preprocessing("resnet18", 32), "fp32", "none")
    assert info.to_metadata()["garmentcv.format_version"] == "1"
    new = dataclasses.replace(info, input_format=INPUT_UINT8)
    props = new.to_metadata()
    assert props["garmentcv.format_version"] == "2" and ModelInfo.from_metadata(props) == new
    assert ModelInfo.from_metadata({**props, "garmentcv.format_version": "1"}).input_format == INPUT_FLOAT32
    with pytest.raises(ModelFileError, match="metadata format 4 is newer than this garmentcv reads"):
        ModelInfo.from_metadata({**props, "garmentcv.format_version": "4"}, source="m.onnx")
    with pytest.raises(ModelFileError, match=r"m.onnx: damaged GarmentCV metadata \(unknown input format 'rgb16'\)"):
        ModelInfo.from_metadata({**props, "garmentcv.input": "rgb16"}, source="m.onnx")


def test_bf16_gate_result_and_input_format_travel_together() -> None:
    """A file carries both the bf16 gate's result and its input format; the version stays the lowest that
    describes it (the bf16 result is an optional key, readable by format 1 readers)."""
    from garmentcv.artifact import ReducedPrecisionCheck
    from garmentcv.models.registry import default_preprocessing

    check = ReducedPrecisionCheck("bf16", True, 6, 1.0, 0.01, 0.05, 0.0, "", "openvino 2026.4.1", "Xeon")
    base = ModelInfo("resnet18", ("a", "b"), default_preprocessing("resnet18", 32), "fp32", "none", bf16=check)
    for fmt, version in ((INPUT_FLOAT32, "1"), (INPUT_UINT8, "2")):
        info = dataclasses.replace(base, input_format=fmt)
        props = info.to_metadata()
        assert props["garmentcv.format_version"] == version and "garmentcv.bf16" in props
        back = ModelInfo.from_metadata(props)
        assert back == info and back.bf16 == check and back.input_format == fmt


def test_a_graph_that_contradicts_its_declared_input_is_refused(onnx_model: Path, tmp_path: Path) -> None:
    """A float32 graph whose metadata says uint8: refused when read and when opened, naming the file."""
    model = onnx.load(onnx_model)
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    lying = ModelInfo.from_metadata(props)
    onnx.helper.set_model_props(model, dataclasses.replace(lying, input_format=INPUT_UINT8).to_metadata())
    onnx.save(model, tmp_path / "lying.onnx")
    expected = r"lying.onnx: its metadata declares input uint8-nhwc, so the input must be uint8 \(N, H, W, 3\)"
    with pytest.raises(ModelFileError, match=expected):
        read_model_info(tmp_path / "lying.onnx")
    with pytest.raises(ModelFileError, match=expected):
        open_model(tmp_path / "lying.onnx", "cpu")


@dataclasses.dataclass
class _Recorder:
    """A stand-in for a loaded model that records the batches the pipeline hands it (no runtime)."""

    info: ModelInfo
    seen: list[np.ndarray] = dataclasses.field(default_factory=list)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        self.seen.append(batch.copy())
        return np.zeros((len(batch), 2), dtype=np.float32)


def test_training_validation_export_and_classification_see_identical_pixels(tmp_path: Path) -> None:
    """For a 600x866 JPEG (DCT-scaled decode, crop-box resample) and a small PNG: the tensor training's validation
    loader yields, the input export's parity check feeds, and the batch row classification hands a format-1 model
    are equal bit for bit; a format-2 model gets the uint8 crop whose normalisation is that same array."""
    from tests.test_decode_path import _photo

    pp = Preprocessing(resize=256, crop=224)
    files = [_photo(tmp_path / "big.jpg", (600, 866), fmt="JPEG"),
             _photo(tmp_path / "small.png", (230, 300), fmt="PNG")]
    validation = EvalImages([Sample(f, "a") for f in files], ["a"], pp)
    images = select_images(tmp_path, ("a",), 0, False, "val")
    assert [p for p, _ in images.pairs] == sorted(files)
    first_batch = next(iter(ImageStream(images, pp, 2, progress=False))).inputs
    export_inputs = {p: x for (p, _), x in zip(images.pairs, first_batch, strict=True)}
    info = ModelInfo("resnet18", ("a", "b"), pp, "fp32", "none")
    floats, crops = _Recorder(info), _Recorder(dataclasses.replace(info, input_format=INPUT_UINT8))
    for recorder in (floats, crops):
        list(predict_batches(recorder, [(f, f) for f in files], batch_size=2, workers=2))  # type: ignore[arg-type]
    for i, f in enumerate(files):
        train_tensor = validation[i][0].numpy()
        assert np.array_equal(train_tensor, export_inputs[f])
        assert np.array_equal(train_tensor, floats.seen[0][i])
        assert np.array_equal(crops.seen[0][i], load_crop(f, pp)) and crops.seen[0].dtype == np.uint8
        assert np.array_equal(normalize(crops.seen[0][i], pp), train_tensor)
        assert np.array_equal(load_input(f, pp), train_tensor)
