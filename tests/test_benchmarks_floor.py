"""The decode-floor and shared-core benchmarks measure what they say (tiny runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import decode, shared_core
from benchmarks.photos import write_photo_folder
from garmentcv.image import Preprocessing, load_input


def test_decode_benchmark_times_every_path_and_its_full_resize_path_is_the_old_pixels(tmp_path: Path) -> None:
    folder = write_photo_folder(tmp_path / "photos", 2)  # two 600x866 photos
    paths = sorted(folder.path.glob("*.jpg"))
    pp = Preprocessing(resize=256, crop=224)
    figures = decode.measure(paths, pp, repeats=1)
    assert {"decode-only (Pillow DCT 1/2)", "decode-only (Pillow full)", "load_crop", "load_input",
            "full-resize load_input"} <= set(figures)
    assert all(cpu > 0 and wall > 0 for cpu, wall in figures.values())
    assert decode._pillow_dct(paths[0].read_bytes(), 256).shape == (433, 300, 3)  # the DCT scale load_crop uses
    old, new = decode._full_resize_load_input(paths[0], pp), load_input(paths[0], pp)
    assert old.shape == new.shape == (3, 224, 224)
    assert np.abs(old - new).max() * 0.229 * 255 < 3  # the crop-box resample: a grey level or two from the old path


def test_shared_core_bound_and_share() -> None:
    f = shared_core.Figures("fp32 uint8-nhwc", 2, 2, 32, model=100.0, decode=300.0, end_to_end=60.0)
    assert f.bound == pytest.approx(75.0) and f.share == pytest.approx(0.8)
