"""Exception classes shared by every GarmentCV command.

Each command's ``main()`` maps :class:`GarmentCVError` subclasses to exit codes; library code raises them
with a message that names what was given, what was expected and what to do next.
"""

from __future__ import annotations


class GarmentCVError(Exception):
    """Base class of every error GarmentCV reports to a user (never a bug).

    Attributes:
        exit_code: the process exit code a command ends with on this error (1: a problem with the input).
    """

    exit_code: int = 1


class ImageDecodeError(GarmentCVError, ValueError):
    """A file could not be decoded into an RGB image.

    Attributes:
        path: the file that failed.
        reason: a short human-readable cause, e.g. ``"truncated file"``.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot decode image ({reason})")


class DatasetError(GarmentCVError, ValueError):
    """A dataset folder or manifest cannot be used for training or evaluation."""


class WeightsError(GarmentCVError, FileNotFoundError):
    """Pretrained weights were asked for but cannot be found or loaded."""


class CheckpointError(GarmentCVError, ValueError):
    """A checkpoint file is missing, corrupt, foreign or of an unsupported format version."""


class ModelFileError(GarmentCVError, ValueError):
    """An ONNX model file is missing, unreadable or lacks GarmentCV metadata."""


class ExportError(GarmentCVError, RuntimeError):
    """An export cannot be made or failed one of its checks (opset, ONNX checker, parity, accuracy)."""


class PathNotFoundError(GarmentCVError, FileNotFoundError):
    """A path given on the command line (or its default) does not exist: wrong usage, exit code 2."""

    exit_code = 2


class OutputPathError(GarmentCVError, OSError):
    """An output path cannot be written (its parent is a file, a read-only place, a folder given for a file)."""
