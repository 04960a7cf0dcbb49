"""Settings of a training run (a frozen dataclass, saved as ``config.json`` in every run folder)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The fine-tuning recipe: AdamW at lr 0.01 decaying x0.8 per epoch, 5 epochs.
DEFAULT_EPOCHS = 5
DEFAULT_LR = 0.01
DEFAULT_LR_GAMMA = 0.8
DEFAULT_BATCH_SIZE = 32
DEFAULT_VAL_FRACTION = 0.2
#: Weight lambda of the outlier-exposure term (Hendrycks, Mazeika and Dietterich 2019 use 0.5 for classifiers).
DEFAULT_OTHER_WEIGHT = 0.5
#: The tested default archs (garmentcv.models.registry.MODELS, in its order; what --arch all trains), named here so
#: that the CLI's --help and --version load no torch; a test keeps the two equal.
ARCHS: tuple[str, ...] = ("efficientnet_b0", "resnet18", "resnet34")


#: ``--preset scratch``: training from random init (``weights="none"``) for 10 epochs instead of 5, the learning rate
#: still decaying x0.8 per epoch, with the default augmentation. Chosen on the validation split only (never on test
#: images); how it was chosen and its results: docs/training.md.
PRESET_SCRATCH: dict[str, Any] = {"epochs": 10, "weights": "none"}

#: ``TrainConfig.resume`` (``--resume auto``): continue the run in ``out`` when it has one, else start it.
RESUME_AUTO = "auto"

#: Named sets of settings (``gcv train --preset NAME``): each replaces the defaults it names; options given on the
#: command line still override it. ``scratch``: :data:`PRESET_SCRATCH` (docs/training.md).
PRESETS: dict[str, dict[str, Any]] = {
    "scratch": PRESET_SCRATCH,
}


def _setting(default: Any, help: str) -> Any:
    """A field with its default and its ``--help`` text, the one place gcv train's options are described."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what ``gcv train`` does.

    Each field's meaning is its ``metadata["help"]`` (:func:`setting_help`), which is also the ``--help`` text of
    its gcv train option; the CLI takes each option's default from here, so the two cannot drift.
    ``data`` is the dataset folder or ``path,label`` CSV manifest; ``out`` the run folder (one sub-folder per arch).
    """

    data: Path
    out: Path
    archs: tuple[str, ...] = _setting(
        ("resnet18",), "Model(s) to train, by torchvision builder name ('all': the tested three); repeat for several."
    )
    weights: str = _setting(
        "imagenet", "Backbone weights: imagenet (downloaded or cached), none, a state dict or another run's best.pt."
    )
    layout: str | None = _setting(
        None, "Dataset layout: lamoda (<id>_<label>.jpg files), folders (one per class) or csv (a manifest)."
    )
    epochs: int = _setting(DEFAULT_EPOCHS, "Passes over the training split.")
    batch_size: int = _setting(
        DEFAULT_BATCH_SIZE, "Images per step in each process (at least 2: BatchNorm cannot train on one)."
    )
    lr: float = _setting(DEFAULT_LR, "AdamW learning rate.")
    lr_gamma: float = _setting(
        DEFAULT_LR_GAMMA, "Learning rate factor applied after each epoch (exponential decay, after any warm-up)."
    )
    weight_decay: float = _setting(0.01, "AdamW decoupled weight decay.")
    val_fraction: float = _setting(DEFAULT_VAL_FRACTION, "Share of each class held out for validation (stratified).")
    preset: str | None = _setting(
        None, "Start from a named set of settings (scratch: --weights none, 10 epochs); options override it."
    )
    val_data: Path | None = _setting(
        None, "Labelled validation images (folder or CSV, same classes) instead of splitting DATA."
    )
    corrections: Path | None = _setting(
        None, "Corrections CSV (path,label,action: relabel or drop) applied to DATA's labels; images untouched."
    )
    seed: int = _setting(0, "Seed of the split, the head's init and the augmentation.")
    image_size: int | None = _setting(None, "Model input side in px (resized in the weights' ratio, 256/224).")
    rotation: float = _setting(15.0, "Largest random rotation, degrees.")
    crop_scale: float = _setting(0.7, "Smallest image area kept by the random resized crop.")
    jitter: float = _setting(0.2, "Brightness/contrast/saturation jitter; 0 disables.")
    hflip: float = _setting(0.5, "Probability of a horizontal flip.")
    workers: int = _setting(0, "DataLoader worker processes (0: the main process); --resume needs the same number.")
    device: str = _setting("auto", "auto: CUDA when present, else CPU.")
    amp: str = _setting(
        "auto", "Mixed precision of training: auto (where faster: bf16 on CPU, fp16 on CUDA), bf16, fp16 or off."
    )
    resume: bool | str = _setting(
        False, "Continue the run in --out from each arch's last.pt; 'auto': continue it or start it."
    )
    skip_bad_images: bool = _setting(
        False, "Train without images that cannot be decoded (skipped_images.csv) instead of stopping."
    )

    freeze_backbone_epochs: int = _setting(
        0, "Train only the head for the first N epochs (linear probe); 0: never frozen."
    )
    backbone_lr_factor: float = _setting(1.0, "Backbone learning rate = --lr x this factor; the head keeps --lr.")
    warmup_epochs: int = _setting(0, "Epochs of linear learning-rate warm-up before the decay; 0: none.")
    label_smoothing: float = _setting(0.0, "Label smoothing of the training cross-entropy (validation loss is plain).")
    decay_norm_bias: bool = _setting(True, "Apply weight decay to normalisation and bias parameters too.")
    early_stopping_patience: int = _setting(
        0, "Stop when --early-stopping-metric has not improved for N epochs; 0: never."
    )
    early_stopping_metric: str = _setting(
        "val_loss", "What early stopping watches: val_loss (lower is better) or accuracy."
    )
    class_weights: bool = _setting(False, "Weight the training loss per class by n/(C x n_c), for imbalanced classes.")
    balanced_sampler: bool = _setting(
        False, "Draw training images with probability 1/n_c per class (with replacement)."
    )
    other_data: Path | None = _setting(
        None, "Images of none of the classes (a folder, searched recursively) pushed toward a uniform prediction."
    )
    other_weight: float = _setting(
        DEFAULT_OTHER_WEIGHT, "Weight of the --other-data loss (cross-entropy to uniform) beside the class loss."
    )

    @classmethod
    def with_preset(cls, name: str, **settings: Any) -> TrainConfig:
        """A config from preset ``name`` (:data:`PRESETS`), ``settings`` overriding it (``data`` and ``out`` needed).

        Raises:
            KeyError: unknown preset.
        """
        return cls(**{**preset_settings(name), "preset": name, **settings})

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (paths as strings, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["data"], kwargs["out"] = Path(kwargs["data"]), Path(kwargs["out"])
        for name in ("val_data", "corrections", "other_data"):
            if kwargs.get(name) is not None:
                kwargs[name] = Path(kwargs[name])
        kwargs["archs"] = tuple(kwargs.get("archs", ("resnet18",)))
        return cls(**kwargs)


def preset_settings(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (field name -> value).

    Raises:
        KeyError: unknown preset; the message lists the valid names.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def setting_help(name: str) -> str:
    """The ``--help`` text of TrainConfig field ``name``.

    Raises:
        KeyError: ``name`` is not a field with a help text.
    """
    return {f.name: f.metadata.get("help") for f in dataclasses.fields(TrainConfig)}[name]


def setting_default(name: str) -> Any:
    """The default of TrainConfig field ``name``.

    Raises:
        KeyError: ``name`` is not a field with a default.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    return defaults[name]
