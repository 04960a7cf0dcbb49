"""Where the exported model lives and what it says about itself (onnxruntime only, never torch).

``gcv export`` writes the file; ``gcv classify`` and ``gcv evaluate`` read it back here. The contract is
:class:`garmentcv.artifact.ModelInfo`: metadata properties plus one input ``input`` (float32 ``(N, 3, H, W)``
in format 1, uint8 ``(N, H, W, 3)`` in format 2) and one output ``logits`` float32 ``(N, C)``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from garmentcv.artifact import INPUT_NAME, ModelInfo
from garmentcv.errors import ModelFileError, PathNotFoundError

#: Where ``gcv export`` writes its model unless told otherwise; ``gcv classify`` reads it from here by default.
DEFAULT_MODEL_PATH = Path("runs/export/model.onnx")


class ModelFileNotFoundError(PathNotFoundError, ModelFileError):
    """The model file does not exist: wrong usage (exit code 2), and a :class:`ModelFileError` for callers."""


#: How a PyTorch file saved in the legacy (non-zip) format begins: its magic number 0x1950a86a20f9469cfc6c pickled
#: with protocol 2 (``torch.serialization``); the zip format is recognised by its ``data.pkl`` entry.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def is_torch_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a file written by ``torch.save`` (a training checkpoint), read without torch: a zip
    archive with a ``data.pkl`` entry (torch's format since 1.6) or the legacy pickle's magic number."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_TORCH_LEGACY_MAGIC))
        if head == _TORCH_LEGACY_MAGIC:
            return True
        if not head.startswith(b"PK\x03\x04"):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def check_model_path(path: Path) -> None:
    """Refuse a model path that is not a file, or is a training checkpoint, with the ``gcv export`` hint.

    Raises:
        ModelFileNotFoundError: nothing exists at ``path``.
        ModelFileError: ``path`` is a folder or another non-file, or a PyTorch checkpoint (:func:`is_torch_checkpoint`).
    """
    if not path.exists():
        raise ModelFileNotFoundError(
            f"{path}: model file not found; export one with 'gcv export CHECKPOINT --out {path}' or pass --model FILE"
        )
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise ModelFileError(f"{path}: is {kind}, not a model file; pass the .onnx file written by gcv export")
    if is_torch_checkpoint(path):
        raise ModelFileError(
            f"{path}: a PyTorch training checkpoint (as gcv train writes), not an ONNX model; export it with "
            f"'gcv export {path} --out model.onnx' and pass that file to --model"
        )


def read_model_info(path: Path) -> ModelInfo:
    """Read the GarmentCV self-description (classes, preprocessing, ...) from an ONNX file.

    Opens the file with onnxruntime on the CPU without graph optimisation (the base install has no ``onnx``
    package), parses its custom metadata with :meth:`ModelInfo.from_metadata` and checks the declared input
    and output.

    Raises:
        ModelFileNotFoundError: the file does not exist (a :class:`ModelFileError` with exit code 2).
        ModelFileError: the file is a folder, a training checkpoint, is not a readable ONNX model, has no (or a newer or
            damaged) GarmentCV metadata, or lacks exactly the input ``input`` its metadata declares and the output
            ``logits`` float32 ``(N, C)``. The message names the file.
    """
    import onnxruntime as ort  # heavy; only when a model is actually read

    path = Path(path)
    check_model_path(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated types (Fail, InvalidProtobuf, ...)
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc}); export it again with gcv export") from exc
    info = ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != list(info.outputs):
        raise ModelFileError(
            f"{path}: expected one input {INPUT_NAME!r} and the outputs {list(info.outputs)} its metadata declares, "
            f"found inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}; export the model again"
        )
    check_input_type(inputs[0].type, inputs[0].shape, outputs[0].type, outputs[0].shape, info, path)
    return info


def check_input_type(input_type: str, input_shape: list, output_type: str, output_shape: list, info: ModelInfo,
                     path: Path) -> None:
    """Refuse a graph whose input is not the one its metadata declares (``info.input_format``).

    Raises:
        ModelFileError: the input is not float32 ``(N, 3, H, W)`` (format 1) or uint8 ``(N, H, W, 3)`` (format 2),
            or the output is not float32 ``(N, C)``.
    """
    expected = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}[info.input_dtype]
    if input_type != expected or output_type != "tensor(float)" or len(input_shape) != 4:
        layout = "(N, 3, H, W)" if info.input_dtype == "float32" else "(N, H, W, 3)"
        raise ModelFileError(
            f"{path}: its metadata declares input {info.input_format}, "
            f"so the input must be {info.input_dtype} {layout} and the output float32 (N, C); "
            f"found {input_type} {input_shape} -> {output_type} {output_shape}; "
            "export the model again"
        )
