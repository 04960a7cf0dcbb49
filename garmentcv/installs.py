"""Which onnxruntime wheel is installed, and the one packaging conflict users hit (standard library only).

onnxruntime (CPU) and onnxruntime-gpu install the same ``onnxruntime`` import package; with both wheels
present, whichever was installed last owns the shared files, and the CUDA execution provider may be missing
(onnxruntime's install docs: "uninstall onnxruntime before installing onnxruntime-gpu",
https://onnxruntime.ai/docs/install/). GarmentCV therefore ships the runtime as alternative extras,
``garmentcv[cpu]`` or ``garmentcv[gpu]``, and says so when it finds none or both.
"""

from __future__ import annotations

from importlib import metadata

from garmentcv.errors import GarmentCVError

CPU_DIST = "onnxruntime"
GPU_DIST = "onnxruntime-gpu"


class MissingRuntimeError(GarmentCVError, ImportError):
    """No onnxruntime wheel is installed."""


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def runtime_conflict() -> str | None:
    """A message naming the conflict and its fix when both onnxruntime wheels are installed, else ``None``."""
    if _installed(CPU_DIST) and _installed(GPU_DIST):
        return (
            "both onnxruntime and onnxruntime-gpu are installed; they share one import package and the CUDA "
            "provider may then be missing. Keep one: for the GPU, 'pip uninstall -y onnxruntime onnxruntime-gpu "
            "&& pip install onnxruntime-gpu'; for the CPU only, 'pip uninstall -y onnxruntime-gpu'"
        )
    return None


def require_onnxruntime() -> str:
    """Return the installed runtime's distribution name (``onnxruntime`` or ``onnxruntime-gpu``).

    Raises:
        MissingRuntimeError: neither is installed; the message says which extra to install.
    """
    for dist in (GPU_DIST, CPU_DIST):
        if _installed(dist):
            return dist
    raise MissingRuntimeError(
        "onnxruntime is not installed; install one runtime: pip install 'garmentcv[cpu]' (CPU) or "
        "pip install 'garmentcv[gpu]' (CUDA, onnxruntime-gpu), never both"
    )
