"""The FP32 ceiling: a model's FLOPs per image and the best FP32 matmul rate of this machine.

No FP32 implementation of a model runs faster than ``best matmul FLOP/s / model FLOPs per image`` images/s
on the same cores: convolutions lower to matrix products at best as efficient as a large square GEMM.
FLOPs are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add = 2
FLOPs, counting convolutions and matrix products, the bulk of a CNN's work; element-wise ops are not
counted, which makes the ceiling a little higher, i.e. more forgiving, than the true one).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from garmentcv.models import build_model

#: Matrix sizes (n x n times n x n) tried for the best matmul rate.
MATMUL_SIZES: tuple[int, ...] = (256, 512, 1024, 2048)


@dataclass(frozen=True)
class MatmulRate:
    """The best FP32 matmul rate measured.

    Attributes:
        gflops: best rate over every size and library, GFLOP/s (2 n^3 FLOPs per n x n product).
        library: ``torch`` or ``numpy``, whichever gave it.
        size: the n that gave it.
        per_size: ``(library, n, GFLOP/s)`` for every size tried (the best of the repeats of each).
    """

    gflops: float
    library: str
    size: int
    per_size: tuple[tuple[str, int, float], ...]


def count_flops(arch: str, image_size: int, num_classes: int = 2) -> int:
    """FLOPs of one forward pass of ``arch`` on one ``(1, 3, image_size, image_size)`` image (random init)."""
    model = build_model(arch, num_classes, weights="none").model.eval()
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def _best_seconds(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def best_matmul_rate(
    sizes: Sequence[int] = MATMUL_SIZES, budget_s: float = 0.5, threads: int | None = None
) -> MatmulRate:
    """Measure FP32 ``n x n @ n x n`` with torch and numpy for each ``n`` in ``sizes``; keep the fastest.

    Each size is run for about ``budget_s`` s (at least 3 repeats) and its best run kept, then the best over
    sizes and libraries. Uses ``threads`` torch threads (default: torch's current setting); numpy uses its
    BLAS's own threading.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    results: list[tuple[str, int, float]] = []
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        flops = 2.0 * n**3
        # a @ b with this iteration's operands bound (each timing runs before the next iteration)
        numpy_matmul = partial(operator.matmul, a, b)
        one = _best_seconds(numpy_matmul, 1)
        repeats = max(3, int(budget_s / max(one, 1e-6)))
        results.append(("numpy", n, flops / _best_seconds(numpy_matmul, repeats) / 1e9))
        torch_matmul = partial(operator.matmul, torch.from_numpy(a), torch.from_numpy(b))
        with torch.inference_mode():
            results.append(("torch", n, flops / _best_seconds(torch_matmul, repeats) / 1e9))
    library, size, gflops = max(results, key=lambda r: r[2])
    return MatmulRate(gflops=gflops, library=library, size=size, per_size=tuple(results))


def ceiling_images_per_second(flops_per_image: int, rate: MatmulRate) -> float:
    """Images/s no FP32 implementation can beat on this machine: best FLOP/s / FLOPs per image."""
    return rate.gflops * 1e9 / flops_per_image
