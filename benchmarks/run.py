"""``python -m benchmarks run``: every figure of benchmarks/README.md in one run, on this machine.

Order: machine record, FP32 matmul rate and FLOP ceilings, model files, model-only timings, end to end on a
folder of photos (gcv classify against torchvision eager + DataLoader), peak memory against folder size, INT8 and
session settings, INT8 accuracy on the real test split. Writes ``run[-NAME].json`` (the result document, one
row per figure), ``.md`` (the report), ``.csv`` (every figure) and ``.png`` (the chart) to ``OUT/<machine>/``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from benchmarks import accuracy as acc
from benchmarks import (
    ceiling,
    end_to_end,
    model_only,
    onnx_models,
    options,
    photos,
    report,
    results,
    targets,
)
from benchmarks.machine import MachineInfo, machine_info
from benchmarks.model_only import TimingPlan
from benchmarks.onnx_models import Int8Settings
from benchmarks.report import Row
from garmentcv.infer.runtimes.onnxruntime import open_model
from garmentcv.models import MODELS, default_preprocessing

logger = logging.getLogger("benchmarks")

#: --sizes names: the weights' default input and the demo's (the main job trains at --image-size 32).
SIZE_NAMES = {"default": 224, "demo": 32}
#: Input sizes up to this many px run end to end on the larger --small-folder-files folder (they are fast, and a
#: few hundred files would measure start-up rather than the steady rate).
SMALL_SIZE = 64

#: INT8 settings re-quantized from gcv export's FP32 file and timed for one arch at batch 32, beside the
#: file gcv export writes (Int8Settings() = its settings).
INT8_VARIANTS: tuple[Int8Settings, ...] = (
    Int8Settings(per_channel=False),
    Int8Settings(quant_format="qoperator"),
    Int8Settings(activations="s8", quant_format="qoperator"),
)


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark run (see ``python -m benchmarks run --help``)."""

    out: Path
    archs: tuple[str, ...] = tuple(MODELS)
    sizes: tuple[int, ...] = (224, 32)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    plan: TimingPlan = TimingPlan()
    folder_files: int = 200
    small_folder_files: int = 2000
    distinct_files: int = 200
    memory_files: tuple[int, ...] = (2000, 20000)
    e2e_batch: int = 32
    baseline_workers: int = 0
    int8_variants: bool = True
    accuracy: acc.AccuracyPlan | None = acc.AccuracyPlan()
    max_minutes: float = 14.0
    matmul_sizes: tuple[int, ...] = ceiling.MATMUL_SIZES
    work: Path | None = None
    command: str = ""
    name: str | None = None


@dataclass
class _Run:
    """State shared by the steps of one run."""

    cfg: BenchConfig
    work: Path
    start: float = field(default_factory=time.perf_counter)
    rows: list[Row] = field(default_factory=list)
    ceilings: dict[tuple[str, int], float] = field(default_factory=dict)

    def out_of_time(self) -> bool:
        return time.perf_counter() - self.start > self.cfg.max_minutes * 60

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if row.status.startswith(("skipped", "failed")):
            logger.warning(
                "%s %s %s px %s %s: %s", row.section, row.arch, row.image_size, row.runtime, row.precision, row.status
            )

    def fraction(self, arch: str, size: int, images_per_s: float | None) -> tuple[float | None, float | None]:
        ceiling_ips = self.ceilings.get((arch, size))
        if ceiling_ips is None or images_per_s is None:
            return ceiling_ips, None
        return ceiling_ips, images_per_s / ceiling_ips


@dataclass(frozen=True)
class ModelFiles:
    """The files of one arch at one input size, and the labelled photos gcv export checked them on."""

    checkpoint: Path
    fp32: Path
    int8: Path
    int8_variant: Path
    photos: Path


def _ceiling_step(run: _Run) -> None:
    rate = ceiling.best_matmul_rate(run.cfg.matmul_sizes, budget_s=min(0.5, max(0.1, run.cfg.plan.budget_s / 3)))
    for library, n, gflops in rate.per_size:
        run.add(Row("matmul", runtime=library, batch_size=n, gflops=gflops,
                    note="best of all sizes" if (library, n) == (rate.library, rate.size) else ""))
    for arch in run.cfg.archs:
        for size in run.cfg.sizes:
            flops = ceiling.count_flops(arch, size)
            run.ceilings[(arch, size)] = ceiling.ceiling_images_per_second(flops, rate)
            run.add(
                Row(
                    "ceiling",
                    arch=arch,
                    image_size=size,
                    precision="fp32",
                    gflops=flops / 1e9,
                    ceiling_images_per_s=run.ceilings[(arch, size)],
                    note=f"{rate.gflops:.1f} GFLOP/s ({rate.library}, n={rate.size})",
                )
            )


def _make_models(run: _Run, arch: str, size: int, folder: photos.PhotoFolder) -> ModelFiles:
    stem = run.work / f"{arch}-{size}"
    checkpoint = onnx_models.write_random_checkpoint(arch, size, stem.with_suffix(".pt"))
    labelled = onnx_models.labelled_photos(run.work / "labelled", sorted(folder.path.glob("*.jpg"))[:16])
    export = functools.partial(onnx_models.export_model, checkpoint, val_data=labelled, calibration_data=labelled,
                               max_accuracy_drop=100.0)  # random weights: the accuracy gate means nothing here
    fp32 = export("fp32", stem.with_suffix(".fp32.onnx"))
    calibration = onnx_models.calibration_batch(sorted(labelled.glob("*.jpg")), default_preprocessing(arch, size))
    variant = onnx_models.quantize_variant(
        fp32, stem.with_suffix(".int8-variant.onnx"), calibration, onnx_models.VARIANT_INT8
    )
    return ModelFiles(checkpoint, fp32, export("int8", stem.with_suffix(".int8.onnx")), variant, labelled)


def _model_only_step(run: _Run, arch: str, size: int, files: ModelFiles) -> None:
    """Each runtime in turn (its sessions or threads gone before the next starts, so none spins during
    another's timing), every batch size."""
    eager, _, _ = onnx_models.load_eager(files.checkpoint)
    runtimes: list[tuple[str, str, str, Callable[[], Callable[[Any], Any]] | None, str]] = [
        ("pytorch-eager", "cpu", "fp32", lambda: lambda batch: model_only.time_eager(eager, batch, run.cfg.plan), ""),
        ("onnxruntime", "cpu", "fp32", lambda: _session_timer(run, files.fp32, model_only.CPU), ""),
        ("onnxruntime", "cpu", "int8", lambda: _session_timer(run, files.int8, model_only.CPU), ""),
        (
            "onnxruntime",
            "cpu",
            onnx_models.VARIANT_LABEL,
            lambda: _session_timer(run, files.int8_variant, model_only.CPU),
            f"gcv-export's FP32 re-quantized {onnx_models.VARIANT_INT8.label()} (its former setting)",
        ),
    ]
    gpu = model_only.cuda_available()
    runtimes += [
        (
            "onnxruntime",
            "cuda",
            "fp32",
            (lambda: _session_timer(run, files.fp32, model_only.CUDA)) if gpu else None,
            "",
        ),
        (
            "onnxruntime",
            "cuda",
            "fp16",
            (
                lambda: _session_timer(
                    run,
                    onnx_models.export_model(
                        files.checkpoint,
                        "fp16",
                        files.fp32.with_suffix(".fp16.onnx"),
                        val_data=files.photos,
                        max_accuracy_drop=100.0,
                    ),
                    model_only.CUDA,
                )
            )  # random weights: gcv export now gates FP16 accuracy too
            if gpu
            else None,
            "",
        ),
    ]
    for runtime, provider, precision, make_timer, note in runtimes:
        timer = make_timer() if make_timer is not None and not run.out_of_time() else None
        for batch_size in run.cfg.batch_sizes:
            common = dict(arch=arch, image_size=size, runtime=runtime, provider=provider, precision=precision,
                          batch_size=batch_size, note=note)
            if make_timer is None:
                run.add(Row("model-only", **common, status="not measured (no GPU in this run)"))
            elif timer is None or run.out_of_time():
                run.add(
                    Row(
                        "model-only",
                        **common,
                        status=f"skipped: too slow (run past --max-minutes {run.cfg.max_minutes})",
                    )
                )
            else:
                timing = timer(model_only.random_batch(batch_size, size))
                ceiling_ips, fraction = (
                    run.fraction(arch, size, timing.images_per_second) if provider == "cpu" else (None, None)
                )
                run.add(Row("model-only", **common, median_ms=timing.median_ms, p90_ms=timing.p90_ms,
                            images_per_s=timing.images_per_second, repeats=timing.repeats,
                            ceiling_images_per_s=ceiling_ips, fraction_of_ceiling=fraction))
        del timer


def _session_timer(run: _Run, path: Path, provider: str) -> Callable[[Any], Any]:
    """Time the very session gcv classify runs (``garmentcv.infer.runtimes.onnxruntime.open_model``: its threads, its
    spinning setting, its graph optimisation level)."""
    session = open_model(path, "cpu" if provider == model_only.CPU else "cuda").session
    return lambda batch: model_only.time_session(session, batch, run.cfg.plan)


def _process_row(run: _Run, section: str, proc: end_to_end.ProcessRun, files: int, **common: object) -> Row:
    ok = proc.returncode == 0
    images_per_s = files / proc.seconds if ok else None
    command_rate = end_to_end.reported_rate(proc.stderr_tail) if ok else None
    arch, size = str(common["arch"]), int(common["image_size"])  # type: ignore[call-overload]
    ceiling_ips, fraction = (
        run.fraction(arch, size, command_rate) if common.get("precision") == "fp32" else (None, None)
    )
    return Row(section, **common, files=files, seconds=proc.seconds, images_per_s=images_per_s,  # type: ignore[arg-type]
               command_images_per_s=command_rate,
               peak_rss_mb=proc.peak_rss_mb, ceiling_images_per_s=ceiling_ips, fraction_of_ceiling=fraction,
               status="ok" if ok else f"failed: exit {proc.returncode}: {proc.stderr_tail.strip().splitlines()[-1:]}")


def _end_to_end_step(run: _Run, arch: str, size: int, files: ModelFiles, folder: photos.PhotoFolder) -> None:
    batch = run.cfg.e2e_batch
    rows_csv = run.work / "rows.csv"
    commands = [
        ("gcv-classify", "fp32", end_to_end.classify_command(folder.path, files.fp32, rows_csv, batch), ""),
        ("gcv-classify", "int8", end_to_end.classify_command(folder.path, files.int8, rows_csv, batch), ""),
        (
            "gcv-classify",
            onnx_models.VARIANT_LABEL,
            end_to_end.classify_command(folder.path, files.int8_variant, rows_csv, batch),
            f"former export setting {onnx_models.VARIANT_INT8.label()}",
        ),
        (
            "torchvision-eager-dataloader",
            "fp32",
            end_to_end.baseline_command(folder.path, files.checkpoint, rows_csv, batch, run.cfg.baseline_workers),
            f"DataLoader num_workers={run.cfg.baseline_workers}",
        ),
    ]
    if not run.out_of_time():
        seconds = end_to_end.decode_seconds(sorted(folder.path.glob("*.jpg")), default_preprocessing(arch, size))
        run.add(Row("end-to-end", arch=arch, image_size=size, runtime="decode-only", provider="cpu", files=folder.files,
                    seconds=seconds, images_per_s=folder.files / seconds, command_images_per_s=folder.files / seconds,
                    note=f"load_input, {model_only.cpu_threads()} threads, no model"))
    for runtime, precision, command, note in commands:
        common = dict(
            arch=arch,
            image_size=size,
            runtime=runtime,
            provider="cpu",
            precision=precision,
            batch_size=batch,
            note=note,
        )
        if runtime == "gcv-classify" and not end_to_end.gcv_classify_available():
            run.add(
                Row("end-to-end", **common, files=folder.files, status="not measured: gcv-classify is not installed")
            )
        elif run.out_of_time():
            run.add(
                Row(
                    "end-to-end",
                    **common,
                    files=folder.files,
                    status=f"skipped: too slow (run past --max-minutes {run.cfg.max_minutes})",
                )
            )
        else:
            proc = end_to_end.run_measured(command, cwd=end_to_end.REPO_ROOT)
            run.add(_process_row(run, "end-to-end", proc, folder.files, **common))


def _memory_step(run: _Run, arch: str, size: int, files: ModelFiles) -> None:
    for count in run.cfg.memory_files:
        common = dict(arch=arch, image_size=size, runtime="gcv-classify", provider="cpu", precision="fp32",
                      batch_size=run.cfg.e2e_batch)
        if not end_to_end.gcv_classify_available():
            run.add(Row("memory", **common, files=count, status="not measured: gcv-classify is not installed"))
            continue
        if run.out_of_time():
            run.add(
                Row(
                    "memory",
                    **common,
                    files=count,
                    status=f"skipped: too slow (run past --max-minutes {run.cfg.max_minutes})",
                )
            )
            continue
        folder = photos.write_photo_folder(run.work / f"memory-{count}", count, min(count, run.cfg.distinct_files))
        command = end_to_end.classify_command(
            folder.path, files.fp32, run.work / f"memory-{count}.csv", run.cfg.e2e_batch
        )
        row = _process_row(run, "memory", end_to_end.run_measured(command), count, **common)
        run.add(dataclasses.replace(row, note=f"{folder.distinct} distinct photos, the rest hard links"))


def _int8_settings_step(run: _Run, arch: str, size: int, files: ModelFiles) -> None:
    """gcv export's INT8 file against re-quantized variants of its FP32 file, and intra-op spinning on/off."""
    batch = model_only.random_batch(32, size)
    calibration = onnx_models.calibration_batch(sorted(files.photos.glob("*.jpg")), default_preprocessing(arch, size))
    common = dict(arch=arch, image_size=size, runtime="onnxruntime", provider="cpu", batch_size=32)

    def timed(path: Path, precision: str, note: str, spinning: bool = False) -> None:
        timing = model_only.time_session(model_only.open_session(path, spinning=spinning), batch, run.cfg.plan)
        run.add(Row("int8-settings", **common, precision=precision, median_ms=timing.median_ms, p90_ms=timing.p90_ms,
                    images_per_s=timing.images_per_second, repeats=timing.repeats,
                    note=f"{note}, intra-op spinning {'on' if spinning else 'off'}"))

    for spinning in (False, True):
        timed(files.fp32, "fp32", "gcv-export FP32", spinning)
        timed(files.int8, "int8", f"gcv-export INT8 ({Int8Settings().label()})", spinning)
    timed(files.int8_variant, onnx_models.VARIANT_LABEL, f"former gcv-export INT8 ({onnx_models.VARIANT_INT8.label()})")
    for settings in INT8_VARIANTS:
        if run.out_of_time():
            run.add(Row("int8-settings", **common, precision="int8", note=settings.label(),
                        status=f"skipped: too slow (run past --max-minutes {run.cfg.max_minutes})"))
            continue
        path = onnx_models.quantize_variant(files.fp32, run.work / f"variant-{arch}-{size}.onnx", calibration, settings)
        timed(path, "int8", f"re-quantized {settings.label()}")


def _accuracy_step(run: _Run, plan: acc.AccuracyPlan) -> None:
    note = (f"trained here from scratch: {plan.train_per_class} images/class, {plan.epochs} epochs, "
            f"{plan.image_size} px; gcv-export FP32 and INT8 (calibrated on {plan.calibration_images} training images)")
    if run.out_of_time():
        for arch in run.cfg.archs:
            run.add(Row("accuracy", arch=arch, image_size=plan.image_size, status="skipped: too slow", note=note))
        return
    for result in acc.measure_accuracy(run.cfg.archs, run.work / "accuracy", plan):
        for precision, value in (
            ("fp32", result.fp32),
            ("int8", result.int8),
            (onnx_models.VARIANT_LABEL, result.int8_variant),
        ):
            run.add(Row("accuracy", arch=result.arch, image_size=plan.image_size, runtime="onnxruntime", provider="cpu",
                        precision=precision, files=result.count, accuracy=value,
                        note=f"{note}; validation accuracy at training {result.val_accuracy:.4f}"))


def _preamble(cfg: BenchConfig, machine: MachineInfo, end_load: tuple[float, float, float], minutes: float) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in machine.versions.items())
    return "\n".join(
        [
            f"Command: `{cfg.command}` (from the repository root), {minutes:.1f} minutes.",
            "",
            f"Machine: {machine.cpu_model}, {machine.logical_cpus} CPUs, {machine.memory_gb} GB, "
            f"ISA {' '.join(machine.isa)}; "
            f"{machine.platform}; Python {machine.python}; {versions}. GPU: {machine.gpu or 'none'}.",
            f"Load average (1, 5, 15 min) at the start {machine.load_avg}, at the end {end_load}.",
            "",
            "Models for speed figures are random-init (speed does not depend on the weights); accuracy figures come "
            "from models trained in this run on real data. Model only: onnxruntime through the session gcv-classify "
            "opens (garmentcv.infer.runtimes.onnxruntime.open_model: one intra-op thread per core, "
            "idle threads sleep); warm-up, then at least "
            f"{cfg.plan.min_repeats} timed runs and more until {cfg.plan.budget_s} s per configuration; the median and "
            "p90 are of batch latency, images/s = batch / median. "
            "End to end: each command in a fresh process on a folder "
            f"of {cfg.folder_files} JPEG photos ({cfg.small_folder_files} for inputs up to {SMALL_SIZE} px; "
            f"{cfg.distinct_files} distinct, the rest hard links; 4 of 5 at 600x866, 1 of 5 at 46x66, crops of "
            "scikit-learn's sample photographs), wall time including start-up, peak RSS from the OS; decode-only is "
            "garmentcv.image.load_input over the same folder on one thread per core, no model. "
            "The FLOP ceiling is the best FP32 matmul "
            "rate measured in this run divided by the model's FLOPs per image (torch.utils.flop_counter).",
        ]
    )


def run_benchmarks(cfg: BenchConfig) -> list[Row]:
    """Run every step of ``cfg``; write the result document, its report, CSV and chart to ``cfg.out/<machine>/``.

    Returns the rows written. A step that cannot run here yields rows marked ``not measured`` or
    ``skipped``, never nothing.
    """
    begun = results.start("run", machine=machine_info())
    machine = begun.machine
    if not cfg.command:
        cfg = dataclasses.replace(cfg, command=begun.command)
    if machine.load_avg[0] > 0.5:
        logger.warning("load average %s: the machine is busy, timings will be low and noisy", machine.load_avg)
    with tempfile.TemporaryDirectory(prefix="gcv-bench-", dir=cfg.work) as tmp:
        run = _Run(cfg, Path(tmp))
        logger.info("matmul rate and FLOP ceilings")
        _ceiling_step(run)
        folder = photos.write_photo_folder(
            run.work / "photos", cfg.folder_files, min(cfg.folder_files, cfg.distinct_files)
        )
        small_folder = photos.write_photo_folder(run.work / "photos-small", cfg.small_folder_files,
                                                 min(cfg.small_folder_files, cfg.distinct_files))
        focus = "resnet18" if "resnet18" in cfg.archs else cfg.archs[0]  # the arch of the settings and memory steps
        for size in cfg.sizes:
            for arch in cfg.archs:
                if run.out_of_time():
                    for section in ("model-only", "end-to-end"):
                        run.add(Row(section, arch=arch, image_size=size,
                                    status=f"skipped: too slow (run past --max-minutes {cfg.max_minutes})"))
                    continue
                logger.info("%s at %d px: model files", arch, size)
                files = _make_models(run, arch, size, folder)
                logger.info("%s at %d px: model only", arch, size)
                _model_only_step(run, arch, size, files)
                logger.info("%s at %d px: end to end", arch, size)
                _end_to_end_step(run, arch, size, files, small_folder if size <= SMALL_SIZE else folder)
                if cfg.int8_variants and arch == focus and size == cfg.sizes[0]:
                    logger.info("%s at %d px: INT8 and session settings", arch, size)
                    _int8_settings_step(run, arch, size, files)
                if cfg.memory_files and arch == focus and size == min(cfg.sizes):
                    logger.info("%s at %d px: peak memory on %s files", arch, size, cfg.memory_files)
                    _memory_step(run, arch, size, files)
        if cfg.accuracy is not None:
            logger.info("INT8 accuracy on the Fashion-MNIST test split")
            _accuracy_step(run, cfg.accuracy)
        minutes = (time.perf_counter() - run.start) / 60
    end = machine_info()
    rows = [dataclasses.replace(r, machine=machine.summary(), load_avg_1m=machine.load_avg[0]) for r in run.rows]
    verdicts = targets.judge(rows, cfg.archs, cfg.sizes)
    text = report.markdown(rows, "GarmentCV benchmarks", _preamble(cfg, machine, end.load_avg, minutes), verdicts)
    path = results.write(begun, [dataclasses.asdict(r) for r in rows], cfg.out, cfg.name, markdown=text)
    report.write_csv(rows, path.with_suffix(".csv"))
    report.plot_throughput(rows, path.with_suffix(".png"))
    logger.info("%d rows in %.1f min -> %s", len(rows), minutes, path)
    return rows


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}")
    return values


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(SIZE_NAMES[v] if v in SIZE_NAMES else _ints(v)[0] for v in text.split(","))


@click.command(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--archs", default=",".join(MODELS), help="Comma-separated archs.")
@click.option("--sizes", default="default,demo", help="Input sizes: default (224 px), demo (32 px) or px values.")
@click.option("--batch-sizes", default="1,8,32", help="Model-only batch sizes.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, help="Untimed runs per configuration.")
@click.option(
    "--budget", type=click.FloatRange(min=0), default=1.0, help="Keep timing a configuration until this many s."
)
@click.option("--folder-files", type=click.IntRange(min=1), default=200, help="Photos in the end-to-end folder.")
@click.option("--small-folder-files", type=click.IntRange(min=1), default=2000,
              help=f"Photos in the end-to-end folder for inputs up to {SMALL_SIZE} px.")
@click.option(
    "--distinct-files", type=click.IntRange(min=1), default=200, help="Distinct photos; more files are hard links."
)
@click.option("--memory-files", default="2000,20000", help="Folder sizes for the peak-memory comparison ('' to skip).")
@click.option("--e2e-batch", type=click.IntRange(min=1), default=32, help="Batch size of the end-to-end commands.")
@click.option(
    "--baseline-workers",
    type=click.IntRange(min=0),
    default=0,
    help="DataLoader workers of torchvision eager + DataLoader.",
)
@click.option("--int8-variants/--no-int8-variants", default=True,
              help="Time INT8/session variants (resnet18, or the first arch; first size).")
@click.option("--accuracy/--no-accuracy", default=True, help="Train, export and score FP32 vs INT8 on Fashion-MNIST.")
@click.option("--accuracy-per-class", type=click.IntRange(min=5), default=400, help="Training images per class.")
@click.option("--accuracy-epochs", type=click.IntRange(min=1), default=3, help="Training epochs.")
@click.option(
    "--max-minutes", type=click.FloatRange(min=0), default=14.0, help="Skip (with a row saying so) what starts later."
)
@click.option("--tiny", is_flag=True, help="Smoke test: resnet18, 32 px, batches 1,2, 2 runs, 10 files, tiny accuracy.")
@options.click_shared(repeats=5)
def main(archs: str, sizes: str, batch_sizes: str, warmup: int, repeats: int, budget: float, folder_files: int,
         small_folder_files: int,
         distinct_files: int, memory_files: str, e2e_batch: int, baseline_workers: int, int8_variants: bool,
         accuracy: bool, accuracy_per_class: int, accuracy_epochs: int, max_minutes: float, tiny: bool, out: Path,
         name: str | None, quiet: bool) -> None:
    """Measure GarmentCV's models and commands on this machine (see benchmarks/README.md)."""
    options.setup_logging(quiet)
    unknown = [a for a in archs.split(",") if a not in MODELS]
    if unknown:
        raise click.BadParameter(f"unknown arch(s) {unknown}; choose from {list(MODELS)}", param_hint="--archs")
    cfg = BenchConfig(
        out=out, archs=tuple(archs.split(",")), sizes=_sizes(sizes), batch_sizes=_ints(batch_sizes),
        plan=TimingPlan(warmup=warmup, min_repeats=repeats, budget_s=budget), folder_files=folder_files,
        small_folder_files=small_folder_files,
        distinct_files=distinct_files, memory_files=_ints(memory_files) if memory_files else (), e2e_batch=e2e_batch,
        baseline_workers=baseline_workers, int8_variants=int8_variants,
        accuracy=acc.AccuracyPlan(train_per_class=accuracy_per_class, epochs=accuracy_epochs) if accuracy else None,
        max_minutes=max_minutes, command=results.command_line("run"), name=name,
    )
    if tiny:
        cfg = dataclasses.replace(
            cfg,
            archs=("resnet18",),
            sizes=(32,),
            batch_sizes=(1, 2),
            plan=TimingPlan(warmup=1, min_repeats=2, budget_s=0.0),
            folder_files=10,
            small_folder_files=10,
            distinct_files=5,
            memory_files=(10, 20),
            e2e_batch=4,
            int8_variants=False,
            matmul_sizes=(256, 512),
            accuracy=acc.AccuracyPlan(train_per_class=10, epochs=1, calibration_images=8, source_per_class=40)
            if accuracy
            else None,
        )
    run_benchmarks(cfg)


if __name__ == "__main__":
    main()
