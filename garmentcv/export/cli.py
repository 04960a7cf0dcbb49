"""``gcv export``: a GarmentCV checkpoint -> one self-describing, parity-checked ONNX file."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from garmentcv.artifact import INPUT_FORMATS, INPUT_UINT8, INT8_ACTIVATIONS, PRECISIONS
from garmentcv.cli_utils import (
    deprecated_alias,
    docs_epilog,
    handle_errors,
    plural,
    quiet_option,
    setup_logging,
    verbose_option,
    version_option,
)
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH
from garmentcv.installs import require_onnxruntime, require_torch

#: Same as garmentcv.export.convert.DEFAULT_OPSET, repeated so that --help loads no torch (a test checks it).
DEFAULT_OPSET = 18
#: Same as garmentcv.unknowns.scores.METHODS (numpy only, but kept apart from --help's imports like the opset).
UNKNOWN_METHODS = ("msp", "energy", "maxlogit", "knn", "mahalanobis", "vim")
#: Same as garmentcv.unknowns.scores.DEFAULT_METHOD, for the same reason.
DEFAULT_UNKNOWN_METHOD = "knn"


_INT8_ACTIVATIONS = click.Choice(INT8_ACTIVATIONS)
_QUANTIZATION_DATA = click.Path(exists=True, path_type=Path)
_QUANTIZATION_IMAGES = click.IntRange(min=1)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
               epilog=docs_epilog("export"))
@version_option("gcv export")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL_PATH,
              help="ONNX file to write, replaced only when every check passes.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
              help="fp32; fp16 (for CUDA, float32 in and out); int8 (static QDQ, per-channel weights).")
@click.option("--opset", type=click.IntRange(min=DEFAULT_OPSET), default=DEFAULT_OPSET,
              help="ONNX opset of the default domain; the export fails rather than write another.")
@click.option("--val-data", type=click.Path(exists=True, path_type=Path), default=None,
              show_default="the run's val.csv",
              help="Labelled images (folder or path,label CSV) for the parity and accuracy checks.")
@click.option("--val-images", type=click.IntRange(min=0), default=0,
              help="Use at most this many validation images (seeded random subset); 0: all.")
@click.option("--quantization-data", "calibration_data", type=_QUANTIZATION_DATA, default=None,
              show_default="the run's train.csv",
              help="INT8: images (folder or path,label CSV) that set the activation ranges.")
@click.option("--quantization-images", "calibration_images", type=_QUANTIZATION_IMAGES, default=200,
              help="INT8: use at most this many images for the ranges (seeded random subset).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=1.0,
              help="FP16 and INT8: fail when validation accuracy falls more points than this below FP32.")
@click.option("--int8-activations", type=_INT8_ACTIVATIONS, default="uint8",
              help="INT8 activation type: uint8 (U8S8, fastest with VNNI) or int8 (S8S8, safe without VNNI).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32,
              help="Images decoded and run at a time in the checks and the INT8 ranges (bounds memory).")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), default=INPUT_UINT8,
              help="uint8-nhwc: uint8 crops, normalised in the graph; float32-nchw: format 1, for older releases.")
@click.option("--bf16-check", type=click.Choice(["auto", "off"]), default="auto",
              help="auto: also gate OpenVINO at bf16 on a CPU with native bf16; off: never run bf16.")
@click.option("--embedding/--no-embedding", default=False,
              help="Add the pooled features the head takes as a second output, embedding (N, D), gated like logits.")
@click.option("--cam/--no-cam", default=False,
              help="Add class activation maps as output cam (N, C, h, w), gated like logits; implies --embedding.")
@click.option("--coverage", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=0.95,
              help="Fit prediction sets holding the true class with this probability, on held-out validation images.")
@click.option("--no-prediction-sets", "no_sets", is_flag=True, default=False,
              help="Fit no prediction sets (the temperature then uses every validation image).")
@click.option("--conformal-method", type=click.Choice(["lac", "aps"]), default="lac",
              help="Score of the prediction sets: lac (smallest sets) or aps (adaptive, rarely empty).")
@click.option("--class-conditional/--marginal", default=False,
              help="One prediction-set threshold per class (coverage per class) instead of one overall.")
@click.option("--unknown-score", type=click.Choice(UNKNOWN_METHODS), is_flag=False, flag_value=DEFAULT_UNKNOWN_METHOD,
              default=None, show_default=f"none; given alone: {DEFAULT_UNKNOWN_METHOD}",
              help="Add an unknown-item detector with this score, computed in the graph as the ood_score output.")
@click.option("--unknown-recall", type=click.FloatRange(min=0, max=1, min_open=True), default=0.95,
              help="The detector's threshold keeps this share of the validation images.")
@click.option("--unknown-data", type=click.Path(exists=True, path_type=Path), default=None,
              show_default="the run's train.csv",
              help="Images of the classes (folder or path,label CSV) the detector's reference is fitted on.")
@click.option("--unknown-images", type=click.IntRange(min=0), default=2000,
              help="Use at most this many of those images (seeded random subset); 0: all.")
@deprecated_alias("--calibration-data", "calibration_data", type=_QUANTIZATION_DATA)
@deprecated_alias("--calibration-images", "calibration_images", type=_QUANTIZATION_IMAGES)
@quiet_option
@verbose_option
@handle_errors
def main(checkpoint: Path | None, quiet: bool, verbose: bool, no_sets: bool, **options: object) -> None:
    """Export CHECKPOINT (the best.pt of a training run) to one self-describing ONNX file, after checking it.

    Without CHECKPOINT the best.pt of the newest run under runs/train is used. The file is written only when the
    ONNX checker, parity with PyTorch on the validation images, the FP16 or INT8 accuracy drop and each runtime's
    gate pass.

    A temperature T for calibrated probabilities is fitted on the same images (Guo et al. 2017). None is stored
    (consumers use the raw softmax; the summary and the file say why) when the validation accuracy is not above
    chance (the larger of 1/classes and the largest class's share) by the larger of 5 points and two standard
    errors, when there are fewer than 20 validation images or fewer than 3 misclassified ones, or when the fit ends
    at a bound of its search (0.01 or 100).

    Prediction sets (split conformal prediction) are fitted at --coverage on half of the validation images, the
    temperature on the other half, so that the coverage holds; with too few images no sets are stored.
    """
    setup_logging(quiet, verbose)
    require_onnxruntime()  # a clear message, not an ImportError, when neither [cpu] nor [gpu] is installed
    require_torch()
    if not verbose:
        for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from garmentcv.export.exporter import (  # torch loads here, after --help
        ExportConfig,
        export_checkpoint,
    )

    if no_sets:
        options["coverage"] = None
    cfg = ExportConfig(checkpoint=checkpoint, **options)  # type: ignore[arg-type]
    if cfg.out == DEFAULT_MODEL_PATH:
        logging.getLogger(__name__).info("no --out given; writing %s, where gcv classify looks by default", cfg.out)
    r = export_checkpoint(cfg, progress=not quiet)
    tol = "" if r.parity.tolerance is None else f" ({r.parity.describe_tolerance()})"
    lines = [
        f"wrote {r.out}: {r.size_mb:.1f} MB, {r.info.precision}, opset {r.info.opset}, {r.info.arch}, "
        f"classes {', '.join(r.info.classes)}, input {r.info.input_format} (format {r.info.format_version})",
        f"checkpoint {r.checkpoint} (sha256 {r.info.checkpoint_sha256[:12]})",
        f"parity vs PyTorch on {plural(r.val_images, 'validation image')}: FP32 largest logit difference "
        f"{r.fp32_parity.max_abs_diff:.3g} ({r.fp32_parity.describe_tolerance()}), top-1 agreement "
        f"{r.fp32_parity.top1_agreement:.2%}",
    ]
    if r.info.precision != "fp32":
        lines.append(
            f"parity {r.info.precision.upper()}: largest logit difference {r.parity.max_abs_diff:.3g}{tol}, "
            f"top-1 agreement {r.parity.top1_agreement:.2%}"
        )
    if r.uncalibrated is not None and r.calibrated is not None and r.temperature is not None:
        lines.append(
            f"temperature {r.temperature:.4g} fitted on the validation images (stored in the file; gcv classify and "
            f"gcv evaluate divide the logits by it): NLL {r.uncalibrated.nll:.4f} -> {r.calibrated.nll:.4f}, "
            f"ECE {r.uncalibrated.ece:.4f} -> {r.calibrated.ece:.4f}"
        )
    elif r.temperature is None:
        lines.append(
            f"temperature: none stored, gcv classify and gcv evaluate use the raw softmax: {r.temperature_note}"
        )
    if r.embedding_parity is not None:
        lines.append(f"embedding output, {r.info.embedding_dim} features: {r.embedding_parity.describe()}")
    if r.cam_parity is not None:
        lines.append(f"cam output (class activation maps): {r.cam_parity.describe()}")
    if r.conformal is not None:
        lines.append(f"prediction sets: {r.conformal.describe()} (gcv classify writes each row's set)")
    elif r.conformal_note:
        lines.append(f"prediction sets: {r.conformal_note}")
    if r.info.unknown is not None:
        u = r.info.unknown
        lines.append(f"unknown items: {u.method} score in the graph (ood_score), threshold {u.threshold:.6g} keeps "
                     f"{u.recall:.2%} of {plural(u.images, 'validation image')}, reference of {u.reference_size} rows; "
                     f"largest difference from the numpy score {r.unknown_score_diff:.3g} x max(1, |score|)")
    accuracy = f"validation accuracy: FP32 {r.fp32_accuracy:.2%}"
    if r.info.precision != "fp32":
        accuracy += f" | {r.info.precision.upper()} {r.accuracy:.2%} (drop {r.accuracy_drop:.2f} points)"
    if r.calibration_images:
        accuracy += f"; INT8 ranges set on {plural(r.calibration_images, 'image')}"
        if r.info.quantization is not None:
            accuracy += f" ({r.info.quantization.activations} activations)"
    for g in r.info.runtime_gates:
        lines.append(f"{g.precision} on {g.version}: {'passed' if g.passed else 'not passed'}, {g.describe()}"
                     + ("" if g.passed else f" ({g.note})"))
    if r.runs_on is not None:
        c = r.runs_on
        lines.append(
            f"gcv classify --runtime auto on this CPU: {c.runtime} at {c.inference_precision or r.info.precision}"
            f" ({c.reason})"
        )
    lines.append(accuracy)  # the accuracy line stays last
    click.echo("\n".join(lines))
