"""OpenVINO's ``ood_score`` gated at export: each OpenVINO pair runs the file with its unknown-item detector joined,
and a pair whose score drifts from onnxruntime's past the bound fails (so ``--runtime auto`` does not run the file
there) while the export goes on; the bound and the judging are pure numpy, checked by hand first."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from garmentcv.artifact import OOD_SCORE_NAME, RuntimeGate
from garmentcv.export import runtime_gates
from garmentcv.export.exporter import ExportConfig, export_checkpoint
from garmentcv.image import load_crop
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.runtimes import open_runtime, openvino_allowed, openvino_installed
from tests.test_export import make_run

needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed (garmentcv[openvino])")
#: onnxruntime's scores of four images: standard deviation sqrt(1.25), largest |score| 3.
WANT = np.array([0.0, 1.0, 2.0, 3.0])
STD = math.sqrt(1.25)


def _pair(precision: str = "bf16", passed: bool = True, note: str = "") -> RuntimeGate:
    return RuntimeGate("openvino", precision, passed, 4, 1.0, 0.01, 0.05, 0.5, 0.0, note=note, version="openvino 1")


def test_score_bound_is_the_larger_of_the_spread_share_and_float32_rounding() -> None:
    assert runtime_gates.score_bound("fp32", "bf16", WANT) == pytest.approx(0.25 * STD, rel=1e-12)
    assert runtime_gates.score_bound("fp32", "f32", WANT) == pytest.approx(1e-3 * 3.0, rel=1e-12)  # the rounding floor
    assert runtime_gates.score_bound("int8", "f32", WANT) == pytest.approx(0.25 * STD, rel=1e-12)  # INT8: any pair
    assert runtime_gates.score_bound("fp32", "bf16", np.array([5.0, 5.0, 5.0])) == pytest.approx(5e-3, rel=1e-12)
    with pytest.raises(ValueError, match="no ood_score bound"):
        runtime_gates.score_bound("fp16", "fp16", WANT)


def test_judge_score_passes_within_the_bound_and_counts_changed_flags() -> None:
    got = WANT + np.array([0.0, 0.0, 0.2, 0.0])  # image 3 crosses the threshold 2.1: 2.0 kept, 2.2 unknown
    gate = runtime_gates.judge_score(_pair(), "energy", got, WANT, 2.1, "fp32")
    assert gate.passed and gate.note == ""
    assert gate.ood_score_diff == pytest.approx(0.2, abs=1e-12)
    assert gate.ood_score_bound == pytest.approx(0.25 * STD, rel=1e-12)
    assert gate.unknown_flag_changes == 1


def test_judge_score_refuses_a_drifting_score_naming_the_method_and_what_to_do() -> None:
    got = WANT + np.array([0.0, 0.5, 0.0, -0.1])
    gate = runtime_gates.judge_score(_pair(), "knn", got, WANT, 2.1, "fp32")
    assert not gate.passed and gate.ood_score_diff == pytest.approx(0.5, abs=1e-12)
    assert gate.unknown_flag_changes == 0
    assert gate.note == ("the knn ood_score differs from onnxruntime's by up to 0.5, more than 0.28 (0.25 x the spread "
                         "of the validation images' scores), changing the unknown flag of 0 images; run the file on "
                         "onnxruntime or export it with another --unknown-score method")
    failed = runtime_gates.judge_score(_pair(passed=False, note="bf16 rounding"), "knn", WANT, WANT, 2.1, "fp32")
    assert not failed.passed and failed.note == "bf16 rounding" and failed.ood_score_diff == 0.0  # stays failed
    nan = runtime_gates.judge_score(_pair(), "knn", np.array([0.0, np.nan, 2.0, 3.0]), WANT, 2.1, "fp32")
    assert not nan.passed and nan.note == "the knn ood_score is not finite for 1 image"


def test_judge_score_fails_a_pair_openvino_cannot_run_with_the_score() -> None:
    gate = runtime_gates.judge_score(_pair("f32"), "vim", None, WANT, 2.1, "fp32", "no TopK")
    assert not gate.passed and gate.ood_score_diff is None
    assert gate.note == "OpenVINO cannot run the file with the vim ood_score at f32: no TopK"


def test_gates_of_files_before_the_score_gate_still_load_and_new_ones_round_trip() -> None:
    old = _pair().to_dict()
    assert not {"ood_score_diff", "ood_score_bound", "unknown_flag_changes"} & set(old)
    loaded = RuntimeGate.from_dict(old)
    assert loaded == _pair() and loaded.ood_score_diff is None and loaded.unknown_flag_changes is None
    judged = runtime_gates.judge_score(_pair(), "energy", WANT + 0.01, WANT, 2.1, "fp32")
    assert RuntimeGate.from_dict(judged.to_dict()) == judged
    assert "ood_score within 0.01 of onnxruntime's (bound 0.28), 0 unknown flags changed" in judged.describe()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("ovgate")
    ckpt = make_run(root / "run", "resnet18")
    with open(root / "run" / "val.csv", encoding="utf-8") as handle:
        val = [Path(r["path"]) for r in csv.DictReader(handle)]
    return ckpt, val


@needs_openvino
@pytest.mark.parametrize("method", ["energy", "knn"])
def test_export_records_openvinos_ood_score_difference_within_the_bound(run, tmp_path: Path, method: str) -> None:
    ckpt, val = run
    r = export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "m.onnx", unknown_score=method,
                                       unknown_recall=0.75, coverage=None), progress=False)
    info = read_model_info(r.out)
    assert info == r.info
    pairs = {g.precision: g for g in info.runtime_gates if g.runtime == "openvino"}
    expected = {"f32"} if runtime_gates.can_check() is not None else {"f32", "bf16"}
    assert set(pairs) == set(r.openvino_score_diff) == set(r.unknown_flag_changes) == expected
    assert info.gate("onnxruntime", "fp32").ood_score_diff is None  # onnxruntime is checked against numpy instead
    for precision, gate in pairs.items():
        assert gate.passed, gate.note
        assert gate.ood_score_diff == r.openvino_score_diff[precision] <= gate.ood_score_bound
        assert gate.unknown_flag_changes == r.unknown_flag_changes[precision]
    assert r.openvino_score_diff["f32"] <= 1e-4  # float32 in another order (measured 3e-6)
    # the same comparison outside the export, on the written file
    inputs = np.stack([load_crop(p, info.preprocessing) for p in val])
    want = open_runtime(r.out, "onnxruntime", "cpu").outputs(inputs)[OOD_SCORE_NAME].astype(np.float64)
    assert pairs["f32"].ood_score_bound == runtime_gates.score_bound("fp32", "f32", want)
    from garmentcv.infer.runtimes.openvino import open_openvino

    for precision, gate in pairs.items():
        got = open_openvino(r.out, info, precision, 1).outputs(inputs)[OOD_SCORE_NAME].astype(np.float64)
        assert np.abs(got - want).max() <= gate.ood_score_bound


@needs_openvino
def test_a_drifting_openvino_score_fails_its_pairs_but_not_the_export(run, tmp_path: Path, monkeypatch) -> None:
    real = runtime_gates.run_openvino

    def drifting(*args, **kwargs):
        runs = real(*args, **kwargs)
        return {p: r if r.ood_score is None else runtime_gates.OpenVINORun(
            r.precision, r.logits, r.used, r.error, r.embedding, r.cam, r.ood_score + np.float32(1.0))
            for p, r in runs.items()}  # fmt: skip

    monkeypatch.setattr(runtime_gates, "run_openvino", drifting)
    ckpt, val = run
    r = export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "m.onnx", unknown_score="energy",
                                       unknown_recall=0.75, coverage=None), progress=False)
    info = read_model_info(r.out)
    assert info == r.info and info.gate("onnxruntime", "fp32").passed
    inputs = np.stack([load_crop(p, info.preprocessing) for p in val])
    want = open_runtime(r.out, "onnxruntime", "cpu").outputs(inputs)[OOD_SCORE_NAME].astype(np.float64)
    kept = want[want <= info.unknown.threshold]
    assert len(kept) == 9 and (kept > info.unknown.threshold - 1.0).all()  # so +1 makes each of them unknown
    pairs = [g for g in info.runtime_gates if g.runtime == "openvino"]
    assert pairs
    for gate in pairs:
        assert not gate.passed
        assert gate.ood_score_diff == pytest.approx(1.0, abs=0.1)  # 1 added, less what the precision itself moved
        assert gate.note.startswith("the energy ood_score differs from onnxruntime's by up to ")
        assert gate.note.endswith("; run the file on onnxruntime or export it with another --unknown-score method")
        allowed, why = openvino_allowed(info, gate.precision)
        assert not allowed and "failed at export" in why and "energy ood_score" in why
        assert gate.unknown_flag_changes == 9  # every kept image (ceil(0.75 x 12)) moves above the threshold
    if info.bf16 is not None:  # the form older releases read says the same
        assert not info.bf16.passed
