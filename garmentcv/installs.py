"""Which onnxruntime wheel is installed, and the one packaging conflict users hit (standard library only).

onnxruntime (CPU) and onnxruntime-gpu install the same ``onnxruntime`` import package; with both wheels
present, whichever was installed last owns the shared files, and the CUDA execution provider may be missing
(onnxruntime's install docs: uninstall onnxruntime before installing onnxruntime-gpu,
https://onnxruntime.ai/docs/install/). GarmentCV therefore ships the runtime as alternative extras,
``garmentcv[cpu]`` or ``garmentcv[gpu]``, and says so when it finds none or both. Every "install this extra"
message names the command for this install (:func:`pip_install`).
"""

from __future__ import annotations

import functools
import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from garmentcv.errors import GarmentCVError

CPU_DIST = "onnxruntime"
GPU_DIST = "onnxruntime-gpu"
#: How to leave only the GPU runtime installed when both wheels are.
RUNTIME_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"


class MissingRuntimeError(GarmentCVError, ImportError):
    """No onnxruntime wheel is installed."""


def installed_version(dist: str) -> str | None:
    """The installed version of the distribution ``dist`` (e.g. ``onnxruntime-gpu``), or ``None``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def install_source() -> str:
    """Where this install of GarmentCV came from, as pip takes it before ``[extras]``: the checkout's absolute path
    when the package runs from one (an editable install) or was installed from a local folder (pip's
    ``direct_url.json``), else the name ``garmentcv`` (a wheel from an index)."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return str(checkout)
    try:
        direct = json.loads(metadata.distribution("garmentcv").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        direct = {}
    parsed = urlparse(str(direct.get("url", "")))
    if parsed.scheme == "file" and "dir_info" in direct and Path(unquote(parsed.path)).is_dir():
        return unquote(parsed.path)
    return "garmentcv"


def pip_install(extras: str) -> str:
    """The command that adds the extras ``extras`` (comma-separated, e.g. ``"train,cpu"``) to this install:
    ``pip install '<source>[extras]'`` with :func:`install_source`, so it works from any folder."""
    return f"pip install '{install_source()}[{extras}]'"


def runtime_conflict() -> str | None:
    """A sentence naming the conflict and its fix when both onnxruntime wheels are installed, else ``None``."""
    cpu, gpu = installed_version(CPU_DIST), installed_version(GPU_DIST)
    if cpu is None or gpu is None:
        return None
    return (
        f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed, and side by side the CPU package can "
        f"hide the CUDA provider; keep only the GPU one: {RUNTIME_FIX} (or, for the CPU only, "
        "pip uninstall -y onnxruntime-gpu)"
    )


def require_onnxruntime() -> str:
    """Return the installed runtime's distribution name (``onnxruntime-gpu`` or ``onnxruntime``).

    Raises:
        MissingRuntimeError: neither is installed; the message says which extra to install.
    """
    for dist in (GPU_DIST, CPU_DIST):
        if installed_version(dist) is not None:
            return dist
    raise MissingRuntimeError(
        f"onnxruntime is not installed; install one runtime: {pip_install('cpu')} (CPU) or "
        f"{pip_install('gpu')} (CUDA, onnxruntime-gpu), never both"
    )


def require_torch() -> None:
    """Refuse, with the extra to install, a torch command (gcv train, gcv export) on an install without torch.

    Raises:
        MissingRuntimeError: torch is not installed.
    """
    if installed_version("torch") is None:
        raise MissingRuntimeError(
            "gcv train and gcv export need torch, which this install lacks; install the training extra with one "
            f"runtime: {pip_install('train,cpu')} (or {pip_install('train,gpu')})"
        )
