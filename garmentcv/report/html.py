"""The page builder: plain data (rows, figures, thumbnail names) in, HTML text out. No I/O.

Every text that comes from data (file names, labels, reasons, figure names) goes through :func:`esc`, which
HTML-escapes it and shows the bytes of file names that are not valid UTF-8 as ``\\xNN``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from garmentcv import __version__
from garmentcv.report import template


@dataclass(frozen=True, slots=True)
class Prediction:
    """One row of a report.

    Attributes:
        path: the file name shown (relative to the classified or evaluated folder where possible); may hold
            ``surrogateescape`` characters for bytes that are not UTF-8.
        source: the image file to make a thumbnail from; ``None`` when there is none.
        label: the true label (evaluation) or ``None``.
        predicted: the model's label, ``None`` for a file that could not be read.
        confidence: the probability of ``predicted``, 0..1.
        needs_review: the results marked the row as needing review (``--min-confidence``, a prediction set of
            other than one label).
        error: why the file could not be read.
        unknown: the results called the image unknown (none of the model's classes).
    """

    path: str
    source: Path | None = None
    label: str | None = None
    predicted: str | None = None
    confidence: float | None = None
    needs_review: bool = False
    error: str | None = None
    unknown: bool = False


@dataclass(frozen=True)
class Limits:
    """How much a page shows, so that it stays quick and small whatever the number of rows.

    Attributes:
        gallery: thumbnails in one gallery (misclassified, least confident, needing review).
        grouped: thumbnails shared by a set of galleries (one per class, one per confusion-matrix cell);
            each gets ``min(gallery, grouped // number of galleries)``, at least 1.
        listed: rows of a text list (files that could not be read).
        thumbnail_px: side of the square a thumbnail fits in, px.
        unfolded: thumbnails of a gallery shown open; the rest fold into a ``<details>`` element the reader
            opens with a click (three rows of thumbnails on a 1280 px wide window), so the page stays short.
    """

    gallery: int = 200
    grouped: int = 2000
    listed: int = 1000
    thumbnail_px: int = 96
    unfolded: int = 24

    def __post_init__(self) -> None:
        if min(self.gallery, self.grouped, self.listed, self.thumbnail_px, self.unfolded) < 1:
            raise ValueError(f"every report limit must be >= 1, got {self}")

    def per_group(self, groups: int) -> int:
        """Thumbnails for each of ``groups`` galleries."""
        return max(1, min(self.gallery, self.grouped // max(1, groups)))


@dataclass(frozen=True)
class Gallery:
    """A titled group of images: ``rows`` are shown (in order) out of ``total``; ``order`` is
    ``"least"`` or ``"most"`` (confident first)."""

    ident: str
    title: str
    rows: Sequence[Prediction]
    total: int
    order: str = "least"


#: Looks up the thumbnail of a row: (relative URL, width, height) or (None, reason) when there is none.
ThumbLookup = Callable[[Prediction], tuple[str | None, int, int, str | None]]
#: Looks up the heatmap of a row (:mod:`garmentcv.report.heatmap`): (relative URL, width, height, class it explains),
#: or ``None`` when the row has none.
HeatLookup = Callable[[Prediction], tuple[str, int, int, str] | None]


def display_text(text: str) -> str:
    """``text`` as printable Unicode: bytes kept by ``surrogateescape`` (and any lone surrogate) as ``\\xNN``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def esc(text: object) -> str:
    """HTML-escaped :func:`display_text` of ``str(text)`` (quotes too: safe in attributes)."""
    return html.escape(display_text(str(text)), quote=True)


def slug(text: str) -> str:
    """An HTML id fragment for a label, different for different labels: ASCII letters, digits and ``-`` kept,
    every other character (``_`` too) as ``_<hex code point>_`` (``a b`` -> ``a_20_b``, ``a_b`` -> ``a_5f_b``)."""
    return "".join(c if (c.isascii() and (c.isalnum() or c == "-")) else f"_{ord(c):x}_" for c in text)


def count(n: int, noun: str) -> str:
    """``1 image``, ``95,000 images``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return esc(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else esc(v)
    return esc(v)


def _td(v: Any) -> str:
    """A table cell: numbers right-aligned, text left-aligned (``class="text"``)."""
    if isinstance(v, str):
        return f'<td class="text">{esc(v)}</td>'
    return f"<td>{_value(v)}</td>"


def flatten(figures: Mapping[str, Any],
            skip: Iterable[str] = ()) -> tuple[list[tuple[str, Any]], list[tuple[str, list]]]:
    """Split a figures dict (e.g. ``metrics.json``) into scalar entries and tables.

    Nested dicts give entries named by their keys joined with spaces (``calibration raw ece``); lists of
    dicts are tables; lists of plain values are shown joined when short. Keys in ``skip`` are left out.
    """
    scalars: list[tuple[str, Any]] = []
    tables: list[tuple[str, list]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix} {k}".strip(), v)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables.append((prefix, value))
        elif isinstance(value, list):
            shown = ", ".join(str(v) for v in value[:20])
            scalars.append((prefix, shown + (f", ... ({len(value):,} values)" if len(value) > 20 else "")))
        else:
            scalars.append((prefix, value))

    skipped = set(skip)
    for key, value in figures.items():
        if key not in skipped:
            walk(str(key), value)
    return scalars, tables


def metrics_section(figures: Mapping[str, Any], skip: Iterable[str]) -> str:
    """The metrics table, then one table per list of dicts (``<section id="table-<name>">``)."""
    scalars, tables = flatten(figures, skip)
    rows = "".join(f"<tr><th>{esc(k)}</th>{_td(v)}</tr>" for k, v in scalars)
    parts = [f'<section id="metrics"><h2>Metrics</h2><table>{rows}</table></section>']  # side by side in .tables
    for name, items in tables:
        columns = list(dict.fromkeys(k for item in items for k in item))
        head = "".join(f"<th>{esc(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_td(item.get(c)) for c in columns) + "</tr>" for item in items)
        parts.append(f'<section id="table-{slug(name.replace(" ", "-"))}"><h2>{esc(name)}</h2>'
                     f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div></section>')
    return "\n".join(parts)


#: Thresholds shown in the coverage table (the full 101-step table stays in metrics.json and coverage.png).
COVERAGE_SHOWN = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def is_calibration_block(value: Any) -> bool:
    """Whether ``value`` is gcv evaluate's ``calibration`` block (raw and calibrated ECE, NLL, Brier)."""
    return (isinstance(value, Mapping)
            and all(isinstance(value.get(k), Mapping) for k in ("uncalibrated", "calibrated"))
            and all(m in value[k] for k in ("uncalibrated", "calibrated") for m in ("ece", "nll", "brier")))


def is_coverage_block(value: Any) -> bool:
    """Whether ``value`` is gcv evaluate's ``coverage`` block (parallel lists thresholds, kept, accuracy)."""
    return isinstance(value, Mapping) and all(
        isinstance(value.get(k), list) for k in ("thresholds", "kept", "accuracy")
    )


def calibration_section(block: Mapping[str, Any]) -> str:
    """ECE, NLL and Brier of the raw softmax and of ``softmax(logits / T)``, one row each (Guo et al. 2017)."""
    temperature = block.get("temperature")
    used = block.get("applied") == "temperature"
    use = "confidences use it" if used else "confidences use the raw softmax"
    head = (f"temperature T = {_value(float(temperature))} ({use})"
            if temperature is not None else "the model file has no temperature (T = 1)")
    rows = "".join(
        f"<tr><th>{name}</th>{_td(block[k]['ece'])}{_td(block[k]['nll'])}{_td(block[k]['brier'])}</tr>"
        for name, k in (("raw softmax", "uncalibrated"), ("softmax(logits / T)", "calibrated"))
    )
    bins = block.get("bins", 15)
    return (f'<section id="calibration"><h2>Calibration</h2><p>{esc(head)}; ECE over {esc(bins)} equal-width bins.</p>'
            f"<table><tr><th></th><th>ECE</th><th>NLL</th><th>Brier</th></tr>{rows}</table></section>")


def coverage_section(block: Mapping[str, Any], target: Mapping[str, Any] | None) -> str:
    """Share kept and its accuracy at :data:`COVERAGE_SHOWN` thresholds, and the ``--target-accuracy`` answer."""
    columns = zip(block["thresholds"], block["kept"], block["accuracy"], strict=True)
    at = {round(float(t), 6): (k, a) for t, k, a in columns}
    rows = "".join(
        f"<tr><td>{t:.2f}</td><td>{at[t][0]:.1%}</td><td>{'' if at[t][1] is None else f'{at[t][1]:.2%}'}</td></tr>"
        for t in COVERAGE_SHOWN if t in at
    )
    line = ""
    if target:
        if target.get("reachable"):
            line = (f"<p>target accuracy {target['target']:.2%}: confidence &gt;= {target['threshold']:.4f} keeps "
                    f"{target['coverage']:.1%} ({count(int(target['kept']), 'image')}) at {target['accuracy']:.2%}</p>")
        else:
            line = (f"<p>target accuracy {target['target']:.2%} is not reachable: the best is "
                    f"{target['best_accuracy']:.2%}</p>")
    return (f'<section id="coverage"><h2>Coverage</h2>{line}<table><tr><th>confidence &gt;=</th><th>kept</th>'
            f"<th>accuracy</th></tr>{rows}</table></section>")


def per_class_section(per_class: Mapping[str, Mapping[str, Any]]) -> str:
    """Per-class figures (precision, recall, F1, support, whatever the dicts hold), one row per class."""
    columns = list(dict.fromkeys(k for figures in per_class.values() for k in figures))
    head = "<tr><th>class</th>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
    body = "".join(f"<tr><th>{esc(name)}</th>" + "".join(_td(figures.get(c)) for c in columns)
                   + "</tr>" for name, figures in per_class.items())
    return f'<section id="per-class"><h2>Per class</h2><div class="scroll"><table>{head}{body}</table></div></section>'


def matrix_section(classes: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """The confusion matrix (rows true, columns predicted); each non-zero cell links to ``#cell-<i>-<j>``."""
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{esc(c)}</th>" for c in classes) + "<th>total</th></tr>"
    rows = []
    for i, (name, line) in enumerate(zip(classes, matrix, strict=True)):
        total = sum(line)
        cells = []
        for j, n in enumerate(line):
            if not n:
                cells.append('<td class="zero">0</td>')
                continue
            colour = "var(--ok)" if i == j else "var(--bad)"
            alpha = 0.12 + 0.68 * n / total
            cells.append(f'<td style="background: rgba({colour}, {alpha:.2f})"><a href="#cell-{i}-{j}">{n}</a></td>')
        rows.append(f"<tr><th>{esc(name)}</th>{''.join(cells)}<td>{total}</td></tr>")
    return ('<section id="confusion"><h2>Confusion matrix</h2><p class="note">Rows: true class; columns: predicted. '
            "Each number leads to its images.</p>"
            f'<div class="scroll"><table class="matrix">{head}{"".join(rows)}</table></div></section>')


def plots_section(plots: Sequence[tuple[str, str]]) -> str:
    """Figures given as (relative URL, caption); empty text when there are none."""
    if not plots:
        return ""
    figures = "".join(f'<figure><img src="{esc(url)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption>'
                      "</figure>" for url, caption in plots)
    return f'<section id="plots"><h2>Plots</h2><div class="plots">{figures}</div></section>'


def _note(gallery: Gallery, noun: str = "image") -> str:
    first = "least confident first" if gallery.order == "least" else "most confident first"
    if len(gallery.rows) < gallery.total:
        return f"showing the {len(gallery.rows):,} {gallery.order} confident of {gallery.total:,}"
    if not gallery.total:
        return f"no {noun}s"
    return f"{count(gallery.total, noun)}, {first}"


def _figure(row: Prediction, thumb: ThumbLookup, show_label: bool, show_predicted: bool, show_review: bool,
            heat: HeatLookup | None = None) -> str:
    url, width, height, reason = thumb(row)
    name = esc(row.path)
    overlaid = heat(row) if heat is not None else None
    if overlaid is not None:  # the picture with where the model looked for a class blended over it
        pic = (f'<img class="heatmap" src="{esc(overlaid[0])}" alt="{name}, heatmap of {esc(overlaid[3])}" '
               f'width="{overlaid[1]}" height="{overlaid[2]}">')
    elif url is not None:
        pic = f'<img src="{esc(url)}" alt="{name}" width="{width}" height="{height}">'
    else:
        pic = f'<span class="nopic" title="{esc(reason or "")}">no preview: {esc(reason or "no file")}</span>'
    # caption lines are cut to the thumbnail's width: each carries its full text as a tooltip
    spans = [f'<span class="file" title="{name}">{name}</span>']
    if show_label and row.label is not None:
        spans.append(f'<span title="true {esc(row.label)}">true {esc(row.label)}</span>')
    if show_predicted and row.predicted is not None:
        spans.append(f'<span title="predicted {esc(row.predicted)}">predicted {esc(row.predicted)}</span>')
    if row.confidence is not None:
        spans.append(f"<span>confidence {row.confidence:.3f}</span>")
    if overlaid is not None:
        spans.append(f'<span class="heat" title="where the model looked for {esc(overlaid[3])} (class activation '
                     f'map on the crop it saw)">heatmap of {esc(overlaid[3])}</span>')
    classes = []
    if show_label and row.label is not None and row.predicted != row.label:
        classes.append("wrong")
    if show_review and row.needs_review:
        classes.append("review")
        spans.append('<span class="flag">needs review</span>')
    attr = f' class="{" ".join(classes)}"' if classes else ""
    caption = f'<figcaption title="{name}">{"".join(spans)}</figcaption>'
    return f'<figure{attr}><div class="pic" title="{name}">{pic}</div>{caption}</figure>'


def gallery_section(gallery: Gallery, thumb: ThumbLookup, *, level: int = 2, show_label: bool = True,
                    show_predicted: bool = True, show_review: bool = False, unfolded: int | None = None,
                    heat: HeatLookup | None = None) -> str:
    """A ``<section id=gallery.ident>`` with a heading, the count note and one figure per shown row; past the
    first ``unfolded`` rows (``None``: all open), the rest sit in a closed ``<details>`` element. With ``heat``,
    a row that has a heatmap shows it in place of its thumbnail, its caption naming the class it explains."""
    figures = [_figure(r, thumb, show_label, show_predicted, show_review, heat) for r in gallery.rows]
    cut = len(figures) if unfolded is None else unfolded
    folded = ""
    if len(figures) > cut:
        folded = (f'<details class="more"><summary>show the other {len(figures) - cut:,}</summary>'
                  f'<div class="gallery">{"".join(figures[cut:])}</div></details>')
    return (f'<section id="{gallery.ident}"><h{level}>{esc(gallery.title)}</h{level}><p class="note">{_note(gallery)}'
            f'</p><div class="gallery">{"".join(figures[:cut])}</div>{folded}</section>')


def errors_section(ident: str, title: str, rows: Sequence[Prediction], total: int, *, show_label: bool) -> str:
    """A table of files that could not be read: file, (true label), reason; ``rows`` of ``total`` shown."""
    if not total:
        return (f'<section id="{ident}"><h2>{esc(title)}</h2><p class="note">none: every file could be read</p>'
                "</section>")
    note = f"showing {len(rows):,} of {total:,}" if len(rows) < total else count(total, "file")
    head = "<tr><th>file</th>" + ("<th>true label</th>" if show_label else "") + "<th>reason</th></tr>"
    body = "".join(
        f'<tr><td class="text">{esc(r.path)}</td>'
        + (f'<td class="text">{esc(r.label or "")}</td>' if show_label else "")
        + f'<td class="text">{esc(r.error or "")}</td></tr>' for r in rows
    )
    return (f'<section id="{ident}"><h2>{esc(title)}</h2><p class="note">{note}</p>'
            f'<div class="scroll"><table>{head}{body}</table></div></section>')


def summary_table(items: Sequence[tuple[str, int | str]]) -> str:
    """A two-column table of (name, count or text) pairs; counts shown with thousands separators."""
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th>{_td(v) if isinstance(v, str) else f'<td>{v:,}</td>'}</tr>"
                               for k, v in items) + "</table>"


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: Sequence[str], folder: str) -> str:
    """The whole document: ``nav`` is (anchor id, text) pairs; ``body`` rendered sections in order."""
    links = "".join(f'<a href="#{ident}">{esc(text)}</a>' for ident, text in nav)
    return template.PAGE.format(
        csp=template.CONTENT_SECURITY_POLICY, title=esc(title), subtitle=esc(subtitle), nav=links,
        style=template.STYLE, body="\n".join(b for b in body if b), version=esc(__version__), folder=esc(folder),
    )
