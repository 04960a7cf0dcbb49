"""``gcv-train``: fine-tune torchvision CNNs on a labelled folder."""

from __future__ import annotations

import time
from pathlib import Path

import click

from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging, verbose_option, version_option
from garmentcv.data.layouts import Layout
from garmentcv.train import config as defaults
from garmentcv.train.config import TrainConfig

#: Parent of the timestamped run folders written when --out is not given; gcv-export looks here.
RUNS_DIR = Path("runs") / "train"


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


def _default_out() -> Path:
    return RUNS_DIR / time.strftime("%Y%m%d-%H%M%S")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@version_option("gcv-train")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Run folder, new or empty (a folder with files is refused unless --resume). Default: "
    f"{RUNS_DIR}/<YYYYmmdd-HHMMSS>.",
)
@click.option(
    "--arch", "archs", multiple=True, type=click.Choice([*defaults.ARCHS, "all"]), default=("resnet18",),
    help="Model(s) to train; repeat the option or say 'all' to train and compare several.",
)
@click.option(
    "--weights", default="imagenet",
    help="Backbone weights: 'imagenet' (torchvision's, from the TORCH_HOME cache or downloaded), 'none' "
    "(from scratch) or the path of a torchvision state dict file.",
)
@click.option(
    "--layout", type=click.Choice([m.value for m in Layout]), default=None,
    help="Dataset layout; detected when not given: a .csv file is a manifest, a folder of <id>_<label>.jpg "
    "files is lamoda, a folder of class folders is folders.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=defaults.DEFAULT_EPOCHS, help="Passes over the training split.")
@click.option(
    "--batch-size", type=BatchSize(), default=defaults.DEFAULT_BATCH_SIZE,
    help="Images per step (at least 2: BatchNorm cannot train on one; a last training batch of one is dropped).",
)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=defaults.DEFAULT_LR, help="AdamW learning rate.")
@click.option(
    "--lr-gamma", type=click.FloatRange(0, 1, min_open=True), default=defaults.DEFAULT_LR_GAMMA,
    help="Learning rate factor applied after each epoch (ExponentialLR).",
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, help="AdamW decoupled weight decay.")
@click.option(
    "--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=defaults.DEFAULT_VAL_FRACTION, help="Share of each class held out for validation (stratified).",
)
@click.option("--seed", type=int, default=0, help="Seed of the split, the head's init and the augmentation.")
@click.option(
    "--image-size", type=click.IntRange(min=16), default=None,
    help="Model input side in px (resize scaled in the weights' ratio, 256/224). Default: the weights' 224.",
)
@click.option("--rotation", type=click.FloatRange(0, 180), default=15.0, help="Largest random rotation, degrees.")
@click.option(
    "--crop-scale", type=click.FloatRange(0, 1, min_open=True), default=0.7,
    help="Smallest image area kept by the random resized crop.",
)
@click.option("--jitter", type=click.FloatRange(0, 1), default=0.2, help="Brightness/contrast/saturation jitter; 0 disables.")
@click.option("--hflip", type=click.FloatRange(0, 1), default=0.5, help="Probability of a horizontal flip.")
@click.option(
    "--workers", type=click.IntRange(min=0), default=0,
    help="DataLoader worker processes (0: main process). Changes the augmentation stream, so --resume needs the same.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="auto: CUDA (with AMP) when present.")
@click.option(
    "--resume", is_flag=True,
    help="Continue the run in --out from each arch's last.pt; refused if the settings or the data differ.",
)
@click.option(
    "--skip-bad-images", is_flag=True,
    help="Train without images that cannot be decoded (listed in skipped_images.csv of the run folder) "
    "instead of stopping with their names. Every image is checked once before training.",
)
@quiet_option
@verbose_option
@handle_errors
def main(data: Path, out: Path | None, archs: tuple[str, ...], quiet: bool, verbose: bool, **options: object) -> None:
    """Fine-tune ImageNet CNNs on the labelled images in DATA and report validation metrics.

    DATA is a folder of <id>_<label>.jpg files (the Lamoda/Kaggle layout), a folder with one sub-folder per
    class, or a path,label CSV manifest. Every image is decoded once before training. The run folder (new or
    empty unless --resume) receives config.json, the split (train.csv, val.csv), comparison.md, with
    --skip-bad-images skipped_images.csv, and per arch best.pt, last.pt, metrics.json, confusion_matrix.png,
    curves.png.
    """
    setup_logging(quiet, verbose)
    from garmentcv.train.loop import train  # torch loads here, after --help and option errors

    if options["resume"] and out is None:
        raise click.UsageError("--resume needs --out, the run folder to continue")
    chosen = defaults.ARCHS if "all" in archs else tuple(dict.fromkeys(archs))
    cfg = TrainConfig(data=data, out=out or _default_out(), archs=chosen, **options)  # type: ignore[arg-type]
    result = train(cfg, progress=not quiet)
    click.echo(result.comparison.read_text(encoding="utf-8"))
    for r in result.archs:
        click.echo(f"{r.arch}: best epoch {r.best_epoch} -> {r.run_dir / 'best.pt'}")
