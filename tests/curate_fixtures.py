"""Shared pieces of the curation tests: a tiny random-init resnet18 at 32 px with the ``embedding`` output, and
generated two-colour datasets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from garmentcv.artifact import (
    CAM_NAME,
    EMBEDDING_NAME,
    INPUT_NAME,
    OOD_SCORE_NAME,
    OUTPUT_NAME,
    ModelInfo,
    UnknownDetector,
)
from garmentcv.conformal import ConformalPredictor

#: Two clearly different colour classes: a linear head on the embeddings separates them.
CLASS_COLOURS = {"bluzy": (210, 40, 40), "bryuki": (40, 60, 210)}
SIZE = 32
#: The input side of the model with the ``cam`` output: resnet18's last feature map is 2 x 2 there (1 x 1 at 32 px).
CAM_SIZE = 64


def build_embedding_model(path: Path, classes: tuple[str, ...] = ("bluzy", "bryuki"), seed: int = 0,
                          unknown_threshold: float | None = None, cam: bool = False) -> Path:
    """A random-init resnet18 at 32 px exported with outputs ``logits`` and ``embedding`` (512 floats) and GarmentCV
    metadata declaring them, as ``gcv export --embedding`` writes; BatchNorm statistics from 64 coloured images so
    the embeddings carry the colour. With ``unknown_threshold``, a third output ``ood_score``, the energy score
    ``-logsumexp(logits)`` (Liu et al. 2020), and an unknown-item detector with that threshold. With ``cam``, at
    :data:`CAM_SIZE` px instead (a 2 x 2 last feature map), with the ``cam`` output last, as ``gcv export --cam``
    writes it (:class:`garmentcv.export.cam.WithCam`)."""
    import onnx
    import torch

    from garmentcv.export.cam import WithCam
    from garmentcv.export.embedding import WithEmbedding
    from garmentcv.image import normalize
    from garmentcv.models.registry import build_model, default_preprocessing, get_spec

    size = CAM_SIZE if cam else SIZE
    torch.manual_seed(seed)
    network = build_model("resnet18", len(classes), weights="none").model
    pp = default_preprocessing("resnet18", size)
    rng = np.random.default_rng(seed)
    colours = np.asarray(list(CLASS_COLOURS.values()) * 32)[:, None, None]
    pixels = np.clip(colours + rng.integers(-60, 60, size=(64, size, size, 3)), 0, 255).astype(np.uint8)
    batch = torch.from_numpy(np.stack([normalize(p, pp) for p in pixels]))
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    network.train()
    with torch.no_grad():
        network(batch)
    head = get_spec("resnet18").head
    wrapped = WithCam(network.eval(), head, size).eval() if cam else WithEmbedding(network.eval(), head).eval()
    names = [OUTPUT_NAME, EMBEDDING_NAME]
    exported: torch.nn.Module = wrapped
    if unknown_threshold is not None:
        exported = _with_energy(wrapped).eval()
        names.append(OOD_SCORE_NAME)
    if cam:
        names.append(CAM_NAME)
    raw = path.with_suffix(".raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            exported, (torch.zeros(2, 3, size, size),), str(raw), input_names=[INPUT_NAME],
            output_names=names, opset_version=17, dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in names}},
        )
    proto = onnx.load(str(raw))
    raw.unlink()
    info = ModelInfo(arch="resnet18", classes=tuple(classes), preprocessing=pp, precision="fp32",
                     weights_source="none (random init)", metrics={}, opset=17,
                     outputs=tuple(names), embedding_dim=512,
                     unknown=None if unknown_threshold is None else UnknownDetector("energy", unknown_threshold, 0.95))
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.save_model(proto, str(path))
    return path


def _with_energy(wrapped):  # a class made on demand, so that importing this module needs no torch
    import torch

    class WithEnergy(torch.nn.Module):
        """``(logits, embedding, -logsumexp(logits))``, then the ``cam`` output when the wrapped module has it."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = wrapped

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            logits, embedding, *cam = self.inner(x)
            return (logits, embedding, -torch.logsumexp(logits, dim=1), *cam)

    return WithEnergy()


def set_unknown_threshold(path: Path, threshold: float) -> None:
    """Rewrite the unknown detector's threshold in the metadata of the model file ``path``."""
    import dataclasses

    import onnx

    from garmentcv.infer.model_file import read_model_info

    info = read_model_info(path)
    info = dataclasses.replace(info, unknown=dataclasses.replace(info.unknown, threshold=threshold))
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.save_model(proto, str(path))


def colour_image(path: Path, colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (28, 36)) -> Path:
    """A noisy image around ``colour`` with a random bright or dark block, so no two are alike."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour) + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255)
    y, x = rng.integers(0, size[1] - 6), rng.integers(0, size[0] - 6)
    pixels[y:y + 6, x:x + 6] = rng.integers(0, 256, size=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def set_prediction_sets(path: Path, predictor: ConformalPredictor) -> None:
    """Write ``predictor`` into the metadata of the model file ``path`` as its prediction sets."""
    import dataclasses

    import onnx

    from garmentcv.infer.model_file import read_model_info

    info = dataclasses.replace(read_model_info(path), conformal=predictor)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, info.to_metadata())
    onnx.save_model(proto, str(path))
