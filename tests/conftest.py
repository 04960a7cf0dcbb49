"""Fixtures shared by the test suite: small generated images and datasets, all in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: One colour per class so that tiny models can learn something; class i gets COLOURS[i % len].
COLOURS = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40), (120, 40, 160)]


def write_image(path: Path, size: tuple[int, int] = (24, 32), colour: tuple[int, int, int] = (200, 40, 40),
                seed: int = 0, fmt: str | None = None) -> Path:
    """Write a noisy RGB image of ``size`` (width, height) px around ``colour``; returns ``path``."""
    rng = np.random.default_rng(seed)
    base = np.asarray(colour, dtype=np.int16)
    noise = rng.integers(-30, 30, size=(size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture
def image_writer() -> Callable[..., Path]:
    """The :func:`write_image` helper."""
    return write_image


@pytest.fixture
def make_lamoda(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a flat ``<id>_<label>.jpg`` folder with ``per_class`` images of each class."""

    def make(classes: Sequence[str] = ("bluzy", "bryuki"), per_class: int = 6, name: str = "lamoda",
             size: tuple[int, int] = (24, 32)) -> Path:
        root = tmp_path / name
        number = 0
        for c, label in enumerate(classes):
            for i in range(per_class):
                number += 1
                write_image(root / f"{number:04d}_{label}.jpg", size, COLOURS[c % len(COLOURS)], seed=number)
        return root

    return make
