"""The uint8 input of format-2 model files: pixels in, normalisation inside the graph (torch).

A format-2 file (:data:`garmentcv.artifact.INPUT_UINT8`) takes the RGB ``uint8`` crops of
:func:`garmentcv.image.load_crop` as they are, ``(N, H, W, 3)``; :class:`Uint8Input` puts the work that
:func:`garmentcv.image.normalize` does in Python in front of the network, with the same float32 constants and
the same operations in the same order (``x * (1 / (255 std)) - mean / std``), so the traced graph computes
the very input a float32 file would be given, and PyTorch's reference logits in export's parity gate are
those of the same wrapped module on the same uint8 crops.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from garmentcv.image import Preprocessing


def normalisation_constants(pp: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)``, float32 ``(3,)`` each: ``1 / (255 std)`` and ``mean / std``, as
    :func:`garmentcv.image.normalize`."""
    std = np.asarray(pp.std, dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    offset = (np.asarray(pp.mean, dtype=np.float64) / std).astype(np.float32)
    return scale, offset


class Uint8Input(nn.Module):
    """``network`` behind the preprocessing of :func:`garmentcv.image.normalize`, taking uint8 NHWC crops.

    ``forward``: uint8 ``(N, H, W, 3)`` -> ``network``'s output for float32 ``(N, 3, H, W)``
    ``x * scale - offset`` per channel (channels last to channels first first).
    """

    def __init__(self, network: nn.Module, pp: Preprocessing) -> None:
        super().__init__()
        self.network = network
        scale, offset = normalisation_constants(pp)
        self.register_buffer("scale", torch.from_numpy(scale).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", torch.from_numpy(offset).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        return self.network(x * self.scale - self.offset)
