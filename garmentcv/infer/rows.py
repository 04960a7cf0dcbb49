"""The rows ``gcv classify`` writes and the output formats (standard library only; parquet needs pyarrow).

A row is a plain dict, the same one stored line by line in the partial results of a run:
``{"path": "sub/0001.jpg", "label": "bryuki" | None, "probs": [p0, p1, ...] | None, "error": str | None}``,
``path`` relative to the classified folder with ``/`` separators, ``probs`` in the model's class order.

Formats (probabilities and confidence with 6 decimals):

* ``csv``: ``path,label,confidence,prob_<class>...,error``; an error row has empty label, confidence and
  probabilities and the reason in ``error``. Quoting follows the csv module (RFC 4180), so any file name
  (commas, quotes, newlines) survives a round trip.
* ``jsonl``: one object per line, ``{"path", "label", "confidence", "probs": {class: p}, "error"}``, with
  ``null`` for what an error row lacks.
* ``kaggle``: ``index,label`` like the Lamoda submission; ``index`` is the path without its extension (the
  file stem, ``123`` for ``123.jpg``, in a flat folder); an error row has an empty label.
* ``parquet``: the csv columns, typed (``confidence``, ``prob_*``/``top*_prob`` float64 rounded to 6 decimals,
  null on an error row; ``needs_review`` bool; the others strings, null where csv is empty), written in row
  groups of :data:`PARQUET_ROW_GROUP` rows, so memory stays bounded for millions of rows. Needs pyarrow
  (``pip install 'garmentcv[parquet]'``). A file name that is not valid UTF-8 is stored with its odd bytes as
  ``U+FFFD``.

Options (csv and jsonl only; kaggle must carry a label for every row and takes neither):

* ``min_confidence=P``: a ``needs_review`` column after ``confidence`` (csv: ``true``/``false``, empty on an
  error row; jsonl: ``true``/``false``/``null``), true when the confidence is below ``P``. ``label`` still
  holds the model's choice.
* ``topk=K``: instead of one probability per class, the K most probable classes, best first: csv columns
  ``top1_label,top1_prob,...,topK_label,topK_prob``; jsonl lists ``top_labels`` and ``top_probs`` in place
  of ``probs`` (ties: the lower class index first).

* ``sets=ConformalPredictor`` (a model file with prediction sets, :mod:`garmentcv.conformal`): a
  ``prediction_set`` column after ``confidence``: the labels of the set, most probable first, joined with ``|`` in
  csv (empty for an empty set and on an error row), a list in jsonl and parquet (``null`` on an error row). The row
  also gets ``needs_review``, true when the set does not hold exactly one label (two or more: the model cannot
  tell them apart at the coverage asked; none: no class is likely enough), or when the confidence is below
  ``min_confidence`` if that is given too.
* ``unknown_threshold=T`` (a model file with an unknown-item detector, whose score the rows carry as
  ``ood_score``): ``unknown`` (true when ``ood_score > T``) and ``ood_score`` (6 decimals) columns before
  ``error``. The kaggle format gives an unknown row an empty label only with ``exclude_unknown``.

File names that are not valid UTF-8 are written as their original bytes (``surrogateescape``).

Reading back: :class:`garmentcv.report.write.ResultsFile` reads a rows file of any of the csv, jsonl and parquet
formats, :func:`read_embeddings` an embeddings file of :func:`write_embeddings`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garmentcv.conformal import ConformalPredictor

Row = dict[str, Any]


class OutputFormat(str, Enum):
    """What ``gcv classify --format`` writes."""

    CSV = "csv"
    JSONL = "jsonl"
    KAGGLE = "kaggle"
    PARQUET = "parquet"


def sort_key(path: str) -> tuple[str, ...]:
    """The order of rows: relative path compared folder name by folder name, then file name (code points).

    This is the order :func:`garmentcv.data.layouts.scan_images` yields (names sorted within each folder,
    depth first), so rows can be written while the folder is still being read.
    """
    return tuple(path.split("/"))


def _fmt(p: float) -> str:
    return f"{p:.6f}"


def needs_review(probs: Sequence[float] | None, min_confidence: float | None) -> bool | None:
    """Whether a row's confidence (its top probability) is below ``min_confidence``; ``None`` for an error row
    or without a threshold."""
    if probs is None or min_confidence is None:
        return None
    return max(probs) < min_confidence


def prediction_set(probs: Sequence[float] | None, sets: ConformalPredictor | None) -> list[int] | None:
    """The class indices of a row's prediction set, most probable first; ``None`` for an error row or without
    ``sets``."""
    if probs is None or sets is None:
        return None
    import numpy as np  # the rows module itself stays standard-library only

    return sets.sets(np.asarray(probs, dtype=np.float64)[None, :])[0]


def review_needed(probs: Sequence[float] | None, min_confidence: float | None,
                  sets: ConformalPredictor | None) -> bool | None:
    """A row's ``needs_review``: its confidence below ``min_confidence``, or a prediction set of other than one
    label; ``None`` for an error row or with neither rule."""
    if probs is None or (min_confidence is None and sets is None):
        return None
    low = min_confidence is not None and max(probs) < min_confidence
    chosen = prediction_set(probs, sets)
    return low or (chosen is not None and len(chosen) != 1)


def is_unknown(row: Row, threshold: float | None) -> bool | None:
    """Whether a row's ``ood_score`` is above ``threshold``; ``None`` for an error row, a row without a score or
    without a threshold."""
    score = row.get("ood_score")
    if threshold is None or score is None or row.get("probs") is None:
        return None
    return float(score) > threshold


def top_k(probs: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` largest probabilities, best first (ties: the lower index first)."""
    return sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:k]


def json_record(row: Row, classes: Sequence[str], min_confidence: float | None = None,
                topk: int | None = None, *, sets: ConformalPredictor | None = None,
                unknown_threshold: float | None = None) -> dict[str, Any]:
    """One row as the jsonl format writes it (see the module docstring): ``path``, ``label``, ``confidence``
    (6 decimals), ``prediction_set`` with ``sets``, ``needs_review`` with ``min_confidence`` or ``sets``, ``probs``
    (class -> probability) or, with ``topk``, ``top_labels`` and ``top_probs``, ``unknown`` and ``ood_score`` with
    ``unknown_threshold`` (the row's ``ood_score`` against it), then ``error``; ``None`` for what an error row lacks.

    The one definition of a JSON row: ``gcv classify --format jsonl`` writes it line by line and ``gcv serve``
    answers with it (:mod:`garmentcv.serve`). Fields added later come in new keys, so readers ignore keys they do
    not know.
    """
    probs = row["probs"]
    record: dict[str, Any] = {
        "path": row["path"],
        "label": row["label"],
        "confidence": None if probs is None else round(max(probs), 6),
    }
    if sets is not None:
        chosen = prediction_set(probs, sets)
        record["prediction_set"] = None if chosen is None else [classes[i] for i in chosen]
    if min_confidence is not None or sets is not None:
        record["needs_review"] = review_needed(probs, min_confidence, sets)
    if topk is None:
        # not strict: rows are not checked against ``classes`` here, as in write_rows' csv branch
        record["probs"] = None if probs is None else {c: round(p, 6) for c, p in zip(classes, probs, strict=False)}
    else:
        best = None if probs is None else top_k(probs, topk)
        record["top_labels"] = None if best is None else [classes[i] for i in best]
        record["top_probs"] = None if best is None else [round(probs[i], 6) for i in best]
    if unknown_threshold is not None:
        record["unknown"] = is_unknown(row, unknown_threshold)
        record["ood_score"] = None if record["unknown"] is None else round(float(row["ood_score"]), 6)
    record["error"] = row["error"]
    return record


def _json_line(record: dict[str, Any]) -> str:
    """One JSON line, UTF-8 text as is; a file name that is not valid UTF-8 (surrogate-escaped bytes) is written
    with ASCII escapes instead, so the line stays valid JSON and ``os.fsencode(json.loads(line)["path"])`` gives
    the file's bytes back."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True)
    return line + "\n"


#: A folder or file name that starts with a character sorting before ``.`` (see :class:`SharedIndexes`).
_LOW_START = re.compile(r"(?:^|/)[\x00-\x2d]")


class SharedIndexes:
    """Finds the rows whose kaggle index (the path, normalised, without its extension: ``./a.jpg`` -> ``a``) an
    earlier row already gave (``10.jpg`` and ``10.png``), exactly, in memory that does not grow with the rows.

    Rows must come in row order (:func:`sort_key`), as every engine writes them. A path in normal form
    (``a/b.jpg``, as folders and object listings give them) starts with its index, and the paths starting with a
    given text form one unbroken run of that order; so once a row falls outside the run of an index, no later
    path in normal form has it, and only the indexes that are prefixes of the current path are kept (a few).
    A path not in normal form (a manifest's ``./a.jpg`` or ``d//x.jpg``) can meet its index outside that run, so
    it is remembered for the whole stream, and so is an index with a folder or file name starting with a
    character that sorts before ``.`` (`` !"#$%&'()*+,-``): ``-x.jpg`` sorts before ``./-x.png``, the one case
    where the normal spelling comes first. Memory grows only with such rows.
    """

    def __init__(self) -> None:
        self._open: list[tuple[str, str]] = []  # (index, first path): indexes that are prefixes of the last path
        self._kept: dict[str, str] = {}  # index -> first path, for the rows described above
        self._last: tuple[str, ...] | None = None

    def add(self, path: str) -> tuple[str, str | None]:
        """Record the row of ``path``; return its index and the first path that gave it (``None``: the first).

        Raises:
            ValueError: ``path`` comes before the previous row in row order.
        """
        key = sort_key(path)
        if self._last is not None and key < self._last:
            raise ValueError(f"rows must come in row order (sort_key): {path!r} comes after {'/'.join(self._last)!r}")
        self._last = key
        pure = PurePosixPath(path)
        index = str(pure.with_suffix(""))
        if self._open:
            self._open = [entry for entry in self._open if path.startswith(entry[0])]
        first = self._kept.get(index) if self._kept else None
        if first is None:
            first = next((p for i, p in self._open if i == index), None)
        if first is None:
            if path != str(pure) or _LOW_START.search(index):
                self._kept[index] = path
            else:
                self._open.append((index, path))
        return index, first


def write_rows(handle: IO[str], rows: Iterable[Row], classes: Sequence[str], fmt: OutputFormat | str,
               min_confidence: float | None = None, topk: int | None = None,
               duplicates: dict[str, list[str]] | None = None, *, sets: ConformalPredictor | None = None,
               unknown_threshold: float | None = None, exclude_unknown: bool = False) -> int:
    """Write ``rows`` (in order) to an open text file in format ``fmt``. Returns the number of rows.

    With the kaggle format, an index given by several files (``10.jpg`` and ``10.png``) is recorded in
    ``duplicates`` (index -> paths) when a dict is passed; the rows are written all the same. They must come
    in row order (see :class:`SharedIndexes`).

    ``min_confidence`` adds ``needs_review``; ``topk`` replaces the per-class probabilities by the K best;
    ``sets`` adds ``prediction_set`` (and ``needs_review``); ``unknown_threshold`` adds ``unknown`` and
    ``ood_score``; ``exclude_unknown`` empties the kaggle label of unknown rows (see the module docstring).

    Raises:
        ValueError: ``min_confidence`` or ``topk`` with the kaggle format, ``topk`` outside 1..len(classes), or
            kaggle rows out of row order.
    """
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.PARQUET:
        raise ValueError("parquet is not a text format: use write_parquet or write_output")
    if fmt is OutputFormat.KAGGLE and (min_confidence is not None or topk is not None):
        raise ValueError("the kaggle format has a label column only: no needs_review, no top-k")
    if topk is not None and not 1 <= topk <= len(classes):
        raise ValueError(f"topk must be within 1..{len(classes)}, got {topk}")
    review = min_confidence is not None or sets is not None
    unknowns = unknown_threshold is not None
    count = 0
    if fmt is OutputFormat.JSONL:
        for row in rows:
            handle.write(_json_line(json_record(row, classes, min_confidence, topk, sets=sets,
                                                unknown_threshold=unknown_threshold)))
            count += 1
        return count
    writer = csv.writer(handle, lineterminator="\n")
    if fmt is OutputFormat.KAGGLE:
        writer.writerow(["index", "label"])
        indexes = SharedIndexes()  # the one column kaggle matches on must be unique
        for row in rows:
            index, first = indexes.add(row["path"])
            if first is not None and duplicates is not None:
                duplicates.setdefault(index, [first]).append(row["path"])
            label = "" if exclude_unknown and is_unknown(row, unknown_threshold) else row["label"] or ""
            writer.writerow([index, label])
            count += 1
        return count
    if topk is None:
        prob_columns = [f"prob_{c}" for c in classes]
    else:
        prob_columns = [f"top{i}_{part}" for i in range(1, topk + 1) for part in ("label", "prob")]
    set_column = ["prediction_set"] if sets is not None else []
    unknown_columns = ["unknown", "ood_score"] if unknowns else []
    writer.writerow(["path", "label", "confidence", *set_column, *(["needs_review"] if review else []), *prob_columns,
                     *unknown_columns, "error"])
    for row in rows:
        probs = row["probs"]
        if probs is None:
            writer.writerow([row["path"], "", "", *([""] * len(set_column)), *([""] if review else []),
                             *([""] * len(prob_columns)), *([""] * len(unknown_columns)), row["error"] or ""])
        else:
            chosen = prediction_set(probs, sets)
            shown = [] if chosen is None else ["|".join(classes[i] for i in chosen)]
            flag = ["true" if review_needed(probs, min_confidence, sets) else "false"] if review else []
            if topk is None:
                values = list(map(_fmt, probs))
            else:
                values = [v for i in top_k(probs, topk) for v in (classes[i], _fmt(probs[i]))]
            unknown = is_unknown(row, unknown_threshold)
            extra = [] if not unknowns else (["", ""] if unknown is None else
                                             ["true" if unknown else "false", _fmt(float(row["ood_score"]))])
            writer.writerow([row["path"], row["label"], _fmt(max(probs)), *shown, *flag, *values, *extra, ""])
        count += 1
    return count


def kaggle_empty_labels_message(errors: int, failed: str, out: str | Path) -> str:
    """What to say when ``errors`` images (``failed`` names some of them) have an empty label in the kaggle file
    ``out``: the submission would be refused or scored wrong, so the command fails unless ``--on-error continue``."""
    from garmentcv.text import plural

    one = errors == 1
    return (f"{plural(errors, 'image')} could not be decoded and {'has' if one else 'have'} an empty label in the "
            f"kaggle file {out}: {failed}; replace or remove {'it' if one else 'them'} and run again, or pass "
            f"--on-error continue to accept the empty label{'' if one else 's'}")


#: Rows per parquet row group (and per batch held in memory while writing).
PARQUET_ROW_GROUP = 65536


def require_pyarrow() -> None:
    """Refuse ``--format parquet`` before any work when pyarrow is missing.

    Raises:
        MissingRuntimeError: pyarrow is not installed; the message names the extra.
    """
    from garmentcv.installs import MissingRuntimeError, installed_version, pip_install

    if installed_version("pyarrow") is None:
        raise MissingRuntimeError(f"--format parquet needs pyarrow, which is not installed: {pip_install('parquet')}")


def _column_names(classes: Sequence[str], review: bool, topk: int | None, sets: bool = False,
                  unknowns: bool = False) -> list[str]:
    if topk is None:
        prob_columns = [f"prob_{c}" for c in classes]
    else:
        prob_columns = [f"top{i}_{part}" for i in range(1, topk + 1) for part in ("label", "prob")]
    return ["path", "label", "confidence", *(["prediction_set"] if sets else []), *(["needs_review"] if review else []),
            *prob_columns, *(["unknown", "ood_score"] if unknowns else []), "error"]


def _utf8(text: str) -> str:
    """``text`` as valid Unicode: surrogate-escaped bytes of a non-UTF-8 file name become U+FFFD."""
    return os.fsencode(text).decode("utf-8", "replace") if any("\udc80" <= ch <= "\udcff" for ch in text) else text


def write_parquet(path: str | Path, rows: Iterable[Row], classes: Sequence[str],
                  min_confidence: float | None = None, topk: int | None = None, *,
                  sets: ConformalPredictor | None = None, unknown_threshold: float | None = None) -> int:
    """Write ``rows`` (in order) to a new parquet file ``path`` (see the module docstring). Returns the number of rows.

    Raises:
        MissingRuntimeError: pyarrow is not installed (the message names the extra).
        ValueError: ``topk`` outside 1..len(classes).
    """
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    if topk is not None and not 1 <= topk <= len(classes):
        raise ValueError(f"topk must be within 1..{len(classes)}, got {topk}")
    review = min_confidence is not None or sets is not None
    unknowns = unknown_threshold is not None
    names = _column_names(classes, review, topk, sets is not None, unknowns)
    types = {"confidence": pa.float64(), "needs_review": pa.bool_(), "prediction_set": pa.list_(pa.string()),
             "unknown": pa.bool_(), "ood_score": pa.float64()}
    for name in names[3:-1]:
        types.setdefault(name, pa.string() if name.endswith("_label") else pa.float64())
    prob_names = [n for n in names[3:-1] if n.startswith("prob_")]
    schema = pa.schema([(name, types.get(name, pa.string())) for name in names])
    count = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        columns: dict[str, list[Any]] = {name: [] for name in names}

        def flush() -> None:
            if columns["path"]:
                writer.write_table(pa.table(columns, schema=schema), row_group_size=PARQUET_ROW_GROUP)
                for values in columns.values():
                    values.clear()

        for row in rows:
            probs = row["probs"]
            columns["path"].append(_utf8(row["path"]))
            columns["label"].append(row["label"])
            columns["confidence"].append(None if probs is None else round(max(probs), 6))
            if sets is not None:
                chosen = prediction_set(probs, sets)
                columns["prediction_set"].append(None if chosen is None else [classes[i] for i in chosen])
            if review:
                columns["needs_review"].append(review_needed(probs, min_confidence, sets))
            if unknowns:
                unknown = is_unknown(row, unknown_threshold)
                columns["unknown"].append(unknown)
                columns["ood_score"].append(None if unknown is None else round(float(row["ood_score"]), 6))
            if topk is None:
                for c, name in enumerate(prob_names):
                    columns[name].append(None if probs is None else round(probs[c], 6))
            else:
                best = None if probs is None else top_k(probs, topk)
                for rank in range(topk):
                    columns[f"top{rank + 1}_label"].append(None if best is None else classes[best[rank]])
                    columns[f"top{rank + 1}_prob"].append(None if best is None else round(probs[best[rank]], 6))
            columns["error"].append(row["error"])
            count += 1
            if len(columns["path"]) >= PARQUET_ROW_GROUP:
                flush()
        flush()
    return count


def write_output(out: str | Path, rows: Iterable[Row], classes: Sequence[str], fmt: OutputFormat | str,
                 min_confidence: float | None = None, topk: int | None = None,
                 duplicates: dict[str, list[str]] | None = None, *, sets: ConformalPredictor | None = None,
                 unknown_threshold: float | None = None, exclude_unknown: bool = False) -> int:
    """Write ``rows`` to the file ``out`` in format ``fmt``, atomically (a crash leaves the old file or none).

    Text formats go through :func:`write_rows` (UTF-8, names that are not UTF-8 as their bytes), parquet
    through :func:`write_parquet`. Returns the number of rows.

    Raises:
        ValueError: as :func:`write_rows` and :func:`write_parquet`.
        MissingRuntimeError: parquet without pyarrow.
        OSError: ``out`` cannot be written.
    """
    from garmentcv.fsutil import atomic_path, atomic_write

    if OutputFormat(fmt) is OutputFormat.PARQUET:
        with atomic_path(out) as tmp:
            return write_parquet(tmp, rows, classes, min_confidence, topk, sets=sets,
                                 unknown_threshold=unknown_threshold)
    with atomic_write(out, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return write_rows(handle, rows, classes, fmt, min_confidence, topk, duplicates, sets=sets,
                          unknown_threshold=unknown_threshold, exclude_unknown=exclude_unknown)


def write_embeddings(out: str | Path, rows: Iterable[Row], count: int, dim: int) -> int:
    """Write the ``embedding`` of each of ``count`` rows (in the order of the results file) to ``out``, atomically.

    * ``.npy``: a float32 ``(count, dim)`` array (NaN on a row without one: an error row), written through a memory
      map so memory does not grow with the rows, and beside it ``<stem>.paths.csv`` with one ``path`` per array
      row, in the same order (the row-order index).
    * ``.parquet``: columns ``path`` (string) and ``embedding`` (list of float32, null on an error row), in row
      groups of :data:`PARQUET_ROW_GROUP` rows. Needs pyarrow.

    Returns the number of rows written.

    Raises:
        ValueError: a suffix other than ``.npy``/``.parquet``, or rows that are not ``count`` or not ``dim`` wide.
        MissingRuntimeError: parquet without pyarrow.
        OSError: ``out`` cannot be written.
    """
    import numpy as np

    from garmentcv.fsutil import atomic_path, atomic_write

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        require_pyarrow()
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32()))])
        written = 0
        with atomic_path(out) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
            columns: dict[str, list[Any]] = {"path": [], "embedding": []}
            for row in rows:
                vector = row.get("embedding")
                if vector is not None and len(vector) != dim:
                    raise ValueError(f"row {row['path']!r}: embedding of {len(vector)} values, expected {dim}")
                columns["path"].append(_utf8(row["path"]))
                columns["embedding"].append(vector)
                written += 1
                if len(columns["path"]) >= PARQUET_ROW_GROUP:
                    writer.write_table(pa.table(columns, schema=schema))
                    columns = {"path": [], "embedding": []}
            if columns["path"]:
                writer.write_table(pa.table(columns, schema=schema))
        return written
    if suffix != ".npy":
        raise ValueError(f"{out}: embeddings are written to a .npy or .parquet file")
    index = embeddings_index(out)
    written = 0
    with atomic_path(out) as tmp, atomic_write(index, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, dim))
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path"])
        for row in rows:
            if written >= count:
                raise ValueError(f"more than the {count} rows expected")
            vector = row.get("embedding")
            array[written] = np.nan if vector is None else np.asarray(vector, dtype=np.float32)
            writer.writerow([row["path"]])
            written += 1
        if written != count:
            raise ValueError(f"{written} rows, {count} expected")
        array.flush()
        del array
    return written


def embeddings_index(path: str | Path) -> Path:
    """The row index beside a ``.npy`` embeddings file: ``emb.npy`` -> ``emb.paths.csv``."""
    path = Path(path)
    return path.with_name(path.stem + ".paths.csv")


def read_embeddings(path: str | Path) -> tuple[list[str], Any]:
    """Read an embeddings file :func:`write_embeddings` wrote: the rows' paths, in order, and float32 ``(N, D)``
    embeddings (NaN on a row without one: an error row).

    ``.npy``: the array (memory-mapped, read-only) and the paths of ``<stem>.paths.csv`` beside it; ``.parquet``: its
    ``path`` and ``embedding`` columns (needs pyarrow).

    Raises:
        ValueError: a suffix other than ``.npy``/``.parquet``; a missing or unreadable row index, an array that is not
            2-D or not as long as its index, or a parquet file without ``path`` and ``embedding`` columns or with
            embeddings of different lengths (the message names the file).
        MissingRuntimeError: parquet without pyarrow.
    """
    import numpy as np

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        require_pyarrow()
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(str(path), columns=["path", "embedding"])
        except (KeyError, ValueError, OSError) as exc:  # pyarrow's errors derive from these
            raise ValueError(f"{path}: not an embeddings file gcv classify wrote, with path and embedding columns "
                             f"({exc})") from exc
        import pyarrow.compute as pc

        paths = [str(p) for p in table.column("path").to_pylist()]
        lists = table.column("embedding").combine_chunks()  # in columns, not Python floats: millions of rows fit
        widths = sorted(pc.unique(pc.list_value_length(lists).drop_null()).to_pylist())
        if len(widths) > 1:
            raise ValueError(f"{path}: embeddings of different lengths {widths}")
        dim = widths[0] if widths else 0
        array = np.full((len(paths), dim), np.nan, dtype=np.float32)
        valid = np.asarray(lists.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if valid.any():
            array[valid] = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
        return paths, array
    if suffix != ".npy":
        raise ValueError(f"{path}: embeddings are read from a .npy file (with its .paths.csv index) or a .parquet file")
    index = embeddings_index(path)
    try:
        with open(index, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            if header != ["path"]:
                raise ValueError(f"{index}: the row index of {path.name} has the single column path, got {header}")
            paths = [cells[0] for cells in reader if cells]
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: its row index {index.name} is missing; keep the two files gcv classify "
                         "--embeddings wrote together") from exc
    array = np.load(path, mmap_mode="r")
    if array.ndim != 2 or len(array) != len(paths):
        raise ValueError(f"{path}: an array of shape {array.shape} for the {len(paths)} paths of {index.name}; give "
                         "the two files gcv classify --embeddings wrote")
    return paths, array
