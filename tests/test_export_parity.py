"""Export parity gates: per-row tolerances, finite logits, the near-tie rule, FP16 accuracy gate."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from garmentcv.errors import ExportError
from garmentcv.export import checks, convert
from garmentcv.export import cli as export_cli
from garmentcv.export.exporter import ExportConfig, export_checkpoint, torch_logits
from garmentcv.image import load_input
from garmentcv.models import default_preprocessing
from tests.test_export import CLASSES, SIZE, _torch_model, make_run


def test_one_large_row_does_not_loosen_a_small_row() -> None:
    reference = np.array([[1000.0, -1000.0, 0.0], [0.5, 0.2, 0.1]], dtype=np.float32)
    candidate = reference.copy()
    candidate[0, 0] += 0.5  # 5e-4 x its scale 1000: within FP32's 1e-3 per unit
    candidate[1, 2] += 0.01  # 1e-2 x its scale 1: ten times FP32's tolerance
    parity = checks.compare(reference, candidate, ["big.jpg", "small.jpg"], checks.FP32_TOLERANCE)
    assert parity.max_abs_diff == pytest.approx(0.5) and parity.rows_over_tolerance == 1
    assert parity.worst_file == "small.jpg" and parity.worst_diff == pytest.approx(0.01, rel=1e-4)
    assert parity.worst_scale == 1.0
    with pytest.raises(ExportError,
                       match=r"FP32 parity failed.*1 of 2 images.*small\.jpg.*0\.01 .*0\.001 x its logit scale 1\b"):
        checks.require_parity(parity, "FP32")
    only_big = reference.copy()
    only_big[0, 0] += 0.5
    checks.require_parity(checks.compare(reference, only_big, ["big.jpg", "small.jpg"], checks.FP32_TOLERANCE), "FP32")


def test_each_row_scales_its_own_tolerance() -> None:
    reference = np.array([[4000.0, -2500.0], [-3000.0, 3500.0], [0.01, -0.02]], dtype=np.float32)
    files = ["a.jpg", "b.jpg", "c.jpg"]
    ok = reference.copy()
    ok[:2] += 3.0  # under 1e-3 x 3500 and x 4000
    ok[2] += 5e-4  # below 1 the scale is 1, never shrinking the tolerance
    parity = checks.compare(reference, ok, files, checks.FP32_TOLERANCE)
    checks.require_parity(parity, "FP32")
    assert parity.rows_over_tolerance == 0 and parity.worst_file == "b.jpg" and parity.worst_scale == 3500.0
    bad = reference.copy()
    bad[1, 1] += 3.6  # over 1e-3 x 3500, although under 1e-3 x the set's largest 4000
    with pytest.raises(ExportError, match=r"at b\.jpg.*3\.6 .*tolerance 3\.5 = 0\.001 x its logit scale 3\.5e\+03"):
        checks.require_parity(checks.compare(reference, bad, files, checks.FP32_TOLERANCE), "FP32")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_fail_naming_the_file(bad_value: float) -> None:
    reference = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    candidate = reference.copy()
    candidate[1, 2] = bad_value
    files = ["a.jpg", "b.jpg", "c.jpg"]
    for tolerance, what in [(checks.FP16_TOLERANCE, "FP16"), (None, "INT8")]:  # INT8's gate is accuracy, NaN fails too
        parity = checks.compare(reference, candidate, files, tolerance)
        assert parity.nonfinite_rows == 1 and parity.nonfinite_file == "b.jpg"
        with pytest.raises(ExportError, match=rf"{what} model gave non-finite logits \(NaN or Inf\) "
                                              r"for 1 of 3 images, first b\.jpg"):
            checks.require_parity(parity, what)


def test_top1_flip_allowed_only_within_the_rows_tolerance() -> None:
    files = ["tie.jpg"]
    # the reference's top-2 gap 0.0015 is over the row's tolerance 0.001 (scale 1), under twice it; every logit
    # moves less than the tolerance, yet the top-1 class flips: that is a real disagreement
    reference = np.array([[0.5, 0.4985, -1.0]], dtype=np.float32)
    flipped = np.array([[0.49925, 0.49926, -1.0]], dtype=np.float32)
    parity = checks.compare(reference, flipped, files, checks.FP32_TOLERANCE)
    assert parity.rows_over_tolerance == 0 and parity.top1_mismatches == 1 and parity.top1_tie_flips == 0
    with pytest.raises(ExportError, match=r"1 image with another top-1 class.*tie\.jpg"):
        checks.require_parity(parity, "FP32")
    # a gap of 0.0008, within the tolerance: a tie that may flip
    tie = np.array([[0.5, 0.4992, -1.0]], dtype=np.float32)
    parity = checks.compare(tie, np.array([[0.4995, 0.4997, -1.0]], dtype=np.float32), files, checks.FP32_TOLERANCE)
    checks.require_parity(parity, "FP32")
    assert parity.top1_mismatches == 0 and parity.top1_tie_flips == 1 and parity.top1_agreement == 0.0
    # at a large scale the row's own tolerance decides: gap 2 within 1e-3 x 3000
    large = np.array([[3000.0, 2998.0, 0.0]], dtype=np.float32)
    parity = checks.compare(large, np.array([[2999.0, 2999.5, 0.0]], dtype=np.float32), files, checks.FP32_TOLERANCE)
    assert parity.top1_mismatches == 0 and parity.top1_tie_flips == 1
    # without a tolerance (INT8) every flip counts
    assert checks.compare(tie, np.array([[0.4995, 0.4997, -1.0]], dtype=np.float32), files, None).top1_mismatches == 1


def test_accuracy_drop_gate_names_fp16_and_its_remedy() -> None:
    assert checks.require_accuracy_drop(0.90, 0.90, 0.0, "FP16") == 0.0
    with pytest.raises(ExportError,
                       match=r"FP16 accuracy 80\.00% is 10\.00 points below FP32's 90\.00%"
                             r".*--max-accuracy-drop 1\b.*fp32"):
        checks.require_accuracy_drop(0.90, 0.80, 1.0, "FP16")


_REAL_TO_FP16 = convert.to_fp16


def _damaging_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's FP16 conversion, then the logits' classes rotated (every top-1 changes)."""
    converted = _REAL_TO_FP16(model)
    producer = next(n for n in converted.graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_fp16_raw"
    converted.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 2, 0], dtype=np.int64), "rotate"))
    converted.graph.node.append(onnx.helper.make_node("Gather", ["logits_fp16_raw", "rotate"], ["logits"], axis=1))
    return converted


def test_fp16_accuracy_gate_refuses_a_drop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = make_run(tmp_path / "run", "resnet18", per_class=2)
    pp = default_preprocessing("resnet18", SIZE)
    with open(ckpt.parent.parent / "val.csv", encoding="utf-8") as handle:
        files = [row["path"] for row in csv.DictReader(handle)]
    predicted = torch_logits(_torch_model(ckpt), np.stack([load_input(f, pp) for f in files])).argmax(1)
    labels = [CLASSES[p] for p in predicted]
    if len(set(labels)) < 2:  # a dataset needs two classes; FP32 accuracy is then 5/6
        labels[0] = CLASSES[(predicted[0] + 1) % len(CLASSES)]
    val = tmp_path / "val_as_predicted.csv"
    with open(val, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "label"), *zip(files, labels, strict=True)])
    monkeypatch.setattr(convert, "to_fp16", _damaging_fp16)
    monkeypatch.setattr(checks, "FP16_TOLERANCE", 1e9)  # let parity pass: the accuracy gate alone must refuse
    out = tmp_path / "fp16.onnx"
    with pytest.raises(ExportError,
                       match=r"FP16 accuracy 0\.00% is \d+\.\d\d points below FP32's .*--max-accuracy-drop 1\b"):
        export_checkpoint(ExportConfig(checkpoint=ckpt, out=out, precision="fp16", val_data=val), progress=False)
    assert not out.exists()


def test_help_says_max_accuracy_drop_gates_fp16_and_int8() -> None:
    text = " ".join(CliRunner().invoke(export_cli.main, ["--help"]).output.split())
    assert "--max-accuracy-drop" in text
    assert "FP16 and INT8: fail when validation accuracy falls more points than this below FP32." in text


def test_fp16_gate_refuses_an_untrained_regnet_x_saying_what_its_tolerance_is_relative_to(tmp_path: Path) -> None:
    """Random-init regnet_x_400mf: float16 rounding, amplified by batch-norm channels of near-zero variance, moves
    its logits by far more than 5% of their scale. The gate keeps its tolerance (it is not widened to pass untrained
    models) and says what it is relative to, why such a model exceeds it, and what to do."""
    ckpt = make_run(tmp_path / "run", "regnet_x_400mf", per_class=2)
    out = tmp_path / "fp16.onnx"
    with pytest.raises(ExportError) as refused:
        export_checkpoint(ExportConfig(checkpoint=ckpt, out=out, precision="fp16", bf16_check="off"), progress=False)
    message = str(refused.value)
    assert message.startswith("FP16 parity failed: ") and " = 0.05 x its logit scale " in message
    assert ("The tolerance is relative to each image's logit scale, max(1, its largest |logit|): float16 rounds every "
            "weight and activation to about 3 significant digits, and a network can amplify those errors layer by "
            "layer, an untrained or briefly trained one especially (batch-norm channels of near-zero variance, logits "
            "small next to the values inside the network). Check the model's accuracy, or export it in fp32 or int8. "
            "The file was not written") in message
    assert "(top-1 agreement with PyTorch " in message and not out.exists()  # FP32's own gate passed before it
