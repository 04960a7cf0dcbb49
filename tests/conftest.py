"""Fixtures shared by the test suite: generated images and datasets, tiny GarmentCV ONNX classifiers."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from garmentcv.artifact import INPUT_FLOAT32, INPUT_NAME, INPUT_UINT8, OUTPUT_NAME, ModelInfo
from garmentcv.image import Preprocessing

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
            for _ in range(per_class):
                number += 1
                write_image(root / f"{number:04d}_{label}.jpg", size, COLOURS[c % len(COLOURS)], seed=number)
        return root

    return make


def build_onnx_model(
    path: Path,
    classes: Sequence[str] = ("bluzy", "bryuki"),
    arch: str = "resnet18",
    size: int = 32,
    seed: int = 0,
    metadata: bool = True,
    input_format: str = INPUT_FLOAT32,
) -> tuple[Path, object]:
    """Export a random-init registered ``arch`` with a ``len(classes)`` head at ``size`` px to ``path``.

    ``input_format``: float32 NCHW input (format 1, the default) or uint8 NHWC crops normalised in the graph
    (format 2, :class:`garmentcv.export.uint8_input.Uint8Input`, as gcv-export writes by default).

    The file has a dynamic batch axis, input ``input``, output ``logits`` and (unless ``metadata=False``)
    GarmentCV metadata from :meth:`ModelInfo.to_metadata`; it is saved self-contained. Returns the path and
    the torch model (eval mode) for parity checks.
    """
    import onnx
    import torch

    from garmentcv.models.registry import build_model, default_preprocessing

    torch.manual_seed(seed)
    model = build_model(arch, len(classes), weights="none").model.eval()
    pp: Preprocessing = default_preprocessing(arch, size)
    dummy = torch.zeros(2, 3, size, size)
    if input_format == INPUT_UINT8:
        from garmentcv.export.uint8_input import Uint8Input

        model = Uint8Input(model, pp).eval()
        dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    tmp = path.with_suffix(".raw.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but fast and enough for a fixture
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=17, dynamo=False,
        )
    proto = onnx.load(str(tmp), load_external_data=True)
    tmp.unlink()
    for extra in path.parent.glob(tmp.name + "*"):
        extra.unlink()
    if metadata:
        info = ModelInfo(arch=arch, classes=tuple(classes), preprocessing=pp, precision="fp32",
                         weights_source="none (random init)", metrics={"accuracy": 0.5}, opset=17,
                         input_format=input_format)
        onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path, model


@pytest.fixture(scope="session")
def onnx_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per distinct arguments) a tiny ONNX classifier file; see :func:`build_onnx_model`."""
    cache: dict[tuple, Path] = {}

    def make(classes: Sequence[str] = ("bluzy", "bryuki"), arch: str = "resnet18", size: int = 32,
             seed: int = 0, metadata: bool = True, input_format: str = INPUT_FLOAT32) -> Path:
        key = (tuple(classes), arch, size, seed, metadata, input_format)
        if key not in cache:
            folder = tmp_path_factory.mktemp("onnx")
            cache[key] = build_onnx_model(folder / "model.onnx", classes, arch, size, seed, metadata, input_format)[0]
        return cache[key]

    return make


@pytest.fixture(scope="session")
def onnx_model(onnx_model_factory: Callable[..., Path]) -> Path:
    """The default tiny model: resnet18, classes (bluzy, bryuki), 32 px input."""
    return onnx_model_factory()


@pytest.fixture(scope="session")
def uint8_onnx_model(onnx_model_factory: Callable[..., Path]) -> Path:
    """:func:`onnx_model`'s network as a format-2 file: uint8 ``(N, 32, 32, 3)`` crops in, normalised in the graph."""
    return onnx_model_factory(input_format=INPUT_UINT8)
