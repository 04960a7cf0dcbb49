"""``gcv data``: build and check datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from garmentcv.cli_utils import (
    docs_epilog,
    handle_errors,
    quiet_option,
    setup_logging,
    verbose_option,
    version_option,
)
from garmentcv.curate.audit import DEFAULT_KFOLD_EPOCHS, DEFAULT_KFOLD_LR, KFOLD_TRAINING, LINEAR_HEAD, PROBS
from garmentcv.curate.fixes import DEFAULT_DUPLICATE_COSINE, DEFAULT_ISSUES, ISSUES, write_corrections_file
from garmentcv.curate.label_next import DEFAULT_PREFILTER
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, write_fashion_mnist
from garmentcv.data.inspect import inspect_dataset, render_text
from garmentcv.data.layouts import Layout
from garmentcv.errors import GarmentCVError
from garmentcv.fsutil import check_writable_output, write_json
from garmentcv.text import plural

#: Exit code of ``gcv data inspect`` when the dataset has problems to fix before training.
EXIT_NOT_READY = 3
_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


class DatasetNotReadyError(GarmentCVError):
    """``gcv data inspect`` found problems to fix before training (exit code :data:`EXIT_NOT_READY`); the report's
    verdict line names them."""

    exit_code = EXIT_NOT_READY


@click.group(context_settings=_CONTEXT, epilog=docs_epilog("data"))
@version_option("gcv data")
@quiet_option
@verbose_option
def main(quiet: bool, verbose: bool) -> None:
    """Build and check datasets for training."""


@main.command("fashion-mnist", short_help="Write a Lamoda-layout stand-in from Fashion-MNIST.",
              context_settings=_CONTEXT, epilog=docs_epilog("data"))
@version_option("gcv data fashion-mnist")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="Folder to write train/, test/ and test_labels.csv into.",
)
@click.option(
    "--source", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
    help="Folder of the Fashion-MNIST IDX files.",
)
@click.option(
    "--max-per-class", type=click.IntRange(min=1), default=None, show_default="all",
    help="Keep at most N images per class in each split, in file order.",
)
@click.option("--all-classes", is_flag=True, help="Keep the ten Fashion-MNIST classes instead of bryuki/bluzy.")
@click.option(
    "--pretraining-set", is_flag=True,
    help="Also write OUT/pretrain: the seven other classes, sharing no image with OUT.",
)
@quiet_option
@verbose_option
@handle_errors
def fashion_mnist(
    out: Path, source: Path, max_per_class: int | None, all_classes: bool, pretraining_set: bool, quiet: bool,
    verbose: bool,
) -> None:
    """Write a Lamoda-layout stand-in from Fashion-MNIST.

    Trouser becomes bryuki, Shirt and T-shirt/top become bluzy; garments are dark on white. OUT/train holds
    <id>_<label>.jpg files, OUT/test unlabelled <index>.jpg files, OUT/test_labels.csv the index,label
    solution; with --pretraining-set, OUT/pretrain the seven other classes, sharing no file with the target
    set. The same input always gives the same bytes.
    """
    setup_logging(quiet, verbose)
    check_writable_output(out / "test_labels.csv", "--out")  # before any image is written
    with tqdm(desc="writing images", unit="img", file=sys.stderr, disable=True if quiet else None) as bar:
        summary = write_fashion_mnist(
            out, source, max_per_class, all_classes, progress=bar.update, pretraining_set=pretraining_set
        )
    click.echo(f"train: {summary.train_counts} -> {out / 'train'}")
    click.echo(f"test:  {summary.test_counts} -> {out / 'test'} (labels in {out / 'test_labels.csv'})")
    if pretraining_set:
        click.echo(
            f"pretrain: {summary.pretrain_counts} -> {out / 'pretrain'}; no image shared with train/ or test/ "
            f"(SHA-256); {summary.pretrain_shared} left out"
        )


@main.command("inspect", short_help="Report on a dataset before training; never modifies it.",
              context_settings=_CONTEXT, epilog=docs_epilog("data"))
@version_option("gcv data inspect")
@click.argument("root", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--layout", type=click.Choice([layout.value for layout in Layout]), default=None, show_default="detected",
    help="Dataset layout.",
)
@click.option(
    "--test", "test", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Test folder (searched recursively): report training files also found there.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the report as JSON to this file.",
)
@quiet_option
@verbose_option
@handle_errors
def inspect(root: Path, layout: str | None, test: Path | None, json_path: Path | None, quiet: bool,
            verbose: bool) -> None:
    """Report on the dataset ROOT before training; never modifies it.

    ROOT is a dataset folder or a path,label CSV manifest (UTF-8, with or without a byte-order mark), in any
    layout gcv train reads. Reported: files
    per class and balance, skipped files, files that fail to decode (the decode training uses), formats and
    colour modes, EXIF-rotated files, image sizes, byte-identical duplicates (and those with different
    labels) and, with --test, training files also present in the test folder. Ends with a verdict line.
    Bytes of file names that are not valid UTF-8 are shown as \\xNN, in the text and in --json.

    \b
    Exit codes:
      0    ready to train (warnings, e.g. same-label duplicates, may be shown)
      1    the dataset cannot be read (bad class names, empty class folder, < 2 classes)
      2    wrong usage (e.g. a ROOT path that does not exist)
      3    problems to fix first: undecodable files, duplicates with different
           labels, test files also in training, < 2 classes that decode
      70   internal error (a bug: rerun with --debug, report the traceback)
      130  interrupted
    """
    setup_logging(quiet, verbose)
    if json_path is not None:
        check_writable_output(json_path, "--json")  # before the scan, not after it
    with tqdm(desc="inspecting", unit="img", file=sys.stderr, disable=True if quiet else None) as bar:

        def show(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = inspect_dataset(root, layout, test, progress=show)
    click.echo(render_text(report))
    if json_path is not None:
        write_json(json_path, report.to_dict())
    if not report.ready:
        raise DatasetNotReadyError(f"{root} is not ready for training: fix what the verdict line names, then run "
                                   "gcv data inspect again")


@main.command("audit", short_help="Find likely label errors, duplicates and outliers with a model's embeddings.",
              context_settings=_CONTEXT, epilog=docs_epilog("curate"))
@version_option("gcv data audit")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_default="none", help="Model file exported with gcv export --embedding, run on DATA and --split.")
@click.option("--embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_default="none", help="Instead of --model: the embeddings file of gcv classify --embeddings (.npy, "
              ".parquet).")
@click.option("--embeddings-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              show_default="DATA's folder", help="Folder the --embeddings file's paths are relative to (the one "
              "classified).")
@click.option("--rows", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_default="none", help="With --embeddings: that run's rows, whose ood_score and unknown columns "
              "flag unknowns.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("audit"),
              help="Folder for fix_list.csv, duplicates.csv, out_of_sample.csv, audit.json and audit.html.")
@click.option("--split", "splits", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Another split (folder or path,label manifest) to find copies of DATA's images in; repeatable.")
@click.option("--layout", type=click.Choice([layout.value for layout in Layout]), default=None,
              show_default="detected", help="Dataset layout.")
@click.option("--probs", type=click.Choice(PROBS), default=LINEAR_HEAD,
              help="Out-of-sample probabilities: a linear head on the embeddings, or K fine-tunings of --checkpoint.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_default="none", help="gcv train checkpoint (best.pt) of DATA's classes, for --probs kfold-training.")
@click.option("--kfold-epochs", type=click.IntRange(min=1), default=DEFAULT_KFOLD_EPOCHS,
              help="Epochs of each fine-tuning of --probs kfold-training.")
@click.option("--kfold-lr", type=click.FloatRange(min=0.0, min_open=True), default=DEFAULT_KFOLD_LR,
              help="AdamW learning rate of each fine-tuning of --probs kfold-training.")
@click.option("--folds", type=click.IntRange(min=2), default=5, help="K of the K-fold out-of-sample probabilities.")
@click.option("--seed", type=int, default=0, help="Seed of the fold split (and of each K-fold fine-tuning).")
@click.option("--duplicate-cosine", type=click.FloatRange(0.0, 1.0, min_open=True), default=DEFAULT_DUPLICATE_COSINE,
              help="Cosine similarity from which two images are near-duplicates (label-next's default too).")
@click.option("--neighbours", type=click.IntRange(min=1), default=5, help="Nearest neighbours of the outlier score.")
@click.option("--outlier-iqr", type=click.FloatRange(min=0.0), default=3.0,
              help="Outlier fence, in inter-quartile ranges above the third quartile.")
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto",
              help="Runtime that runs the model file.")
@click.option("--no-report", is_flag=True, help="Do not write audit.html.")
@quiet_option
@verbose_option
@handle_errors
def audit(data: Path, model: Path | None, embeddings: Path | None, embeddings_root: Path | None, rows: Path | None,
          out: Path, splits: tuple[Path, ...], layout: str | None, probs: str, checkpoint: Path | None,
          kfold_epochs: int, kfold_lr: float, folds: int, seed: int, duplicate_cosine: float, neighbours: int,
          outlier_iqr: float, runtime: str, no_report: bool, quiet: bool, verbose: bool) -> None:
    """Audit the labelled dataset DATA with the embeddings of a model file; never modifies it.

    The embeddings come from --model (the model file runs on DATA and each --split) or from --embeddings, the file
    of 'gcv classify FOLDER --embeddings EMB' over a folder holding them (no model runs; with --rows, that run's
    rows give the unknown flags, else unknowns are not checked). Give exactly one of --model and --embeddings.

    Out-of-sample probabilities come from a linear head fitted on the embeddings in K folds (or, with --probs
    kfold-training, from K fine-tunings of --checkpoint, each scoring the fold it did not see); cleanlab's confident
    learning flags likely label errors; byte-identical files and embeddings above --duplicate-cosine are
    duplicates (within DATA and with each --split); images far from their neighbours are outliers; a model file
    with an unknown-item detector also flags images of none of the classes. The fix list turns into a corrections
    file with 'gcv data corrections'.
    """
    from garmentcv.curate.audit import UNKNOWN, AuditConfig, audit_dataset, unknown_note

    setup_logging(quiet, verbose)
    cfg = AuditConfig(data=data, model=model, out=out, splits=splits, layout=layout, folds=folds, seed=seed,
                      duplicate_cosine=duplicate_cosine, neighbours=neighbours, outlier_iqr=outlier_iqr,
                      runtime=runtime, report=not no_report, probs=probs, checkpoint=checkpoint,
                      kfold_epochs=kfold_epochs, kfold_lr=kfold_lr, embeddings=embeddings,
                      embeddings_root=embeddings_root, rows=rows)
    check_writable_output(out / "fix_list.csv", "--out")
    with (tqdm(desc="embedding", unit="img", file=sys.stderr, disable=True if quiet or model is None else None) as bar,
          tqdm(desc="k-fold training", unit="fold", file=sys.stderr,
               disable=True if quiet or probs != KFOLD_TRAINING else None) as folds_bar):

        def fold_done(done: int, total: int) -> None:
            folds_bar.total = total
            folds_bar.update(done - folds_bar.n)

        result = audit_dataset(cfg, progress=bar.update, fold_progress=fold_done)
    note = unknown_note(result)
    flagged = ", ".join(f"{n} {issue}" if issue != UNKNOWN or note is None else f"{issue} not checked"
                        for issue, n in result.counts.items())
    click.echo(f"{result.images} images, out-of-sample accuracy {result.out_of_sample_accuracy:.4f} ({result.probs}, "
               f"{result.folds} folds); flagged: {flagged}")
    if note is not None:
        click.echo(f"unknown check not run: {note}")
    for name, path in result.files.items():
        click.echo(f"{name}: {path}")


@main.command("corrections", short_help="Turn an audit's fix list into a corrections file for gcv train.",
              context_settings=_CONTEXT, epilog=docs_epilog("curate"))
@version_option("gcv data corrections")
@click.argument("fix_list", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Corrections file to write (path,label,action).")
@click.option("--issue", "issues", type=click.Choice(list(ISSUES)), multiple=True,
              default=DEFAULT_ISSUES, help="Issues to act on (label: relabel, others: drop); repeatable.")
@quiet_option
@verbose_option
@handle_errors
def corrections(fix_list: Path, out: Path, issues: tuple[str, ...], quiet: bool, verbose: bool) -> None:
    """Turn the fix list FIX_LIST of gcv data audit into a corrections file for gcv train --corrections.

    A label issue becomes a relabel to the suggested label; a duplicate, unknown or outlier a drop. By default
    near-duplicates and outliers are left for a person (whether a cosine means a copy depends on the embeddings).
    Edit the fix list first (delete rows you disagree with) or pick issues with --issue.
    """
    setup_logging(quiet, verbose)
    check_writable_output(out, "--out")
    written = write_corrections_file(fix_list, out, issues)
    click.echo(f"{written.corrections} corrections ({written.relabel} relabel, {written.drop} drop) -> {out}")
    if written.left:
        left = ", ".join(f"{issue} {plural(n, 'row')}" for issue, n in written.left.items())
        again = " ".join(f"--issue {issue}" for issue in (*issues, *written.left))
        click.echo(f"not acted on: {left}; review them, then run again with {again} to act on them too")


@main.command("label-next", short_help="Choose the unlabelled images to label next.",
              context_settings=_CONTEXT, epilog=docs_epilog("curate"))
@version_option("gcv data label-next")
@click.argument("pool", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_default="none", help="Model file exported with gcv export --embedding, run on POOL and --labelled.")
@click.option("--rows", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_default="none", help="Rows of a gcv classify run (csv, jsonl, parquet) to choose from, not POOL.")
@click.option("--embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              show_default="none", help="Embeddings file of that run (gcv classify --embeddings: .npy or .parquet).")
@click.option("-n", "n", type=click.IntRange(min=1), required=True, help="How many images to choose.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for label_next.csv and the Label Studio tasks and config.")
@click.option("--labelled", type=click.Path(exists=True, path_type=Path), default=None, show_default="none",
              help="Labelled dataset already in hand: no pick is a near-duplicate of it (with --rows, needs --model).")
@click.option("--seed", type=int, default=0, help="Seed of the tie-breaking order and of the k-means.")
@click.option("--duplicate-cosine", type=click.FloatRange(0.0, 1.0, min_open=True), default=DEFAULT_DUPLICATE_COSINE,
              help="Cosine similarity from which two images are near-duplicates (never both chosen).")
@click.option("--prefilter", type=click.FloatRange(min=1.0), default=DEFAULT_PREFILTER,
              help="Choose among the PREFILTER x N most uncertain images (Zhdanov's beta; 1: uncertainty alone).")
@click.option("--url-prefix", default="/data/local-files/?d=",
              help="Prefix of the image URLs in the Label Studio tasks (then the path under POOL).")
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto",
              help="Runtime that runs the model file.")
@quiet_option
@verbose_option
@handle_errors
def label_next_command(pool: Path | None, model: Path | None, rows: Path | None, embeddings: Path | None, n: int,
                       out: Path, labelled: Path | None, seed: int, duplicate_cosine: float, prefilter: float,
                       url_prefix: str, runtime: str, quiet: bool, verbose: bool) -> None:
    """Choose N images of the unlabelled folder POOL whose labels would teach the model most.

    Diverse uncertain images: the PREFILTER x N most uncertain (margin, entropy, prediction-set size, unknown
    score) are clustered into N by uncertainty-weighted k-means on the embeddings, and the image nearest each
    centre is chosen (Zhdanov 2019), never two near-duplicates. Writes label_next.csv, a Label Studio import
    file and its labelling config; 'gcv data from-label-studio' reads the labelled export back as a manifest.

    Give POOL with --model to run the model on the folder, or, after 'gcv classify FOLDER --model M.onnx --out ROWS
    --embeddings EMB', --rows ROWS --embeddings EMB to choose from that run without running the model again: the
    same images give the same choice.
    """
    from garmentcv.curate.label_next import LabelNextConfig, LabelNextUsageError, label_next

    setup_logging(quiet, verbose)
    try:
        cfg = LabelNextConfig(pool=pool, model=model, n=n, out=out, labelled=labelled, seed=seed,
                              duplicate_cosine=duplicate_cosine, prefilter=prefilter, url_prefix=url_prefix,
                              runtime=runtime, rows=rows, embeddings=embeddings)
    except LabelNextUsageError as exc:
        raise click.UsageError(str(exc)) from exc
    check_writable_output(out / "label_next.csv", "--out")
    with tqdm(desc="embedding", unit="img", file=sys.stderr, disable=True if quiet or pool is None else None) as bar:
        result = label_next(cfg, progress=bar.update)
    skipped = f" ({result.skipped} not decoded, left out)" if result.skipped else ""
    click.echo(f"chose {len(result.picks)} of {result.pool_images} images{skipped}")
    for name, path in result.files.items():
        click.echo(f"{name}: {path}")


@main.command("from-label-studio", short_help="Read a Label Studio JSON export back as a path,label manifest.",
              context_settings=_CONTEXT, epilog=docs_epilog("curate"))
@version_option("gcv data from-label-studio")
@click.argument("export", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pool", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The folder the tasks' image paths are relative to (label-next's POOL).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Manifest to write (path,label; paths relative to its folder).")
@click.option("--url-prefix", default="/data/local-files/?d=", help="Prefix of the image URLs in the tasks.")
@quiet_option
@verbose_option
@handle_errors
def from_label_studio(export: Path, pool: Path, out: Path, url_prefix: str, quiet: bool, verbose: bool) -> None:
    """Read the Label Studio JSON export EXPORT of label-next's tasks and write the labelled ones as a manifest
    gcv train reads (the csv layout)."""
    from garmentcv.curate.label_next import label_studio_to_manifest

    setup_logging(quiet, verbose)
    check_writable_output(out, "--out")
    summary = label_studio_to_manifest(export, pool, out, url_prefix)
    click.echo(f"{summary.rows} labelled images -> {out}; left out: {summary.unlabelled} without an annotation, "
               f"{summary.unmatched} naming no image of {pool}")
