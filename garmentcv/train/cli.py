"""``gcv train``: fine-tune torchvision CNNs on a labelled folder."""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from garmentcv.cli_utils import (
    docs_epilog,
    handle_errors,
    plural,
    quiet_option,
    setup_logging,
    verbose_option,
    version_option,
)
from garmentcv.data.layouts import Layout
from garmentcv.installs import require_torch
from garmentcv.paths import RUNS_DIR
from garmentcv.train import config as defaults
from garmentcv.train.amp import AMP_MODES
from garmentcv.train.config import (
    RESUME_AUTO,
    TrainConfig,
    setting_default,
    setting_help,
)

if TYPE_CHECKING:
    from garmentcv.train.loop import TrainResult

#: Parent of the timestamped run folders written when --out is not given; gcv export looks here.


class BatchSize(click.IntRange):
    """An integer >= 2, with BatchNorm's reason in the error: it cannot train on a batch of one image."""

    def __init__(self) -> None:
        super().__init__(min=2)

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            if isinstance(value, int) or str(value).strip().lstrip("+-").isdigit():
                self.fail(f"{value} is too small: BatchNorm needs at least 2 images per training batch", param, ctx)
            raise


#: The value ``--resume`` stands for when given without ``auto``: continue the run (``TrainConfig.resume`` True).
_RESUME_ON = "on"


class ResumeMode(click.ParamType):
    """``--resume`` alone (True: continue the run in --out) or ``--resume auto`` (continue it or start it)."""

    name = "auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> bool | str:
        if isinstance(value, bool):
            return value
        if value == _RESUME_ON:
            return True
        if value == RESUME_AUTO:
            return RESUME_AUTO
        self.fail(f"{value!r}: --resume takes no value, or {RESUME_AUTO!r}", param, ctx)


class TrainCommand(click.Command):
    """gcv train's command: ``--resume`` takes its optional value only when the next word is ``auto``.

    Click would otherwise take any next word as the value, so ``gcv train --resume DATA --out RUN`` (``--resume``
    before the argument) would stop meaning what it did before ``--resume auto`` existed.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        for i, word in enumerate(given):
            if word == "--":
                break
            if word == "--resume" and (i + 1 == len(given) or given[i + 1] != RESUME_AUTO):
                given[i] = f"--resume={_RESUME_ON}"
        return super().parse_args(ctx, given)


def _default_out() -> Path:
    return RUNS_DIR / time.strftime("%Y%m%d-%H%M%S")


def setting(name: str, *decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--name`` for TrainConfig field ``name``, its default and help taken from the dataclass (one source)."""
    flag = f"--{name.replace('_', '-')}"
    if name == "archs":
        flag = "--arch"
    default = setting_default(name)
    kwargs.setdefault("show_default", "off" if kwargs.get("is_flag") and default is False else True)
    return click.option(*(decls or (flag,)), name, default=default, help=setting_help(name), **kwargs)


def _load_config(path: Path) -> TrainConfig:
    """The TrainConfig saved as ``path`` (a run's config.json).

    Raises:
        click.BadParameter: not JSON, or not the settings of a gcv train run.
    """
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict) or "data" not in stored:
            raise ValueError("no 'data' setting")
        return TrainConfig.from_dict({"out": ".", **stored})
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise click.BadParameter(
            f"{path}: not the config.json of a gcv train run ({exc}); give RUN/config.json of an earlier run",
            param_hint="--config",
        ) from exc


def _check_archs(archs: tuple[str, ...]) -> None:
    """Refuse an unknown --arch as a usage error (exit 2), listing the valid names; loads torchvision."""
    from garmentcv.models.registry import UnknownArchError, get_spec

    for arch in archs:
        try:
            get_spec(arch)
        except UnknownArchError as exc:
            raise click.BadParameter(str(exc), param_hint="'--arch'") from None


def _given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


@click.command(cls=TrainCommand, context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
               epilog=docs_epilog("training"))
@version_option("gcv train")
@click.argument("data", type=click.Path(exists=True, path_type=Path), required=False)
@click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Rerun the settings of RUN/config.json (DATA included); options given here override them.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
    show_default=f"{RUNS_DIR}/<YYYYmmdd-HHMMSS>",
    help="Run folder, new or empty (a folder with files is refused unless --resume).",
)
@setting("archs", multiple=True, metavar="ARCH")
@setting("weights")
@setting("layout", type=click.Choice([m.value for m in Layout]), show_default="detected")
@setting("epochs", type=click.IntRange(min=1))
@setting("batch_size", type=BatchSize())
@setting("lr", type=click.FloatRange(min=0, min_open=True))
@setting("lr_gamma", type=click.FloatRange(0, 1, min_open=True))
@setting("weight_decay", type=click.FloatRange(min=0))
@setting("val_fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True))
@setting("val_data", type=click.Path(exists=True, path_type=Path), show_default="--val-fraction of DATA")
@setting("corrections", type=click.Path(exists=True, dir_okay=False, path_type=Path), show_default="none")
@setting("preset", type=click.Choice(list(defaults.PRESETS)), show_default="none")
@setting("seed", type=int)
@setting("image_size", type=click.IntRange(min=16), show_default="the weights' size, 224")
@setting("rotation", type=click.FloatRange(0, 180))
@setting("crop_scale", type=click.FloatRange(0, 1, min_open=True))
@setting("jitter", type=click.FloatRange(0, 1))
@setting("hflip", type=click.FloatRange(0, 1))
@setting("workers", type=click.IntRange(min=0))
@setting("device", type=click.Choice(["auto", "cpu", "cuda"]))
@setting("amp", type=click.Choice(AMP_MODES))
@setting("resume", type=ResumeMode(), is_flag=False, flag_value=_RESUME_ON, metavar="[auto]", show_default="off")
@setting("skip_bad_images", is_flag=True)
@setting("freeze_backbone_epochs", type=click.IntRange(min=0))
@setting("backbone_lr_factor", type=click.FloatRange(min=0, min_open=True))
@setting("warmup_epochs", type=click.IntRange(min=0))
@setting("label_smoothing", type=click.FloatRange(0, 1, max_open=True))
@setting("decay_norm_bias", "--decay-norm-bias/--no-decay-norm-bias")
@setting("early_stopping_patience", type=click.IntRange(min=0))
@setting("early_stopping_metric", type=click.Choice(["val_loss", "accuracy"]))
@setting("class_weights", is_flag=True)
@setting("balanced_sampler", is_flag=True)
@setting("other_data", type=click.Path(exists=True, file_okay=False, path_type=Path), show_default="none")
@setting("other_weight", type=click.FloatRange(min=0, min_open=True))
@quiet_option
@verbose_option
@handle_errors
def main(
    data: Path | None, config_file: Path | None, out: Path | None, quiet: bool, verbose: bool, **options: Any
) -> None:
    """Fine-tune torchvision CNNs on the labelled images in DATA and report validation metrics.

    DATA is a folder of <id>_<label>.jpg files, a folder with one sub-folder per class, or a path,label CSV
    manifest. The run folder receives config.json, the split (train.csv, val.csv), comparison.md and, per arch,
    best.pt (for gcv export), last.pt and metrics.json. Ctrl-C keeps every finished epoch and says how to continue.

    \b
    Data-parallel: torchrun --nproc_per_node=N -m garmentcv.train DATA ...
    (the same options; --batch-size is per process).
    Restarts (torchrun --max-restarts N): give --out RUN and --resume auto;
    the first attempt starts the run, every restart continues it.
    """
    setup_logging(quiet, verbose)
    require_torch()  # exit 1 naming the extra on a [cpu]-only install, not an ImportError
    ctx = click.get_current_context()
    if options["resume"] and out is None:
        raise click.UsageError("--resume needs --out, the run folder to continue")
    if config_file is not None:
        stored = _load_config(config_file)
        for name in options:
            if name != "resume" and not _given(ctx, name):
                options[name] = getattr(stored, name)
        data = data or stored.data
    if options["preset"] is not None and _given(ctx, "preset"):  # a preset from --config is already in its values
        for name, value in defaults.preset_settings(options["preset"]).items():
            if not _given(ctx, name):
                options[name] = value
    if data is None:
        raise click.UsageError("missing argument DATA (or --config RUN/config.json, which names it)")
    from garmentcv.train.distributed import launch_info
    from garmentcv.train.loop import (
        train,  # torch loads here, after --help and option errors
    )

    primary = launch_info().is_primary  # under torchrun (RANK > 0): no logs or summary, only errors
    if not primary:
        logging.getLogger().setLevel(logging.ERROR)
    archs = tuple(options.pop("archs"))
    chosen = defaults.ARCHS if "all" in archs else tuple(dict.fromkeys(archs))
    _check_archs(chosen)
    cfg = TrainConfig(data=data, out=out or _default_out(), archs=chosen, **options)
    try:
        result = train(cfg, progress=not quiet)
    except KeyboardInterrupt:  # handle_errors prints "Interrupted: <how to go on>" and exits 130
        prog = "torchrun [the same launch options] -m garmentcv.train" if launch_info().distributed else "gcv train"
        raise TrainInterrupted(_interrupted_message(cfg, prog) if primary else "") from None
    if not primary:
        return
    if result.already_complete:
        click.echo(_complete_message(result, cfg))
    click.echo(result.comparison.read_text(encoding="utf-8"))
    for r in result.archs:
        click.echo(f"{r.arch}: best epoch {r.best_epoch} -> {r.run_dir / 'best.pt'}")


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says how to continue the run (empty on ranks other than the primary)."""


def _interrupted_message(cfg: TrainConfig, prog: str = "gcv train") -> str:
    """What Ctrl-C says: how to continue the run when an epoch was saved (a ``last.pt``), else to start over."""
    if any((cfg.out / arch / "last.pt").is_file() for arch in cfg.archs):
        return (
            f"{cfg.out} keeps every finished epoch. Continue the run with: {prog} "
            f"{shlex.quote(str(cfg.data))} --out {shlex.quote(str(cfg.out))} [the same options] --resume"
        )
    return "no epoch was saved yet; run the command again to start over."


def _complete_message(result: TrainResult, cfg: TrainConfig) -> str:
    """What ``--resume`` of a run with no epoch left says (``result.already_complete``)."""
    done = "; ".join(
        f"{r.arch}: stopped early after epoch {r.stopped_early_after}" if r.stopped_early_after is not None
        else f"{r.arch}: all {plural(cfg.epochs, 'epoch')} done"
        for r in result.archs
    )  # fmt: skip
    if all(r.stopped_early_after is not None for r in result.archs):
        how = "Early stopping ended it, so more epochs would stop at once: train other settings into a new --out"
    else:
        how = (
            f"To train longer, run the same command with a larger --epochs (e.g. --epochs {cfg.epochs * 2}) and "
            "--resume"
        )
    return f"{cfg.out}: the run is already complete ({done}); nothing was trained. {how}.\n"
