"""What can be built: the registry of torchvision architectures (needs torch)."""

from garmentcv.models.registry import (
    MODELS,
    BuiltModel,
    ModelSpec,
    UnknownArchError,
    build_model,
    default_preprocessing,
    get_spec,
)

__all__ = ["MODELS", "BuiltModel", "ModelSpec", "UnknownArchError", "build_model", "default_preprocessing", "get_spec"]
