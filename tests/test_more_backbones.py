"""Backbones beyond the study's three, by torchvision builder name: gcv-train, gcv-export (FP32 and INT8; every
precision's gates for these archs are in tests/test_export.py) and gcv-classify end to end, with classify's
probabilities checked against PyTorch on the same pixels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from garmentcv.export.exporter import ExportConfig, export_checkpoint
from garmentcv.image import load_input
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.models import build_model, default_preprocessing
from garmentcv.train.cli import main as train_main

SIZE = 32


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "convnext_tiny"])
def test_another_family_trains_exports_at_every_precision_and_classifies(
    arch: str, make_lamoda, tmp_path: Path
) -> None:
    data = make_lamoda(per_class=6)
    run = tmp_path / "run"
    result = CliRunner().invoke(train_main, [str(data), "--arch", arch, "--weights", "none", "--image-size", str(SIZE),
                                             "--epochs", "2", "--batch-size", "4", "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    ckpt = torch.load(run / arch / "best.pt", weights_only=True)
    assert ckpt["arch"] == arch and ckpt["classes"] == ["bluzy", "bryuki"]
    assert ckpt["preprocessing"] == default_preprocessing(arch, SIZE).to_dict()
    assert ckpt["weights_source"] == "none (random init)"

    model = build_model(arch, 2, "none").model
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    files = sorted(data.iterdir())
    pixels = np.stack([load_input(f, default_preprocessing(arch, SIZE)) for f in files])
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(pixels)).double(), dim=1).numpy()

    for precision in ("fp32", "int8"):  # FP16's gates for these archs: tests/test_export.py (EXTRA_ARCHS)
        onnx_file = tmp_path / f"{arch}-{precision}.onnx"
        exported = export_checkpoint(
            ExportConfig(checkpoint=run / arch / "best.pt", out=onnx_file, precision=precision),
            progress=False,
        )
        assert exported.out == onnx_file and onnx_file.is_file()
        out = tmp_path / f"{precision}.csv"
        summary = classify_folder(ClassifyConfig(folder=data, out=out, model=onnx_file, provider="cpu",
                                                 calibration="none", progress=False))
        assert (summary.files, summary.classified, summary.errors) == (12, 12, 0)
        with open(out, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["path"] for r in rows] == [f.name for f in files]
        probs = np.array([[float(r["prob_bluzy"]), float(r["prob_bryuki"])] for r in rows])
        # FP32 equals PyTorch to float rounding; INT8 passed its accuracy gate in the export
        tolerance = {"fp32": 1e-4, "int8": 0.1}[precision]
        np.testing.assert_allclose(probs, expected, atol=tolerance)
        assert [r["label"] for r in rows] == [("bluzy", "bryuki")[i] for i in probs.argmax(axis=1)]
