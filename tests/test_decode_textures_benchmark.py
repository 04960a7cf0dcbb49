"""``benchmarks.decode_textures`` measures what it says (a tiny run on real Fashion-MNIST items)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import decode_textures
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE

pytestmark = pytest.mark.skipif(not (DEFAULT_SOURCE / "train-labels-idx1-ubyte.gz").is_file(),
                                reason="Debian's dataset-fashion-mnist is not installed")  # fmt: skip


def test_textures_are_the_fine_patterns_named() -> None:
    rng = np.random.default_rng(0)
    stripes = decode_textures.texture("stripes-3px", 12, 8, rng)
    assert stripes.shape == (8, 12) and set(np.unique(stripes)) == {0.0, 1.0}
    vertical = np.array_equal(stripes, np.broadcast_to(stripes[0], stripes.shape))
    ones = np.flatnonzero(stripes[0] if vertical else stripes[:, 0])
    assert vertical or np.array_equal(stripes, np.broadcast_to(stripes[:, :1], stripes.shape))
    assert len(ones) >= 2 and set(np.diff(ones).tolist()) == {3}  # one line every 3 px
    diagonal = decode_textures.texture("diagonal-4px", 12, 8, rng)
    assert np.array_equal(diagonal[1:, :-1], diagonal[:-1, 1:]) and diagonal.mean() == 0.25
    with pytest.raises(ValueError, match="unknown texture 'dots'"):
        decode_textures.texture("dots", 4, 4, rng)


def test_a_tiny_run_writes_every_figure_with_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--out", str(out), "--work", str(tmp_path / "work"), "--classes", "trouser,dress", "--train-per-class", "3",
            "--test-per-class", "3", "--seeds", "0", "--epochs", "1", "--batch-size", "2", "--repeats", "1"]
    assert decode_textures.main(argv) == 0
    (path,) = out.glob("*/decode_textures.json")  # OUT/<machine>/
    document = json.loads(path.read_text())
    assert document["suite"] == "decode_textures" and document["machine"]["cpu_model"]
    assert path.parent.name == document["machine"]["slug"]
    assert document["command"] == "python -m benchmarks decode_textures " + " ".join(argv)
    sections: dict[str, list[dict]] = {}
    for row in document["rows"]:
        sections.setdefault(row.pop("section"), []).append(row)
    assert sections["settings"][0]["classes"] == ["trouser", "dress"]
    photos = sorted((tmp_path / "work" / "photos").glob("*.jpg"))
    assert len(photos) == 2 * 3 + 2 * 3 * 2  # training photos, and every test item textured and plain
    assert all(Image.open(p).size == (600, 866) for p in photos)
    pixels = {r["variant"]: r for r in sections["pixels"]}
    assert pixels["textured"]["images"] == pixels["plain"]["images"] == 6
    assert pixels["textured"]["mean"] > 2 * pixels["plain"]["mean"]  # the decodes part on the textures
    assert sections["pixels-training-now"] == [{"images": 6, "mean": 0.0, "max": 0}]
    rows = sections["predictions"]
    assert {(r["training_decode"], r["variant"]) for r in rows} == {
        (d, v) for d in ("full", "serving-rule") for v in ("textured", "plain")}
    assert all(0 <= r["accuracy_serving"] <= 1 and 0 <= r["flips"] <= 6 and 0 <= r["max_probability_change"] <= 1
               for r in rows)  # fmt: skip
    assert {r["decode"] for r in sections["speed"]} == {
        "serving: load_crop (DCT-scaled)", "serving without the shortcut: resize_and_crop(decode_image)",
        "training view: serving's rule", "training view: full decode"}
    assert "## Predictions through each decode" in path.with_suffix(".md").read_text()
