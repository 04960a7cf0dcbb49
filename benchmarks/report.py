"""Benchmark outputs: every figure as a CSV row, a markdown report with the targets, a PNG chart."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from garmentcv.fsutil import atomic_path, atomic_write

#: Sections of the CSV, in report order.
SECTIONS = ("matmul", "ceiling", "model-only", "end-to-end", "memory", "int8-settings", "accuracy")


@dataclass(frozen=True)
class Row:
    """One measured (or explicitly not measured) figure; empty fields do not apply to the section.

    Attributes:
        section: one of :data:`SECTIONS`.
        arch: model name, or ``""`` (matmul).
        image_size: model input side, px.
        runtime: ``pytorch-eager``, ``onnxruntime``, ``gcv-classify``, ``torchvision-eager-dataloader``,
            ``torch``/``numpy`` (matmul).
        provider: ``cpu`` or ``cuda``.
        precision: ``fp32``, ``fp16``, ``int8``.
        batch_size: images per model run.
        files: image files in the folder (end to end, memory).
        median_ms: median latency of one batch, ms.
        p90_ms: 90th percentile latency of one batch, ms.
        images_per_s: throughput, images/s (model only: batch / median; end to end: files / wall time of the
            process, start-up included).
        command_images_per_s: end to end: the rate the command itself reports (files / its own time from
            loading the model to the last row, i.e. without the interpreter's start-up and imports), images/s.
        repeats: timed runs behind the median.
        gflops: model GFLOP per image (ceiling), or the matmul rate in GFLOP/s (matmul).
        ceiling_images_per_s: FP32 ceiling of this arch and size, images/s.
        fraction_of_ceiling: images_per_s / ceiling_images_per_s.
        seconds: wall time, s (end to end, memory).
        peak_rss_mb: peak resident memory of the process, MB.
        accuracy: top-1 accuracy on the test split, 0..1.
        status: ``ok``, ``not measured: <why>``, ``skipped: <why>`` or ``failed: <why>``.
        note: what else a reader needs (settings, the command's variant).
        machine: :meth:`benchmarks.machine.MachineInfo.summary` of the machine it ran on.
        load_avg_1m: the 1-minute load average when the run started.
    """

    section: str
    arch: str = ""
    image_size: int | None = None
    runtime: str = ""
    provider: str = ""
    precision: str = ""
    batch_size: int | None = None
    files: int | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    images_per_s: float | None = None
    command_images_per_s: float | None = None
    repeats: int | None = None
    gflops: float | None = None
    ceiling_images_per_s: float | None = None
    fraction_of_ceiling: float | None = None
    seconds: float | None = None
    peak_rss_mb: float | None = None
    accuracy: float | None = None
    status: str = "ok"
    note: str = ""
    machine: str = ""
    load_avg_1m: float | None = None


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Row))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """Every row, every field (:data:`FIELDS` as the header), written atomically."""
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for row in rows:
            writer.writerow([_cell(getattr(row, f)) for f in FIELDS])


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by :func:`write_csv`, as dicts of strings."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|\n")
    for line in lines:
        out.write("| " + " | ".join(line) + " |\n")
    return out.getvalue()


def _status(row: Row) -> str:
    return "" if row.status == "ok" else row.status


def markdown(rows: Sequence[Row], title: str, preamble: str, targets: Sequence[tuple[str, str, str]]) -> str:
    """The report: ``preamble``, the targets (what, measured, met/missed), then one table per section."""
    out = io.StringIO()
    out.write(f"# {title}\n\n{preamble}\n\n")
    if targets:
        out.write("## Targets\n\n" + _table(["target", "measured", "verdict"], targets) + "\n")
    by = {s: [r for r in rows if r.section == s] for s in SECTIONS}
    if by["matmul"]:
        out.write("## FP32 matmul rate (n x n @ n x n, best run of each size)\n\n")
        out.write(_table(["library", "n", "GFLOP/s", "status"],
                         [[r.runtime, str(r.batch_size), _fmt(r.gflops), _status(r)] for r in by["matmul"]]) + "\n")
    if by["ceiling"]:
        out.write("## FLOP ceiling (best matmul rate / FLOPs per image)\n\n")
        out.write(
            _table(
                ["arch", "px", "GFLOP/image", "ceiling images/s"],
                [[r.arch, str(r.image_size), _fmt(r.gflops, 3), _fmt(r.ceiling_images_per_s)] for r in by["ceiling"]],
            )
            + "\n"
        )
    if by["model-only"]:
        out.write("## Model only (preprocessed batch in, logits out)\n\n")
        out.write(
            _table(
                [
                    "arch",
                    "px",
                    "runtime",
                    "provider",
                    "precision",
                    "batch",
                    "median ms",
                    "p90 ms",
                    "images/s",
                    "of ceiling",
                    "runs",
                    "status",
                ],
                [
                    [
                        r.arch,
                        str(r.image_size),
                        r.runtime,
                        r.provider,
                        r.precision,
                        _cell(r.batch_size),
                        _fmt(r.median_ms, 2),
                        _fmt(r.p90_ms, 2),
                        _fmt(r.images_per_s),
                        _fmt(None if r.fraction_of_ceiling is None else r.fraction_of_ceiling * 100, 0)
                        + ("%" if r.fraction_of_ceiling is not None else ""),
                        _cell(r.repeats),
                        _status(r),
                    ]
                    for r in by["model-only"]
                ],
            )
            + "\n"
        )
    for section, heading in (
        ("end-to-end", "End to end on a folder of photos (fresh process each; wall time includes start-up)"),
        ("memory", "Peak memory against folder size"),
    ):
        if by[section]:
            out.write(f"## {heading}\n\n")
            out.write(
                _table(
                    [
                        "arch",
                        "px",
                        "command",
                        "precision",
                        "batch",
                        "files",
                        "wall s",
                        "images/s (wall)",
                        "images/s (command)",
                        "of ceiling",
                        "peak MB",
                        "note",
                        "status",
                    ],
                    [
                        [
                            r.arch,
                            str(r.image_size),
                            r.runtime,
                            r.precision,
                            _cell(r.batch_size),
                            _cell(r.files),
                            _fmt(r.seconds),
                            _fmt(r.images_per_s),
                            _fmt(r.command_images_per_s),
                            _fmt(None if r.fraction_of_ceiling is None else r.fraction_of_ceiling * 100, 0)
                            + ("%" if r.fraction_of_ceiling is not None else ""),
                            _fmt(r.peak_rss_mb, 0),
                            r.note,
                            _status(r),
                        ]
                        for r in by[section]
                    ],
                )
                + "\n"
            )
    if by["int8-settings"]:
        out.write("## INT8 and session settings (model only)\n\n")
        out.write(_table(["arch", "px", "precision", "batch", "settings", "median ms", "images/s", "status"],
                         [[r.arch, str(r.image_size), r.precision, _cell(r.batch_size), r.note, _fmt(r.median_ms, 2),
                           _fmt(r.images_per_s), _status(r)] for r in by["int8-settings"]]) + "\n")
    if by["accuracy"]:
        out.write("## Top-1 accuracy on the Fashion-MNIST test split (trained here, see the note)\n\n")
        out.write(
            _table(
                ["arch", "px", "precision", "test images", "accuracy", "note", "status"],
                [
                    [
                        r.arch,
                        str(r.image_size),
                        r.precision,
                        _cell(r.files),
                        _fmt(None if r.accuracy is None else r.accuracy * 100, 2)
                        + ("%" if r.accuracy is not None else ""),
                        r.note,
                        _status(r),
                    ]
                    for r in by["accuracy"]
                ],
            )
            + "\n"
        )
    return out.getvalue()


def write_markdown(text: str, path: Path) -> None:
    """Write the report atomically."""
    with atomic_write(path) as handle:
        handle.write(text)


def plot_throughput(rows: Sequence[Row], path: Path) -> None:
    """Bar chart of model-only images/s: one panel per image size, bars grouped by arch, one bar per
    runtime/precision/batch, log scale, with each arch's FP32 ceiling as a line (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.section == "model-only" and r.images_per_s]
    sizes = sorted({r.image_size for r in measured}, reverse=True) or [0]
    fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 4.8), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        panel = [r for r in measured if r.image_size == size]
        archs = list(dict.fromkeys(r.arch for r in panel))
        series = list(dict.fromkeys((r.runtime, r.provider, r.precision, r.batch_size) for r in panel))
        width = 0.8 / max(1, len(series))
        for j, key in enumerate(series):
            values = {
                r.arch: r.images_per_s for r in panel if (r.runtime, r.provider, r.precision, r.batch_size) == key
            }
            xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(archs))]
            label = f"{key[0].replace('onnxruntime', 'ort')} {key[1]} {key[2]} b{key[3]}"
            ax.bar(xs, [values.get(a, 0) for a in archs], width, label=label)
        for i, arch in enumerate(archs):
            ceiling = next((r.ceiling_images_per_s for r in rows if r.section == "ceiling" and r.arch == arch
                            and r.image_size == size), None)
            if ceiling:
                ax.hlines(ceiling, i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                          label="FP32 ceiling" if i == 0 else None)
        ax.set_xticks(range(len(archs)), archs)
        ax.set_yscale("log")
        ax.set_ylabel("images/s (log)")
        ax.set_title(f"model only, {size} px")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7)
    fig.tight_layout(rect=(0, 0.18, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
