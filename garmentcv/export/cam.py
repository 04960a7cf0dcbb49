"""The ``cam`` output: class activation maps computed in the graph (torch).

A class activation map (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization", CVPR) exists for
networks whose last feature map ``F`` (``(N, D, h, w)``) is averaged over space and then fed to one linear head
``W`` (``(C, D)``), bias ``b``: the logit of class ``c`` is ``b[c] + mean over (y, x) of sum_d W[c, d] F[n, d, y,
x]``, so the map ``M[n, c, y, x] = sum_d W[c, d] F[n, d, y, x]`` says how much each position adds to class ``c``'s
logit, and its spatial mean plus ``b[c]`` is the logit itself. torchvision's resnet, regnet and efficientnet
families are built that way (a global average pooling module, a flatten, then the head, with only dropout between);
mobilenet_v3 (a second linear layer before the head) and convnext (a LayerNorm after the pooling) are not, and
:func:`cam_unavailable` says so.

:class:`WithCam` runs the network with its pooling and its head replaced by ``nn.Identity`` (the network then
returns its last feature map, flattened), restores the map's shape, pools it and applies the head, and returns
``(logits, embedding, cam)``: the same logits and the pooled embedding the ``embedding`` output carries, and the
maps at the feature map's resolution (``h = w = 7`` at 224 px for these families). The exporter proves on the traced
example that the logits equal the network's own (:func:`check_cam`) before a file is written.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from garmentcv.artifact import CAM_NAME
from garmentcv.errors import ExportError

__all__ = ["CAM_NAME", "SAME_LOGITS_TOLERANCE", "WithCam", "cam_unavailable", "check_cam"]
#: Largest difference accepted between the wrapped network's logits and the network's own on the traced example,
#: per unit of the logit scale (float32 summation order: the pooled map is summed in another order than the
#: network's pooling).
SAME_LOGITS_TOLERANCE = 1e-4


def _pool_name(network: nn.Module) -> str | None:
    """The dotted name of the network's final global average pooling (the last ``AdaptiveAvgPool2d`` to 1x1 among
    the modules, which is the top-level one in torchvision's families; squeeze-and-excitation pools come before it)."""
    found = None
    for name, module in network.named_modules():
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            found = name
    return found


#: Modules that may stand between the pooling and the head: they keep each position's features as they are.
_PASS_THROUGH = (nn.Dropout, nn.Flatten, nn.Identity)


def _between(network: nn.Module, pool: str, head: str) -> list[str]:
    """The leaf modules registered after the pooling and before the head that are not :data:`_PASS_THROUGH`, as
    ``name (Type)`` (torchvision registers its classifiers' modules in the order they run). With such a module the
    maps would be those of another layer, which a check of the logits cannot see when the last feature map is 1x1
    (small inputs)."""
    names = [name for name, _ in network.named_modules()]
    start, stop = names.index(pool), names.index(head) if head in names else len(names)
    found = []
    for name, module in list(network.named_modules())[start + 1 : stop]:
        if not list(module.children()) and not isinstance(module, _PASS_THROUGH):
            found.append(f"{name} ({type(module).__name__})")
    return found


def _replace(network: nn.Module, dotted: str, module: nn.Module) -> nn.Module:
    parent_name, _, attr = dotted.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    old = getattr(parent, attr)
    setattr(parent, attr, module)
    return old


class WithCam(nn.Module):
    """``network`` returning ``(logits (N, C), embedding (N, D), cam (N, C, h, w))`` (Zhou et al. 2016).

    Args:
        network: a classifier ending in global average pooling, a flatten and the ``nn.Linear`` at ``head``
            (not changed: a copy is taken).
        head: the head's dotted name, e.g. ``fc`` or ``classifier.1``.
        image_size: the input side the file is exported at, px (fixes ``h`` and ``w``).

    Raises:
        ExportError: no global average pooling, ``head`` is not an ``nn.Linear``, or the network does not end in
            pooling, flatten and head: layers other than dropout and flatten between them (see
            :func:`cam_unavailable`).
    """

    def __init__(self, network: nn.Module, head: str, image_size: int) -> None:
        super().__init__()
        pool = _pool_name(network)
        if pool is None:
            raise ExportError("the network has no global average pooling module, so it has no class activation maps")
        extra = _between(network, pool, head)
        if extra:
            raise ExportError(f"layers between the pooling ({pool!r}) and the head ({head!r}) need the pooled "
                              f"features ({', '.join(extra)}), so the network has no class activation maps")
        features = copy.deepcopy(network).eval()
        linear = _replace(features, head, nn.Identity())
        if not isinstance(linear, nn.Linear):
            raise ExportError(f"the head {head!r} is {type(linear).__name__}, not nn.Linear: no class activation maps")
        _replace(features, pool, nn.Identity())
        with torch.inference_mode():
            try:
                flat = features(torch.zeros(1, 3, image_size, image_size))
            except RuntimeError as exc:  # a layer between the pooling and the head expects the pooled width
                raise ExportError(f"layers between the pooling ({pool!r}) and the head ({head!r}) need the pooled "
                                  f"features, so the network has no class activation maps ({exc})") from exc
        width = linear.in_features
        if flat.ndim != 2 or flat.shape[1] % width:
            raise ExportError(f"without its pooling the network returns {tuple(flat.shape)}, not a flattened map of "
                              f"{width} channels: no class activation maps")
        side = round((flat.shape[1] // width) ** 0.5)
        if side * side * width != flat.shape[1]:
            raise ExportError(f"the last feature map of {flat.shape[1] // width} positions is not square: no class "
                              "activation maps")
        self.features = features
        self.head = linear
        self.map_shape = (width, side, side)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.features(x).reshape(-1, *self.map_shape)
        embedding = fmap.mean(dim=(2, 3))
        cam = torch.einsum("ndyx,cd->ncyx", fmap, self.head.weight)
        return self.head(embedding), embedding, cam


@torch.inference_mode()
def check_cam(network: nn.Module, wrapped: WithCam, example: torch.Tensor, arch: str) -> float:
    """Refuse a :class:`WithCam` whose logits differ from ``network``'s on ``example``, or whose maps do not average
    to the logits (less the bias), beyond :data:`SAME_LOGITS_TOLERANCE` of the logit scale; return the largest
    difference.

    Raises:
        ExportError: they differ; the message names the arch.
    """
    network.eval(), wrapped.eval()
    expected = network(example)
    logits, _, cam = wrapped(example)
    scale = max(1.0, float(expected.abs().max()))
    from_maps = cam.mean(dim=(2, 3)) + wrapped.head.bias if wrapped.head.bias is not None else cam.mean(dim=(2, 3))
    worst = max(float((logits - expected).abs().max()), float((from_maps - expected).abs().max()))
    if logits.shape != expected.shape or worst > SAME_LOGITS_TOLERANCE * scale:
        raise ExportError(f"{arch}: the class activation maps do not add up to the network's logits (largest "
                          f"difference {worst:.3g}): it does not end in global average pooling and a linear head; "
                          "export without --cam")
    return worst


def cam_unavailable(network: nn.Module, head: str, image_size: int, arch: str) -> str | None:
    """``None`` when ``network`` has class activation maps at ``image_size``, else why not (for messages)."""
    try:
        wrapped = WithCam(network, head, image_size)
        example = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        check_cam(network, wrapped, example, arch)
    except ExportError as exc:
        return str(exc)
    return None
