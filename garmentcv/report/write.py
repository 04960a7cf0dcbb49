"""Write the report pages: choose what to show, make its thumbnails, publish page and folder.

A page ``NAME.html`` comes with a folder ``NAME_files/`` beside it (thumbnails as small JPEG files, copies of
the plots) that it links to by relative URLs only: copy the two together and the page works anywhere, offline.
The folder is built under a temporary name and swapped in when complete; an existing folder of that name is
replaced only when it holds the marker file :data:`MARKER` of an earlier report, never a folder of the user's.

Other pages are built from the same pieces (the audit's, :mod:`garmentcv.curate.report`): :func:`write_page` runs a
page's build with a :class:`FilesFolder` and publishes both; :func:`gallery_thumbnails` and :func:`gallery_heatmaps`
fill the folder for galleries of rows and return the lookups :mod:`garmentcv.report.html` renders them with.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from garmentcv.errors import GarmentCVError, OutputPathError
from garmentcv.fsutil import atomic_write, check_writable_output
from garmentcv.infer.rows import PARQUET_ROW_GROUP, require_pyarrow
from garmentcv.report import html as h
from garmentcv.report.heatmap import class_heatmaps
from garmentcv.report.html import Gallery, HeatLookup, Limits, Prediction
from garmentcv.report.thumbnails import Thumbnail, make_thumbnails

logger = logging.getLogger(__name__)

#: The file that marks a ``NAME_files`` folder as written by GarmentCV (and so replaceable).
MARKER = ".garmentcv-report"
#: The page ``gcv evaluate`` writes in its ``--out`` folder.
EVALUATE_PAGE = "report.html"
#: The first bytes of a parquet file (how :class:`ResultsFile` tells it from csv and jsonl).
PARQUET_MAGIC = b"PAR1"
#: Keys of ``metrics.json`` shown by their own tables, not in the metrics table.
_OWN_TABLES = ("classes", "per_class")
_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
_TRUE = {"1", "true", "yes", "y"}


def files_folder(page: Path) -> Path:
    """The folder of thumbnails and plots that goes with ``page``: ``report.html`` -> ``report_files``."""
    page = Path(page)
    return page.with_name(page.stem + "_files")


def check_report_output(page: Path, option: str = "--report") -> None:
    """Fail before any work when ``page`` or its files folder could not be written.

    Raises:
        OutputPathError: ``page`` is not writable (see :func:`garmentcv.fsutil.check_writable_output`), or
            ``NAME_files`` exists and is not the folder of an earlier GarmentCV report.
    """
    check_writable_output(page, option)
    folder = files_folder(page)
    if folder.exists() and not (folder / MARKER).is_file():
        raise OutputPathError(
            f"{option} {page}: {folder} exists and is not a GarmentCV report folder (it has no {MARKER} file); "
            "move it away or choose another page name"
        )


class FilesFolder:
    """``NAME_files`` under construction: filled under a temporary name, swapped in by :meth:`publish`.

    A page writer (:func:`write_page`) gets one to fill: files go into :attr:`tmp` and the page links them by
    :meth:`url`.

    Attributes:
        page: the page it goes with.
        final: the folder's name once published (:func:`files_folder` of ``page``).
        tmp: the folder being filled, a hidden name beside ``page``, holding the marker file :data:`MARKER`.

    Raises (on creation):
        OSError: the temporary folder cannot be made.
    """

    def __init__(self, page: Path) -> None:
        self.page = page
        self.final = files_folder(page)
        self.tmp = page.parent / f".{self.final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        self.tmp.mkdir()
        (self.tmp / MARKER).write_text(
            "Thumbnails and plots of a GarmentCV report page; replaced when it is written again.\n")

    def url(self, name: str) -> str:
        """The page's relative URL of the file ``name`` of this folder (percent-encoded)."""
        return f"{quote(self.final.name)}/{quote(name)}"

    def publish(self, text: str) -> None:
        """Swap the folder in (replacing an earlier report's) and write the page's ``text`` atomically."""
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        with atomic_write(self.page) as handle:
            handle.write(text)

    def discard(self) -> None:
        """Remove the temporary folder (the page and an earlier folder stay as they were)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def gallery_thumbnails(galleries: Iterable[Gallery], folder: FilesFolder, limits: Limits) -> h.ThumbLookup:
    """Make one thumbnail per distinct source among the galleries' rows in ``folder``
    (:func:`garmentcv.report.thumbnails.make_thumbnails`, at ``limits.thumbnail_px``); return the lookup for the
    page (a row without a source, or whose image cannot be read, gets ``None`` and the reason)."""
    index: dict[Path, int] = {}
    for gallery in galleries:
        for row in gallery.rows:
            if row.source is not None and row.source not in index:
                index[row.source] = len(index)
    made: list[Thumbnail] = make_thumbnails(list(index), folder.tmp, limits.thumbnail_px)

    def lookup(row: Prediction) -> tuple[str | None, int, int, str | None]:
        if row.source is None:
            return None, 0, 0, "no file"
        t = made[index[row.source]]
        return (folder.url(t.name), t.width, t.height, None) if t.name else (None, 0, 0, t.reason)

    return lookup


def has_heatmaps(model: Path | None) -> bool:
    """Whether ``model`` is a GarmentCV file with the ``cam`` output (``False`` for ``None``)."""
    if model is None:
        return False
    from garmentcv.infer.model_file import read_model_info

    return read_model_info(Path(model)).has_cam


def gallery_heatmaps(galleries: Iterable[Gallery], folder: FilesFolder, limits: Limits,
                     model: Path | None) -> HeatLookup:
    """Make one heatmap per distinct (source, predicted class) among the galleries' rows in ``folder`` when ``model``
    has the ``cam`` output (:func:`garmentcv.report.heatmap.class_heatmaps`: only these images are run, a batch at a
    time); return the lookup for the page (``None`` for every row otherwise).

    Each heatmap explains the row's ``predicted`` class; a row whose ``predicted`` is not one of the model's classes
    (``None`` too) gets the map of the model's top class for the image, and the lookup names the class shown.

    Raises:
        ModelFileError: ``model`` cannot be read.
    """
    index: dict[tuple[Path, str | None], int] = {}
    if has_heatmaps(model):
        for gallery in galleries:
            for row in gallery.rows:
                if row.source is not None and (row.source, row.predicted) not in index:
                    index[row.source, row.predicted] = len(index)
    made = class_heatmaps(Path(model), list(index), folder.tmp, limits.thumbnail_px) if index else []  # type: ignore[arg-type]

    def lookup(row: Prediction) -> tuple[str, int, int, str] | None:
        at = index.get((row.source, row.predicted)) if row.source is not None else None
        if at is None or made[at].name is None:
            return None
        m = made[at]
        return folder.url(str(m.name)), m.width, m.height, m.explains

    return lookup


def _least(rows: Iterable[Prediction], n: int) -> list[Prediction]:
    return heapq.nsmallest(n, rows, key=lambda r: (r.confidence if r.confidence is not None else 2.0, r.path))


def _most(rows: Iterable[Prediction], n: int) -> list[Prediction]:
    return heapq.nsmallest(n, rows, key=lambda r: (-(r.confidence or 0.0), r.path))


def write_page(page: Path, build: Callable[[FilesFolder], str]) -> Path:
    """Write a report page: check the outputs (:func:`check_report_output`), run ``build(folder)``, which fills the
    :class:`FilesFolder` and returns the page's HTML text, and publish both; on any error the temporary folder is
    removed and an earlier page stays as it was. Returns ``page``.

    Raises:
        OutputPathError: ``page`` or its folder cannot be written.
    """
    page = Path(page)
    check_report_output(page, "--report")
    folder = FilesFolder(page)
    try:
        folder.publish(build(folder))
    except BaseException:
        folder.discard()
        raise
    return page


def write_evaluate_report(
    page: Path,
    *,
    classes: Sequence[str],
    figures: Mapping[str, Any],
    per_class: Mapping[str, Mapping[str, Any]],
    matrix: Sequence[Sequence[int]],
    rows: Sequence[Prediction],
    errors: Sequence[Prediction] = (),
    plots: Mapping[str, Path] | None = None,
    title: str = "GarmentCV evaluation",
    subtitle: str = "",
    limits: Limits = Limits(),
    model: Path | None = None,
) -> Path:
    """Write the evaluation page ``page`` (and ``<stem>_files/``).

    Args:
        page: the HTML file to write.
        classes: the model's classes, in the order of ``matrix``.
        figures: scalar figures and tables (``metrics.json``); nested dicts and lists of dicts are shown
            too, so figures added later (calibration, coverage) appear without a change here. ``classes``
            and ``per_class`` keys are skipped (they have their own tables).
        per_class: per-class figures, e.g. precision/recall/f1-score/support by class name.
        matrix: confusion matrix, rows true class, columns predicted.
        rows: every decoded image with ``label``, ``predicted`` and ``confidence``.
        errors: images that could not be decoded, with ``error``.
        plots: caption -> PNG file, copied beside the page in this order (e.g. the reliability diagram);
            missing files are left out.
        title, subtitle: the page heading.
        limits: gallery sizes (see :class:`~garmentcv.report.html.Limits`).
        model: the model file evaluated: when it has the ``cam`` output, the misclassified images show where it
            looked for the class it predicted (:mod:`garmentcv.report.heatmap`).

    Returns:
        ``page``.

    Raises:
        OutputPathError: ``page`` or its folder cannot be written.
    """
    position = {name: i for i, name in enumerate(classes)}
    cells: dict[tuple[int, int], list[Prediction]] = {}
    for row in rows:
        if row.label in position and row.predicted in position:
            cells.setdefault((position[row.label], position[row.predicted]), []).append(row)
    wrong = [r for r in rows if r.predicted != r.label]
    per_cell = limits.per_group(len(cells))
    cell_galleries = [
        Gallery(f"cell-{i}-{j}", f"true {classes[i]}, predicted {classes[j]}",
                _least(members, per_cell) if i == j else _most(members, per_cell), len(members),
                "least" if i == j else "most")
        for (i, j), members in sorted(cells.items())
    ]
    main = [Gallery("misclassified", "Misclassified", _most(wrong, limits.gallery), len(wrong), "most"),
            Gallery("least-confident", "Least confident", _least(rows, limits.gallery), len(rows), "least")]

    def build(folder: FilesFolder) -> str:
        thumb = gallery_thumbnails([*main, *cell_galleries], folder, limits)
        heat = gallery_heatmaps(main[:1], folder, limits, model)
        shown_plots = []
        for caption, path in (plots or {}).items():
            if Path(path).is_file():
                name = f"plot-{len(shown_plots) + 1}.png"
                shutil.copyfile(path, folder.tmp / name)
                shown_plots.append((folder.url(name), caption))
        shown_errors = list(errors[: limits.listed])
        calibration, coverage = figures.get("calibration"), figures.get("coverage")
        own = [*_OWN_TABLES]
        extra = ""
        if h.is_calibration_block(calibration):
            own.append("calibration")
            extra += h.calibration_section(calibration)
        if h.is_coverage_block(coverage):
            own += ["coverage", "target_accuracy"]
            extra += h.coverage_section(coverage, figures.get("target_accuracy"))
        body = [
            '<div class="tables">' + h.metrics_section(figures, own) + h.per_class_section(per_class) + extra
            + "</div>",
            h.matrix_section(classes, matrix),
            h.plots_section(shown_plots),
            *(h.gallery_section(g, thumb, unfolded=limits.unfolded, heat=heat if g is main[0] else None)
              for g in main),
            h.errors_section("not-decoded", "Not decoded", shown_errors, len(errors), show_label=True),
            '<section id="cells"><h2>Images by confusion-matrix cell</h2>'
            + "".join(h.gallery_section(g, thumb, level=3, unfolded=limits.unfolded) for g in cell_galleries)
            + "</section>",
        ]
        nav = [("metrics", "Metrics"), ("per-class", "Per class"), ("confusion", "Confusion matrix"),
               *([("plots", "Plots")] if shown_plots else []), ("misclassified", "Misclassified"),
               ("least-confident", "Least confident"), ("not-decoded", "Not decoded"), ("cells", "By cell")]
        sub = subtitle or (f"{h.count(len(rows), 'image')} evaluated, {len(wrong):,} misclassified, "
                           f"{len(errors):,} not decoded")
        return h.page(title, sub, nav, body, folder.final.name)

    return write_page(page, build)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def _confidence(value: Any) -> float | None:
    if value in (None, ""):
        return None
    return float(value)


class ResultsFile:
    """A ``gcv classify`` results file (csv, jsonl or parquet, told apart by their first bytes), read one row at a
    time.

    Iterating gives one :class:`Prediction` per row, in file order, without ``source`` (set it for the rows
    shown); :meth:`records` gives the rows with every column instead (the probabilities, the prediction set, the
    unknown score). Either reads the file once; memory does not grow with the file (parquet: one row group).

    Attributes:
        path: the file.
        format: ``csv``, ``jsonl`` or ``parquet``.
        columns: its columns (csv header; the keys of the first jsonl record; the parquet schema's names).
        review: whether it has a ``needs_review`` column.
        unknown: whether it has an ``unknown`` column (a model file with an unknown-item detector).
        classes: the class names in the model's order where the file tells it (``prob_<class>`` columns, or
            the keys of the first jsonl ``probs`` object: known once the rows up to it are read), else empty.

    Raises (on opening):
        GarmentCVError: the file lacks ``path``, ``label``, ``confidence`` or ``error`` (e.g. the kaggle format),
            a jsonl line is not JSON, or a parquet file cannot be read.
        MissingRuntimeError: a parquet file without pyarrow installed.
    """

    NEEDED = frozenset({"path", "label", "confidence", "error"})

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.classes: list[str] = []
        self._jsonl = False
        self._parquet: Any = None
        with open(self.path, "rb") as probe:
            parquet = probe.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
        if parquet:
            self.format = "parquet"
            self._open_parquet()
        else:
            self._open_text()
        self.review = "needs_review" in self.columns
        self.unknown = "unknown" in self.columns

    def _open_parquet(self) -> None:
        require_pyarrow()
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self._parquet = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise GarmentCVError(f"{self.path}: not a readable parquet file ({exc}); give the results file "
                                 "gcv classify wrote") from exc
        names = list(self._parquet.schema_arrow.names)
        self.columns = set(names)
        self.classes = [c[5:] for c in names if c.startswith("prob_")]
        self._check_columns()

    def _open_text(self) -> None:
        self._handle = open(self.path, newline="", **_ENCODING)  # noqa: SIM115 (closed by close() or the with block)
        try:
            self._jsonl = self._handle.read(1) == "{"
            self._handle.seek(0)
            if self._jsonl:
                self.format = "jsonl"
                self._first = self._next_record()
                self.columns = set(self._first or ())
            else:
                self.format = "csv"
                self._csv = csv.reader(self._handle)
                header = next(self._csv, [])
                self.columns = set(header)
                self._width = len(header)
                self._at = {name: i for i, name in reversed(list(enumerate(header)))}  # first column of a name
                self.classes = [c[5:] for c in header if c.startswith("prob_")]
            self._check_columns()
        except BaseException:
            self._handle.close()
            raise

    def _check_columns(self) -> None:
        if self.columns and not self.NEEDED <= self.columns:
            raise GarmentCVError(
                f"{self.path}: gcv classify's rows have the columns {sorted(self.NEEDED)}, the file has "
                f"{sorted(self.columns)}; write the results as csv, jsonl or parquet (the kaggle format has no "
                "confidence or error)"
            )

    def _next_record(self) -> dict[str, Any] | None:
        for line in self._handle:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError as exc:
                    raise GarmentCVError(f"{self.path}: a line is not JSON ({exc}); give the results file "
                                         "gcv classify wrote") from exc
        return None

    def _csv_rows(self) -> Iterator[list[str]]:
        """The csv rows after the header (blank lines skipped), each checked to have the header's width."""
        width = self._width
        for cells in self._csv:
            if not cells:
                continue
            if len(cells) < width:
                raise GarmentCVError(f"{self.path}, line {self._csv.line_num}: {len(cells)} fields where the header "
                                     f"has {width}; give the results file gcv classify wrote")
            yield cells

    def records(self) -> Iterator[dict[str, Any]]:
        """Each row with every column, in file order: csv cells as text by column name (the first column of a
        repeated name; ``""`` for what an error row lacks); a jsonl record as written (``probs`` an object class ->
        probability, ``prediction_set`` a list, ``null`` for what an error row lacks); a parquet row's typed values
        (floats, lists, bools, ``None``). The file is read once: call this or iterate, not both.

        Raises:
            GarmentCVError: a jsonl line is not JSON, or a csv row is shorter than the header.
        """
        if self._parquet is not None:
            for batch in self._parquet.iter_batches(batch_size=PARQUET_ROW_GROUP):
                yield from batch.to_pylist()
            return
        if self._jsonl:
            record = self._first
            while record is not None:
                if not self.classes and isinstance(record.get("probs"), dict):
                    self.classes = list(record["probs"])
                yield record
                record = self._next_record()
            return
        at = sorted(self._at.items(), key=lambda item: item[1])  # in the header's order
        for cells in self._csv_rows():
            yield {name: cells[i] for name, i in at}

    def __iter__(self) -> Iterator[Prediction]:
        if self._jsonl or self._parquet is not None:
            for record in self.records():
                yield Prediction(path=record["path"], predicted=record.get("label") or None,
                                 confidence=_confidence(record.get("confidence")),
                                 needs_review=_flag(record.get("needs_review")), error=record.get("error") or None,
                                 unknown=_flag(record.get("unknown")))
            return
        at = self._at
        path, label, confidence, error = at["path"], at["label"], at["confidence"], at["error"]
        review = at.get("needs_review")
        unknown = at.get("unknown")
        for cells in self._csv_rows():
            yield Prediction(path=cells[path], predicted=cells[label] or None,
                             confidence=_confidence(cells[confidence]),
                             needs_review=review is not None and _flag(cells[review]), error=cells[error] or None,
                             unknown=unknown is not None and _flag(cells[unknown]))

    def close(self) -> None:
        """Close the file."""
        if self._parquet is not None:
            self._parquet.close()
        else:
            self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Descending:
    """Reverses the order of a key, so that :mod:`heapq`'s smallest item is the largest key."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Descending) -> bool:
        return other.key < self.key


class Lowest:
    """The ``cap`` rows of lowest ``key`` among those added (ties: the one added first), and how many were added.

    A heap of at most ``cap`` entries whose top is the highest key kept: a row lower than it replaces it
    (O(log cap) a row), so memory is ``O(cap)`` whatever the number of rows. The rows kept are those of
    ``sorted(rows, key=key)[:cap]``.
    """

    def __init__(self, cap: int, key: Callable[[Prediction], Any]) -> None:
        self.cap, self.key, self.total = cap, key, 0
        self._heap: list[tuple[_Descending, Prediction]] = []

    def add(self, row: Prediction) -> None:
        """Count ``row`` and keep it if it is among the ``cap`` lowest so far."""
        self.total += 1
        entry = (_Descending((self.key(row), self.total)), row)
        if len(self._heap) < self.cap:
            heapq.heappush(self._heap, entry)
        elif self._heap[0][0] < entry[0]:
            heapq.heapreplace(self._heap, entry)

    def shrink(self, cap: int) -> None:
        """Keep at most ``cap`` (no more than now) rows from now on, the lowest."""
        if cap < self.cap:
            self.cap = cap
            if len(self._heap) > cap:
                self._heap = heapq.nlargest(cap, self._heap)
                heapq.heapify(self._heap)

    def rows(self) -> list[Prediction]:
        """The rows kept, lowest key first."""
        return [row for _, row in sorted(self._heap, reverse=True)]


def _least_key(row: Prediction) -> tuple[float, str]:
    return (row.confidence if row.confidence is not None else 2.0, row.path)


@dataclass
class ResultsTally:
    """What the classify page shows of a results file, gathered in one pass in bounded memory.

    Attributes:
        limits: the page's sizes; they cap what is kept.
        rows: rows seen; ``classified`` of them have a label, ``failed_total`` an error.
        failed: the first ``limits.listed`` rows with an error, in file order.
        by_class: per predicted class, its least confident rows; each keeps ``limits.per_group(classes so far)``,
            so all of them together keep about ``limits.grouped`` rows.
        review: the least confident ``limits.gallery`` rows marked ``needs_review``.
        unknown: the least confident ``limits.gallery`` rows called unknown.
        unknown_column: whether the results have an ``unknown`` column.
    """

    limits: Limits
    rows: int = 0
    classified: int = 0
    failed: list[Prediction] = field(default_factory=list)
    failed_total: int = 0
    by_class: dict[str, Lowest] = field(default_factory=dict)
    review: Lowest = field(init=False)
    unknown: Lowest = field(init=False)
    unknown_column: bool = False

    def __post_init__(self) -> None:
        self.review = Lowest(self.limits.gallery, _least_key)
        self.unknown = Lowest(self.limits.gallery, _least_key)

    def add(self, row: Prediction) -> None:
        """Count ``row`` and keep it where it is among the rows shown so far."""
        self.rows += 1
        if row.error is not None:
            self.failed_total += 1
            if len(self.failed) < self.limits.listed:
                self.failed.append(row)
            return
        if row.predicted is None:
            return
        self.classified += 1
        heap = self.by_class.get(row.predicted)
        if heap is None:  # one more class: each class gallery gets a smaller share of the thumbnails
            cap = self.limits.per_group(len(self.by_class) + 1)
            for other in self.by_class.values():
                other.shrink(cap)
            heap = self.by_class[row.predicted] = Lowest(cap, _least_key)
        heap.add(row)
        if row.needs_review:
            self.review.add(row)
        if row.unknown:
            self.unknown.add(row)


def read_results(results: Path, limits: Limits = Limits()) -> tuple[ResultsTally, list[str], bool]:
    """Read a ``gcv classify`` results file in one pass into what its page shows (see :class:`ResultsFile`).

    Returns:
        The tally (the rows shown, without ``source``, and the counts), the class names in the model's order
        where the file tells it, and whether the file has a ``needs_review`` column.

    Raises:
        GarmentCVError: as :class:`ResultsFile`.
    """
    tally = ResultsTally(limits)
    with ResultsFile(results) as reader:
        for row in reader:
            tally.add(row)
        classes, review = reader.classes, reader.review
        tally.unknown_column = reader.unknown
    return tally, classes, review


def _with_source(rows: Iterable[Prediction], folder: Path) -> list[Prediction]:
    return [replace(row, source=folder / row.path) for row in rows]


def write_classify_report(page: Path, results: Path, folder: Path, limits: Limits = Limits(),
                          title: str = "GarmentCV classification", skipped: Mapping[str, int] | None = None,
                          model: Path | None = None) -> Path:
    """Write the page for the unlabelled results of ``gcv classify`` (and ``<stem>_files/``).

    Shows, per predicted class, its images sorted by confidence, lowest first (the ones to check); the rows
    that need review when the results have a ``needs_review`` column; the rows called unknown when they have an
    ``unknown`` column; and the files that could not be read,
    each with its reason. The results are read once, row by row, keeping only the rows shown (see
    :class:`Limits`), so a file of millions of rows takes little memory.

    Args:
        page: the HTML file to write.
        results: the finished results file (csv or jsonl).
        folder: the classified folder (paths in the results are relative to it).
        limits: gallery sizes (see :class:`~garmentcv.report.html.Limits`).
        title: the page heading.
        skipped: files of the folder passed over by the run (not images, hidden), by reason, as
            :attr:`~garmentcv.infer.classify.ClassifySummary.skipped`: the header then counts every file.
        model: the model file that classified them: when it has the ``cam`` output, the images needing review and
            those called unknown show where it looked for the class it predicted (:mod:`garmentcv.report.heatmap`).

    Returns:
        ``page``.

    Raises:
        OutputPathError: ``page`` or its folder cannot be written.
        GarmentCVError: the results file is of a format without confidence (kaggle).
    """
    check_report_output(Path(page), "--report")
    folder = Path(folder)
    tally, classes, review = read_results(Path(results), limits)
    order = [c for c in classes if c in tally.by_class] + sorted(set(tally.by_class) - set(classes))
    class_galleries = [Gallery(f"class-{h.slug(c)}", c, _with_source(tally.by_class[c].rows(), folder),
                               tally.by_class[c].total) for c in order]
    flagged = tally.review
    review_gallery = Gallery("needs-review", "Needing review", _with_source(flagged.rows(), folder), flagged.total)
    unknowns = tally.unknown_column
    unknown_gallery = Gallery("unknown", "Unknown (none of the classes)", _with_source(tally.unknown.rows(), folder),
                              tally.unknown.total)
    passed = dict(sorted((skipped or {}).items()))

    def build(files: FilesFolder) -> str:
        thumb = gallery_thumbnails([*class_galleries, *([review_gallery] if review else []),
                             *([unknown_gallery] if unknowns else [])], files, limits)
        heat = gallery_heatmaps([*([review_gallery] if review else []), *([unknown_gallery] if unknowns else [])],
                                files, limits, model)
        counts = "".join(f'<tr><th><a href="#{g.ident}">{h.esc(g.title)}</a></th><td>{g.total}</td></tr>'
                         for g in class_galleries)
        summary = [("results", Path(results).name), ("rows", tally.rows), ("classified", tally.classified),
                   *([("needing review", flagged.total)] if review else []),
                   *([("unknown", unknown_gallery.total)] if unknowns else []), ("not read", tally.failed_total),
                   *((f"skipped: {reason}", n) for reason, n in passed.items())]
        body = [
            '<section id="summary"><h2>Summary</h2><div class="tables">' + h.summary_table(summary)
            + f"<table><tr><th>predicted class</th><th>images</th></tr>{counts}</table></div></section>",
            h.gallery_section(review_gallery, thumb, show_review=False, unfolded=limits.unfolded, heat=heat)
            if review else "",
            h.gallery_section(unknown_gallery, thumb, show_review=review, unfolded=limits.unfolded, heat=heat)
            if unknowns else "",
            '<section id="classes"><h2>By predicted class</h2>'
            + "".join(h.gallery_section(g, thumb, level=3, show_predicted=False, show_review=review,
                                        unfolded=limits.unfolded) for g in class_galleries) + "</section>",
            h.errors_section("not-read", "Not read", tally.failed, tally.failed_total, show_label=False),
        ]
        nav = [("summary", "Summary"), *([("needs-review", "Needing review")] if review else []),
               *([("unknown", "Unknown")] if unknowns else []),
               ("classes", "By class"), ("not-read", "Not read")]
        read = f"{tally.classified:,} classified, {tally.failed_total:,} not read"
        if skipped is None:
            sub = f"{h.count(tally.rows, 'image')}: {read}"
        else:
            total = sum(passed.values())
            reasons = ", ".join(f"{n:,} {reason}" for reason, n in passed.items())
            sub = (f"{h.count(tally.rows + total, 'file')}: {h.count(tally.rows, 'image')} ({read}), "
                   f"{total:,} skipped" + (f" ({reasons})" if reasons else ""))
        return h.page(title, sub, nav, body, files.final.name)

    return write_page(page, build)


#: Plots ``gcv evaluate`` may write in its ``--out`` folder, with their captions; those present are shown.
EVALUATE_PLOTS: tuple[tuple[str, str], ...] = (
    ("reliability.png", "Reliability diagram"),
    ("coverage.png", "Coverage against accuracy"),
)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def write_evaluate_page(out: Path, data: Path, scored: Iterable[tuple[Path, str, str, float]],
                        failed: Iterable[Sequence[str]], limits: Limits = Limits(), model: Path | None = None) -> Path:
    """Write ``out/report.html`` from what ``gcv evaluate`` has written in ``out`` and its rows.

    Figures come from ``out/metrics.json`` (all of it: figures added there show up), the matrix from
    ``out/confusion_matrix.json``, plots from the files of :data:`EVALUATE_PLOTS` present in ``out``.

    Args:
        out: the ``--out`` folder, with ``metrics.json`` and ``confusion_matrix.json`` written.
        data: the ``--data`` path; file names are shown relative to it (to its folder for a CSV).
        scored: ``(path, true label, predicted label, confidence)`` of every decoded image.
        failed: ``(path, true label, reason)`` of every image that could not be decoded.
        limits: gallery sizes.
        model: the model file evaluated (heatmaps of the misclassified images when it has the ``cam`` output).

    Returns:
        The page written.
    """
    out, data = Path(out), Path(data)
    root = data if data.is_dir() else data.parent
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    matrix = json.loads((out / "confusion_matrix.json").read_text(encoding="utf-8"))["matrix"]
    rows = [Prediction(_relative(Path(p), root), Path(p), label, predicted, confidence)
            for p, label, predicted, confidence in scored]
    errors = [Prediction(_relative(Path(p), root), None, label, error=reason) for p, label, reason in failed]
    plots = {caption: out / name for name, caption in EVALUATE_PLOTS if (out / name).is_file()}
    return write_evaluate_report(
        out / EVALUATE_PAGE, classes=metrics["classes"], figures=metrics, per_class=metrics.get("per_class", {}),
        matrix=matrix, rows=rows, errors=errors, plots=plots, limits=limits, model=model,
        subtitle=f"{h.count(len(rows), 'image')} of {_relative(data, data.parent)}: "
                 f"{sum(r.label != r.predicted for r in rows):,} misclassified, {len(errors):,} not decoded",
    )
