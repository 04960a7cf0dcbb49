"""gcv-export streams its validation and INT8 range images: memory does not grow with their number."""

from __future__ import annotations

import csv
import itertools
import weakref
from pathlib import Path

import numpy as np
import pytest

from garmentcv.artifact import INPUT_FLOAT32
from garmentcv.export import checks, exporter
from garmentcv.export.exporter import ExportConfig, export_checkpoint, torch_logits
from garmentcv.image import load_input
from garmentcv.models import default_preprocessing
from tests.test_export import CLASSES, SIZE, _torch_model, make_run


def test_images_are_decoded_batch_by_batch_and_results_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = make_run(tmp_path / "run", "resnet18", per_class=4)  # 12 validation and 12 INT8 range images
    alive: set[int] = set()
    peak = [0]
    tokens = itertools.count()
    real_load_input = exporter.load_input

    def counting_load_input(path, pp):  # every decoded image, counted while it is alive
        array = real_load_input(path, pp)
        token = next(tokens)
        alive.add(token)
        weakref.finalize(array, alive.discard, token)
        peak[0] = max(peak[0], len(alive))
        return array

    monkeypatch.setattr(exporter, "load_input", counting_load_input)
    out = tmp_path / "int8.onnx"
    # format 1 (float32 input, load_input), as the figures below are computed on float inputs; format 2's streaming
    # is the same ImageStream with load_crop (tests/test_uint8_input.py)
    cfg = ExportConfig(
        checkpoint=ckpt,
        out=out,
        precision="int8",
        calibration_images=12,
        max_accuracy_drop=100.0,
        batch_size=4,
        input_format=INPUT_FLOAT32,
    )
    r = export_checkpoint(cfg, progress=False)
    assert next(tokens) >= 24  # every validation and calibration image was decoded ...
    assert peak[0] <= 4  # ... but never more than one batch of them at a time (was all 12)
    assert r.val_images == 12 and r.calibration_images == 12 and r.skipped_images == 0

    # the figures equal those of the whole set stacked in memory (the former way), at the same batch size
    with open(ckpt.parent.parent / "val.csv", encoding="utf-8") as handle:
        files = [row["path"] for row in csv.DictReader(handle)]
    inputs = np.stack([load_input(f, default_preprocessing("resnet18", SIZE)) for f in files])
    targets = np.repeat(np.arange(len(CLASSES)), 4)
    reference = torch_logits(_torch_model(ckpt), inputs, 4)
    logits = checks.run_logits(checks.open_session(out), inputs, 4)
    assert r.accuracy == (logits.argmax(1) == targets).mean()
    assert r.fp32_accuracy == pytest.approx((reference.argmax(1) == targets).mean())
    assert r.parity.max_abs_diff == pytest.approx(float(np.abs(reference - logits).max()), rel=1e-6)
    assert r.parity.images == r.fp32_parity.images == 12 and r.fp32_parity.rows_over_tolerance == 0


def test_skipped_images_are_counted_while_streaming(tmp_path: Path) -> None:
    pp = default_preprocessing("resnet18", SIZE)
    ckpt = make_run(tmp_path / "run", "resnet18", per_class=2)
    val = ckpt.parent.parent / "val.csv"
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with open(val, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow([str(tmp_path / "broken.png"), CLASSES[0]])
    images = exporter.select_images(val, CLASSES, 0, True, "validation")
    assert len(images.pairs) == 7
    stream = exporter.ImageStream(images, pp, 3, progress=False)
    batches = list(stream)  # the unreadable file comes last: counted although no batch follows it
    assert [len(b.files) for b in batches] == [3, 3] and stream.skipped == 1 and stream.decoded == 6
    assert all(b.inputs.shape[1:] == (3, SIZE, SIZE) and b.inputs.dtype == np.float32 for b in batches)
    assert str(tmp_path / "broken.png") not in [f for b in batches for f in b.files]
