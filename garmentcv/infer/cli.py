"""``gcv classify`` and ``gcv evaluate``: classify folders and measure a model with an ONNX file only.

Each command parses its options, builds the library's config, calls the library (which checks the settings:
:func:`garmentcv.infer.classify.check_config`, :func:`garmentcv.infer.evaluate.check_config`) and prints a summary;
errors are exceptions that :func:`garmentcv.cli_utils.handle_errors` turns into exit codes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from garmentcv.cli_utils import (
    deprecated_alias,
    docs_epilog,
    handle_errors,
    quiet_option,
    setup_logging,
    verbose_option,
    version_option,
)
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH
from garmentcv.infer.rows import OutputFormat
from garmentcv.installs import require_onnxruntime
from garmentcv.text import plural

_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
_LAYOUTS = ("lamoda", "folders", "csv")  # garmentcv.data.layouts.Layout values
_DEVICES = click.Choice(["auto", "cpu", "cuda"])  # garmentcv.infer.runtimes.onnxruntime.PROVIDERS
_CPUS = "the CPUs this process may use"
F = TypeVar("F", bound=Callable[..., Any])


def _model_option(default: Path | None) -> click.Option:
    return click.option(
        "--model", type=click.Path(dir_okay=False, path_type=Path), default=default, required=default is None,
        help="GarmentCV ONNX file written by gcv export (classes and preprocessing inside).",
    )


def _runtime_options(func: F) -> F:
    """--device, --runtime, --threads, --decode-threads, and the old names --provider and --workers (one release)."""
    for option in reversed([
        click.option("--device", type=_DEVICES, default="auto",
                     help="auto: CUDA when onnxruntime can run it, else the CPU; cuda: CUDA or an error."),
        click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto",
                     help="auto: the fastest installed runtime for this CPU and model file."),
        click.option("--threads", type=click.IntRange(min=1), default=None, show_default=_CPUS,
                     help="Runtime CPU threads (onnxruntime or OpenVINO)."),
        click.option("--decode-threads", type=click.IntRange(min=1), default=None, show_default=_CPUS,
                     help="Image decoding threads, running beside the runtime."),
        deprecated_alias("--provider", "device", type=_DEVICES),
        deprecated_alias("--workers", "decode_threads", type=click.IntRange(min=1)),
    ]):
        func = option(func)
    return func


_CALIBRATION = click.option(
    "--calibration", type=click.Choice(["temperature", "none"]), default="temperature",
    help="temperature: softmax(logits / T) with the model file's T; none: the raw softmax.",
)


@click.command(context_settings=_CONTEXT, epilog=docs_epilog("classify"),
               short_help="Classify images with an exported model: one row per image.")
@version_option("gcv classify")
@click.argument("source", metavar="SOURCE")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Results file, written when the run is complete.")
@_model_option(DEFAULT_MODEL_PATH)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per model run.")
@_runtime_options
@click.option("--recursive/--no-recursive", default=True, help="Also classify images in sub-folders.")
@click.option("--format", "fmt", type=click.Choice([f.value for f in OutputFormat]), default="csv",
              help="csv, jsonl, parquet: a row of probabilities per image; kaggle: index,label.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="local: this process; ray: a pool of Ray worker actors (garmentcv[ray]).")
@click.option("--address", default=None, metavar="ADDRESS", show_default="RAY_ADDRESS, else a new local Ray",
              help="--engine ray: the Ray cluster: auto, HOST:PORT or ray://HOST:10001.")
@click.option("--num-workers", type=click.IntRange(min=1), default=None,
              show_default="the cluster's CPUs / --cpus-per-worker",
              help="--engine ray: worker actors, each holding one model session.")
@click.option("--cpus-per-worker", type=click.IntRange(min=1), default=1,
              help="--engine ray: CPUs each worker reserves for its runtime and decoding.")
@click.option("--resume", is_flag=True,
              help="Finish an interrupted run with the same --out: classify only what is missing.")
@_CALIBRATION
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None,
              help="Mark rows below this confidence as needing review (not with kaggle).")
@click.option("--topk", type=click.IntRange(min=1), default=None,
              help="Write the K most probable labels instead of every class (not with kaggle).")
@click.option("--prediction-sets", type=click.Choice(["auto", "off"]), default="auto",
              help="auto: write each row's prediction set when the model file has them; off: never.")
@click.option("--unknown", type=click.Choice(["auto", "off"]), default="auto",
              help="auto: unknown and ood_score columns when the model file has a detector; off: never.")
@click.option("--exclude-unknown", is_flag=True,
              help="kaggle: give rows called unknown an empty label.")
@click.option("--embeddings", type=click.Path(dir_okay=False, path_type=Path), default=None, show_default="none",
              help="Also write each row's embedding to this .npy (with a .paths.csv index) or .parquet file.")
@click.option("--on-error", type=click.Choice(["auto", "fail", "continue"]), default="auto",
              help="Exit 1 on error rows: auto (with kaggle only), fail (always), continue (never).")
@deprecated_alias("--fail-on-error", "on_error", flag_value="fail")
@deprecated_alias("--allow-errors", "on_error", flag_value="continue")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write this HTML page of the results, least confident first.")
@click.option("--allow-empty", is_flag=True,
              help="Exit 0 with a results file without rows when SOURCE holds no image.")
@click.option("--list-skipped", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write this CSV file (path,reason) of every file or folder skipped.")
@quiet_option
@verbose_option
@handle_errors
def classify_main(source: str, out: Path, model: Path, batch_size: int, device: str, runtime: str,
                  threads: int | None, decode_threads: int | None, recursive: bool, fmt: str, engine: str,
                  address: str | None, num_workers: int | None, cpus_per_worker: int, resume: bool, calibration: str,
                  min_confidence: float | None, topk: int | None, on_error: str, report: Path | None,
                  allow_empty: bool, list_skipped: Path | None, prediction_sets: str, unknown: str,
                  exclude_unknown: bool, embeddings: Path | None, quiet: bool, verbose: bool) -> None:
    """Classify every image in SOURCE with an exported model: one row per image file in --out.

    SOURCE is a folder, a manifest (a .txt or .lst file of paths, or a .csv file with a path column) or an
    object-storage prefix such as s3://bucket/photos/. A file that cannot be decoded gets a row with the reason in
    its error column (--on-error says whether the run then fails); hidden files and non-images are skipped. --out
    appears only when the run is complete; --resume finishes an interrupted one.
    """
    setup_logging(quiet, verbose)
    require_onnxruntime()  # a clear message, not an ImportError, when neither [cpu] nor [gpu] is installed
    from garmentcv.infer.classify import ClassifyConfig, check_config, check_error_policy
    from garmentcv.infer.engines.local import classify_folder
    from garmentcv.infer.engines.ray import RayOptions
    from garmentcv.infer.sources import is_uri
    from garmentcv.report import write_classify_report

    cfg = ClassifyConfig(folder=source if is_uri(source) else Path(source), out=out, model=model,
                         batch_size=batch_size, provider=device, threads=threads, workers=decode_threads,
                         recursive=recursive, format=OutputFormat(fmt), resume=resume, progress=not quiet,
                         calibration=calibration, min_confidence=min_confidence, topk=topk, runtime=runtime,
                         allow_empty=allow_empty, list_skipped=list_skipped, prediction_sets=prediction_sets,
                         unknown=unknown, exclude_unknown=exclude_unknown, embeddings=embeddings)
    ray = RayOptions(address=address, num_workers=num_workers, cpus_per_worker=cpus_per_worker)
    check_config(cfg, engine, ray, report)
    if engine == "ray":
        from garmentcv.infer.engines.ray import classify_ray, import_ray

        import_ray()  # says how to install Ray when it is missing
        s = classify_ray(cfg, ray)
    else:
        s = classify_folder(cfg)
    if report is not None:
        page = write_classify_report(report, s.out, Path(cfg.folder), skipped=s.skipped, model=Path(cfg.model))
        click.echo(f"report -> {page}", err=True)
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(s.skipped.items())) or "none"
    if s.skipped_list is not None:
        skipped += f" (listed in {s.skipped_list})"
    elif s.skipped:
        skipped += " (--list-skipped FILE names them)"
    click.echo(
        f"{plural(s.files, 'image file')}: {s.classified} classified, {plural(s.errors, 'error')}; skipped {skipped}; "
        f"{s.seconds:.1f} s, {s.images_per_second:.1f} images/s on {s.provider} ({s.runtime}, "
        f"{s.inference_precision})"
        + (f" ({s.reused} rows from the interrupted run)" if s.reused else "") + f" -> {s.out}"
        + _review_text(s)
        + (f"; {s.unknown} unknown" if s.unknown_checked else "")
        + (f"; embeddings -> {s.embeddings}" if s.embeddings is not None else "")
        + ("; calibrated with temperature " + f"{s.temperature:.4g}" if s.temperature != 1.0 else "; raw softmax"),
        err=True,
    )
    check_error_policy(s, cfg.format, on_error)


def _review_text(s: Any) -> str:
    """``; 5 need review (confidence below 0.8; 3 prediction sets of other than one label at 95% coverage)``, or
    ``""`` without either rule (``s``: a :class:`garmentcv.infer.classify.ClassifySummary`)."""
    why = []
    if s.min_confidence is not None:
        why.append(f"confidence below {s.min_confidence:g}")
    if s.coverage is not None:
        why.append(f"{plural(s.unclear_sets, 'prediction set')} of other than one label at {s.coverage:.0%} coverage")
    return f"; {s.needs_review} need review ({'; '.join(why)})" if why else ""


@click.command(context_settings=_CONTEXT, epilog=docs_epilog("evaluate"),
               short_help="Measure an exported model on labelled images.")
@version_option("gcv evaluate")
@click.argument("data", type=click.Path(exists=True, path_type=Path), required=False, metavar="DATA")
@deprecated_alias("--data", "data", type=click.Path(exists=True, path_type=Path), required=True)
@_model_option(DEFAULT_MODEL_PATH)
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An index,label CSV naming the label of each <index>.<ext> image in DATA.")
@click.option("--layout", type=click.Choice(_LAYOUTS), default=None, show_default="detected",
              help="Dataset layout of DATA.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/evaluate"),
              help="Folder for the metrics, plots, CSV files and report.html.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per model run.")
@_runtime_options
@_CALIBRATION
@click.option("--target-accuracy", type=click.FloatRange(0.0, 1.0), default=None,
              help="Report the lowest confidence threshold whose kept images reach this accuracy.")
@click.option("--other-data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              show_default="none", help="Images of none of the classes: report the unknown detector's AUROC.")
@quiet_option
@verbose_option
@handle_errors
def evaluate_main(data: Path, model: Path, labels: Path | None, layout: str | None, out: Path, batch_size: int,
                  device: str, runtime: str, threads: int | None, decode_threads: int | None, calibration: str,
                  target_accuracy: float | None, other_data: Path | None, quiet: bool, verbose: bool) -> None:
    """Measure an exported model on the labelled images DATA: accuracy, macro precision/recall/F1, confusion
    matrix, calibration (ECE, NLL, Brier score; raw and with the model file's temperature) and coverage against
    accuracy by confidence threshold, with plots and a report page in --out.

    DATA is in any layout gcv train reads, or a folder of <index>.<ext> images named by --labels.
    """
    setup_logging(quiet, verbose)
    require_onnxruntime()  # a clear message, not an ImportError, when neither [cpu] nor [gpu] is installed
    from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model

    cfg = EvaluateConfig(model=model, data=data, labels=labels, layout=layout, out=out, batch_size=batch_size,
                         provider=device, threads=threads, workers=decode_threads, progress=not quiet,
                         calibration=calibration, target_accuracy=target_accuracy, runtime=runtime,
                         other_data=other_data)
    r = evaluate_model(cfg)
    absent = (
        f" (macro averages over {len(r.classes) - len(r.absent_classes)} of {len(r.classes)} classes (no images of "
        f"{', '.join(r.absent_classes)}))" if r.absent_classes else ""
    )
    lines = [
        f"{plural(r.count, 'image')} ({r.errors} could not be decoded): accuracy {r.accuracy:.4f}, "
        f"precision {r.precision:.4f}, recall {r.recall:.4f}, F1 {r.f1:.4f}{absent}; {r.misclassified} misclassified "
        f"-> {r.out}"
    ]
    if r.uncalibrated is not None and r.calibrated is not None:
        u, c = r.uncalibrated, r.calibrated
        lines.append(
            f"calibration: raw softmax ECE {u.ece:.4f}, NLL {u.nll:.4f}, Brier {u.brier:.4f} | with temperature "
            f"{r.temperature:.4g} ECE {c.ece:.4f}, NLL {c.nll:.4f}, Brier {c.brier:.4f}"
            + ("" if r.temperature != 1.0 else " (the model file has no temperature)")
            + f"; confidences use {'the temperature' if r.applied == 'temperature' else 'the raw softmax'}"
        )
    if r.target is not None:
        t = r.target
        if t.reachable:
            lines.append(f"target accuracy {t.target:.2%}: confidence >= {t.threshold:.6f} keeps {t.coverage:.2%} of "
                         f"the images ({t.kept}) at accuracy {t.accuracy:.2%}")
        else:
            lines.append(f"target accuracy {t.target:.2%} is not reachable on these images: no confidence threshold "
                         f"gets above {t.best_accuracy:.2%}")
    if r.prediction_sets is not None and r.sets_coverage is not None:
        ps = r.prediction_sets
        per_class = ", ".join(f"{c} {f.coverage:.2%} ({f.mean_size:.2f})"
                              for c, f in r.prediction_sets_per_class.items())
        lines.append(f"prediction sets at {r.sets_coverage:.0%} coverage: empirical coverage {ps.coverage:.2%}, mean "
                     f"size {ps.mean_size:.2f} ({ps.ambiguous} with two or more labels, {ps.empty} empty); per class "
                     f"coverage (mean size): {per_class}")
    if r.unknown is not None:
        u = r.unknown
        lines.append(f"unknown items ({u['method']}): AUROC {u['auroc']:.4f}; at threshold {u['threshold']:.6g} "
                     f"{u['let_through']:.2%} of {u['other_images']} other images let through, {u['recall']:.2%} of "
                     f"{u['images']} images of the classes kept")
    lines.append(f"runtime {r.runtime} on {r.device}, inference precision {r.inference_precision}")
    click.echo("\n".join(lines))
