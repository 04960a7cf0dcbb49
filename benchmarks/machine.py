"""What machine a figure was measured on (standard library; versions of the numeric libraries when present)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: ISA flags that decide which kernels the runtimes can use (FP32 FMA width, INT8 dot products, BF16).
ISA_FLAGS: tuple[str, ...] = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "amx_tile", "amx_int8", "amx_bf16",
)
_PACKAGES: tuple[str, ...] = (
    "garmentcv",
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "numpy",
    "pillow",
)


@dataclass(frozen=True)
class MachineInfo:
    """The machine and software a benchmark ran on.

    Attributes:
        cpu_model: the CPU's model name (``/proc/cpuinfo``), or ``platform.processor()``.
        logical_cpus: CPUs this process may run on (``os.sched_getaffinity``), the cores the runtimes use.
        isa: which of :data:`ISA_FLAGS` the CPU reports.
        memory_gb: total memory, GB (``/proc/meminfo``), 0 when unknown.
        load_avg: 1, 5 and 15 minute load averages when the record was taken (a busy machine skews timings).
        python: Python version.
        platform: ``platform.platform()``.
        versions: installed versions of the relevant packages (absent ones omitted).
        gpu: the CUDA device name when torch sees one, else ``""``.
    """

    cpu_model: str
    logical_cpus: int
    isa: tuple[str, ...]
    memory_gb: float
    load_avg: tuple[float, float, float]
    python: str
    platform: str
    versions: dict[str, str] = field(default_factory=dict)
    gpu: str = ""

    def summary(self) -> str:
        """One line for every CSV row, e.g. ``AMD EPYC; 2 CPUs; avx2 avx512f avx512_vnni; torch 2.14.1 ...``."""
        versions = " ".join(
            f"{k} {v}" for k, v in self.versions.items() if k in ("torch", "onnxruntime", "onnxruntime-gpu", "numpy")
        )
        gpu = f"; GPU {self.gpu}" if self.gpu else ""
        return f"{self.cpu_model}; {self.logical_cpus} CPUs; {' '.join(self.isa) or 'no AVX2'}; {versions}{gpu}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form."""
        return asdict(self)


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def _memory_gb(path: Path = Path("/proc/meminfo")) -> float:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1e6, 1)
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def cuda_device_name() -> str:
    """The first CUDA device's name as torch sees it, or ``""`` (no torch, no CUDA)."""
    try:
        import torch
    except ImportError:
        return ""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def machine_info() -> MachineInfo:
    """Describe this machine now (reads /proc; the load average is taken at the call)."""
    model, flags = _cpuinfo()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        load = tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        load = (0.0, 0.0, 0.0)
    return MachineInfo(
        cpu_model=model,
        logical_cpus=cpus,
        isa=tuple(f for f in ISA_FLAGS if f in flags),
        memory_gb=_memory_gb(),
        load_avg=load,  # type: ignore[arg-type]
        python=sys.version.split()[0],
        platform=platform.platform(),
        versions=_versions(),
        gpu=cuda_device_name(),
    )
