"""The models GarmentCV can fine-tune: torchvision builders with their ImageNet weights entries.

Each :class:`ModelSpec` names a torchvision builder, its ImageNet weights enum member (which carries the
download URL, the file name in the ``TORCH_HOME`` cache and the evaluation preprocessing), and the dotted
name of the classification head that is replaced for N classes.

:data:`MODELS` holds the three tested default archs (``--arch all``). Any other
classification model of torchvision's model registry (``torchvision.models.list_models(module=
torchvision.models)``: convnext_tiny, mobilenet_v3_small, regnet_y_400mf, ...) is looked up by its builder
name (:func:`get_spec`), with the weights entry torchvision marks ``DEFAULT`` and the last 1000-output
``nn.Linear`` as its head. The same rules hold for both: preprocessing from the weights entry, and never a
silently random backbone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from garmentcv.errors import GarmentCVError, WeightsError
from garmentcv.image import Preprocessing

logger = logging.getLogger(__name__)


class UnknownArchError(GarmentCVError, KeyError):
    """An architecture name that is not in :data:`MODELS`."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
        name: the torchvision builder name, e.g. ``resnet18``.
        builder: the torchvision builder (``weights=None, num_classes=1000`` builds the ImageNet model).
        weights: the ImageNet weights entry (torchvision ``WeightsEnum`` member).
        head: dotted attribute path of the final ``nn.Linear``, e.g. ``fc`` or ``classifier.1``.
    """

    name: str
    builder: Callable[..., nn.Module]
    weights: WeightsEnum
    head: str

    @property
    def preprocessing(self) -> Preprocessing:
        """The evaluation preprocessing of :attr:`weights` (resize, crop, interpolation, mean, std)."""
        transform = self.weights.transforms()
        return Preprocessing(
            resize=int(transform.resize_size[0]),
            crop=int(transform.crop_size[0]),
            interpolation=transform.interpolation.value,
            mean=tuple(float(v) for v in transform.mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in transform.std),  # type: ignore[arg-type]
        )

    @property
    def cache_file(self) -> Path:
        """Where torchvision keeps the downloaded weights: ``$TORCH_HOME/hub/checkpoints/<file>``."""
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(self.weights.url).name


MODELS: dict[str, ModelSpec] = {
    "efficientnet_b0": ModelSpec(
        "efficientnet_b0", tvm.efficientnet_b0, tvm.EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier.1"
    ),
    "resnet18": ModelSpec("resnet18", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, "fc"),
    "resnet34": ModelSpec("resnet34", tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, "fc"),
}


#: torchvision classification models whose forward in training mode returns auxiliary outputs (a named tuple,
#: not logits); GarmentCV's loop trains on logits only.
UNSUPPORTED: dict[str, str] = {
    "googlenet": "returns auxiliary classifier outputs in training mode",
    "inception_v3": "returns auxiliary classifier outputs in training mode (and needs at least 75 px input)",
}


def torchvision_archs() -> list[str]:
    """Builder names of torchvision's classification models (its model registry), sorted; the quantized and
    non-classification ones are not in it."""
    return tvm.list_models(module=tvm)


def find_head(model: nn.Module, num_classes: int = 1000) -> str | None:
    """Dotted name of the last ``nn.Linear`` of ``model`` with ``num_classes`` outputs (its classification head),
    or ``None`` when there is none (a convolutional head, as SqueezeNet's)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = name
    return found


@functools.lru_cache(maxsize=None)
def _torchvision_spec(arch: str) -> ModelSpec:
    if arch in UNSUPPORTED:
        raise UnknownArchError(f"arch {arch!r} is not supported: it {UNSUPPORTED[arch]}")
    if arch not in torchvision_archs():
        others = (a for a in torchvision_archs() if a not in MODELS and a not in UNSUPPORTED)
        raise UnknownArchError(
            f"unknown arch {arch!r}; choose one of {', '.join(MODELS)} (the tested defaults) or another torchvision "
            f"classification builder: {', '.join(others)}"
        )
    builder = tvm.get_model_builder(arch)
    try:  # on the meta device: no memory for the weights, milliseconds even for vit_h_14
        with torch.device("meta"):
            skeleton = builder(weights=None, num_classes=1000)
    except (NotImplementedError, RuntimeError):  # builders that compute on tensors (regnet's widths) need real ones
        skeleton = builder(weights=None, num_classes=1000)
    head = find_head(skeleton)
    if head is None:
        raise UnknownArchError(
            f"arch {arch!r} is not supported: its classifier is not an nn.Linear with 1000 outputs, so GarmentCV "
            "cannot replace its head"
        )
    return ModelSpec(arch, builder, tvm.get_model_weights(arch).DEFAULT, head)


def get_spec(arch: str) -> ModelSpec:
    """Look up an architecture by its torchvision builder name.

    The three of :data:`MODELS` come from the table; any other name is looked up in torchvision's model registry
    (weights: its ``DEFAULT`` ImageNet entry; head: :func:`find_head` on the 1000-class model, built once).

    Raises:
        UnknownArchError: ``arch`` is not a torchvision classification model, returns auxiliary outputs
            (:data:`UNSUPPORTED`) or has no linear head; the message lists the valid names.
    """
    if arch in MODELS:
        return MODELS[arch]
    return _torchvision_spec(arch)


class InputSizeError(GarmentCVError, ValueError):
    """An architecture that cannot run on the requested input size (ViT's fixed 224 px, AlexNet below 63 px)."""


def check_input_size(arch: str, image_size: int) -> None:
    """Run ``arch``'s 1000-class model once on two ``image_size`` px images, on the meta device when the builder
    allows it (no memory, milliseconds), so that a size the network cannot take is refused before any work.

    Raises:
        UnknownArchError: from :func:`get_spec`.
        InputSizeError: the forward pass fails at this size; the message gives the network's own reason and the
            crop size of its weights, which it always accepts.
    """
    spec = get_spec(arch)
    try:
        try:
            with torch.device("meta"):
                spec.builder(weights=None, num_classes=1000).train()(torch.empty(2, 3, image_size, image_size))
        except NotImplementedError:  # a builder that computes on real tensors (regnet): a small real pass
            with torch.no_grad():
                spec.builder(weights=None, num_classes=1000).train()(torch.zeros(2, 3, image_size, image_size))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise InputSizeError(
            f"{arch} cannot take {image_size} px input: {exc}. Choose another --image-size (its ImageNet weights "
            f"use {spec.preprocessing.crop} px) or another --arch"
        ) from exc


def default_preprocessing(arch: str, image_size: int | None = None) -> Preprocessing:
    """The preprocessing of ``arch``'s ImageNet weights, optionally rescaled to ``image_size`` px crops."""
    pp = get_spec(arch).preprocessing
    return pp if image_size is None else pp.with_image_size(image_size)


def unreadable_torch_file(path: Path) -> str:
    """Say in plain words why ``torch.load`` failed on ``path``: empty, or truncated/corrupt.

    torch's own messages (pickle errors, ``failed finding central directory (105)``) mean nothing to a
    user; callers chain the raw exception for ``--debug``.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "the file is empty (0 bytes), e.g. from an interrupted download or copy"
    return f"the file ({size} bytes) is truncated or corrupt, or was not written by torch.save"


def ensure_imagenet_weights(arch: str, progress: bool = True) -> Path:
    """The cached ImageNet weights file of ``arch``, downloaded into the torch hub cache when missing.

    gcv train calls it for every arch before any work, so that a missing file of a later arch is found
    before an earlier one trains.

    Raises:
        UnknownArchError: ``arch`` is not registered.
        WeightsError: the file is not cached and cannot be downloaded (offline); the message names the file.
    """
    spec = get_spec(arch)
    cache = spec.cache_file
    if not cache.is_file():
        # downloaded here rather than by torch.hub.load_state_dict_from_url, which prints its own
        # "Downloading: ..." line to stdout whatever progress says
        logger.info("ImageNet weights for %s not in %s; downloading %s", spec.name, cache, spec.weights.url)
        match = torch.hub.HASH_REGEX.search(cache.name)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(
                spec.weights.url, str(cache), match.group(1) if match else None, progress=progress
            )
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
            raise WeightsError(
                f"cannot get ImageNet weights for {spec.name}: {exc}. Looked for the cached file {cache} "
                f"(downloaded from {spec.weights.url}). Copy that file there (or set TORCH_HOME to a folder whose "
                "hub/checkpoints/ holds it), pass --weights FILE with a torchvision state dict, or --weights none "
                "to train from scratch"
            ) from exc
    return cache


def _imagenet_state_dict(spec: ModelSpec, progress: bool) -> tuple[dict[str, torch.Tensor], str]:
    cache = ensure_imagenet_weights(spec.name, progress)
    logger.info("loading ImageNet weights for %s from the cache %s", spec.name, cache)
    try:
        state = spec.weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # torch raises many types (EOFError, UnpicklingError, RuntimeError) for a bad file
        raise WeightsError(
            f"{cache}: the cached ImageNet weights for {spec.name} cannot be loaded: {unreadable_torch_file(cache)}. "
            f"Delete it and run again to download it again from {spec.weights.url}, or put a good copy there "
            "(or pass --weights FILE, or --weights none to train from scratch)"
        ) from exc
    return state, f"imagenet:{spec.weights} ({cache.name})"


def _file_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; give a torchvision state dict saved with torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to the user
        raise WeightsError(
            f"{path}: not a loadable torch state dict: {unreadable_torch_file(path)}. Copy or download it again, "
            "or save the model's state_dict with torch.save"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path}: expected a torchvision state dict (parameter name -> tensor), got {type(state).__name__}; "
            "to continue a GarmentCV run use --resume instead"
        )
    return state, f"file:{path.resolve()}"


def _names(keys: list[str], what: str) -> str:
    shown = ", ".join(keys[:3]) + (f", ... ({len(keys) - 3} more)" if len(keys) > 3 else "")
    return f"{len(keys)} {what.replace('tensor', 'tensors') if len(keys) > 1 else what} ({shown})"


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], head: str, failure: str) -> None:
    """Load ``state`` into the 1000-class ``model``; the tensors of ``head`` may be absent (it is replaced anyway).

    Raises:
        WeightsError: a tensor outside the head is missing, a name is unexpected, or a shape differs; the message
            starts with ``failure`` and names the first tensors concerned.
    """
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ (strict=False still checks them)
        raise WeightsError(f"{failure}: {exc}") from exc
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        found = [_names(missing, "tensor missing")] if missing else []
        found += [_names(list(unexpected), "unexpected tensor")] if unexpected else []
        raise WeightsError(
            f"{failure}: {'; '.join(found)}; only the head ({head}.*) may be left out. Give a state dict of "
            "torchvision's model of this arch (torch.save(model.state_dict(), FILE)), with or without its head"
        )
    if not any(k.startswith(head + ".") for k in state):
        logger.info("the weights hold no head (%s.*): backbone only", head)


def _replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"head {head!r} is {type(old).__name__}, expected nn.Linear")
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


@dataclass
class BuiltModel:
    """A model ready to fine-tune, with where its backbone weights came from."""

    model: nn.Module
    weights_source: str


def build_model(arch: str, num_classes: int, weights: str | Path = "imagenet", progress: bool = False) -> BuiltModel:
    """Build ``arch`` at 1000 classes, load backbone weights, then replace the head for ``num_classes``.

    Args:
        arch: a name in :data:`MODELS`.
        num_classes: size of the new head's output (logits ``(N, num_classes)``), >= 2.
        weights: ``"imagenet"`` (torchvision's entry: the ``TORCH_HOME`` cache when present, else a
            download), ``"none"`` (random init, from scratch), or the path of a torchvision-format
            1000-class state dict; the head's tensors may be left out of that file (a backbone-only state dict),
            every other tensor must be there.
        progress: show torch's download progress bar on stderr (a download only; nothing else is printed).

    Raises:
        UnknownArchError: unknown ``arch``.
        WeightsError: the weights cannot be found, downloaded or loaded, or do not fit ``arch`` (a tensor outside
            the head missing, an unexpected name, a shape that differs). Never falls back to random init.
    """
    spec = get_spec(arch)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    model = spec.builder(weights=None, num_classes=1000)
    if str(weights) == "none":
        source = "none (random init)"
    else:
        if str(weights) == "imagenet":
            state, source = _imagenet_state_dict(spec, progress)
        else:
            state, source = _file_state_dict(Path(weights))
        _load_backbone(model, state, spec.head, f"weights {source} do not fit {arch}")
    _replace_head(model, spec.head, num_classes)
    logger.info("built %s for %d classes, backbone weights: %s", arch, num_classes, source)
    return BuiltModel(model, source)
