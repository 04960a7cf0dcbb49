"""An onnxruntime session on the chosen execution provider, with the model's self-description.

Provider choice: ``cpu`` always works; ``cuda`` must really run (onnxruntime-gpu installed, the CUDA provider
created and one warm-up batch run) or it is an error, never a silent fallback; ``auto`` tries CUDA when
onnxruntime offers it and otherwise, or when it fails, uses the CPU. The provider in use is logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from garmentcv.artifact import INPUT_NAME, OUTPUT_NAME, ModelInfo
from garmentcv.errors import GarmentCVError, ModelFileError

logger = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda")
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


class ProviderError(GarmentCVError, RuntimeError):
    """An execution provider was asked for explicitly but cannot run here."""


@dataclass(frozen=True)
class LoadedModel:
    """An open ONNX model ready for batches.

    Attributes:
        path: the model file.
        info: its GarmentCV self-description (classes, preprocessing, ...).
        provider: ``cpu`` or ``cuda``, the provider that runs it.
        session: the onnxruntime session.
    """

    path: Path
    info: ModelInfo
    provider: str
    session: ort.InferenceSession

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch: ``float32 (N, 3, H, W)`` normalised input -> ``float32 (N, C)`` logits, class order."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def _session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning, leaving the cores to the decoding threads between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _create(path: Path, providers: list[str], threads: int | None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=_session_options(threads), providers=providers)
    except Exception as exc:  # onnxruntime raises its own unrelated types (Fail, InvalidProtobuf, ...)
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc}); export it again with gcv-export") from exc


def _check_graph(session: ort.InferenceSession, info: ModelInfo, path: Path) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise ModelFileError(
            f"{path}: graph has inputs {inputs} and outputs {outputs}, expected input {INPUT_NAME!r} and output "
            f"{OUTPUT_NAME!r}; export the model with gcv-export"
        )
    width = session.get_outputs()[outputs.index(OUTPUT_NAME)].shape[-1]
    if isinstance(width, int) and width != len(info.classes):
        raise ModelFileError(
            f"{path}: output has {width} logits but the metadata lists {len(info.classes)} classes; export it again"
        )


def _cuda_session(path: Path, info: ModelInfo, threads: int | None) -> ort.InferenceSession:
    """A session whose first provider is CUDA and which has run one batch. Raises ProviderError otherwise."""
    if _CUDA not in ort.get_available_providers():
        raise ProviderError(
            f"onnxruntime {ort.__version__} offers {ort.get_available_providers()}, not CUDA; "
            "install onnxruntime-gpu instead of onnxruntime (pip install 'garmentcv[gpu]') or use --provider cpu"
        )
    session = _create(path, [_CUDA, _CPU], threads)
    if session.get_providers()[0] != _CUDA:
        raise ProviderError(
            "onnxruntime could not start its CUDA provider (see its messages above: CUDA or cuDNN libraries, "
            "driver); use --provider cpu"
        )
    size = info.preprocessing.crop
    try:
        session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros((1, 3, size, size), np.float32)})
    except Exception as exc:  # any failure of the warm-up run means CUDA does not really work
        raise ProviderError(f"the CUDA provider failed on a warm-up batch ({exc}); use --provider cpu") from exc
    return session


def open_model(path: Path, provider: str = "auto", threads: int | None = None) -> LoadedModel:
    """Open a GarmentCV ONNX file on ``provider`` (``auto``, ``cpu`` or ``cuda``).

    Args:
        path: the ``.onnx`` file written by ``gcv-export``.
        provider: see the module docstring.
        threads: intra-op CPU threads; ``None`` uses every core (``os.cpu_count()``).

    Raises:
        ModelFileError: the file is missing, unreadable, without GarmentCV metadata, or of another graph shape.
        ProviderError: ``cuda`` asked for but it cannot run.
    """
    path = Path(path)
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if not path.is_file():
        raise ModelFileError(
            f"{path}: model file not found; export one with 'gcv-export CHECKPOINT --out {path}' or pass --model FILE"
        )
    cpu_session = _create(path, [_CPU], threads)
    info = ModelInfo.from_metadata(cpu_session.get_modelmeta().custom_metadata_map, source=str(path))
    _check_graph(cpu_session, info, path)
    session, used = cpu_session, "cpu"
    if provider == "cuda":
        session, used = _cuda_session(path, info, threads), "cuda"
    elif provider == "auto" and _CUDA in ort.get_available_providers():
        try:
            session, used = _cuda_session(path, info, threads), "cuda"
        except ProviderError as exc:
            logger.warning("CUDA is not usable, classifying on the CPU: %s", exc)
    if used == "cuda":
        del cpu_session
    logger.info(
        "model %s: %s, %d classes %s, input %d px, %s; provider %s (%s threads)",
        path, info.arch, len(info.classes), list(info.classes), info.preprocessing.crop, info.precision,
        used, "GPU" if used == "cuda" else (threads or os.cpu_count()),
    )
    return LoadedModel(path=path, info=info, provider=used, session=session)
