"""Model-only timings: one batch of preprocessed input through PyTorch eager or an onnxruntime session.

Input is a fixed random ``float32 (N, 3, S, S)`` batch (the speed of these models does not depend on the
values). Decoding and preprocessing are excluded here; :mod:`benchmarks.end_to_end` includes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.timing import Timing, time_call
from garmentcv.artifact import INPUT_NAME, OUTPUT_NAME

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class TimingPlan:
    """How long to time each configuration: ``warmup`` untimed runs, then at least ``min_repeats`` timed
    runs and more until ``budget_s`` s of timed runs (at most ``max_repeats``)."""

    warmup: int = 2
    min_repeats: int = 5
    budget_s: float = 1.0
    max_repeats: int = 200


def cpu_threads() -> int:
    """CPUs this process may use (the runtimes' thread count in every benchmark)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def random_batch(batch_size: int, image_size: int, seed: int = 0) -> np.ndarray:
    """``float32 (batch_size, 3, image_size, image_size)``, standard normal (like a normalised image)."""
    return np.random.default_rng(seed).standard_normal((batch_size, 3, image_size, image_size), dtype=np.float32)


def time_eager(model: torch.nn.Module, batch: np.ndarray, plan: TimingPlan) -> Timing:
    """PyTorch eager as a plain script runs it: ``model.eval()``, ``torch.inference_mode()``, FP32,
    NCHW, torch's default threads set to :func:`cpu_threads`."""
    torch.set_num_threads(cpu_threads())
    x = torch.from_numpy(batch)
    model = model.eval()

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return time_call(run, len(batch), plan.warmup, plan.min_repeats, plan.budget_s, plan.max_repeats)


def open_session(
    path: Path, provider: str = CPU, threads: int | None = None, spinning: bool = True
) -> ort.InferenceSession:
    """An onnxruntime session with explicit settings, for comparing settings (the model-only rows use
    gcv classify's own session instead): ``threads`` intra-op threads (default :func:`cpu_threads`).

    Args:
        spinning: let idle intra-op threads spin (onnxruntime's default); ``False`` makes them sleep.

    Raises:
        RuntimeError: ``provider`` is not the one the session ended up using (e.g. CUDA could not start).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    providers = [provider] if provider == CPU else [provider, CPU]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"onnxruntime could not start {provider}; it runs on {session.get_providers()}")
    return session


def time_session(session: ort.InferenceSession, batch: np.ndarray, plan: TimingPlan) -> Timing:
    """Time ``session.run`` on ``batch`` (host memory in and out, as ``gcv classify`` calls it)."""
    feed = {INPUT_NAME: batch}
    return time_call(lambda: session.run([OUTPUT_NAME], feed), len(batch), plan.warmup, plan.min_repeats,
                     plan.budget_s, plan.max_repeats)


def cuda_available() -> bool:
    """True when onnxruntime offers the CUDA execution provider (onnxruntime-gpu installed)."""
    return CUDA in ort.get_available_providers()
