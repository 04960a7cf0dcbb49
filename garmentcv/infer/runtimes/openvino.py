"""The same GarmentCV ONNX file on OpenVINO's CPU plugin, with the interface of the onnxruntime model.

:class:`OpenVINOModel` has what :class:`garmentcv.infer.runtimes.onnxruntime.LoadedModel` has (``path``, ``info``,
``provider``, ``logits(batch)``, ``runtime``, ``device``, ``inference_precision``), so the pipeline, classify and
evaluate do not care which runtime runs the file. OpenVINO reads the ONNX file itself (its ONNX frontend); the
metadata comes from the onnxruntime reading of the same file (:class:`garmentcv.artifact.ModelInfo`).

Settings (OpenVINO's CPU plugin properties, https://docs.openvino.ai/ "CPU Device"):

* ``INFERENCE_PRECISION_HINT`` is always set explicitly: the plugin's default on CPUs with AVX-512 BF16 or AMX
  is ``bf16``, which GarmentCV uses only when the file's gate for OpenVINO at bf16 passed
  (:mod:`garmentcv.infer.runtimes`).
  The precision the compiled model reports back is the one recorded, never the one asked for.
* ``PERFORMANCE_HINT=LATENCY`` with one stream and ``INFERENCE_NUM_THREADS`` threads: one batch at a time, as
  the pipeline calls it; ``ENABLE_CPU_PINNING`` off, as the decoding threads share the cores.
* ``CACHE_DIR`` (optional): compiled blobs kept on disk, so a later process skips most of the compilation.

The model is compiled once when opened and kept for the whole run (one compilation per process and file).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from garmentcv import cpus as _cpus
from garmentcv.artifact import INPUT_NAME, OUTPUT_NAME, ModelInfo
from garmentcv.infer.model_file import check_input_type
from garmentcv.infer.runtimes.base import (
    INFERENCE_PRECISIONS,
    OPENVINO_INSTALL,
    RuntimeUnavailableError,
)

logger = logging.getLogger(__name__)

def import_openvino() -> Any:
    """The ``openvino`` module.

    Raises:
        RuntimeUnavailableError: it is not installed (or fails to import); the message says what to install.
    """
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"--runtime openvino: OpenVINO is not installed ({exc}); install it with {OPENVINO_INSTALL}, or use "
            "--runtime onnxruntime"
        ) from exc
    return openvino


@dataclass(frozen=True)
class OpenVINOModel:
    """A GarmentCV ONNX file compiled by OpenVINO for the CPU, ready for batches.

    Attributes:
        path: the model file.
        info: its GarmentCV self-description.
        provider: ``cpu`` (the device, as onnxruntime's models name it).
        compiled: OpenVINO's ``CompiledModel``.
        request: the one ``InferRequest`` batches run through (the pipeline calls :meth:`logits` from one thread).
        inference_precision: ``f32`` or ``bf16``, as the compiled model reports it.
        threads: inference threads.
    """

    path: Path
    info: ModelInfo
    provider: str
    compiled: Any
    request: Any
    inference_precision: str
    threads: int

    @property
    def runtime(self) -> str:
        """``openvino``."""
        return "openvino"

    @property
    def device(self) -> str:
        """``cpu``: OpenVINO's CPU plugin."""
        return "cpu"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch -> ``float32 (N, C)`` logits in class order. The batch is what ``info.input_format`` says:
        normalised ``float32 (N, 3, H, W)`` (format 1) or the uint8 crops ``(N, H, W, 3)`` (format 2)."""
        self.request.infer({INPUT_NAME: batch})
        return np.array(self.request.get_tensor(OUTPUT_NAME).data, dtype=np.float32, copy=True)

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch -> every output the file declares (``info.outputs``) by name, as
        :meth:`garmentcv.infer.runtimes.onnxruntime.LoadedModel.outputs`."""
        self.request.infer({INPUT_NAME: batch})
        return {name: np.array(self.request.get_tensor(name).data, dtype=np.float32, copy=True)
                for name in self.info.outputs}


def compile_config(precision: str, threads: int, cache_dir: Path | None = None) -> dict[str, str]:
    """The CPU plugin properties GarmentCV compiles with (see the module docstring)."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"inference precision must be one of {INFERENCE_PRECISIONS}, got {precision!r}")
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
        "ENABLE_CPU_PINNING": "NO",
    }
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return config


def compile_file(
    source: Path | bytes, precision: str, threads: int | None = None, cache_dir: Path | None = None
) -> tuple[Any, str]:
    """Compile an ONNX file (path or serialized bytes) for OpenVINO's CPU plugin at ``precision``.

    Returns:
        ``(compiled model, inference precision it reports)``.

    Raises:
        RuntimeUnavailableError: OpenVINO is not installed, or cannot read or compile the model.
    """
    ov = import_openvino()
    core = ov.Core()
    config = compile_config(precision, threads or _cpus.available_cpus(), cache_dir)
    try:
        model = core.read_model(source if isinstance(source, bytes) else str(source))
        compiled = core.compile_model(model, "CPU", config)
    except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses with the frontend's message
        where = "the model" if isinstance(source, bytes) else str(source)
        raise RuntimeUnavailableError(
            f"OpenVINO {ov.__version__} cannot compile {where} for the CPU ({exc}); use --runtime onnxruntime"
        ) from exc
    reported = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return compiled, _type_name(reported)


def _type_name(text: str) -> str:
    """``<Type: 'bfloat16'>``/``bf16``/``float32`` -> ``bf16``/``f32``."""
    text = text.lower()
    if "bf16" in text or "bfloat16" in text:
        return "bf16"
    if "f32" in text or "float32" in text:
        return "f32"
    if "f16" in text or "float16" in text:
        return "f16"
    return text


#: OpenVINO element type names -> onnxruntime's type strings, to share :func:`check_input_type`.
_ORT_TYPES = {"f32": "tensor(float)", "u8": "tensor(uint8)", "f16": "tensor(float16)", "i8": "tensor(int8)"}


def _port_type(port: Any) -> tuple[str, list]:
    """``(onnxruntime-style type, shape)`` of a compiled model's port; dynamic dimensions as ``"N"``."""
    name = port.get_element_type().get_type_name()
    shape = [d.get_length() if d.is_static else "N" for d in port.get_partial_shape()]
    return _ORT_TYPES.get(name, name), shape


def _check_ports(compiled: Any, info: ModelInfo, path: Path) -> None:
    """The compiled input is the one the file declares (float32 NCHW, format 1; uint8 NHWC, format 2).

    Raises:
        ModelFileError: as :func:`garmentcv.infer.model_file.check_input_type`.
    """
    in_type, in_shape = _port_type(compiled.input(INPUT_NAME))
    out_type, out_shape = _port_type(compiled.output(OUTPUT_NAME))
    check_input_type(in_type, in_shape, out_type, out_shape, info, path)


def open_openvino(path: Path, info: ModelInfo, precision: str = "f32", threads: int | None = None,
                  cache_dir: Path | None = None) -> OpenVINOModel:
    """Compile ``path`` (already read and checked as a GarmentCV file, ``info``) on OpenVINO's CPU plugin.

    Args:
        path: the ``.onnx`` file.
        info: its metadata (:func:`garmentcv.infer.runtimes.onnxruntime.open_model` read it).
        precision: ``f32`` or ``bf16`` (the inference precision hint).
        threads: inference threads; ``None``: every available CPU.
        cache_dir: OpenVINO's compiled-model cache folder, or ``None`` for none.

    Raises:
        RuntimeUnavailableError: OpenVINO not installed, the file does not compile, or ``bf16`` asked for on a
            CPU whose plugin will not run it.
        ModelFileError: the graph's input is not the one ``info.input_format`` declares.
    """
    threads = threads or _cpus.available_cpus()
    compiled, used = compile_file(path, precision, threads, cache_dir)
    if used != precision:
        raise RuntimeUnavailableError(
            f"OpenVINO runs {path} at {used}, not the {precision} asked for: this CPU has no native {precision}"
        )
    _check_ports(compiled, info, path)
    return OpenVINOModel(
        path=path,
        info=info,
        provider="cpu",
        compiled=compiled,
        request=compiled.create_infer_request(),
        inference_precision=used,
        threads=threads,
    )
