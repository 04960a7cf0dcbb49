"""``gcv-classify`` and ``gcv-evaluate``: classify folders and measure a model with an ONNX file only."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from garmentcv.cli_utils import version_option
from garmentcv.installs import require_onnxruntime
from garmentcv.cli_utils import EXIT_ERROR, handle_errors, plural, quiet_option, setup_logging, verbose_option
from garmentcv.infer.model_file import DEFAULT_MODEL_PATH
from garmentcv.infer.rows import OutputFormat, kaggle_empty_labels_message

_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
_LAYOUTS = ("lamoda", "folders", "csv")  # garmentcv.data.layouts.Layout values
_THREADS_HELP = (
    "Runtime CPU threads (onnxruntime or OpenVINO). Default: the CPUs this process may use (CPU affinity and "
    "container quota, not the machine's core count)."
)
_CALIBRATION_HELP = (
    "temperature: probabilities and confidence are softmax(logits / T) with the temperature T that gcv-export fitted "
    "on the validation images and stored in the model file (files without one: T = 1); none: the raw softmax."
)
_RUNTIME_HELP = (
    "auto: the fastest installed runtime for this CPU and file (OpenVINO for INT8 files of at least 96 px input on "
    "CPUs with VNNI/AMX, and for FP32 files of at least 64 px in bf16 on CPUs with AMX when the file passed "
    "gcv-export's bf16 check; else onnxruntime, as below those sizes decoding photos is the limit and OpenVINO was "
    "measured slower; CUDA always onnxruntime); onnxruntime; openvino (CPU, needs garmentcv[openvino]; an error "
    "when not installed)."
)
_WORKERS_HELP = (
    "Image decoding threads, running beside the model. Default: the CPUs this process may use, like --threads "
    "(the two pools mostly take turns; measured fastest, see benchmarks/threads.py)."
)


def _model_option(default: Path | None) -> click.Option:
    return click.option(
        "--model", type=click.Path(dir_okay=False, path_type=Path), default=default, required=default is None,
        help="GarmentCV ONNX file written by gcv-export; classes and preprocessing are read from it.",
    )


@click.command(context_settings=_CONTEXT)
@version_option("gcv-classify")
@click.argument("source", metavar="SOURCE")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Results file.")
@_model_option(DEFAULT_MODEL_PATH)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per model run.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: CUDA when onnxruntime's CUDA provider really runs, else CPU; cuda: CUDA or an error.")
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto", help=_RUNTIME_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None, help=_THREADS_HELP)
@click.option("--workers", type=click.IntRange(min=1), default=None, help=_WORKERS_HELP)
@click.option("--recursive/--no-recursive", default=True, help="Also classify images in sub-folders.")
@click.option("--format", "fmt", type=click.Choice([f.value for f in OutputFormat]), default="csv",
              help="csv: path,label,confidence,prob_<class>...,error; jsonl: one object per line; "
              "kaggle: index,label (index = the path relative to SOURCE without its extension); parquet: the csv "
              "columns, typed (needs pyarrow: pip install 'garmentcv[parquet]').")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="local: this process; ray: a pool of Ray worker actors, on this machine or a Ray cluster "
              "(pip install 'garmentcv[ray]'); its workers run onnxruntime, so it gives the local engine's rows with "
              "--runtime onnxruntime (within 1e-6) and refuses --runtime openvino.")
@click.option("--address", default=None, metavar="ADDRESS",
              help="--engine ray: the Ray cluster, auto (started here with 'ray start'), HOST:PORT or "
              "ray://HOST:10001. Default: RAY_ADDRESS when set, else a new Ray instance on this machine.")
@click.option("--num-workers", type=click.IntRange(min=1), default=None,
              help="--engine ray: worker actors, each holding one model session. Default: the cluster's CPUs "
              "divided by --cpus-per-worker.")
@click.option("--cpus-per-worker", type=click.IntRange(min=1), default=1,
              help="--engine ray: CPUs each worker reserves; its onnxruntime and decoding threads.")
@click.option("--resume", is_flag=True,
              help="Finish an interrupted run with the same --out: classify only what is missing or changed "
              "(size or modification time). Without it, a new run starts; the partial results of an earlier one "
              "are kept until the new run completes.")
@click.option("--calibration", type=click.Choice(["temperature", "none"]), default="temperature",
              help=_CALIBRATION_HELP)
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None,
              help="Mark rows whose confidence is below this probability as needing review: a needs_review column "
              "(csv) or key (jsonl), true/false; label keeps the model's choice. Not with --format kaggle.")
@click.option("--topk", type=click.IntRange(min=1), default=None,
              help="Write the K most probable labels with their probabilities (csv: top1_label,top1_prob,...; "
              "jsonl: top_labels, top_probs) instead of one prob_<class> column per class. At most the number of "
              "classes; not with --format kaggle.")
@click.option("--fail-on-error", is_flag=True, help="Exit with 1 when any image could not be decoded.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write this HTML page (and a NAME_files/ folder of thumbnails beside it): per predicted "
              "class the images, least confident first, the rows needing review, the files not read. csv or jsonl.")
@click.option("--allow-empty", is_flag=True,
              help="Exit 0 with a results file without rows when SOURCE holds no image file (else an error, exit 1).")
@click.option("--list-skipped", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write this CSV file (path,reason) naming every file or folder skipped (hidden, not an image).")
@click.option("--allow-errors", is_flag=True,
              help="With --format kaggle, exit 0 although some images could not be decoded (their rows have an "
              "empty label) or two files share an index (10.jpg, 10.png). Without it such a file is still written, "
              "but the command exits with 1.")
@quiet_option
@verbose_option
@handle_errors
def classify_main(source: str, out: Path, model: Path, batch_size: int, provider: str, runtime: str,
                  threads: int | None, workers: int | None, recursive: bool, fmt: str, engine: str,
                  address: str | None, num_workers: int | None, cpus_per_worker: int, resume: bool, calibration: str,
                  min_confidence: float | None, topk: int | None, fail_on_error: bool, report: Path | None,
                  allow_empty: bool, list_skipped: Path | None, allow_errors: bool, quiet: bool,
                  verbose: bool) -> None:
    """Classify every image in SOURCE with an exported model: one row per image file in --out.

    SOURCE is a folder, a manifest (a .txt or .lst file of paths, one a line, or a .csv file with a path column;
    relative paths are relative to the manifest) or an object-storage prefix such as s3://bucket/photos/
    (credentials from the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).

    Rows are sorted by path relative to SOURCE (or as the manifest gives it). A file that cannot be decoded gets a row with an empty label
    and the reason in the error column; hidden files and non-images are skipped. Rows are saved batch by
    batch in OUT.partial and OUT appears only when the run is complete; after Ctrl-C, a full disk or a crash,
    --resume finishes it (a file whose decoding killed the process gets the error "worker died while decoding").
    One run at a time writes an OUT: a second one is refused. --out, --report and --list-skipped may not be the
    model, the manifest, or lie inside SOURCE.
    With --format kaggle, images that could not be decoded make the command exit with 1 (the file is still
    written) unless --allow-errors. Probabilities are calibrated with the model file's temperature unless
    --calibration none.
    """
    setup_logging(quiet, verbose)
    require_onnxruntime()  # a clear message, not an ImportError, when neither [cpu] nor [gpu] is installed
    from garmentcv.infer.classify import ClassifyConfig, check_output_apart, classify_folder
    from garmentcv.infer.sources import is_uri, open_source
    from garmentcv.report import check_report_output, files_folder, write_classify_report

    if engine == "local":
        given = [name for name, value in (("--address", address), ("--num-workers", num_workers),
                                          ("--cpus-per-worker", cpus_per_worker if cpus_per_worker != 1 else None))
                 if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} only go with --engine ray")
    elif threads is not None or workers is not None:
        raise click.UsageError("--threads and --workers are for --engine local; with --engine ray each worker gets "
                               "--cpus-per-worker threads of both")
    folder = source if is_uri(source) else Path(source)
    if report is not None and not (isinstance(folder, Path) and folder.is_dir()):
        raise click.UsageError("--report shows the images of a local folder; SOURCE is not one")
    if report is not None and fmt not in (OutputFormat.CSV.value, OutputFormat.JSONL.value):
        raise click.UsageError(f"--report needs the confidence and error columns of --format csv or jsonl, not {fmt}")
    if report is not None and report.resolve() == out.resolve():
        raise click.UsageError(f"--report {report} is the results file --out; give the page another name")
    if report is not None:
        check_output_apart(report, "--report", model, open_source(folder), thumbnails=files_folder(report))
        check_report_output(report, "--report")
    cfg = ClassifyConfig(folder=folder, out=out, model=model, batch_size=batch_size, provider=provider,
                         threads=threads, workers=workers, recursive=recursive, format=OutputFormat(fmt),
                         resume=resume, progress=not quiet, calibration=calibration, min_confidence=min_confidence,
                         topk=topk, runtime=runtime, allow_empty=allow_empty, list_skipped=list_skipped)
    if engine == "ray":
        from garmentcv.infer.ray_engine import RayOptions, classify_ray, import_ray

        if runtime == "openvino":
            raise click.UsageError("--engine ray runs onnxruntime in its workers; --runtime openvino works with the local engine")
        import_ray()  # says how to install Ray when it is missing
        s = classify_ray(cfg, RayOptions(address=address, num_workers=num_workers, cpus_per_worker=cpus_per_worker))
    else:
        s = classify_folder(cfg)
    if report is not None:
        click.echo(f"report -> {write_classify_report(report, s.out, folder, skipped=s.skipped)}", err=True)
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
        + (f"; {s.needs_review} need review (confidence below {s.min_confidence:g})" if s.min_confidence is not None
           else "")
        + ("; calibrated with temperature " + f"{s.temperature:.4g}" if s.temperature != 1.0 else "; raw softmax"),
        err=True,
    )
    if s.duplicate_indexes and not allow_errors:
        shown = "; ".join(f"{index} ({', '.join(paths)})" for index, paths in list(s.duplicate_indexes.items())[:5])
        more = len(s.duplicate_indexes) - 5
        click.echo(
            f"Error: {'1 index is' if len(s.duplicate_indexes) == 1 else f'{len(s.duplicate_indexes)} indexes are'} "
            f"shared by several files: {shown}{f' and {more} more' if more > 0 else ''}; the kaggle file {s.out} has "
            "a row for each, so its index column is not unique. Rename or remove the extra files, or pass "
            "--allow-errors to accept it", err=True,
        )
        sys.exit(EXIT_ERROR)
    if not s.errors:
        return
    failed = ", ".join(s.error_examples) + (f" and {s.errors - len(s.error_examples)} more"
                                            if s.errors > len(s.error_examples) else "")
    if fail_on_error:
        click.echo(f"Error: {plural(s.errors, 'image')} could not be decoded: {failed} (see the error column of "
                   f"{s.out})", err=True)
        sys.exit(EXIT_ERROR)
    if fmt == OutputFormat.KAGGLE.value and not allow_errors:
        click.echo(f"Error: {kaggle_empty_labels_message(s.errors, failed, s.out)}", err=True)
        sys.exit(EXIT_ERROR)


@click.command(context_settings=_CONTEXT)
@version_option("gcv-evaluate")
@_model_option(DEFAULT_MODEL_PATH)
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True,
              help="Labelled images in any layout gcv-train reads, or a folder of images named by --labels.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An index,label CSV (like test_labels.csv) naming the label of each <index>.<ext> in --data.")
@click.option("--layout", type=click.Choice(_LAYOUTS), default=None, help="Dataset layout of --data; detected when not given.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/evaluate"),
              help="Folder for metrics.json, confusion_matrix.json/.png, reliability.png, coverage.png, "
              "predictions.csv, misclassified.csv, errors.csv and report.html (with its report_files/ folder).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per model run.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="As for gcv-classify.")
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto", help=_RUNTIME_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None, help=_THREADS_HELP)
@click.option("--workers", type=click.IntRange(min=1), default=None, help=_WORKERS_HELP)
@click.option("--calibration", type=click.Choice(["temperature", "none"]), default="temperature",
              help=_CALIBRATION_HELP + " Used for the confidences of predictions.csv, misclassified.csv and the "
              "coverage table; ECE, NLL and Brier score are reported both ways.")
@click.option("--target-accuracy", type=click.FloatRange(0.0, 1.0), default=None,
              help="Report the lowest confidence threshold whose kept images (confidence >= threshold) reach this "
              "accuracy on --data, with the share of images kept, or say that no threshold reaches it.")
@quiet_option
@verbose_option
@handle_errors
def evaluate_main(model: Path, data: Path, labels: Path | None, layout: str | None, out: Path, batch_size: int,
                  provider: str, runtime: str, threads: int | None, workers: int | None, calibration: str,
                  target_accuracy: float | None, quiet: bool, verbose: bool) -> None:
    """Measure an exported model on labelled images: accuracy, macro precision/recall/F1, confusion matrix,
    calibration (ECE over 15 bins, NLL, Brier score; raw and with the model file's temperature) with a reliability
    diagram, and coverage against accuracy by confidence threshold.

    Writes metrics.json, confusion_matrix.json/.png, reliability.png, coverage.png, predictions.csv,
    misclassified.csv, errors.csv and report.html (with report_files/) into --out.
    """
    setup_logging(quiet, verbose)
    require_onnxruntime()  # a clear message, not an ImportError, when neither [cpu] nor [gpu] is installed
    from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model

    cfg = EvaluateConfig(model=model, data=data, labels=labels, layout=layout, out=out, batch_size=batch_size,
                         provider=provider, threads=threads, workers=workers, progress=not quiet,
                         calibration=calibration, target_accuracy=target_accuracy, runtime=runtime)
    r = evaluate_model(cfg)
    absent = (
        f" (macro averages over {len(r.classes) - len(r.absent_classes)} of {len(r.classes)} classes (no images of "
        f"{', '.join(r.absent_classes)}))" if r.absent_classes else ""
    )
    lines = [
        f"{plural(r.count, 'image')} ({r.errors} could not be decoded): accuracy {r.accuracy:.4f}, precision {r.precision:.4f}, "
        f"recall {r.recall:.4f}, F1 {r.f1:.4f}{absent}; {r.misclassified} misclassified -> {r.out}"
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
    lines.append(f"runtime {r.runtime} on {r.device}, inference precision {r.inference_precision}")
    click.echo("\n".join(lines))
