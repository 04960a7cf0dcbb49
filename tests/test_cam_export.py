"""The ``cam`` output end to end on a tiny random-init resnet18 at 32 px: gcv-export adds it (with the embedding),
gates it like the logits in FP32 and INT8, declares it in the metadata and refuses backbones without class
activation maps."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from garmentcv.artifact import EMBEDDING_NAME, INPUT_FLOAT32, OUTPUT_NAME, ModelInfo
from garmentcv.errors import ExportError
from garmentcv.export import checks, runtime_gates
from garmentcv.export.cam import CAM_NAME
from garmentcv.export.exporter import ExportConfig, ExportResult, export_checkpoint
from garmentcv.image import load_input
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.runtimes import open_runtime
from garmentcv.models import build_model
from tests.test_export import CLASSES, SIZE, make_run


def _hooked_cam(ckpt: Path, inputs: np.ndarray) -> np.ndarray:
    """Zhou et al.'s maps of the checkpoint's network from a forward hook on its pooling's input (the reference)."""
    state = torch.load(ckpt, weights_only=True)
    model = build_model("resnet18", len(CLASSES), "none").model
    model.load_state_dict(state["state_dict"])
    captured = {}
    model.avgpool.register_forward_hook(lambda m, args, out: captured.update(fmap=args[0]))
    with torch.no_grad():
        model.eval()(torch.from_numpy(inputs))
        return torch.einsum("ndyx,cd->ncyx", captured["fmap"], model.fc.weight).numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("cam") / "run", "resnet18")


def _val_inputs(ckpt: Path, info: ModelInfo) -> np.ndarray:
    with open(ckpt.parent.parent / "val.csv", encoding="utf-8") as handle:
        return np.stack([load_input(Path(r["path"]), info.preprocessing) for r in csv.DictReader(handle)])


@pytest.fixture(scope="module")
def exports(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ExportResult]:
    """The run exported with --cam at a precision (float32 input, no prediction sets), once per precision."""
    made: dict[str, ExportResult] = {}

    def export(precision: str) -> ExportResult:
        if precision not in made:
            out = tmp_path_factory.mktemp(precision) / "m.onnx"
            made[precision] = export_checkpoint(ExportConfig(checkpoint=run, out=out, precision=precision,
                                                             input_format=INPUT_FLOAT32, cam=True, coverage=None),
                                                progress=False)
        return made[precision]

    return export


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_exported_cam_equals_the_hooked_pytorch_maps_and_passes_its_gates(run: Path, exports, precision: str) -> None:
    r = exports(precision)
    info = read_model_info(r.out)
    assert info == r.info and info.has_cam and info.has_embedding
    assert info.outputs == (OUTPUT_NAME, EMBEDDING_NAME, CAM_NAME) and info.format_version == 3
    bound = checks.CAM_MIN_COSINE[precision]
    assert r.cam_parity is not None and r.cam_parity.passed and r.cam_parity.images == 12
    assert r.cam_parity.min_cosine >= bound
    assert info.metrics["export"]["cam_min_cosine"] == r.cam_parity.min_cosine
    own = info.gate("onnxruntime", precision)
    assert own is not None and own.passed and own.cam_min_cosine == pytest.approx(r.cam_parity.min_cosine)
    assert all(g.cam_min_cosine is not None for g in info.runtime_gates)

    inputs = _val_inputs(run, info)
    got = open_runtime(r.out, "onnxruntime", "cpu").outputs(inputs)[CAM_NAME]
    want = _hooked_cam(run, inputs)
    assert got.shape == want.shape == (12, len(CLASSES), SIZE // 32, SIZE // 32)
    cosine = checks.cosine_similarity(want.reshape(12, -1), got.reshape(12, -1))
    assert cosine.min() >= bound
    if precision == "fp32":  # float32 reorderings only: each image's maps within 1e-3 of its map scale
        scale = np.abs(want).reshape(12, -1).max(axis=1)
        assert (np.abs(got - want).reshape(12, -1).max(axis=1) <= checks.FP32_TOLERANCE * scale).all()


def test_evaluate_page_shows_a_heatmap_for_each_misclassified_image(run: Path, exports, tmp_path: Path) -> None:
    from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model
    from garmentcv.report import files_folder

    r = exports("fp32")
    result = evaluate_model(EvaluateConfig(data=run.parent.parent / "val.csv", out=tmp_path / "ev", model=r.out,
                                           provider="cpu", runtime="onnxruntime", progress=False))
    assert 0 < result.misclassified <= 12  # a random-init model: most of the 12 images
    page = (tmp_path / "ev" / "report.html").read_text(encoding="utf-8")
    wrong = page[page.index('<section id="misclassified">'):]
    wrong = wrong[: wrong.index("</section>")]
    assert wrong.count('class="heatmap"') == result.misclassified == page.count('class="heatmap"')
    assert len(list(files_folder(tmp_path / "ev" / "report.html").glob("h*.jpg"))) == result.misclassified
    with open(tmp_path / "ev" / "misclassified.csv", encoding="utf-8") as handle:
        predicted = sorted(r["predicted"] for r in csv.DictReader(handle))
    assert sorted(c for c in CLASSES for _ in range(wrong.count(f"heatmap of {c}</span>"))) == predicted


def test_cam_refused_for_a_backbone_without_pooling_and_one_linear_head(tmp_path: Path) -> None:
    ckpt = make_run(tmp_path / "run", "mobilenet_v3_small")
    with pytest.raises(ExportError, match=r"--cam: mobilenet_v3_small has no class activation maps: layers between "
                                          r"the pooling .* export without --cam"):
        export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "m.onnx", cam=True, coverage=None),
                          progress=False)
    assert not (tmp_path / "m.onnx").exists()


def test_cam_gate_refuses_drifting_maps_and_records_the_cosine() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)
    drifted = reference.copy()
    drifted[1, 0] = -drifted[1, 0]  # one image's map of one class turned over
    files = ("a", "b", "c")
    parity = checks.compare_embeddings(reference, drifted, files, checks.CAM_MIN_COSINE["int8"],
                                       "class activation map")
    assert not parity.passed and parity.rows_below == 1 and parity.worst_file == "b"
    with pytest.raises(ExportError, match="INT8 class activation map parity failed.*worst b.*without --cam"):
        checks.require_embedding(parity, "INT8", "--cam")
    logits = rng.normal(size=(3, 2)).astype(np.float32)
    seen = runtime_gates.GateInputs(logits, files, np.array([0, 1, 0]), None, None, reference)
    gate = runtime_gates.judge("openvino", "f32", logits, seen, checks.FP32_TOLERANCE, 1.0, cam=drifted)
    assert not gate.passed and "class activation map cosine similarity" in gate.note
    assert gate.cam_min_cosine == pytest.approx(parity.min_cosine) and gate.embedding_min_cosine is None
    ok = runtime_gates.judge("openvino", "f32", logits, seen, checks.FP32_TOLERANCE, 1.0, cam=reference)
    assert ok.passed and ok.cam_min_cosine == pytest.approx(1.0)
    assert type(ok).from_dict(ok.to_dict()) == ok


def test_cam_stays_last_behind_an_unknown_detector_and_every_runtime_returns_it(run: Path, tmp_path: Path) -> None:
    from garmentcv.artifact import OOD_SCORE_NAME
    from garmentcv.infer.runtimes import openvino_installed

    r = export_checkpoint(ExportConfig(checkpoint=run, out=tmp_path / "m.onnx", input_format=INPUT_FLOAT32, cam=True,
                                       coverage=None, unknown_score="energy"), progress=False)
    info = read_model_info(r.out)
    assert info.outputs == (OUTPUT_NAME, EMBEDDING_NAME, OOD_SCORE_NAME, CAM_NAME) and info.unknown is not None
    inputs = _val_inputs(run, info)
    want = _hooked_cam(run, inputs)
    for runtime in ("onnxruntime", *(["openvino"] if openvino_installed() else [])):
        model = open_runtime(r.out, runtime, "cpu")
        got = model.outputs(inputs)
        assert list(got) == list(info.outputs)
        cosine = checks.cosine_similarity(want.reshape(12, -1), got[CAM_NAME].reshape(12, -1))
        assert cosine.min() >= checks.CAM_MIN_COSINE[model.inference_precision], (runtime, model.inference_precision)
        gate = info.gate(runtime, model.inference_precision)
        assert gate is not None and gate.passed and gate.cam_min_cosine >= checks.CAM_MIN_COSINE[gate.precision]


def test_export_cli_cam_on_uint8_input_says_it_implies_the_embedding(run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from garmentcv.artifact import INPUT_UINT8
    from garmentcv.export import cli as export_cli

    assert "implies --embedding" in CliRunner().invoke(export_cli.main, ["--help"]).output
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(export_cli.main, [str(run), "--out", str(out), "--cam", "--no-prediction-sets", "-q"])
    assert result.exit_code == 0, result.output
    info = read_model_info(out)
    assert info.input_format == INPUT_UINT8 and info.outputs == (OUTPUT_NAME, EMBEDDING_NAME, CAM_NAME)
    assert "cam output (class activation maps): class activation map cosine similarity to FP32 at least" in (
        result.output)
    assert f"embedding output, {info.embedding_dim} features" in result.output
    # the report's heatmaps feed a uint8-input file its crops as they are
    from garmentcv.report.heatmap import class_heatmaps

    with open(run.parent.parent / "val.csv", encoding="utf-8") as handle:
        first = Path(next(csv.DictReader(handle))["path"])
    made = class_heatmaps(out, [(first, CLASSES[1]), (tmp_path / "gone.png", None)], tmp_path, 96)
    assert made[0].name == "h00000.jpg" and made[0].explains == CLASSES[1] and (tmp_path / "h00000.jpg").is_file()
    assert (made[0].width, made[0].height) == (SIZE * 3, SIZE * 3)  # the 32 px crop enlarged 3x, as thumbnails are
    assert made[1].name is None and made[1].reason
