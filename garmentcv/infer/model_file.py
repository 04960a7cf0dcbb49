"""Where the exported model lives and what it says about itself (onnxruntime only, never torch)."""

from __future__ import annotations

from pathlib import Path

from garmentcv.artifact import ModelInfo
from garmentcv.errors import ModelFileError

#: Where ``gcv-export`` writes its model unless told otherwise; ``gcv-classify`` reads it from here by default.
DEFAULT_MODEL_PATH = Path("runs/export/model.onnx")


def read_model_info(path: Path) -> ModelInfo:
    """Read the GarmentCV self-description (classes, preprocessing, ...) from an ONNX file.

    Opens the file with onnxruntime on the CPU (the base install has no ``onnx`` package) and parses its
    custom metadata with :meth:`ModelInfo.from_metadata`.

    Raises:
        ModelFileError: the file is missing, is not a readable ONNX model, or has no GarmentCV metadata.
    """
    import onnxruntime as ort  # heavy; only when a model is actually read

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: model file not found; export one with 'gcv-export CHECKPOINT --out {path}' or pass --model FILE"
        )
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated types (Fail, InvalidProtobuf, ...)
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc}); export it again with gcv-export") from exc
    return ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
