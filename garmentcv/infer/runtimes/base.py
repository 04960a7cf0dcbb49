"""What every runtime module shares: the runtime names, the :class:`Model` protocol and the runtime error.

The runtime modules (:mod:`garmentcv.infer.runtimes.onnxruntime`, :mod:`garmentcv.infer.runtimes.openvino`) import
from here, never from the choice between them (:mod:`garmentcv.infer.runtimes`), which imports them only when it
opens a model: so importing one runtime imports neither the other nor the choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from garmentcv.artifact import ModelInfo
from garmentcv.errors import GarmentCVError
from garmentcv.installs import pip_install

RUNTIMES = ("auto", "onnxruntime", "openvino")
#: OpenVINO inference precisions GarmentCV uses (``INFERENCE_PRECISION_HINT``).
INFERENCE_PRECISIONS = ("f32", "bf16")
OPENVINO_DIST = "openvino"
OPENVINO_INSTALL = pip_install("openvino")


class RuntimeUnavailableError(GarmentCVError, RuntimeError):
    """A runtime (or inference precision) was asked for explicitly but is not installed or cannot run here."""


class Model(Protocol):
    """What the pipeline, classify and evaluate need of an open model, whichever runtime runs it.

    Implemented by :class:`garmentcv.infer.runtimes.onnxruntime.LoadedModel` (onnxruntime) and
    :class:`garmentcv.infer.runtimes.openvino.OpenVINOModel`.
    """

    path: Path
    info: ModelInfo
    provider: str

    @property
    def runtime(self) -> str: ...  # ``onnxruntime`` or ``openvino``

    @property
    def device(self) -> str: ...  # ``cpu`` or ``cuda``

    @property
    def inference_precision(
        self,
    ) -> str: ...  # ``fp32``, ``fp16``, ``int8`` (the file's), or OpenVINO's ``f32``/``bf16``

    def logits(self, batch: np.ndarray) -> np.ndarray: ...

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...  # every output of ``info.outputs`` by name
