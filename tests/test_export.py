"""Tests for gcv-export: every arch (random init, 32 px) exported, gated and read back.

Models are random-init with BatchNorm statistics re-estimated on 96 images like the generated ones (one
train-mode forward pass), so that logits have a realistic scale instead of collapsing towards zero
(EfficientNet-B0's are ~1e-13 at random init).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from garmentcv.artifact import INPUT_FLOAT32, INPUT_NAME, OUTPUT_NAME, ModelInfo, Quantization
from garmentcv.errors import CheckpointError, ExportError, ModelFileError, OutputPathError
from garmentcv.export import checks, convert
from garmentcv.export import cli as export_cli
from garmentcv.export.exporter import (
    ExportConfig,
    ImageStream,
    export_checkpoint,
    find_latest_checkpoint,
    select_images,
    torch_logits,
)
from garmentcv.fsutil import sha256_of
from garmentcv.image import load_input, normalize
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH, read_model_info
from garmentcv.models import MODELS, UnknownArchError, build_model, default_preprocessing, get_spec
from garmentcv.train import cli as train_cli
from garmentcv.train.checkpoint import FORMAT_VERSION, save_checkpoint
from tests.conftest import COLOURS

CLASSES = ("bluzy", "bryuki", "platya")  # three classes: nothing may assume two
SIZE = 32


def _noisy_image(path: Path, colour: tuple[int, int, int], seed: int) -> Path:
    """A 40x36 px PNG, half class colour, half uniform noise: varied enough for BatchNorm statistics."""
    noise = np.random.default_rng(seed).integers(0, 256, size=(36, 40, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((noise + np.asarray(colour)) // 2).astype(np.uint8)).save(path)
    return path


def make_run(root: Path, arch: str, accuracy: float = 0.5, per_class: int = 4) -> Path:
    """A gcv-train-like run folder ``root`` with train.csv, val.csv and ``<arch>/best.pt``; returns best.pt."""
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    for c, label in enumerate(CLASSES):
        for split in rows:
            for i in range(per_class):
                seed = 1000 * c + 100 * (split == "val") + i
                path = _noisy_image(root / "images" / f"{split}{seed:05d}_{label}.png", COLOURS[c], seed)
                rows[split].append((str(path.resolve()), label))
    for split, items in rows.items():
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("path", "label"), *items])
    torch.manual_seed(0)
    pp = default_preprocessing(arch, SIZE)
    model = build_model(arch, len(CLASSES), "none").model
    rng = np.random.default_rng(7)  # 96 more images of the same kind: stable statistics
    pixels = (rng.integers(0, 256, size=(96, SIZE, SIZE, 3)) + np.asarray(COLOURS[:3] * 32)[:, None, None]) // 2
    batch = torch.from_numpy(np.stack([normalize(p.astype(np.uint8), pp) for p in pixels]))
    for module in model.modules():  # cumulative BatchNorm statistics from the images
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
        scale = model.eval()(batch).abs().max().item()
        if scale < 1.0:  # heads initialised at std 0.01 (mobilenet_v3, regnet): give the logits a trained model's scale
            head = model.get_submodule(get_spec(arch).head)
            head.weight.mul_(3.0 / scale)
            head.bias.mul_(3.0 / scale)
    ckpt = root / arch / "best.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, {
        "arch": arch, "classes": list(CLASSES), "preprocessing": pp.to_dict(), "weights_source": "none (random init)",
        "config": {}, "epoch": 1, "best_epoch": 1, "history": [],
        "metrics": {"epoch": 1, "accuracy": accuracy, "precision": 0.4, "recall": 0.3, "f1": 0.35,
                    "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "count": 12},
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    })  # fmt: skip
    return ckpt


#: Two more families by torchvision builder name, through every gate like the three of the study.
EXTRA_ARCHS = ["mobilenet_v3_small", "convnext_tiny"]


@pytest.fixture(scope="module", params=list(MODELS) + EXTRA_ARCHS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Per arch: a run folder, its checkpoint and the FP32 export of it (one trace per arch), float32 input
    (format 1; format 2, gcv-export's default, is tested in tests/test_uint8_input.py)."""
    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    ckpt = make_run(root / "run", arch)
    cfg = ExportConfig(checkpoint=ckpt, out=root / "out" / "model.onnx", input_format=INPUT_FLOAT32)
    result = export_checkpoint(cfg, progress=False)
    return arch, ckpt, result


def _val_inputs(ckpt: Path, arch: str) -> tuple[np.ndarray, list[str]]:
    with open(ckpt.parent.parent / "val.csv", encoding="utf-8") as handle:
        files = [row["path"] for row in csv.DictReader(handle)]
    pp = default_preprocessing(arch, SIZE)
    return np.stack([load_input(f, pp) for f in files]), files


def _torch_model(ckpt: Path):
    state = torch.load(ckpt, weights_only=True)
    model = build_model(state["arch"], len(state["classes"]), "none").model
    model.load_state_dict(state["state_dict"])
    return model.eval()


# --- FP32, every arch -------------------------------------------------------------------------------------


def test_fp32_file_is_self_contained_checked_and_declared(exported) -> None:
    arch, ckpt, r = exported
    assert r.out.is_file() and sorted(p.name for p in r.out.parent.iterdir()) == ["model.onnx"]  # no .data, no temp
    assert r.size_mb == pytest.approx(r.out.stat().st_size / 1e6)
    model = onnx.load(r.out, load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert convert.default_opset(model) == 18
    assert not {n.op_type for n in model.graph.node} & convert.FORBIDDEN_OPS
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.name == OUTPUT_NAME and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, SIZE, SIZE]
    assert out_dims == [in_dims[0], len(CLASSES)]
    assert r.val_images == 12 and r.calibration_images == 0 and r.skipped_images == 0
    assert r.parity == r.fp32_parity and r.parity.images == 12 and r.parity.top1_mismatches == 0
    assert r.parity.tolerance == checks.FP32_TOLERANCE and r.parity.rows_over_tolerance == 0  # judged per row
    assert r.parity.worst_diff <= r.parity.worst_allowed == checks.FP32_TOLERANCE * r.parity.worst_scale
    assert r.parity.nonfinite_rows == 0 and 0 < r.parity.max_abs_diff
    assert r.accuracy == r.fp32_accuracy and r.accuracy_drop == 0.0


def test_fp32_parity_dynamic_batch_and_determinism(exported) -> None:
    arch, ckpt, r = exported
    inputs, _ = _val_inputs(ckpt, arch)
    reference = torch_logits(_torch_model(ckpt), inputs)
    assert np.abs(reference).max() > 0.1  # a real logit scale, so the tolerance means something
    session = ort.InferenceSession(str(r.out), providers=["CPUExecutionProvider"])
    whole = session.run(None, {INPUT_NAME: inputs})[0]  # batch 12, traced at 2
    assert whole.dtype == np.float32 and whole.shape == (12, len(CLASSES))
    assert np.abs(whole - reference).max() <= checks.FP32_TOLERANCE
    assert (whole.argmax(1) == reference.argmax(1)).all()
    assert np.array_equal(whole, session.run(None, {INPUT_NAME: inputs})[0])  # two runs: identical
    for size in (1, 3, 5):  # other batch sizes; a row does not depend on its batch mates
        parts = [session.run(None, {INPUT_NAME: inputs[i : i + size]})[0] for i in range(0, 12, size)]
        assert np.abs(np.concatenate(parts) - whole).max() <= checks.BATCH_TOLERANCE["fp32"]
    shuffled = session.run(None, {INPUT_NAME: inputs[::-1].copy()})[0][::-1]
    assert np.abs(shuffled - whole).max() <= checks.BATCH_TOLERANCE["fp32"]


def test_metadata_round_trip(exported) -> None:
    arch, ckpt, r = exported
    info = read_model_info(r.out)
    assert info == r.info
    assert info.arch == arch and info.classes == CLASSES and info.precision == "fp32" and info.opset == 18
    assert info.preprocessing == default_preprocessing(arch, SIZE)  # the same object training used
    assert info.checkpoint_sha256 == sha256_of(ckpt)
    assert info.weights_source == "none (random init)" and info.garmentcv_version
    assert info.metrics["accuracy"] == 0.5 and info.metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert info.metrics["export"]["images"] == 12 and info.metrics["export"]["accuracy"] == r.accuracy
    props = {p.key: p.value for p in onnx.load(r.out).metadata_props}
    assert ModelInfo.from_metadata(props) == info


# --- FP16 and INT8, every arch (from the FP32 graph the fixture exported: the steps export_checkpoint runs) ---


def test_fp16_every_arch(exported) -> None:
    arch, ckpt, r = exported
    inputs, files = _val_inputs(ckpt, arch)
    reference = torch_logits(_torch_model(ckpt), inputs)
    fp16 = convert.to_fp16(onnx.load(r.out))
    assert onnx.TensorProto.FLOAT16 in {t.data_type for t in fp16.graph.initializer}
    session = checks.open_session(fp16.SerializeToString())
    assert [session.get_inputs()[0].type, session.get_outputs()[0].type] == ["tensor(float)"] * 2
    logits = checks.run_logits(session, inputs)
    convert.check_graph(fp16)
    parity = checks.compare(reference, logits, files, checks.FP16_TOLERANCE)
    checks.require_parity(parity, "FP16")
    assert 0 < parity.max_abs_diff <= checks.FP16_TOLERANCE
    checks.check_batch_behaviour(session, inputs[:5], logits[:5], checks.BATCH_TOLERANCE["fp16"], 2)


def test_int8_every_arch(exported) -> None:
    arch, ckpt, r = exported
    inputs, _ = _val_inputs(ckpt, arch)
    train = select_images(ckpt.parent.parent / "train.csv", CLASSES, 0, False, "cal")
    calibration = ImageStream(train, default_preprocessing(arch, SIZE), 4, progress=False)  # streamed batches
    int8 = convert.to_int8(onnx.load(r.out), calibration.inputs())
    assert calibration.decoded == 12
    convert.check_graph(int8)
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ
    assert not ops & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}  # not dynamic quantization
    inits = {t.name: t for t in int8.graph.initializer}
    weight_scales = [inits[n.input[1]] for n in int8.graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in inits
                     and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert weight_scales and max(len(s.dims) and s.dims[0] for s in weight_scales) > 1  # per-channel weights
    activation_zero_points = [inits[n.input[2]] for n in int8.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zero_points  # U8S8: activations quantized to uint8, the fast x86 kernels
    assert {z.data_type for z in activation_zero_points} == {onnx.TensorProto.UINT8}
    session = checks.open_session(int8.SerializeToString())
    logits = checks.run_logits(session, inputs)
    assert logits.dtype == np.float32 and logits.shape == (12, len(CLASSES))
    checks.check_batch_behaviour(session, inputs[:5], logits[:5], checks.BATCH_TOLERANCE["int8"], 2)


# --- Full pipeline at FP16 (CLI, defaults, opset 21) and INT8 (library) --------------------------------------


def test_cli_defaults_fp16_opset21(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_run(train_cli.RUNS_DIR / "20240101-000000", "resnet18")  # older run
    newest = make_run(train_cli.RUNS_DIR / "20240102-000000", "resnet18", accuracy=0.4)
    better = make_run(train_cli.RUNS_DIR / "20240102-000000", "resnet34", accuracy=0.9, per_class=2)
    assert find_latest_checkpoint(train_cli.RUNS_DIR) == better != newest
    (better.parent / "best.pt").unlink()  # keep the CLI run to the fast arch; the choice is tested above
    result = CliRunner().invoke(export_cli.main, ["--precision", "fp16", "--opset", "21", "-q"])
    assert result.exit_code == 0, result.output
    info = read_model_info(DEFAULT_MODEL_PATH)
    assert info.precision == "fp16" and info.opset == 21 and info.checkpoint_sha256 == sha256_of(newest)
    assert convert.default_opset(onnx.load(DEFAULT_MODEL_PATH)) == 21
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote {DEFAULT_MODEL_PATH}: ") and " MB, fp16, opset 21, resnet18" in lines[0]
    assert "parity FP16: largest logit difference" in result.stdout and " = 0.05 x its logit scale " in result.stdout
    assert "validation accuracy: FP32 " in lines[-1] and "| FP16 " in lines[-1]


def test_int8_full_export_reports_side_by_side(tmp_path: Path) -> None:
    ckpt = make_run(tmp_path / "run", "resnet18")
    out = tmp_path / "int8.onnx"
    r = export_checkpoint(
        ExportConfig(checkpoint=ckpt, out=out, precision="int8", calibration_images=9, max_accuracy_drop=100.0,
                     input_format=INPUT_FLOAT32),
        progress=False,
    )  # random-init model: accuracy is noise, so the drop gate is tested with set figures below
    assert r.calibration_images == 9 and r.info.precision == "int8" and read_model_info(out) == r.info
    inputs, files = _val_inputs(ckpt, "resnet18")
    targets = np.repeat(np.arange(len(CLASSES)), 4)
    torch_pred = torch_logits(_torch_model(ckpt), inputs).argmax(1)
    assert r.fp32_accuracy == pytest.approx((torch_pred == targets).mean())  # FP32 top-1 equals PyTorch's
    int8_pred = checks.run_logits(checks.open_session(out), inputs).argmax(1)
    assert r.accuracy == pytest.approx((int8_pred == targets).mean())
    assert r.accuracy_drop == pytest.approx(100 * (r.fp32_accuracy - r.accuracy))
    assert r.parity.tolerance is None and r.fp32_parity.rows_over_tolerance == 0
    assert r.info.quantization == Quantization("uint8", "int8", *convert.cpu_facts())  # types and the CPU it ran on
    assert read_model_info(out).quantization.cpu_flags == convert.cpu_facts()[1]
    assert r.size_mb < 0.4 * r.fp32_parity.images or r.size_mb < 15  # int8 weights: ~1/4 of the 44.8 MB FP32


# --- Gates with set figures --------------------------------------------------------------------------------


def test_accuracy_drop_gate() -> None:
    assert checks.require_accuracy_drop(0.90, 0.895, 1.0, "INT8") == pytest.approx(0.5)
    assert checks.require_accuracy_drop(0.90, 0.95, 1.0, "INT8") == pytest.approx(-5.0)
    with pytest.raises(ExportError, match=r"INT8 accuracy 85\.00% is 5\.00 points below FP32's 90\.00%.*1"):
        checks.require_accuracy_drop(0.90, 0.85, 1.0, "INT8")


def test_parity_tolerance_follows_each_rows_logit_scale() -> None:
    """Float32 rounding grows with the values: logits in the thousands differ by more than 1e-3 legitimately.

    The scale is each row's own, not the largest |logit| of the whole set."""
    reference = np.array([[4000.0, -2500.0], [-3000.0, 3500.0]], dtype=np.float32)
    files = ["a.jpg", "b.jpg"]
    rounding = checks.compare(reference, reference + 0.004, files, checks.FP32_TOLERANCE)
    assert rounding.worst_file == "b.jpg" and rounding.worst_scale == 3500.0
    assert rounding.worst_allowed == pytest.approx(3.5)
    checks.require_parity(rounding, "FP32")
    wrong = reference.copy()
    wrong[0, 1] += 50.0
    with pytest.raises(ExportError,
                       match=r"at a\.jpg: logit difference 50 \(tolerance 4 = 0\.001 x its logit scale 4e\+03\)"):
        checks.require_parity(checks.compare(reference, wrong, files, checks.FP32_TOLERANCE), "FP32")
    small = np.array([[0.01, -0.02]], dtype=np.float32)  # below 1 the scale is 1, never shrinking the tolerance
    assert checks.compare(small, small, ["c.jpg"], checks.FP32_TOLERANCE).worst_allowed == checks.FP32_TOLERANCE


def test_parity_gate_names_largest_difference_and_worst_file() -> None:
    reference = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [0.5, 0.4999, 0.0]], dtype=np.float32)
    files = ["a.jpg", "b.jpg", "c.jpg"]
    ok = checks.compare(reference, reference + 5e-4, files, checks.FP32_TOLERANCE)
    checks.require_parity(ok, "FP32")
    assert ok.top1_mismatches == 0 and ok.max_abs_diff == pytest.approx(5e-4, rel=1e-3)
    bad = reference.copy()
    bad[1, 2] += 0.01
    parity = checks.compare(reference, bad, files, checks.FP32_TOLERANCE)
    assert parity.worst_file == "b.jpg" and parity.max_abs_diff == pytest.approx(0.01, rel=1e-3)
    # 1e-3 per unit of the row's largest |logit|
    assert parity.worst_scale == 3.0 and parity.worst_allowed == pytest.approx(0.003)
    with pytest.raises(
        ExportError,
        match=r"1 of 3 images .* at b\.jpg: logit difference 0\.01 \(tolerance 0\.003 = 0\.001 x its logit scale 3\)",
    ):
        checks.require_parity(parity, "FP32")
    flipped = reference[[1, 0, 2]]  # rows 0 and 1 change top-1 beyond any tie
    # margins 2 and 3 > 0.1 x row scales 2, 3
    assert checks.compare(reference, flipped, files, 0.1).top1_mismatches == 2
    tie = reference.copy()
    tie[2] = [0.4999, 0.5, 0.0]  # a near tie within the tolerance may flip
    assert checks.compare(reference, tie, files, checks.FP32_TOLERANCE).top1_mismatches == 0


# --- Opset handling and bad input --------------------------------------------------------------------------


def test_opset_not_honoured_fails_and_keeps_old_file(tmp_path: Path) -> None:
    ckpt = make_run(tmp_path / "run", "resnet18", per_class=2)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")
    with pytest.raises(ExportError, match=r"opset 17 was asked for but the exporter wrote opset 18"):
        export_checkpoint(ExportConfig(checkpoint=ckpt, out=out, opset=17), progress=False)
    assert out.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_check_opset_directly() -> None:
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []),
                                   opset_imports=[onnx.helper.make_opsetid("", 20)])
    convert.check_opset(model, 20)
    with pytest.raises(ExportError, match="opset 19 was asked for but the exporter wrote opset 20"):
        convert.check_opset(model, 19)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("bad") / "run", "resnet18", per_class=2)


def _cli(args: list[str]):
    return CliRunner().invoke(export_cli.main, [*args, "-q"])


def _resave(src: Path, dst: Path, **changes: object) -> Path:
    data = torch.load(src, weights_only=True)
    data.update(changes)
    torch.save(data, dst)
    return dst


def test_bad_checkpoints_exit_1_with_clear_message(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(small_run.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    newer = _resave(small_run, tmp_path / "newer.pt", format_version=FORMAT_VERSION + 1)
    cases = {  # a checkpoint that does not exist is usage, exit 2: tests/test_export_inputs.py
        truncated: "truncated or corrupt",
        foreign: "not a GarmentCV checkpoint",
        newer: f"format version {FORMAT_VERSION + 1} is newer",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            export_checkpoint(ExportConfig(checkpoint=path, out=out), progress=False)
        result = _cli([str(path), "--out", str(out)])
        assert result.exit_code == 1 and message in result.stderr and str(path) in result.stderr
    assert not out.exists()


def test_unknown_arch_and_misfit_weights(small_run: Path, tmp_path: Path) -> None:
    unknown = _resave(small_run, tmp_path / "vgg.pt", arch="resnet19")
    with pytest.raises(UnknownArchError,
                       match="unknown arch 'resnet19'; choose one of efficientnet_b0, resnet18, resnet34"):
        export_checkpoint(ExportConfig(checkpoint=unknown, out=tmp_path / "m.onnx"), progress=False)
    assert _cli([str(unknown), "--out", str(tmp_path / "m.onnx")]).exit_code == 1
    misfit = _resave(small_run, tmp_path / "misfit.pt", arch="resnet34")
    with pytest.raises(CheckpointError, match="do not fit resnet34 with 3 classes"):
        export_checkpoint(ExportConfig(checkpoint=misfit, out=tmp_path / "m.onnx"), progress=False)


def test_unwritable_or_wrong_output_and_missing_split(small_run: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out, message in [(blocker / "m.onnx", "is not a folder but a file"), (tmp_path / "m.pt", "ending in .onnx"),
                         (small_run.with_suffix(".onnx").parent, "ending in .onnx")]:  # fmt: skip
        with pytest.raises((ExportError, OutputPathError), match=message):
            export_checkpoint(ExportConfig(checkpoint=small_run, out=out), progress=False)
    moved = tmp_path / "moved" / "x" / "best.pt"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(small_run.read_bytes())
    with pytest.raises(ExportError, match=r"val\.csv not found.*pass --val-data"):
        export_checkpoint(ExportConfig(checkpoint=moved, out=tmp_path / "m.onnx"), progress=False)
    with pytest.raises(ExportError, match=r"no run folder with <arch>/best\.pt under"):
        find_latest_checkpoint(tmp_path / "runs")


def test_read_model_info_refuses_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        read_model_info(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        read_model_info(tmp_path / "junk.onnx")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])
    plain = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 18)])  # fmt: skip
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(ModelFileError, match="has no GarmentCV metadata"):
        read_model_info(tmp_path / "plain.onnx")


def test_reader_is_torch_free_and_cli_defaults_agree() -> None:
    code = "import sys, garmentcv.infer.model_file, garmentcv.export.cli; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert export_cli.DEFAULT_OPSET == convert.DEFAULT_OPSET
    help_text = CliRunner().invoke(export_cli.main, ["--help"]).output
    assert (f"[default: {DEFAULT_MODEL_PATH}]" in help_text.replace("\n", "").replace("  ", " ")
            or str(DEFAULT_MODEL_PATH) in help_text)
    assert str(train_cli.RUNS_DIR) in help_text and "[default: fp32]" in help_text


@pytest.mark.parametrize(("given", "method"), [
    ([], None), (["--unknown-score"], "knn"), (["--unknown-score", "--coverage", "0.9"], "knn"),
    (["--unknown-score", "energy"], "energy")])  # fmt: skip
def test_unknown_score_given_alone_uses_the_default_method(monkeypatch, tmp_path: Path, given: list[str],
                                                           method: str | None) -> None:
    from garmentcv.export import exporter
    from garmentcv.unknowns.scores import DEFAULT_METHOD

    seen = {}

    def capture(cfg, progress):
        seen["cfg"] = cfg
        raise ExportError("stopped after parsing")

    monkeypatch.setattr(exporter, "export_checkpoint", capture)
    result = _cli([str(tmp_path / "best.pt"), "--out", str(tmp_path / "m.onnx"), *given])
    assert result.exit_code == 1 and "stopped after parsing" in result.output
    assert seen["cfg"].unknown_score == method
    assert export_cli.DEFAULT_UNKNOWN_METHOD == DEFAULT_METHOD == "knn"
