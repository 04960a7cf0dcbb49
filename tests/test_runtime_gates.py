"""What runs is what was gated: each (runtime, inference precision) pair a file may run at is judged against FP32 at
export and stored in the file; ``--runtime auto`` runs only a pair that passed; files exported before the gates keep
a stated fallback; the export says at INFO where the file will run and why, and warns only about real problems."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from garmentcv.artifact import ModelInfo, ReducedPrecisionCheck, RuntimeGate
from garmentcv.infer import runtimes
from garmentcv.infer.model_file import read_model_info

AMX = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"})
AVX512_BF16 = AMX - {"amx_tile", "amx_int8", "amx_bf16"}  # AVX-512 with VNNI and BF16, no AMX (AMD Zen 4)
KERNELS = "OpenVINO's INT8 kernels differ from onnxruntime's, which passed the same gate"


def _gate(runtime: str, precision: str, passed: bool, note: str = "") -> RuntimeGate:
    return RuntimeGate(runtime, precision, passed, 100, 0.98, 0.31, None, 0.95, 0.0 if passed else 3.0, 0.06,
                       "" if passed else note, f"{runtime} 1.0", "Test CPU")


def _described(src: Path, dst: Path, **changes: object) -> Path:
    """A copy of ``src`` whose metadata is changed by ``changes`` (the network stays; the rule reads metadata)."""
    info = dataclasses.replace(read_model_info(src), **changes)
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def int8_sized(onnx_model_factory) -> Path:
    """A 96 px model file: the smallest input at which ``auto`` considers OpenVINO for an INT8 file."""
    return onnx_model_factory(size=runtimes.OPENVINO_MIN_INPUT["int8"])


@pytest.mark.parametrize(
    ("f32", "bf16", "flags", "expected"),
    [
        (True, True, AVX512_BF16, ("openvino", "f32")),
        (False, False, AVX512_BF16, ("onnxruntime", "int8")),  # the failed f32 pair is not run, whatever is faster
        (False, True, AVX512_BF16, ("onnxruntime", "int8")),  # bf16 passed, but without AMX auto would run f32
        (True, False, AMX, ("openvino", "f32")),
        (False, True, AMX, ("openvino", "bf16")),
        (False, False, AMX, ("onnxruntime", "int8")),
    ],
)
def test_auto_runs_an_int8_file_only_at_a_pair_that_passed(int8_sized: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, f32, bf16, flags,
                                                          expected) -> None:
    gates = (_gate("onnxruntime", "int8", True), _gate("openvino", "f32", f32, f"{KERNELS}: accuracy 92.00% is 3.00 "
             "points below FP32's 95.00%, more than 1"), _gate("openvino", "bf16", bf16, "not bf16: OpenVINO fails at "
             f"f32 too ({KERNELS}): accuracy 92.00% is 3.00 points below FP32's 95.00%, more than 1"))
    model = _described(int8_sized, tmp_path / "int8.onnx", precision="int8", runtime_gates=gates)
    monkeypatch.setattr(runtimes, "this_cpu_flags", lambda: flags)
    plan = runtimes.plan_runtime(model, "auto", "cpu")
    assert plan.rows_runtime == expected
    if expected[0] == "onnxruntime":  # the reason names the real cause, and it is not bf16
        assert plan.choice.reason == ("an INT8 file runs where it passed its gate, as OpenVINO at f32 did not: the "
                                      f"file's gate for OpenVINO at f32 failed at export: {KERNELS}: accuracy 92.00% "
                                      "is 3.00 points below FP32's 95.00%, more than 1")
    asked = runtimes.plan_runtime(model, "openvino", "cpu")  # asked for: it runs where asked
    assert asked.choice.runtime == "openvino"


def test_an_int8_file_exported_before_the_gates_runs_where_its_gate_ran(int8_sized: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Files without per-runtime gates: INT8 on onnxruntime (OpenVINO's integer kernels never ran on its images)
    unless its old bf16 gate, which compared OpenVINO with the file's own logits, passed; FP32 files as before."""
    old_check = ReducedPrecisionCheck("bf16", False, 100, 0.06, 0.9, 0.05, 0.0, "752 of 800 images differ",
                                      "openvino 2026.4.1", "Xeon")
    failed = _described(int8_sized, tmp_path / "failed.onnx", precision="int8", bf16=old_check)
    passed = _described(int8_sized, tmp_path / "passed.onnx", precision="int8",
                        bf16=dataclasses.replace(old_check, passed=True, note=""))
    fp32 = _described(int8_sized, tmp_path / "fp32.onnx", bf16=dataclasses.replace(old_check, passed=True, note=""))
    assert read_model_info(failed).runtime_gates == ()
    monkeypatch.setattr(runtimes, "this_cpu_flags", lambda: AVX512_BF16)
    plan = runtimes.plan_runtime(failed, "auto", "cpu")
    assert plan.rows_runtime == ("onnxruntime", "int8")
    assert plan.choice.reason.endswith("as OpenVINO at f32 did not: the file predates per-runtime gates, so "
                                       "OpenVINO's INT8 kernels never ran on its validation images (export it again "
                                       "with garmentcv[openvino] installed to gate them)")
    assert runtimes.plan_runtime(passed, "auto", "cpu").rows_runtime == ("onnxruntime", "int8")  # f32 never gated
    monkeypatch.setattr(runtimes, "this_cpu_flags", lambda: AMX)
    assert runtimes.plan_runtime(passed, "auto", "cpu").rows_runtime == ("openvino", "bf16")  # as before
    assert runtimes.plan_runtime(failed, "auto", "cpu").rows_runtime == ("onnxruntime", "int8")
    assert runtimes.plan_runtime(fp32, "auto", "cpu").rows_runtime == ("openvino", "bf16")  # FP32 files as before
    assert runtimes.bf16_allowed(read_model_info(failed)) == (
        False, "the file's bf16 gate failed at export: 752 of 800 images differ")


def test_runtime_gates_travel_in_the_file_and_old_readers_keep_theirs(onnx_model: Path) -> None:
    gates = (_gate("onnxruntime", "fp32", True), RuntimeGate("openvino", "bf16", True, 6, 1.0, 0.01, 0.05, 0.5, 0.0))
    info = dataclasses.replace(read_model_info(onnx_model), runtime_gates=gates, bf16=gates[1].as_bf16_check())
    props = info.to_metadata()
    back = ModelInfo.from_metadata(props)
    assert back == info and back.gate("openvino", "bf16") == gates[1] and back.gate("openvino", "f32") is None
    assert ReducedPrecisionCheck.from_dict(__import__("json").loads(props["garmentcv.bf16"])) == info.bf16
    with pytest.raises(ValueError, match="judged on accuracy"):
        gates[0].as_bf16_check()
    from garmentcv.errors import ModelFileError

    with pytest.raises(ModelFileError, match="damaged GarmentCV metadata"):
        ModelInfo.from_metadata({**props, "garmentcv.runtime_gates": '[{"runtime": "tensorrt", "passed": true}]'})


def test_failed_openvino_pairs_name_their_cause(onnx_model: Path) -> None:
    """INT8 file failing at f32 and bf16 alike: the cause is OpenVINO's integer kernels, not bf16. FP32 file
    failing only at bf16: bf16 is the cause."""
    from garmentcv.export import checks, convert, runtime_gates

    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((4, 3, 32, 32), dtype=np.float32) for _ in range(2)]
    fp32 = onnx.load(str(onnx_model))
    reference = np.concatenate([checks.run_logits(checks.open_session(onnx_model), b) for b in batches])
    seen = runtime_gates.GateInputs(reference, tuple(f"img{i}.jpg" for i in range(8)), reference.argmax(axis=1))
    int8 = convert.to_int8(fp32, np.concatenate(batches), batch_size=4).SerializeToString()
    f32, bf16 = runtime_gates.gate_openvino(int8, "int8", ["f32", "bf16"], batches, seen, max_accuracy_drop=-1.0)
    assert (f32.key, f32.passed, f32.tolerance, f32.images) == (("openvino", "f32"), False, None, 8)

    def accuracy(gate: RuntimeGate) -> str:
        return (f"accuracy {gate.accuracy:.2%} is {gate.accuracy_drop:.2f} points below FP32's 100.00%, more than -1")

    assert f32.note == f"{KERNELS}: {accuracy(f32)}"
    if runtime_gates.can_check() is None:
        assert bf16.note == f"not bf16: OpenVINO fails at f32 too ({KERNELS}): {accuracy(bf16)}"
    else:
        assert bf16.note.startswith("OpenVINO ran f32, not bf16, on this CPU")
    # an FP32 file whose probabilities at a tiny temperature magnify bf16's rounding but not f32's
    f32, bf16 = runtime_gates.gate_openvino(onnx_model.read_bytes(), "fp32", ["f32", "bf16"], batches, seen, 1.0,
                                            temperature=1e-3)
    assert f32.passed, f32.note
    if runtime_gates.can_check() is None:
        assert bf16.note.startswith("bf16 rounding (OpenVINO passed at f32): calibrated probabilities (temperature "
                                    "0.001) differ from FP32's by up to ")


@pytest.fixture(scope="module")
def untrained_int8_export(tmp_path_factory: pytest.TempPathFactory):
    """``gcv-export --precision int8`` of a random-init resnet18 (12 validation images, 3 classes): its stdout, its
    stderr (the log at INFO) and the file."""
    from garmentcv.export.cli import main as export_main
    from tests.test_export import make_run

    root = tmp_path_factory.mktemp("untrained")
    ckpt = make_run(root / "run", "resnet18", per_class=4)
    out = root / "int8.onnx"
    result = CliRunner().invoke(export_main, [str(ckpt), "--out", str(out), "--precision", "int8",
                                              "--quantization-images", "6", "--max-accuracy-drop", "100"])
    assert result.exit_code == 0, result.output
    return result, out, ckpt


def test_int8_export_gates_each_runtime_against_fp32(untrained_int8_export) -> None:
    from garmentcv.export import runtime_gates
    from garmentcv.export.exporter import ImageStream, _restore_model, select_images, torch_logits
    from garmentcv.export.uint8_input import Uint8Input
    from garmentcv.infer.runtimes.openvino import compile_file
    from garmentcv.train.checkpoint import load_checkpoint
    from tests.test_export import CLASSES

    _, out, ckpt = untrained_int8_export
    info = read_model_info(out)
    bf16 = runtime_gates.can_check() is None
    assert [g.key for g in info.runtime_gates] == [("onnxruntime", "int8"), ("openvino", "f32")] + (
        [("openvino", "bf16")] if bf16 else [])
    assert info.bf16 is None  # INT8 files are judged on accuracy: no bf16 check in the old form
    # each pair against PyTorch's FP32 logits of the same pixels: recompute OpenVINO f32's figures
    batch = next(iter(ImageStream(select_images(ckpt.parent.parent / "val.csv", CLASSES, 0, True, "v"),
                                  info.preprocessing, 64, progress=False, warn=False, uint8=True)))
    model = Uint8Input(_restore_model(load_checkpoint(ckpt), ckpt), info.preprocessing).eval()
    reference = torch_logits(model, batch.inputs)
    compiled, used = compile_file(out, "f32")
    request = compiled.create_infer_request()
    request.infer({0: batch.inputs})
    logits = np.array(request.get_output_tensor(0).data)
    gate = info.gate("openvino", "f32")
    assert used == "f32" and gate.images == 12 and gate.tolerance is None and gate.passed
    assert gate.max_abs_diff == pytest.approx(float(np.abs(logits - reference).max()), rel=1e-5)
    assert gate.accuracy == pytest.approx(float((logits.argmax(1) == batch.targets).mean()))
    assert gate.version.startswith("openvino ") and gate.note == ""
    own = info.gate("onnxruntime", "int8")
    assert own.passed and own.accuracy == info.metrics["export"]["accuracy"] and own.images == 12


def test_export_says_at_info_where_the_file_will_run(untrained_int8_export, monkeypatch: pytest.MonkeyPatch) -> None:
    """No WARNING about the gates (the only one is the real problem: an untrained model); an INFO line and the
    summary say which runtime and precision auto picks on this CPU and why, as gcv-classify will."""
    result, out, _ = untrained_int8_export
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING garmentcv")]
    assert len(warnings) == 1 and "is not above chance" in warnings[0], warnings
    assert result.stdout.rstrip().splitlines()[-1].endswith("; INT8 ranges set on 6 images (uint8 activations)")
    plan = runtimes.plan_runtime(out, "auto", "cpu")
    runtime, precision = plan.rows_runtime
    assert (f"INFO garmentcv.export.exporter: on this machine's CPU, gcv classify --runtime auto will run this file on "
            f"{runtime} at {precision}: {plan.choice.reason}") in result.stderr
    assert f"gcv classify --runtime auto on this CPU: {runtime} at {precision} ({plan.choice.reason})" in result.stdout
    info = read_model_info(out)
    for gate in info.runtime_gates:
        assert f"{gate.precision} on {gate.version}: passed, {gate.describe()}" in result.stdout
        assert (f"INFO garmentcv.export.runtime_gates: runtime gate {gate.version} at {gate.precision}: passed"
                in result.stderr)
    # where OpenVINO is the faster choice, auto takes the gated OpenVINO pair
    monkeypatch.setattr(runtimes, "this_cpu_flags", lambda: AVX512_BF16)
    monkeypatch.setitem(runtimes.OPENVINO_MIN_INPUT, "int8", info.preprocessing.crop)
    assert runtimes.plan_runtime(out, "auto", "cpu").rows_runtime == ("openvino", "f32")


def test_asking_for_a_pair_that_failed_its_gate_warns(int8_sized: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    gates = (_gate("onnxruntime", "int8", True), _gate("openvino", "f32", False, f"{KERNELS}: accuracy ..."))
    model = _described(int8_sized, tmp_path / "int8.onnx", precision="int8", runtime_gates=gates)
    with caplog.at_level(logging.INFO, logger="garmentcv.infer.runtimes"):
        opened = runtimes.open_runtime(model, "openvino", "cpu")
    assert (opened.runtime, opened.inference_precision) == ("openvino", "f32")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warned] == [
        f"--runtime openvino runs {model} at f32, which auto would not: the file's gate for OpenVINO at f32 failed at "
        f"export: {KERNELS}: accuracy ..."]


def test_a_pair_openvino_cannot_run_fails_with_the_reason(onnx_model: Path) -> None:
    """OpenVINO refusing the inputs (here: the wrong image size) fails that pair, naming OpenVINO; no exception."""
    from garmentcv.export import runtime_gates

    seen = runtime_gates.GateInputs(np.zeros((2, 2), np.float32), ("a.jpg", "b.jpg"), np.array([0, 1]))
    (gate,) = runtime_gates.gate_openvino(onnx_model.read_bytes(), "fp32", ["f32"],
                                          [np.zeros((2, 3, 31, 17), np.float32)], seen, 1.0)
    assert (gate.key, gate.passed, gate.images) == (("openvino", "f32"), False, 0)
    assert gate.note.startswith("OpenVINO cannot run this file at f32: ")
