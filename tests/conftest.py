"""Shared test fixtures: tiny GarmentCV ONNX classifiers and generated image folders."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from garmentcv.artifact import INPUT_NAME, OUTPUT_NAME, ModelInfo
from garmentcv.image import Preprocessing


def build_onnx_model(
    path: Path,
    classes: Sequence[str] = ("bluzy", "bryuki"),
    arch: str = "resnet18",
    size: int = 32,
    seed: int = 0,
    metadata: bool = True,
) -> tuple[Path, object]:
    """Export a random-init registered ``arch`` with a ``len(classes)`` head at ``size`` px to ``path``.

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
                         weights_source="none (random init)", metrics={"accuracy": 0.5}, opset=17)
        onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path, model


@pytest.fixture(scope="session")
def onnx_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per distinct arguments) a tiny ONNX classifier file; see :func:`build_onnx_model`."""
    cache: dict[tuple, Path] = {}

    def make(classes: Sequence[str] = ("bluzy", "bryuki"), arch: str = "resnet18", size: int = 32,
             seed: int = 0, metadata: bool = True) -> Path:
        key = (tuple(classes), arch, size, seed, metadata)
        if key not in cache:
            folder = tmp_path_factory.mktemp("onnx")
            cache[key] = build_onnx_model(folder / "model.onnx", classes, arch, size, seed, metadata)[0]
        return cache[key]

    return make


@pytest.fixture(scope="session")
def onnx_model(onnx_model_factory: Callable[..., Path]) -> Path:
    """The default tiny model: resnet18, classes (bluzy, bryuki), 32 px input."""
    return onnx_model_factory()


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 56), fmt: str | None = None) -> Path:
    """Write a random RGB image of ``size`` (width, height) px; format from the suffix unless ``fmt``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)
    return path
