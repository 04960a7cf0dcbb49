"""``gcv-data``: build and check datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main() -> None:
    """Build and check datasets for gcv-train."""


@main.command("fashion-mnist")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="Folder to write train/, test/ and test_labels.csv into.",
)
@click.option(
    "--source", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
    help="Folder with the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist installs them here).",
)
@click.option(
    "--max-per-class", type=click.IntRange(min=1), default=None,
    help="Keep at most N images per class in each split (in file order). Default: all.",
)
@click.option("--all-classes", is_flag=True, help="Keep the ten Fashion-MNIST classes instead of bryuki/bluzy.")
@quiet_option
@handle_errors
def fashion_mnist(out: Path, source: Path, max_per_class: int | None, all_classes: bool, quiet: bool) -> None:
    """Write a Lamoda-layout stand-in from Fashion-MNIST.

    Trouser becomes bryuki, Shirt and T-shirt/top become bluzy; garments are dark on white. OUT/train holds
    <id>_<label>.jpg files, OUT/test unlabelled <index>.jpg files, OUT/test_labels.csv the index,label
    solution. The same input always gives the same bytes.
    """
    setup_logging(quiet)
    with tqdm(desc="writing images", unit="img", file=sys.stderr, disable=True if quiet else None) as bar:
        summary = write_fashion_mnist(out, source, max_per_class, all_classes, progress=bar.update)
    click.echo(f"train: {summary.train_counts} -> {out / 'train'}")
    click.echo(f"test:  {summary.test_counts} -> {out / 'test'} (labels in {out / 'test_labels.csv'})")
