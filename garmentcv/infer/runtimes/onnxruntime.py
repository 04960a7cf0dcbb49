"""An onnxruntime session on the chosen execution provider, with the model's self-description.

Provider choice: ``cpu`` always works; ``cuda`` must really run (onnxruntime-gpu installed, the CUDA provider
created and one warm-up batch run) or it is an error, never a silent fallback; ``auto`` tries CUDA when
onnxruntime offers it and otherwise, or when it fails, uses the CPU, with a warning that names the cause. The
model file is first opened on the CPU, so a failure that comes only with CUDA is a provider problem
(:class:`ProviderError`), never reported as a broken model file. The provider in use is logged.

Both runtimes installed: the wheels ``onnxruntime`` and ``onnxruntime-gpu`` install the same Python package,
and side by side the CPU one can hide the CUDA provider. When CUDA is wanted but not offered and both
distributions are installed, the error (``cuda``) or warning (``auto``) names the conflict and its fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from garmentcv import cpus as _cpus
from garmentcv.artifact import INPUT_NAME, OUTPUT_NAME, ModelInfo
from garmentcv.errors import GarmentCVError, ModelFileError
from garmentcv.infer.model_file import check_input_type, check_model_path
from garmentcv.installs import pip_install, runtime_conflict
from garmentcv.text import plural

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
        """Run one batch -> ``float32 (N, C)`` logits, class order. The batch is what ``info.input_format`` says:
        normalised ``float32 (N, 3, H, W)`` (format 1) or the uint8 crops ``(N, H, W, 3)`` (format 2)."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch -> every output the file declares (``info.outputs``) by name: ``logits`` ``float32 (N, C)``,
        ``embedding`` ``float32 (N, D)``, ``ood_score`` ``float32 (N,)``, each present only in files that have it."""
        names = list(self.info.outputs)
        return dict(zip(names, self.session.run(names, {INPUT_NAME: batch}), strict=True))

    @property
    def runtime(self) -> str:
        """``onnxruntime`` (the other runtime: :mod:`garmentcv.infer.runtimes.openvino`)."""
        return "onnxruntime"

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda``: :attr:`provider`."""
        return self.provider

    @property
    def inference_precision(self) -> str:
        """onnxruntime runs the file as stored: its ``fp32``, ``fp16`` or ``int8``."""
        return self.info.precision


def _session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cpus.available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning, leaving the cores to the decoding threads between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _create(path: Path, providers: list[str], threads: int | None, data: bytes | None = None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path) if data is None else data, sess_options=_session_options(threads),
                                    providers=providers)
    except Exception as exc:  # onnxruntime raises its own unrelated types (Fail, InvalidProtobuf, ...)
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc}); export it again with gcv export") from exc


def _check_graph(session: ort.InferenceSession, info: ModelInfo, path: Path) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or outputs != list(info.outputs):
        raise ModelFileError(
            f"{path}: graph has inputs {inputs} and outputs {outputs}, expected input {INPUT_NAME!r} and outputs "
            f"{list(info.outputs)} as its metadata declares; export the model with gcv export"
        )
    out = session.get_outputs()[outputs.index(OUTPUT_NAME)]
    check_input_type(session.get_inputs()[0].type, session.get_inputs()[0].shape, out.type, out.shape, info, path)
    width = out.shape[-1]
    if isinstance(width, int) and width != len(info.classes):
        raise ModelFileError(
            f"{path}: output has {width} logits but the metadata lists {len(info.classes)} classes; export it again"
        )


def _no_cuda_message() -> str:
    conflict = runtime_conflict()
    offered = f"onnxruntime {ort.__version__} offers {ort.get_available_providers()}, not CUDA"
    if conflict:
        return f"{offered}: {conflict}; or use --device cpu"
    return (
        f"{offered}; install onnxruntime-gpu instead of onnxruntime ({pip_install('gpu')}) or use "
        "--device cpu"
    )


def _cuda_session(path: Path, info: ModelInfo, threads: int | None, data: bytes | None = None) -> ort.InferenceSession:
    """A session whose first provider is CUDA and which has run one batch. Raises ProviderError otherwise.

    The file already opened on the CPU, so any failure here is CUDA's (libraries, driver, device, memory).
    """
    if _CUDA not in ort.get_available_providers():
        raise ProviderError(_no_cuda_message())
    try:
        session = ort.InferenceSession(str(path) if data is None else data, sess_options=_session_options(threads),
                                       providers=[_CUDA, _CPU])
    except Exception as exc:  # onnxruntime raises its own unrelated types; the model itself opened on the CPU
        raise ProviderError(f"onnxruntime could not create a CUDA session ({exc}); use --device cpu") from exc
    if session.get_providers()[0] != _CUDA:
        raise ProviderError(
            "onnxruntime could not start its CUDA provider (see its messages above: CUDA or cuDNN libraries, "
            "driver); use --device cpu"
        )
    try:
        session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros(info.input_shape(1), info.input_dtype)})
    except Exception as exc:  # any failure of the warm-up run means CUDA does not really work
        raise ProviderError(f"the CUDA provider failed on a warm-up batch ({exc}); use --device cpu") from exc
    return session


def open_model(path: Path, provider: str = "auto", threads: int | None = None, *,
               data: bytes | None = None) -> LoadedModel:
    """Open a GarmentCV ONNX file on ``provider`` (``auto``, ``cpu`` or ``cuda``).

    Args:
        path: the ``.onnx`` file written by ``gcv export``.
        provider: see the module docstring.
        threads: intra-op CPU threads; ``None`` uses every available CPU (:func:`garmentcv.cpus.available_cpus`).
        data: the file's bytes, already read: the session is built from memory (no file is read or written) and
            ``path`` only names the model in messages and in :attr:`LoadedModel.path`.

    Raises:
        ModelFileNotFoundError: the file does not exist (exit code 2, with the gcv export hint).
        ModelFileError: the file is a folder, unreadable, without GarmentCV metadata, or of another graph shape.
        ProviderError: ``cuda`` asked for but it cannot run.
    """
    path = Path(path)
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if data is None:
        check_model_path(path)
    cpu_session = _create(path, [_CPU], threads, data)
    info = ModelInfo.from_metadata(cpu_session.get_modelmeta().custom_metadata_map, source=str(path))
    _check_graph(cpu_session, info, path)
    session, used = cpu_session, "cpu"
    if provider == "cuda":
        session, used = _cuda_session(path, info, threads, data), "cuda"
    elif provider == "auto" and _CUDA in ort.get_available_providers():
        try:
            session, used = _cuda_session(path, info, threads, data), "cuda"
        except ProviderError as exc:
            logger.warning("CUDA is not usable, classifying on the CPU: %s", exc)
    elif provider == "auto" and runtime_conflict():
        logger.warning("CUDA is not usable, classifying on the CPU: %s", _no_cuda_message())
    if used == "cuda":
        del cpu_session
    logger.info(
        "model %s: %s, %d classes %s, input %d px %s, %s; provider %s (%s)",
        path,
        info.arch,
        len(info.classes),
        list(info.classes),
        info.preprocessing.crop,
        info.input_format,
        info.precision,
        used,
        "GPU" if used == "cuda" else plural(threads or _cpus.available_cpus(), "thread"),
    )
    return LoadedModel(path=path, info=info, provider=used, session=session)
