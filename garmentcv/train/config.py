"""Settings of a training run (a frozen dataclass, saved as ``config.json`` in every run folder)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The recipe the original project used and users know: AdamW at lr 0.01 decaying x0.8 per epoch, 5 epochs.
DEFAULT_EPOCHS = 5
DEFAULT_LR = 0.01
DEFAULT_LR_GAMMA = 0.8
DEFAULT_BATCH_SIZE = 32
DEFAULT_VAL_FRACTION = 0.2
#: The tested default archs (garmentcv.models.registry.MODELS, in its order; what --arch all trains), named here so
#: that the CLI's --help and --version load no torch; a test keeps the two equal.
ARCHS: tuple[str, ...] = ("efficientnet_b0", "resnet18", "resnet34")


#: ``--preset scratch``: chosen on validation only (scripts/scratch_preset.py, resnet18 from scratch at 32 px on 8,000
#: ten-class Fashion-MNIST training images): 10 epochs instead of 5 gave 0.839 validation accuracy against 0.769
#: (the learning rate keeps decaying x0.8 per epoch), while milder augmentation (no rotation or colour jitter, crops
#: of at least 85%) lost 1.6 points (0.823), so the augmentation stays. On all 48,000 images: 0.880 validation, 0.879
#: test, against 0.859 / 0.853 for the 5-epoch defaults. Random init (``weights="none"``), as it was measured.
PRESET_SCRATCH: dict[str, Any] = {"epochs": 10, "weights": "none"}

#: ``TrainConfig.resume`` (``--resume auto``): continue the run in ``out`` when it has one, else start it.
RESUME_AUTO = "auto"

#: Named sets of settings (``gcv-train --preset NAME``): each replaces the defaults it names; options given on the
#: command line still override it. ``scratch`` was chosen on the validation split of the ten-class Fashion-MNIST
#: stand-in (scripts/scratch_preset.py; README "Training from scratch" has the table and its test accuracy).
PRESETS: dict[str, dict[str, Any]] = {
    "scratch": PRESET_SCRATCH,
}


def _setting(default: Any, help: str) -> Any:
    """A field with its default and its ``--help`` text, the one place gcv-train's options are described."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what ``gcv-train`` does.

    Each field's meaning is its ``metadata["help"]`` (:func:`setting_help`), which is also the ``--help`` text of
    its gcv-train option; the CLI takes each option's default from here, so the two cannot drift.
    ``data`` is the dataset folder or ``path,label`` CSV manifest; ``out`` the run folder (one sub-folder per arch).
    """

    data: Path
    out: Path
    archs: tuple[str, ...] = _setting(
        ("resnet18",),
        "Model(s) to train, by torchvision builder name: efficientnet_b0, resnet18, resnet34 (the tested defaults; "
        "'all' trains these three and compares them) or any other torchvision classification model, e.g. "
        "mobilenet_v3_small, regnet_y_400mf, convnext_tiny. Repeat the option to train several.",
    )
    weights: str = _setting(
        "imagenet",
        "Backbone weights: 'imagenet' (torchvision's, from the TORCH_HOME cache or downloaded), 'none' (from "
        "scratch), the path of a torchvision state dict file, or a GarmentCV checkpoint (best.pt of another run "
        "of the same arch, other classes allowed: its backbone is kept, the head replaced).",
    )
    layout: str | None = _setting(
        None,
        "Dataset layout; detected when not given: a .csv file is a manifest, a folder of <id>_<label>.jpg files "
        "is lamoda, a folder of class folders is folders.",
    )
    epochs: int = _setting(DEFAULT_EPOCHS, "Passes over the training split.")
    batch_size: int = _setting(
        DEFAULT_BATCH_SIZE,
        "Images per step in each process (under torchrun a step trains on this x the world size, both recorded in "
        "config.json; at least 2: BatchNorm cannot train on one; a last training batch of one is dropped).",
    )
    lr: float = _setting(DEFAULT_LR, "AdamW learning rate.")
    lr_gamma: float = _setting(DEFAULT_LR_GAMMA, "Learning rate factor applied after each epoch (exponential decay, after any warm-up).")
    weight_decay: float = _setting(0.01, "AdamW decoupled weight decay.")
    val_fraction: float = _setting(DEFAULT_VAL_FRACTION, "Share of each class held out for validation (stratified).")
    preset: str | None = _setting(
        None,
        "Start from a named set of settings instead of the fine-tuning defaults: 'scratch' (--weights none and 10 "
        "epochs instead of 5, chosen on validation; see README). Options given on the command line override it; "
        "config.json records the resulting values.",
    )
    val_data: Path | None = _setting(
        None,
        "Validation images from this labelled folder or path,label CSV (same classes as DATA, no shared file) "
        "instead of a --val-fraction split: every image of DATA then trains.",
    )
    seed: int = _setting(0, "Seed of the split, the head's init and the augmentation.")
    image_size: int | None = _setting(
        None, "Model input side in px (resize scaled in the weights' ratio, 256/224). Default: the weights' 224."
    )
    rotation: float = _setting(15.0, "Largest random rotation, degrees.")
    crop_scale: float = _setting(0.7, "Smallest image area kept by the random resized crop.")
    jitter: float = _setting(0.2, "Brightness/contrast/saturation jitter; 0 disables.")
    hflip: float = _setting(0.5, "Probability of a horizontal flip.")
    workers: int = _setting(
        0, "DataLoader worker processes (0: main process). Changes the augmentation stream, so --resume needs the same."
    )
    device: str = _setting("auto", "auto: CUDA (with AMP) when present.")
    amp: str = _setting(
        "auto",
        "Mixed precision of the training passes (validation stays FP32): auto takes bf16 autocast on a CPU only "
        "where it was measured faster than FP32 for this CPU (AMX or not), arch and image size, with channels_last "
        "where that helps, and fp16 with a gradient scaler on CUDA; bf16 or fp16 (CUDA only) force one; off "
        "trains in FP32. The choice and its reason are logged and saved in config.json (amp_chosen).",
    )
    resume: bool | str = _setting(
        False,
        "Continue the run in --out from each arch's last.pt; refused if the settings or the data differ (a larger "
        "epoch count trains it longer). 'auto': continue the run there if there is one, else start it (one command "
        "line for every restart of torchrun).",
    )
    skip_bad_images: bool = _setting(
        False,
        "Train without images that cannot be decoded (listed in skipped_images.csv of the run folder) instead of "
        "stopping with their names. Every image is checked once before training.",
    )

    freeze_backbone_epochs: int = _setting(
        0,
        "Train only the head for the first N epochs (linear probe), then the whole network; 0: never frozen. "
        "Frozen parameters do not move (BatchNorm running statistics still adapt).",
    )
    backbone_lr_factor: float = _setting(
        1.0, "Backbone learning rate = --lr x this factor; the head keeps --lr (e.g. 0.1 fine-tunes gently)."
    )
    warmup_epochs: int = _setting(
        0,
        "Linear learning-rate warm-up: epoch e <= N trains at lr x e/(N+1), then lr x gamma^(e-1-N); 0: none "
        "(epoch e at lr x gamma^(e-1)).",
    )
    label_smoothing: float = _setting(0.0, "Label smoothing of the training cross-entropy (validation loss is plain).")
    decay_norm_bias: bool = _setting(
        True, "Apply weight decay to normalisation and bias parameters too; --no-decay-norm-bias exempts them."
    )
    early_stopping_patience: int = _setting(
        0,
        "Stop when --early-stopping-metric has not improved for N epochs (best.pt stays the best validation "
        "accuracy's epoch); 0: train every epoch.",
    )
    early_stopping_metric: str = _setting("val_loss", "What early stopping watches: val_loss (lower is better) or accuracy.")
    class_weights: bool = _setting(
        False, "Weight the training loss per class by n/(C x n_c) (training split counts) for imbalanced classes."
    )
    balanced_sampler: bool = _setting(
        False, "Draw training images with probability 1/n_c per class (with replacement, same epoch size)."
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
        if kwargs.get("val_data") is not None:
            kwargs["val_data"] = Path(kwargs["val_data"])
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
