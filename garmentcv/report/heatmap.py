"""Heatmaps for the report pages: where the model looked, from a model file's ``cam`` output (numpy and Pillow).

A model file exported with ``gcv export --cam`` returns class activation maps (Zhou et al. 2016, "Learning Deep
Features for Discriminative Localization", CVPR; :mod:`garmentcv.export.cam`): one ``(h, w)`` map per class at the
last feature map's resolution (7 x 7 at 224 px for resnet). :func:`overlay` scales the map of one class to 0..1
(its lowest value 0, its highest 1), upsamples it bilinearly to the picture, colours it (blue: low, red: high, the
colours of :data:`COLORMAP`) and blends the colours over the picture at :data:`HEATMAP_ALPHA`.

:func:`class_heatmaps` runs a model file (onnxruntime on the CPU) on a few images, batch by batch, and writes one
overlaid thumbnail per image of the crop the model saw; only those images' maps are ever held, so its memory does
not depend on the number of rows of a results file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from garmentcv.errors import ImageDecodeError

logger = logging.getLogger(__name__)

#: Weight of the heatmap's colours in the blend; the picture keeps the rest (0.6), so it stays recognisable.
HEATMAP_ALPHA = 0.4
#: Anchor colours of the heatmap, low to high (a "jet"-like scale: blue, cyan, green, yellow, red), evenly spaced.
COLORMAP = ((0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
#: Images run through the model at a time for their maps.
HEATMAP_BATCH = 16


def _lut() -> np.ndarray:
    anchors = np.asarray(COLORMAP, dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    steps = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(steps, at, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


_LUT = _lut()


def upsample_map(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """One class's map ``(h, w)`` scaled to 0..1 (lowest value 0, highest 1; all 0 for a constant or non-finite
    map) and resized bilinearly (Pillow) to float32 ``(height, width)``.

    Raises:
        ValueError: ``cam`` is not two-dimensional.
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"a class activation map is (h, w), got shape {cam.shape}")
    low, high = float(cam.min()), float(cam.max())
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        scaled = np.zeros_like(cam)
    else:
        scaled = (cam - low) / (high - low)
    resized = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def colorize(heat: np.ndarray) -> np.ndarray:
    """Colours ``uint8 (H, W, 3)`` of a 0..1 map ``(H, W)`` on :data:`COLORMAP`."""
    return _LUT[np.clip(np.rint(np.asarray(heat) * 255), 0, 255).astype(np.intp)]


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """Blend one class's map ``cam`` ``(h, w)`` over an RGB ``uint8`` picture ``(H, W, 3)``: ``(1 - alpha) x
    picture + alpha x colorize(upsample_map(cam, W, H))``, rounded; returns ``uint8 (H, W, 3)``.

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)`` or ``cam`` not ``(h, w)``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the picture must be RGB (H, W, 3), got shape {image.shape}")
    colours = colorize(upsample_map(cam, image.shape[1], image.shape[0])).astype(np.float32)
    return np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * colours).astype(np.uint8)


@dataclass(frozen=True)
class Heatmap:
    """One overlaid thumbnail: ``name`` of the file written (``None`` when the image could not be read, then
    ``reason`` says why), its size in px and the class whose map it shows."""

    name: str | None
    width: int = 0
    height: int = 0
    explains: str = ""
    reason: str | None = None


def _fit(crop: np.ndarray, size: int) -> np.ndarray:
    """The crop at thumbnail size, as :mod:`garmentcv.report.thumbnails` sizes thumbnails (shrunk with Lanczos,
    enlarged by a whole factor with nearest neighbour)."""
    picture = Image.fromarray(crop)
    longest = max(picture.size)
    if longest > size:
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    elif longest * 2 <= size:
        factor = size // longest
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    return np.asarray(picture)


def class_heatmaps(model_path: Path, items: Sequence[tuple[Path, str | None]], folder: Path, size: int,
                   jpeg_quality: int = 85) -> list[Heatmap]:
    """Write ``h00000.jpg``, ``h00001.jpg``, ... in ``folder``: for each ``(image, class)`` of ``items``, the crop the
    model saw (:func:`garmentcv.image.load_crop`) at thumbnail ``size`` with that class's map from the file's ``cam``
    output blended over it (:func:`overlay`); a class that is not one of the model's (``None``, ``unknown``) is
    replaced by the model's top class for the image.

    Runs ``model_path`` with onnxruntime on the CPU, :data:`HEATMAP_BATCH` images at a time, keeping no map
    beyond its batch.

    Returns:
        One :class:`Heatmap` per item, in order; an image that cannot be decoded gets ``name=None`` and the reason.

    Raises:
        ValueError: the model file has no ``cam`` output.
        ModelFileError: as :func:`garmentcv.infer.runtimes.open_runtime`.
    """
    from garmentcv.artifact import CAM_NAME, INPUT_FLOAT32, OUTPUT_NAME
    from garmentcv.image import load_crop, normalize
    from garmentcv.infer.runtimes import open_runtime

    model = open_runtime(Path(model_path), "onnxruntime", "cpu")
    info = model.info
    if not info.has_cam:
        raise ValueError(f"{model_path} has no cam output; export it with 'gcv export CHECKPOINT --cam'")
    made: list[Heatmap] = []
    for start in range(0, len(items), HEATMAP_BATCH):
        chunk = items[start : start + HEATMAP_BATCH]
        crops: list[np.ndarray | None] = []
        reasons: list[str | None] = []
        for source, _ in chunk:
            try:
                crops.append(load_crop(source, info.preprocessing))
                reasons.append(None)
            except ImageDecodeError as exc:
                crops.append(None), reasons.append(exc.reason)
            except OSError as exc:  # unreadable or vanished since the run
                crops.append(None), reasons.append(exc.strerror or str(exc))
        good = [c for c in crops if c is not None]
        outputs: dict[str, np.ndarray] = {}
        if good:
            batch = np.stack(good) if info.input_format != INPUT_FLOAT32 else np.stack(
                [normalize(c, info.preprocessing) for c in good])
            outputs = model.outputs(batch)
        k = 0
        for i, (crop, (_, wanted)) in enumerate(zip(crops, chunk, strict=True)):
            if crop is None:
                made.append(Heatmap(None, reason=reasons[i]))
                continue
            index = info.classes.index(wanted) if wanted in info.classes else int(outputs[OUTPUT_NAME][k].argmax())
            picture = overlay(_fit(crop, size), outputs[CAM_NAME][k, index])
            name = f"h{start + i:05d}.jpg"
            Image.fromarray(picture).save(folder / name, format="JPEG", quality=jpeg_quality)
            made.append(Heatmap(name, picture.shape[1], picture.shape[0], info.classes[index]))
            k += 1
    logger.info("heatmaps of %d images from %s's class activation maps", sum(m.name is not None for m in made),
                Path(model_path).name)
    return made
