"""gcv-export's inputs and outputs: no local paths in the file, exit 2 for a missing checkpoint,
an unwritable --out refused before any work, an opset below the exporter's."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

from garmentcv.errors import OutputPathError, PathNotFoundError
from garmentcv.export import cli as export_cli
from garmentcv.export import exporter
from garmentcv.export.exporter import ExportConfig, export_checkpoint, public_weights_source
from garmentcv.infer.model_file import read_model_info
from tests.test_export import make_run


@pytest.mark.parametrize(
    ("source", "public"),
    [
        ("imagenet:ResNet18_Weights.IMAGENET1K_V1 (/home/u/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth)",
         "imagenet:ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)"),
        ("imagenet:ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)",
         "imagenet:ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)"),
        ("file:/data/weights/my backbone.pth", "file:my backbone.pth"),
        ("file:/srv/w/resnet.pth", "file:resnet.pth"),
        ("file:C:\\Users\\u\\weights\\resnet.pth", "file:resnet.pth"),
        ("none (random init)", "none (random init)"),
    ],
)  # fmt: skip
def test_public_weights_source_keeps_file_names_only(source: str, public: str) -> None:
    assert public_weights_source(source) == public


def test_exported_file_holds_no_absolute_weights_path(tmp_path: Path) -> None:
    ckpt = make_run(tmp_path / "run", "resnet18", per_class=1)
    data = torch.load(ckpt, weights_only=True)
    data["weights_source"] = ("imagenet:ResNet18_Weights.IMAGENET1K_V1 "
                              "(/home/u/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth)")
    torch.save(data, ckpt)
    out = tmp_path / "m.onnx"
    export_checkpoint(ExportConfig(checkpoint=ckpt, out=out), progress=False)
    assert read_model_info(out).weights_source == "imagenet:ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)"
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert not [k for k, v in props.items() if "/home/" in v or str(tmp_path) in v]


def test_missing_checkpoint_is_usage_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    with pytest.raises(PathNotFoundError, match=r"missing\.pt: checkpoint not found; give"):
        export_checkpoint(ExportConfig(checkpoint=missing, out=tmp_path / "m.onnx"), progress=False)
    result = CliRunner().invoke(export_cli.main, [str(missing), "--out", str(tmp_path / "m.onnx"), "-q"])
    assert result.exit_code == 2, result.output
    assert f"Error: {missing}: checkpoint not found; give a best.pt or last.pt" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_out_under_a_file_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = make_run(tmp_path / "run", "resnet18", per_class=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was loaded before --out was checked")

    monkeypatch.setattr(exporter, "load_checkpoint", no_work)
    out = blocker / "sub" / "m.onnx"
    with pytest.raises(OutputPathError, match=r"--out .*a_file/sub/m\.onnx: .*a_file is not a folder but a file"):
        export_checkpoint(ExportConfig(checkpoint=ckpt, out=out), progress=False)
    result = CliRunner().invoke(export_cli.main, [str(ckpt), "--out", str(out), "-q"])
    assert result.exit_code == 1 and "is not a folder but a file; choose another place" in result.stderr
    assert "Traceback" not in result.output and blocker.read_text() == "x"


def test_export_opset_below_the_exporters_is_a_usage_error() -> None:
    result = CliRunner().invoke(export_cli.main, ["missing.pt", "--opset", "7"])
    assert result.exit_code == 2 and "7 is not in the range x>=18" in result.output
