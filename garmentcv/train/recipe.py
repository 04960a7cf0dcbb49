"""The fine-tuning recipe's parts as small functions: the learning-rate curve, parameter groups, the loss,
early stopping and the remedies for imbalanced classes. Each is off, or at the original recipe, by default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn


def lr_factor(epoch: int, gamma: float, warmup_epochs: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` (1-based).

    Without warm-up, epoch ``e`` trains at ``gamma ** (e - 1)`` (the original ExponentialLR recipe). With
    ``warmup_epochs = N``, epochs ``e <= N`` rise linearly, ``e / (N + 1)``, and the decay starts after them:
    ``gamma ** (e - 1 - N)`` for ``e > N``.
    """
    if epoch <= warmup_epochs:
        return epoch / (warmup_epochs + 1)
    return float(gamma ** (epoch - 1 - warmup_epochs))


def _in_head(name: str, head: str) -> bool:
    return name == head or name.startswith(head + ".")


def make_optimizer(
    model: nn.Module, head: str, lr: float, weight_decay: float, backbone_lr_factor: float, decay_norm_bias: bool
) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters in groups, each with ``lr_factor`` (its share of the base lr).

    The head (dotted name ``head``) trains at ``lr``, the backbone at ``lr * backbone_lr_factor``. Without
    ``decay_norm_bias``, one-dimensional parameters (normalisation weights and biases, every bias) get no weight
    decay. With the defaults (factor 1, decay everything) there is one group, as in the original recipe.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        factor = 1.0 if _in_head(name, head) else backbone_lr_factor
        decay = 0.0 if (not decay_norm_bias and param.ndim <= 1) else weight_decay
        groups.setdefault((factor, decay), []).append(param)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr * f, "lr_factor": f, "weight_decay": d} for (f, d), ps in groups.items()],
        lr=lr,
        weight_decay=weight_decay,
    )


def set_epoch_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    """Set every group's lr to ``base_lr * factor * group['lr_factor']`` (1 when absent, as in older last.pt)."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor * group.get("lr_factor", 1.0)


def set_backbone_trainable(model: nn.Module, head: str, trainable: bool) -> None:
    """Freeze (``requires_grad=False``) or unfreeze every parameter outside ``head``.

    Frozen parameters get no gradient, so AdamW leaves them exactly as they are (no step, no weight decay).
    """
    for name, param in model.named_parameters():
        if not _in_head(name, head):
            param.requires_grad_(trainable)


def make_criterion(label_smoothing: float, weight: torch.Tensor | None) -> nn.CrossEntropyLoss:
    """The training loss: cross-entropy with ``label_smoothing`` and per-class ``weight`` (``(C,)`` or None)."""
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


def outlier_exposure_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy from the uniform distribution to ``softmax(logits)`` of ``(M, C)`` logits of other images.

    ``-(1/C) sum_c log softmax(z)_c = logsumexp(z) - mean_c z_c`` per image; ``log C`` for a uniform prediction,
    its minimum. Outlier exposure (Hendrycks, Mazeika and Dietterich 2019, "Deep Anomaly Detection with Outlier
    Exposure", ICLR, section 3) adds ``lambda`` times this to the classification loss of each batch.
    """
    logits = logits.float()
    return (torch.logsumexp(logits, dim=1) - logits.mean(dim=1)).mean()


def class_weights(counts: Sequence[int]) -> list[float]:
    """Per-class loss weights ``n / (C * n_c)`` from training counts ``n_c`` (``n`` their sum, ``C`` classes).

    A class without training images gets the weight of a class with one.
    """
    n, c = sum(counts), len(counts)
    return [n / (c * max(k, 1)) for k in counts]


def sampler_weights(targets: Sequence[int]) -> list[float]:
    """Per-image sampling weights ``1 / n_c`` (``n_c``: images of that image's class), so each class is drawn
    equally."""
    counts = Counter(targets)
    return [1.0 / counts[t] for t in targets]


def early_stop(values: Sequence[float], patience: int, higher_is_better: bool) -> bool:
    """Whether to stop after the epochs whose metric is ``values`` (epoch 1 first).

    Stops when the best value (the first epoch that reached it; equal is not better) is ``patience`` or more
    epochs old. ``patience`` 0 never stops.
    """
    if patience < 1 or not values:
        return False
    key = (lambda i: values[i]) if higher_is_better else (lambda i: -values[i])
    best = max(range(len(values)), key=key)  # max returns the first maximal index
    return len(values) - 1 - best >= patience
