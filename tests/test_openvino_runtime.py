"""OpenVINO as a second runtime: the auto rule, errors when it is missing, parity with onnxruntime, the bf16 gate
and what the summaries report. Tiny models, 32 px (64 px where ``auto`` must choose OpenVINO)."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from garmentcv.artifact import ModelInfo, ReducedPrecisionCheck
from garmentcv.infer import runtimes
from garmentcv.infer.runtimes import (
    RuntimeUnavailableError,
    choose_runtime,
    effective_flags,
)
from garmentcv.installs import pip_install
from tests.conftest import write_image

AMX = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"})
AVX512_BF16 = AMX - {"amx_tile", "amx_int8", "amx_bf16"}  # AMD Zen 4, or AMX masked
AVX2_ONLY = frozenset({"avx2", "fma"})
#: OpenVINO at f32 against onnxruntime on the same FP32 file, per unit of the row's logit scale (float32
#: reorderings: measured 5e-7 on the tiny resnet18).
F32_PARITY = 1e-5


@pytest.mark.parametrize(
    ("requested", "precision", "flags", "openvino", "bf16", "expected"),
    [
        # FP32 file: bf16 only with AMX and a passed gate (measured ~4x); else onnxruntime (OpenVINO f32 no faster)
        ("auto", "fp32", AMX, True, True, ("openvino", "bf16")),
        ("auto", "fp32", AMX, True, False, ("onnxruntime", None)),
        ("auto", "fp32", AVX512_BF16, True, True, ("onnxruntime", None)),  # without AMX bf16 is slower than FP32
        ("auto", "fp32", AVX2_ONLY, True, True, ("onnxruntime", None)),
        # INT8 file: OpenVINO on CPUs with 8-bit dot products (measured 1.4-3x), its float parts in bf16 only with
        # AMX + gate
        ("auto", "int8", AMX, True, True, ("openvino", "bf16")),
        ("auto", "int8", AMX, True, False, ("openvino", "f32")),
        ("auto", "int8", AVX512_BF16, True, True, ("openvino", "f32")),
        ("auto", "int8", frozenset({"avx2", "avx_vnni"}), True, False, ("openvino", "f32")),
        ("auto", "int8", AVX2_ONLY, True, False, ("onnxruntime", None)),  # not measured without VNNI: today's path
        ("auto", "fp16", AMX, True, True, ("onnxruntime", None)),  # FP16 files are made for CUDA
        # not installed: auto takes what is installed
        ("auto", "int8", AMX, False, True, ("onnxruntime", None)),
        ("auto", "fp32", AMX, False, True, ("onnxruntime", None)),
        # asked for explicitly
        ("onnxruntime", "int8", AMX, True, True, ("onnxruntime", None)),
        ("openvino", "fp32", AMX, True, True, ("openvino", "bf16")),
        ("openvino", "fp32", AMX, True, False, ("openvino", "f32")),
        ("openvino", "fp32", AVX512_BF16, True, True, ("openvino", "f32")),
    ],
)
def test_auto_rule_over_cpus_and_files(requested, precision, flags, openvino, bf16, expected) -> None:
    choice = choose_runtime(requested, precision, flags, openvino, bf16)
    assert (choice.runtime, choice.inference_precision) == expected
    if requested == "auto" and not openvino and precision in ("int8", "fp32") and "amx_bf16" in flags:
        assert "OpenVINO is not installed" in choice.reason and pip_install("openvino") in choice.reason


def test_cuda_stays_onnxruntime_and_openvino_with_cuda_is_refused() -> None:
    assert choose_runtime("auto", "int8", AMX, True, True, cuda=True).runtime == "onnxruntime"
    with pytest.raises(RuntimeUnavailableError, match="--runtime openvino runs on the CPU only; use --device cpu"):
        choose_runtime("openvino", "fp32", AMX, True, True, cuda=True)
    with pytest.raises(ValueError, match="runtime must be one of"):
        choose_runtime("tensorrt", "fp32", AMX, True, True)


@pytest.mark.parametrize(
    ("precision", "flags", "size", "expected"),
    [
        # INT8: OpenVINO from 96 px (measured end to end 0.82-0.95x onnxruntime at 32-64 px, 1.00-1.31x at 96)
        ("int8", AMX, 32, ("onnxruntime", None)),
        ("int8", AMX, 95, ("onnxruntime", None)),
        ("int8", AMX, 96, ("openvino", "bf16")),
        ("int8", AMX, 224, ("openvino", "bf16")),
        ("int8", AVX512_BF16, 64, ("onnxruntime", None)),
        ("int8", AVX512_BF16, 96, ("openvino", "f32")),
        # FP32 in bf16: OpenVINO from 64 px (1.02x at 32 px, 1.55x at 64)
        ("fp32", AMX, 32, ("onnxruntime", None)),
        ("fp32", AMX, 63, ("onnxruntime", None)),
        ("fp32", AMX, 64, ("openvino", "bf16")),
        ("fp32", AVX512_BF16, 224, ("onnxruntime", None)),  # the size never turns OpenVINO on where the rule is off
    ],
)
def test_auto_keeps_small_inputs_on_onnxruntime(precision, flags, size, expected) -> None:
    choice = choose_runtime("auto", precision, flags, True, True, input_size=size)
    assert (choice.runtime, choice.inference_precision) == expected
    if expected[0] == "onnxruntime" and "amx_bf16" in flags:
        minimum = runtimes.OPENVINO_MIN_INPUT[precision]
        assert choice.reason == (f"a {size} px input, below {minimum} px: there decoding photos limits the run and "
                                 f"OpenVINO measured slower end to end than onnxruntime on {precision.upper()} files; "
                                 "--runtime openvino still runs it")
    asked = choose_runtime("openvino", precision, flags, True, True, input_size=size)  # asked for: always OpenVINO
    assert asked.runtime == "openvino"


def test_plan_reads_the_input_size_from_the_file(onnx_model: Path, openvino_sized_model: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "this_cpu_flags", lambda: AMX)
    small = runtimes.plan_runtime(_with_gate(onnx_model, tmp_path / "32.onnx", True), "auto", "cpu")
    assert (small.info.preprocessing.crop, small.rows_runtime) == (32, ("onnxruntime", "fp32"))
    assert small.choice.reason.startswith("a 32 px input, below 64 px: there decoding photos limits the run")
    sized = runtimes.plan_runtime(_with_gate(openvino_sized_model, tmp_path / "64.onnx", True), "auto", "cpu")
    assert (sized.info.preprocessing.crop, sized.rows_runtime) == (64, ("openvino", "bf16"))


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (None, AMX),
        ("", AMX),
        ("ALL", AMX),
        ("AVX512_CORE_AMX", AMX),
        ("avx512_core_bf16", AVX512_BF16),
        ("AVX512_CORE_FP16", AVX512_BF16),
        ("AVX512_CORE_VNNI", AVX512_BF16 - {"avx512_bf16"}),
        ("AVX2_VNNI", frozenset({"avx2", "avx512f", "avx_vnni"})),
        ("AVX2", frozenset({"avx2", "avx512f"})),
    ],
)
def test_onednn_mask_hides_the_flags_it_caps(mask, expected) -> None:
    assert effective_flags(AMX, mask) == expected


def test_masked_amx_turns_bf16_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: " + " ".join(sorted(AMX)) + "\n")
    assert runtimes.cpu_flags(cpuinfo) == AMX
    monkeypatch.setattr(runtimes, "cpu_flags", lambda: AMX)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    flags = runtimes.this_cpu_flags()
    assert "amx_bf16" not in flags and "avx512_bf16" in flags
    assert choose_runtime("auto", "fp32", flags, True, True).runtime == "onnxruntime"


def test_openvino_not_installed_is_an_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch, onnx_model: Path,
                                                             tmp_path: Path) -> None:
    from garmentcv.infer.cli import classify_main
    from garmentcv.infer.runtimes import openvino as openvino_runtime

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    hint = re.escape(pip_install("openvino"))
    with pytest.raises(RuntimeUnavailableError, match=f"OpenVINO is not installed .*{hint}"):
        openvino_runtime.import_openvino()
    monkeypatch.setattr(runtimes, "installed_version", lambda dist: None if dist == "openvino" else "1.0")
    with pytest.raises(RuntimeUnavailableError, match=f"{hint}, or use --runtime onnxruntime"):
        runtimes.open_runtime(onnx_model, "openvino", "cpu")
    # auto quietly takes onnxruntime: the fastest *installed* runtime
    assert runtimes.open_runtime(onnx_model, "auto", "cpu").runtime == "onnxruntime"
    folder = tmp_path / "imgs"
    write_image(folder / "a.jpg")
    result = CliRunner().invoke(
        classify_main,
        [str(folder), "--model", str(onnx_model), "--out", str(tmp_path / "o.csv"), "--runtime", "openvino", "-q"],
    )
    assert result.exit_code == 1
    assert (
        f"Error: --runtime openvino: OpenVINO is not installed; install it with {pip_install('openvino')}"
        in result.stderr
    )
    assert not (tmp_path / "o.csv").exists()


def test_openvino_f32_matches_onnxruntime_on_the_same_file(onnx_model: Path) -> None:
    from garmentcv.infer.runtimes.openvino import OpenVINOModel

    ort_model = runtimes.open_runtime(onnx_model, "onnxruntime", "cpu", threads=1)
    ov_model = runtimes.open_runtime(onnx_model, "openvino", "cpu", threads=1)
    assert isinstance(ov_model, OpenVINOModel)
    assert (ov_model.runtime, ov_model.device, ov_model.inference_precision) == ("openvino", "cpu", "f32")
    assert (ort_model.runtime, ort_model.device, ort_model.inference_precision) == ("onnxruntime", "cpu", "fp32")
    assert ov_model.info == ort_model.info
    batch = np.random.default_rng(3).standard_normal((5, 3, 32, 32), dtype=np.float32)
    a, b = ort_model.logits(batch), ov_model.logits(batch)
    assert b.dtype == np.float32 and b.shape == a.shape == (5, 2)
    scale = np.maximum(1.0, np.abs(a).max(axis=1))
    assert (np.abs(a - b).max(axis=1) <= F32_PARITY * scale).all()
    # a row does not depend on its batch
    assert np.allclose(ov_model.logits(batch[2:3]), b[2:3], rtol=0, atol=F32_PARITY * scale[2])


def test_openvino_runs_a_uint8_file_as_onnxruntime_does(uint8_onnx_model: Path, tmp_path: Path) -> None:
    """A format-2 file (uint8 NHWC crops in): OpenVINO's input follows the file; logits within F32_PARITY of
    onnxruntime's, and a classified folder gives onnxruntime's labels and probabilities (1e-5)."""
    from garmentcv.infer.classify import ClassifyConfig, classify_folder
    from garmentcv.infer.runtimes.openvino import OpenVINOModel

    ort_model = runtimes.open_runtime(uint8_onnx_model, "onnxruntime", "cpu", threads=1)
    ov_model = runtimes.open_runtime(uint8_onnx_model, "openvino", "cpu", threads=1)
    assert isinstance(ov_model, OpenVINOModel) and ov_model.inference_precision == "f32"
    assert ov_model.info.input_format == "uint8-nhwc" and ov_model.info.format_version == 2
    (port,) = ov_model.compiled.inputs
    assert port.get_element_type().get_type_name() == "u8" and str(port.get_partial_shape()) == "[?,32,32,3]"
    from garmentcv.errors import ModelFileError
    from garmentcv.infer.runtimes.openvino import _check_ports

    wrong = dataclasses.replace(ov_model.info, input_format="float32-nchw")  # metadata contradicting the graph
    with pytest.raises(ModelFileError, match=r"declares input float32-nchw, so the input must be float32 \(N, 3, H, W\)"
                                             r".*found tensor\(uint8\) \['N', 32, 32, 3\]"):
        _check_ports(ov_model.compiled, wrong, uint8_onnx_model)
    batch = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    a, b = ort_model.logits(batch), ov_model.logits(batch)
    assert b.dtype == np.float32 and b.shape == a.shape == (5, 2)
    scale = np.maximum(1.0, np.abs(a).max(axis=1))
    assert (np.abs(a - b).max(axis=1) <= F32_PARITY * scale).all()

    folder = tmp_path / "imgs"
    for i, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (90, 90, 90), (250, 250, 0)]):
        write_image(folder / f"{i}.png", colour=colour, seed=i)
    for runtime in ("onnxruntime", "openvino"):
        classify_folder(ClassifyConfig(folder=folder, out=tmp_path / f"{runtime}.csv", model=uint8_onnx_model,
                                       provider="cpu", runtime=runtime, batch_size=2, progress=False))
    ort_rows, ov_rows = _rows(tmp_path / "onnxruntime.csv"), _rows(tmp_path / "openvino.csv")
    assert [(r["path"], r["label"]) for r in ov_rows] == [(r["path"], r["label"]) for r in ort_rows]
    assert len(ov_rows) == 5
    for x, y in zip(ort_rows, ov_rows, strict=True):
        for column in ("confidence", "prob_bluzy", "prob_bryuki"):
            assert float(x[column]) == pytest.approx(float(y[column]), abs=1e-5)


def test_bf16_gate_feeds_a_uint8_file_its_crops(uint8_onnx_model: Path) -> None:
    """The gate runs a format-2 file on uint8 crops, as onnxruntime did for the reference logits."""
    from garmentcv.export import runtime_gates

    rng = np.random.default_rng(6)
    batches = [rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    reference = _reference(uint8_onnx_model, batches)
    seen = runtime_gates.GateInputs(reference, tuple(f"img{i}" for i in range(6)), reference.argmax(axis=1))
    (result,) = runtime_gates.gate_openvino(uint8_onnx_model.read_bytes(), "fp32", ["bf16"], batches, seen, 1.0)
    assert result.images == 6 and result.key == ("openvino", "bf16")
    if runtime_gates.can_check() is None:
        assert result.passed, result.note
        assert 0 < result.max_abs_diff <= runtime_gates.BF16_TOLERANCE
    else:
        assert not result.passed and "OpenVINO ran f32, not bf16" in result.note
        assert result.max_abs_diff <= F32_PARITY * max(1.0, float(np.abs(reference).max()))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_classify_rows_and_summary_match_across_runtimes(onnx_model: Path, tmp_path: Path) -> None:
    from garmentcv.infer.classify import ClassifyConfig, classify_folder
    from garmentcv.infer.cli import classify_main, evaluate_main

    folder = tmp_path / "imgs"
    for i, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (90, 90, 90), (250, 250, 0)]):
        write_image(folder / f"{i}_{'bluzy' if i % 2 else 'bryuki'}.png", colour=colour, seed=i)
    summaries = {}
    for runtime in ("onnxruntime", "openvino"):
        cfg = ClassifyConfig(folder=folder, out=tmp_path / f"{runtime}.csv", model=onnx_model, provider="cpu",
                             runtime=runtime, batch_size=2, progress=False)
        summaries[runtime] = classify_folder(cfg)
    assert (summaries["onnxruntime"].runtime, summaries["onnxruntime"].inference_precision) == ("onnxruntime", "fp32")
    assert (summaries["openvino"].runtime, summaries["openvino"].inference_precision) == ("openvino", "f32")
    assert summaries["openvino"].provider == "cpu" and summaries["openvino"].classified == 5
    ort_rows, ov_rows = _rows(tmp_path / "onnxruntime.csv"), _rows(tmp_path / "openvino.csv")
    assert [(r["path"], r["label"]) for r in ov_rows] == [(r["path"], r["label"]) for r in ort_rows]
    for a, b in zip(ort_rows, ov_rows, strict=True):
        for column in ("confidence", "prob_bluzy", "prob_bryuki"):
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-5)

    result = CliRunner().invoke(
        classify_main,
        [
            str(folder),
            "--model",
            str(onnx_model),
            "--out",
            str(tmp_path / "c.csv"),
            "--runtime",
            "openvino",
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "images/s on cpu (openvino, f32) -> " in result.stderr
    result = CliRunner().invoke(evaluate_main, ["--model", str(onnx_model), str(folder), "--out",
                                                str(tmp_path / "ev"), "--runtime", "openvino", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "runtime openvino on cpu, inference precision f32"
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["runtime"] == {"name": "openvino", "device": "cpu", "inference_precision": "f32"}
    help_text = CliRunner().invoke(classify_main, ["--help"]).output
    assert "--runtime [auto|onnxruntime|openvino]" in help_text and "[default: auto]" in help_text


@pytest.fixture(scope="module")
def openvino_sized_model(onnx_model_factory) -> Path:  # noqa: ANN001
    """:func:`onnx_model`'s network at the smallest input ``auto`` runs an FP32 file on OpenVINO at (64 px; smaller
    inputs stay on onnxruntime, see :func:`test_auto_keeps_small_inputs_on_onnxruntime`)."""
    return onnx_model_factory(size=runtimes.OPENVINO_MIN_INPUT["fp32"])


def _with_gate(src: Path, dst: Path, passed: bool) -> Path:
    """A copy of ``src`` whose metadata carries a bf16 gate result."""
    import onnx

    from garmentcv.infer.model_file import read_model_info

    check = ReducedPrecisionCheck("bf16", passed, 6, 1.0 if passed else 0.5, 0.01, 0.05, 0.0,
                                  "" if passed else "1 of 6 images differ", "openvino 2026.4.1", "Xeon")
    info = dataclasses.replace(read_model_info(src), bf16=check)
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.save(proto, str(dst))
    return dst


def test_the_log_says_why_an_int8_file_runs_its_float_parts_at_f32(onnx_model: Path, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import onnx

    from garmentcv.infer.model_file import read_model_info

    failed = _with_gate(onnx_model, tmp_path / "failed.onnx", False)
    proto = onnx.load(str(failed))  # the same network, described as an INT8 file (precision drives only the log)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, dataclasses.replace(read_model_info(failed), precision="int8").to_metadata())
    onnx.save(proto, str(tmp_path / "int8.onnx"))
    with caplog.at_level("INFO", logger="garmentcv.infer.runtimes"):
        model = runtimes.open_runtime(tmp_path / "int8.onnx", "openvino", "cpu")
    assert (model.runtime, model.inference_precision) == ("openvino", "f32")
    assert (f"OpenVINO runs the float parts of {tmp_path / 'int8.onnx'} at f32: the file's bf16 gate failed at "
            "export: 1 of 6 images differ") in caplog.text


def test_gate_result_travels_in_the_file_and_decides_bf16(onnx_model: Path, openvino_sized_model: Path,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from garmentcv.infer.model_file import read_model_info

    passed = _with_gate(openvino_sized_model, tmp_path / "passed.onnx", True)
    failed = _with_gate(openvino_sized_model, tmp_path / "failed.onnx", False)
    info = read_model_info(passed)
    assert info.bf16 == ReducedPrecisionCheck("bf16", True, 6, 1.0, 0.01, 0.05, 0.0, "", "openvino 2026.4.1", "Xeon")
    assert ModelInfo.from_metadata(info.to_metadata()) == info
    assert runtimes.bf16_allowed(read_model_info(failed)) == (
        False, "the file's bf16 gate failed at export: 1 of 6 images differ")
    assert runtimes.bf16_allowed(read_model_info(onnx_model))[0] is False
    # on a CPU with AMX, auto runs the passed file in bf16 and the failed one on onnxruntime FP32
    choice = choose_runtime("auto", "fp32", AMX, True, runtimes.bf16_allowed(info)[0])
    assert (choice.runtime, choice.inference_precision) == ("openvino", "bf16")
    assert runtimes.open_runtime(failed, "auto", "cpu").runtime == "onnxruntime"
    model = runtimes.open_runtime(passed, "auto", "cpu")
    if "amx_bf16" in runtimes.this_cpu_flags():  # a CPU with AMX: really compiled for bf16
        assert (model.runtime, model.inference_precision) == ("openvino", "bf16")
    else:
        assert (model.runtime, model.inference_precision) == ("onnxruntime", "fp32")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # AMX masked: bf16 would be slower than FP32
    assert runtimes.open_runtime(passed, "auto", "cpu").runtime == "onnxruntime"


def _reference(model: Path, batches: list[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input": b})[0] for b in batches])


def test_bf16_gate_passes_and_refuses(onnx_model: Path) -> None:
    from garmentcv.export import runtime_gates

    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((4, 3, 32, 32), dtype=np.float32) for _ in range(2)]
    reference = _reference(onnx_model, batches)
    seen = runtime_gates.GateInputs(reference, tuple(f"img{i}" for i in range(8)), reference.argmax(axis=1))
    model = onnx_model.read_bytes()
    (ok,) = runtime_gates.gate_openvino(model, "fp32", ["bf16"], batches, seen, 1.0, cpu_model="test CPU")
    assert ok.images == 8 and ok.precision == "bf16" and ok.cpu_model == "test CPU"
    assert ok.version.startswith("openvino ") and ok.tolerance == runtime_gates.BF16_TOLERANCE
    if runtime_gates.can_check() is None:  # a CPU with native bf16 (AMX, or AVX-512 BF16)
        assert ok.passed, ok.note
        assert ok.note == "" and ok.top1_agreement == 1.0 and ok.accuracy_drop == 0.0
        assert 0 < ok.max_abs_diff <= runtime_gates.BF16_TOLERANCE  # bf16 really ran: not bit-identical to FP32
        assert 0 < ok.max_probability_diff <= runtime_gates.PROBABILITY_TOLERANCE
    else:  # OpenVINO runs f32 here: the gate cannot prove bf16 and must not pass
        assert not ok.passed and "OpenVINO ran f32, not bf16" in ok.note
    bf16_logits = runtime_gates.run_openvino(model, ["bf16"], batches, 2)["bf16"].logits
    refused = runtime_gates.judge("openvino", "bf16", bf16_logits, seen, tolerance=0.0, max_accuracy_drop=-1.0,
                                  temperature=0.5, probability_tolerance=0.0)
    assert not refused.passed and refused.tolerance == 0.0
    assert "accuracy 100.00% is 0.00 points below FP32's 100.00%, more than -1" in refused.note
    if runtime_gates.can_check() is None:
        assert "of 8 images differ from FP32 by more than their tolerance" in refused.note
        assert "calibrated probabilities (temperature 0.5) differ from FP32's by up to " in refused.note


def test_export_records_the_bf16_gate(tmp_path: Path) -> None:
    from garmentcv.export import runtime_gates
    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.model_file import read_model_info
    from tests.test_export import make_run

    ckpt = make_run(tmp_path / "run", "resnet18", per_class=2)
    result = CliRunner().invoke(export_main, [str(ckpt), "--out", str(tmp_path / "m.onnx"), "-q"])
    assert result.exit_code == 0, result.output
    info = read_model_info(tmp_path / "m.onnx")
    if runtime_gates.can_check() is None:
        assert info.bf16 is not None and info.bf16.images == 6 and info.bf16.tolerance == runtime_gates.BF16_TOLERANCE
        assert info.bf16.passed, info.bf16.note
        assert info.bf16 == info.gate("openvino", "bf16").as_bf16_check()  # what releases before the gates read
        line = next(x for x in result.stdout.splitlines() if x.startswith("bf16 on openvino "))
        assert line.endswith(f": passed, {info.bf16.describe()}")
    else:
        assert info.bf16 is None and "bf16 on" not in result.stdout
    # off: OpenVINO at f32 only; FP16 files (made for CUDA): onnxruntime only, nothing decoded or compiled
    untouched = iter(())
    seen = runtime_gates.GateInputs(np.zeros((1, 3), np.float32), ("x",), np.zeros(1, int))
    fp16 = runtime_gates.gate_runtimes("auto", "fp16", b"", untouched, seen, np.zeros((1, 3), np.float32), 1.0)
    assert [g.key for g in fp16] == [("onnxruntime", "fp16")] and fp16[0].passed
    off = runtime_gates.gate_runtimes(
        "off",
        "fp32",
        (tmp_path / "m.onnx").read_bytes(),
        [np.zeros((1, 32, 32, 3), np.uint8)],
        seen,
        np.zeros((1, 3), np.float32),
        1.0,
    )
    assert [g.key for g in off] == [("onnxruntime", "fp32"), ("openvino", "f32")]
    with pytest.raises(ValueError, match="bf16 check must be one of"):
        runtime_gates.gate_runtimes("on", "fp32", b"", untouched, seen, np.zeros((1, 3), np.float32), 1.0)
    assert "--bf16-check [auto|off]" in CliRunner().invoke(export_main, ["--help"]).output


def test_benchmark_report_judges_the_targets_with_ratios_and_bounds_per_condition() -> None:
    from benchmarks.openvino_rows import report, targets

    machine = {"cpu_model": "Xeon", "logical_cpus": 2, "isa": ["avx512_bf16", "amx_bf16"], "load_avg": [0.1, 0.2, 0.3]}

    def e2e(file: str, runtime: str, used: str, precision: str, rate: float) -> dict:
        return {"file": file, "runtime": runtime, "used": used, "inference_precision": precision, "images_per_s": rate,
                "rates": [rate]}

    def model(file: str, runtime: str, precision: str, rate: float, kernels: list[str]) -> dict:
        return {"file": file, "runtime": runtime, "precision": precision, "images_per_s": rate, "rounds": [rate],
                "kernels": kernels}

    condition = {
        "mask": "AVX512_CORE_BF16",
        "machine": machine,
        "effective_flags": ["avx512_bf16"],
        "arch": "resnet18",
        "size": 224,
        "files": 200,
        "input_format": "uint8-nhwc",
        "decode_images_per_s": {"fp32": 300.0, "int8": 400.0},
        "eager_baseline": [10.0, 12.0, 11.0],
        "bf16_gates": {"fp32": {"passed": True}, "int8": None},
        "model_only": [
            model("fp32", "onnxruntime", "fp32", 80.0, []),
            model("fp32", "openvino", "bf16", 40.0, ["brgconv_avx512_bf16"]),
            model("int8", "onnxruntime", "int8", 200.0, []),
            model("int8", "openvino", "f32", 240.0, ["brgconv_avx512_I8"]),
        ],
        "end_to_end": [
            e2e("fp32", "onnxruntime", "onnxruntime", "fp32", 60.0),
            e2e("fp32", "auto", "onnxruntime", "fp32", 59.0),
            e2e("int8", "onnxruntime", "onnxruntime", "int8", 120.0),
            e2e("int8", "auto", "openvino", "f32", 126.0),
        ],
    }
    lines = report([condition]).splitlines()
    assert "## ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16" in lines
    assert "| fp32 | openvino | bf16 | 40.0 | 0.50 | [40.0] | brgconv_avx512_bf16 |" in lines
    # bounds: fp32 1 / (1/80 + 1/300) = 63.2, int8 on OpenVINO f32 1 / (1/240 + 1/400) = 150;
    # torchvision eager + DataLoader median 11
    assert "| fp32 | onnxruntime | onnxruntime | fp32 | 60.0 | 1.00 | 5.45x | 63.2 | 95% | [60.0] |" in lines
    assert "| int8 | auto | openvino | f32 | 126.0 | 1.05 | 11.45x | 150.0 | 84% | [126.0] |" in lines
    # without AMX: INT8 >= 5.5x torchvision eager + DataLoader; FP32 at least onnxruntime's (3% noise)
    assert (
        "| INT8 file, --runtime auto >= 5.5x torchvision eager + DataLoader end to end "
        "| 11.45x (126.0 vs 11.0 images/s; ran on openvino f32) | met |"
        in lines
    )
    assert (
        "| INT8 file, --runtime auto >= 85% of its shared-core bound "
        "| 84% (126.0 of 150.0 images/s; decode only 400.0) | **missed** |"
        in lines
    )
    assert (
        "| INT8 file, --runtime auto never slower than onnxruntime (3% noise allowed) "
        "| 1.05x (126.0 vs 120.0 images/s) | met |"
        in lines
    )
    assert (
        "| FP32 file, --runtime auto at least onnxruntime's 5.45x torchvision eager + DataLoader "
        "| 5.36x (59.0 vs 11.0 images/s) | met |"
        in lines
    )
    assert (
        "| FP32 file, --runtime auto >= 85% of its shared-core bound "
        "| 93% (59.0 of 63.2 images/s; decode only 300.0) | met |"
        in lines
    )
    assert "bf16 gates of the two files at export: fp32: passed, int8: not run." in lines
    # with AMX the bars are 8x (INT8) and 5x (FP32)
    judged = {t: ok for t, _, ok in targets({**condition, "mask": "", "effective_flags": ["amx_bf16", "amx_int8"]})}
    assert judged["INT8 file, --runtime auto >= 8.0x torchvision eager + DataLoader end to end"] is True
    assert (
        judged["FP32 file, --runtime auto >= 5.0x torchvision eager + DataLoader end to end"] is True
    )  # 59 / 11 = 5.36x
    assert sum(not ok for ok in judged.values()) == 1  # only the INT8 share of its bound
    # auto chose onnxruntime for FP32: both rows are the same runs, so their ratio is noise, never "slower"
    assert ("| FP32 file, --runtime auto never slower than onnxruntime (3% noise allowed) | 0.98x (59.0 vs 60.0 "
            "images/s; auto chose onnxruntime: the same runs, so the difference is noise) | met |") in lines
    # several input sizes: a table by size first, each section named by its size
    small = {**condition, "size": 32, "end_to_end": [
        e2e("fp32", "onnxruntime", "onnxruntime", "fp32", 600.0), e2e("fp32", "openvino", "openvino", "bf16", 630.0),
        e2e("fp32", "auto", "onnxruntime", "fp32", 570.0), e2e("int8", "onnxruntime", "onnxruntime", "int8", 800.0),
        e2e("int8", "openvino", "openvino", "f32", 680.0), e2e("int8", "auto", "onnxruntime", "int8", 808.0)]}
    large = {**condition, "mask": "", "end_to_end": [*condition["end_to_end"],
             e2e("fp32", "openvino", "openvino", "f32", 61.0), e2e("int8", "openvino", "openvino", "f32", 130.0)]}
    lines = report([large, small]).splitlines()
    assert lines[2] == "End to end against onnxruntime by input size (32 px, 224 px; details below):"
    assert lines[4:10] == [
        "| input | CPU | file | OpenVINO (precision) vs onnxruntime | auto ran on | auto vs onnxruntime |",
        "|---:|---|---|---:|---|---:|",
        "| 32 px | AMX masked | int8 | 0.85x (f32) | onnxruntime int8 | 1.01x |",
        "| 32 px | AMX masked | fp32 | 1.05x (bf16) | onnxruntime fp32 | 0.95x |",
        "| 224 px | as is | int8 | 1.08x (f32) | openvino f32 | 1.05x |",
        "| 224 px | as is | fp32 | 1.02x (f32) | onnxruntime fp32 | 0.98x |",
    ]
    assert "## 32 px, ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16" in lines and "## 224 px, as is" in lines
    judged = {t: ok for t, _, ok in targets(small)}
    assert judged["FP32 file, --runtime auto never slower than onnxruntime (3% noise allowed)"] is True  # same runs


def test_steady_state_splits_a_run_into_marginal_rate_and_fixed_start() -> None:
    from benchmarks.steady_state import derive, report

    row = {"file": "int8", "runtime": "auto", "ran_on": "openvino", "inference_precision": "bf16", "files": 200,
           "files_large": 600, "t_small_s": 1.0, "t_large_s": 2.6}
    # marginal 400 / 1.6 = 250 images/s; start 1.0 - 200 / 250 = 0.2 s; bound 1 / (1/400 + 1/1200) = 300 images/s
    assert derive(row, 400.0, 1200.0) == pytest.approx({"rate": 200.0, "rate_large": 600 / 2.6, "marginal": 250.0,
                                                        "start_s": 0.2, "bound": 300.0, "share": 2 / 3,
                                                        "marginal_share": 250 / 300})
    result = {"header": "h", "decode_images_per_s": {"int8": 1200.0},
              "model_only": [{"file": "int8", "runtime": "openvino", "precision": "bf16", "images_per_s": 400.0},
                             {"file": "int8", "runtime": "openvino", "precision": "f32", "images_per_s": 999.0}],
              "rows": [row]}
    lines = report(result).splitlines()
    assert ("| int8 | auto | openvino bf16 | 200.0 | 230.8 | 250.0 | 0.20 | 300.0 | 67% | 83% |") in lines


def test_resume_never_mixes_rows_of_two_runtimes(onnx_model: Path, tmp_path: Path) -> None:
    from garmentcv.errors import GarmentCVError
    from garmentcv.infer.classify import ClassifyConfig, classify_folder

    folder = tmp_path / "imgs"
    for i in range(4):
        write_image(folder / f"{i}.png", seed=i)

    def stop(rows: int) -> None:
        raise KeyboardInterrupt

    cfg = ClassifyConfig(folder=folder, out=tmp_path / "o.csv", model=onnx_model, provider="cpu", runtime="onnxruntime",
                         batch_size=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        classify_folder(cfg, on_batch=stop)
    with pytest.raises(GarmentCVError, match="partial results of a run with another model, folder or options"):
        classify_folder(dataclasses.replace(cfg, runtime="openvino", resume=True))
    assert classify_folder(dataclasses.replace(cfg, resume=True)).reused == 2


def test_auto_falls_back_with_a_warning_when_openvino_cannot_compile(openvino_sized_model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    from garmentcv.infer.runtimes import openvino as openvino_runtime

    def fails(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeUnavailableError(
            "OpenVINO 2026.4.1 cannot compile x.onnx for the CPU (No suitable implementations)"
        )

    passed = _with_gate(openvino_sized_model, tmp_path / "passed.onnx", True)
    monkeypatch.setattr(runtimes, "this_cpu_flags", lambda: AMX)  # auto would pick OpenVINO bf16
    monkeypatch.setattr(openvino_runtime, "open_openvino", fails)
    with caplog.at_level("WARNING"):
        assert runtimes.open_runtime(passed, "auto", "cpu").runtime == "onnxruntime"
    assert f"OpenVINO cannot run {passed}, using onnxruntime: OpenVINO 2026.4.1 cannot compile" in caplog.text
    with pytest.raises(RuntimeUnavailableError, match="No suitable implementations"):  # asked for: never a fallback
        runtimes.open_runtime(passed, "openvino", "cpu")


def test_decoding_starts_while_the_model_is_still_opening(onnx_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from garmentcv.infer import pipeline
    from garmentcv.infer.classify import ClassifyConfig, classify_folder

    folder = tmp_path / "imgs"
    for i in range(5):
        write_image(folder / f"{i}.png", seed=i)
    decoding = threading.Event()
    real_load, real_open = pipeline._load_into, runtimes.open_planned
    overlapped: list[bool] = []

    def load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        decoding.set()
        return real_load(*args, **kwargs)

    def slow_open(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        overlapped.append(decoding.wait(timeout=10))  # opened one after the other, this waits the whole 10 s
        return real_open(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_load_into", load)
    monkeypatch.setattr(runtimes, "open_planned", slow_open)
    cfg = ClassifyConfig(folder=folder, out=tmp_path / "o.csv", model=onnx_model, provider="cpu", runtime="onnxruntime",
                         batch_size=2, progress=False)
    summary = classify_folder(cfg)
    assert overlapped == [True]
    assert (summary.files, summary.runtime) == (5, "onnxruntime")
    with open(tmp_path / "o.csv", newline="") as handle:
        assert [r["path"] for r in csv.DictReader(handle)] == [f"{i}.png" for i in range(5)]


def test_a_fallback_after_opening_in_the_background_labels_and_resumes_its_rows(
        openvino_sized_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from garmentcv.infer.classify import ClassifyConfig, classify_folder
    from garmentcv.infer.runtimes import openvino as openvino_runtime

    folder = tmp_path / "imgs"
    for i in range(4):
        write_image(folder / f"{i}.png", seed=i)
    passed = _with_gate(openvino_sized_model, tmp_path / "passed.onnx", True)
    monkeypatch.setattr(runtimes, "this_cpu_flags", lambda: AMX)  # the plan: OpenVINO bf16
    assert runtimes.plan_runtime(passed, "auto", "cpu").rows_runtime == ("openvino", "bf16")

    def fails(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeUnavailableError("OpenVINO cannot compile (No suitable implementations)")

    def stop(rows: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(openvino_runtime, "open_openvino", fails)
    cfg = ClassifyConfig(folder=folder, out=tmp_path / "o.csv", model=passed, provider="cpu", runtime="auto",
                         batch_size=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        classify_folder(cfg, on_batch=stop)
    (segment,) = sorted((tmp_path / "o.csv.partial").glob("*"))
    assert json.loads(segment.read_text().splitlines()[0])["runtime"] == ["onnxruntime", "fp32"]  # what ran
    summary = classify_folder(dataclasses.replace(cfg, resume=True))
    assert (summary.runtime, summary.inference_precision, summary.reused, summary.files) == (
        "onnxruntime",
        "fp32",
        2,
        4,
    )


def test_opening_benchmark_reports_each_variant_against_opening_first() -> None:
    from benchmarks.opening import report, variants

    assert list(variants(32)) == ["in the background", "first", "in the background + warm-up batch"]
    rows = [{"file": "int8", "runtime": "auto", "ran_on": "openvino bf16", "variant": v, "images_per_s": rate,
             "rounds": [rate]} for v, rate in (("in the background", 290.0), ("first", 250.0),
                                                ("in the background + warm-up batch", 270.0))]  # fmt: skip
    lines = report(rows, "header").splitlines()
    assert "| int8 | auto | openvino bf16 | in the background | 290.0 | 1.16 | [290.0] |" in lines
    assert "| int8 | auto | openvino bf16 | in the background + warm-up batch | 270.0 | 1.08 | [270.0] |" in lines
