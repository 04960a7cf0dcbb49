"""Time a callable: warm-up, then repeated runs until a minimum count and a time budget are both reached."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Repeated wall-clock timings of one batch.

    Attributes:
        seconds: every timed run, s, in the order run.
        batch_size: images per run.
    """

    seconds: tuple[float, ...]
    batch_size: int

    @property
    def median_ms(self) -> float:
        """Median latency of one batch, ms."""
        return statistics.median(self.seconds) * 1e3

    @property
    def p90_ms(self) -> float:
        """90th percentile latency of one batch, ms (nearest rank: exact for 10+ runs, the max for fewer)."""
        ordered = sorted(self.seconds)
        rank = max(0, -(-9 * len(ordered) // 10) - 1)  # ceil(0.9 n) - 1
        return ordered[rank] * 1e3

    @property
    def images_per_second(self) -> float:
        """Throughput at the median latency, images/s."""
        return self.batch_size / statistics.median(self.seconds)

    @property
    def repeats(self) -> int:
        """Timed runs."""
        return len(self.seconds)


def time_call(
    fn: Callable[[], object],
    batch_size: int,
    warmup: int = 2,
    min_repeats: int = 5,
    budget_s: float = 2.0,
    max_repeats: int = 200,
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then time it until ``min_repeats`` runs and ``budget_s`` s are done.

    At least ``min_repeats`` and at most ``max_repeats`` timed runs; the budget only adds runs to fast calls,
    so a slow configuration still gets ``min_repeats`` (a full run's length is bounded by choosing them).

    Args:
        fn: one batch of work (its result is discarded).
        batch_size: images per call, for the throughput.
        warmup: untimed calls first (first-run allocation, kernel selection, caches).
        min_repeats: timed calls at least (>= 1).
        budget_s: keep timing until this many seconds of timed calls have passed, s.
        max_repeats: timed calls at most.
    """
    if min_repeats < 1 or max_repeats < min_repeats:
        raise ValueError(f"need 1 <= min_repeats <= max_repeats, got {min_repeats}, {max_repeats}")
    for _ in range(warmup):
        fn()
    seconds: list[float] = []
    spent = 0.0
    while len(seconds) < min_repeats or (spent < budget_s and len(seconds) < max_repeats):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        seconds.append(elapsed)
        spent += elapsed
    return Timing(tuple(seconds), batch_size)
