"""The unknown score as a torch module, so that an exported ONNX file computes it inside the graph.

:class:`UnknownScore` computes exactly :func:`garmentcv.unknowns.scores.score` (same definitions, same reference
arrays, float32 instead of float64) with operators torch's ONNX exporter (``torch.onnx.export(dynamo=True)``)
writes at opset 18: MatMul, TopK, ReduceMax/Min, ReduceLogSumExp-style arithmetic, Sqrt. Every runtime that runs
the file then gives the same score.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from garmentcv.unknowns import scores


class UnknownScore(nn.Module):
    """``(logits (N, C), embedding (N, D)) -> score (N,)`` float32, higher = more likely none of the classes.

    The reference arrays become float32 buffers (saved in a ``state_dict``, exported as initialisers). For
    ``mahalanobis`` the module keeps the whitened class means and ``L`` with ``L @ L.T = precision``
    (:func:`garmentcv.unknowns.scores.whitening`), the same arithmetic as the numpy score.

    Args:
        method: one of :data:`garmentcv.unknowns.scores.METHODS`.
        reference: what :func:`garmentcv.unknowns.scores.fit_reference` returned for ``method``.
        temperature: the model's fitted temperature ``T > 0`` (used by ``msp`` and ``energy``).

    Raises:
        ValueError: unknown method, a reference without the method's keys, or a temperature that is not positive.
    """

    def __init__(self, method: str, reference: dict[str, np.ndarray], temperature: float = 1.0) -> None:
        super().__init__()
        if method not in scores.METHODS:
            raise ValueError(f"unknown score method {method!r}; choose one of {', '.join(scores.METHODS)}")
        if not (temperature > 0 and np.isfinite(temperature)):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        missing = [key for key in scores.REFERENCE_KEYS[method] if key not in reference]
        if missing:
            raise ValueError(f"the {method} reference lacks {', '.join(missing)}; fit it with fit_reference")
        self.method = method
        self.temperature = float(temperature)
        self.k = 0

        def buffer(name: str, value: np.ndarray) -> None:
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

        if method == "knn":
            buffer("bank_t", np.asarray(reference["bank"]).T)  # (D, M)
            self.k = int(reference["k"])
        elif method == "mahalanobis":
            lower = scores.whitening(reference["precision"])
            buffer("whitening", lower)
            buffer("means", np.asarray(reference["means"], dtype=np.float64) @ lower)
        elif method == "vim":
            buffer("origin", reference["origin"])
            buffer("residual_basis", reference["residual_basis"])
            self.alpha = float(reference["alpha"])

    def forward(self, logits: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` float32 of ``logits`` ``(N, C)`` and ``embedding`` ``(N, D)`` (unused by ``msp``,
        ``energy`` and ``maxlogit``)."""
        logits = logits.float()
        if self.method == "msp":
            scaled = logits / self.temperature
            return -torch.exp(scaled.max(dim=1).values - torch.logsumexp(scaled, dim=1))
        if self.method == "energy":
            return -self.temperature * torch.logsumexp(logits / self.temperature, dim=1)
        if self.method == "maxlogit":
            return -logits.max(dim=1).values
        x = embedding.float()
        if self.method == "knn":
            unit = x / torch.clamp(torch.linalg.vector_norm(x, dim=1, keepdim=True), min=1e-12)
            similarity = unit @ self.bank_t  # (N, M)
            kth = torch.topk(similarity, self.k, dim=1).values[:, self.k - 1]
            return torch.sqrt(torch.clamp(2.0 - 2.0 * kth, min=0.0))
        if self.method == "mahalanobis":
            projected = x @ self.whitening  # (N, D)
            return ((projected[:, None, :] - self.means[None, :, :]) ** 2).sum(dim=2).min(dim=1).values
        residual = (x - self.origin) @ self.residual_basis
        return self.alpha * torch.linalg.vector_norm(residual, dim=1) - torch.logsumexp(logits, dim=1)
