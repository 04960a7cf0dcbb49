"""The ``embedding`` output: a classifier that also returns the pooled features its head takes (torch).

Every registered architecture ends in one ``nn.Linear`` head (:attr:`garmentcv.models.registry.ModelSpec.head`)
applied to pooled, flattened features. :class:`WithEmbedding` runs the network with that head replaced by
``nn.Identity`` (which yields those features, float32 ``(N, D)``), then the head itself on them, and returns
``(logits, embedding)``; the logits are the network's own, which :func:`check_same_logits` proves on the traced
example before a file is written.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from garmentcv.errors import ExportError


class WithEmbedding(nn.Module):
    """``network`` returning ``(logits (N, C), embedding (N, D))``; ``embedding`` is the input of its head.

    Args:
        network: a classifier whose last operation is the ``nn.Linear`` at dotted name ``head`` (not changed:
            a copy is taken).
        head: the head's dotted name, e.g. ``fc`` or ``classifier.1``.

    Raises:
        ExportError: ``head`` is not an ``nn.Linear`` of ``network``.
    """

    def __init__(self, network: nn.Module, head: str) -> None:
        super().__init__()
        features = copy.deepcopy(network)
        parent_name, _, attr = head.rpartition(".")
        parent = features.get_submodule(parent_name) if parent_name else features
        linear = getattr(parent, attr, None)
        if not isinstance(linear, nn.Linear):
            raise ExportError(f"the head {head!r} is {type(linear).__name__}, not nn.Linear: no embedding output")
        setattr(parent, attr, nn.Identity())
        self.features = features
        self.head = linear

    @property
    def dim(self) -> int:
        """``D``, the embedding's width (the head's ``in_features``)."""
        return int(self.head.in_features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(x)
        return self.head(embedding), embedding


@torch.inference_mode()
def check_same_logits(network: nn.Module, wrapped: nn.Module, example: torch.Tensor, arch: str) -> None:
    """Refuse a wrapped model whose logits differ from ``network``'s on ``example`` (a head that is not the
    network's last operation), beyond float32 reordering (1e-5 of the logit scale).

    Raises:
        ExportError: they differ; the message names the arch.
    """
    network.eval(), wrapped.eval()
    expected = network(example)
    logits = wrapped(example)[0]
    scale = max(1.0, float(expected.abs().max()))
    if logits.shape != expected.shape or float((logits - expected).abs().max()) > 1e-5 * scale:
        raise ExportError(f"{arch}: its head is not the last operation of the network, so its input is not the "
                          "pooled embedding; export without --embedding")
