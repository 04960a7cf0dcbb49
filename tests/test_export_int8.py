"""INT8 export records the CPU it was calibrated and gated on and offers S8S8 activations ."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from garmentcv.artifact import ModelInfo, Quantization
from garmentcv.errors import ModelFileError
from garmentcv.export import cli as export_cli
from garmentcv.export import convert
from garmentcv.models import default_preprocessing

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni
"""


def test_cpu_facts_from_proc_cpuinfo(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    cpu = convert.cpu_facts(tmp_path / "cpuinfo")
    assert cpu == ("Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz", ("avx2", "avx512f", "avx512_vnni"))
    assert convert.has_vnni(cpu[1]) and not convert.has_vnni(("avx2", "avx512f"))
    assert convert.cpu_facts(tmp_path / "missing") == ("", ())  # unknown: empty, not a guess
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert convert.cpu_facts(tmp_path / "arm") == ("", ())


def test_quantization_metadata_round_trip_and_old_files_read() -> None:
    q = Quantization(activations="int8", weights="int8", cpu_model="Intel(R) Xeon(R) Processor",
                     cpu_flags=("avx2", "amx_int8"))
    info = ModelInfo(arch="resnet18", classes=("a", "b"), preprocessing=default_preprocessing("resnet18", 32),
                     precision="int8", weights_source="none (random init)", quantization=q)  # fmt: skip
    props = info.to_metadata()
    back = ModelInfo.from_metadata(props)
    assert back == info and back.quantization == q and back.quantization.cpu_flags == ("avx2", "amx_int8")
    old = {k: v for k, v in props.items() if k != "garmentcv.quantization"}  # a file of an earlier release
    assert ModelInfo.from_metadata(old).quantization is None
    assert "garmentcv.quantization" not in ModelInfo(**{**info.__dict__, "quantization": None}).to_metadata()
    with pytest.raises(ModelFileError, match=r"model\.onnx: damaged GarmentCV metadata .*export the model again"):
        ModelInfo.from_metadata({**props, "garmentcv.quantization": '{"activations": "int4"}'}, source="model.onnx")


def _zero_point_types(model: onnx.ModelProto) -> set[int]:
    inits = {t.name: t for t in model.graph.initializer}
    return {inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_int8_activation_type_option_changes_the_graph_and_warns_without_vnni(
    onnx_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = onnx.load(onnx_model)
    calibration = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    no_vnni = ("Old CPU", ("avx2",))
    with caplog.at_level(logging.WARNING, logger="garmentcv.export.convert"):
        u8 = convert.to_int8(model, calibration, batch_size=4, activations="uint8", cpu=no_vnni)
    assert _zero_point_types(u8) == {onnx.TensorProto.UINT8}
    assert "Old CPU has no VNNI" in caplog.text and "--int8-activations int8" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="garmentcv.export.convert"):
        s8 = convert.to_int8(model, calibration, batch_size=4, activations="int8", cpu=no_vnni)
    assert _zero_point_types(s8) == {onnx.TensorProto.INT8} and caplog.text == ""
    with pytest.raises(ValueError, match="activations"):
        convert.to_int8(model, calibration, activations="int4")


def test_cli_offers_int8_activations_with_default() -> None:
    text = " ".join(CliRunner().invoke(export_cli.main, ["--help"]).output.split())
    assert "--int8-activations [uint8|int8]" in text and "[default: uint8]" in text and "VNNI" in text
