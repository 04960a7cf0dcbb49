"""The rows ``gcv-classify`` writes and the three output formats (standard library only).

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

File names that are not valid UTF-8 are written as their original bytes (``surrogateescape``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import PurePosixPath
from typing import IO, Any

Row = dict[str, Any]


class OutputFormat(str, Enum):
    """What ``gcv-classify --format`` writes."""

    CSV = "csv"
    JSONL = "jsonl"
    KAGGLE = "kaggle"


def sort_key(path: str) -> tuple[str, ...]:
    """The order of rows: relative path compared folder name by folder name, then file name (code points).

    This is the order :func:`garmentcv.data.layouts.scan_images` yields (names sorted within each folder,
    depth first), so rows can be written while the folder is still being read.
    """
    return tuple(path.split("/"))


def _fmt(p: float) -> str:
    return f"{p:.6f}"


def write_rows(handle: IO[str], rows: Iterable[Row], classes: Sequence[str], fmt: OutputFormat | str) -> int:
    """Write ``rows`` (in order) to an open text file in format ``fmt``. Returns the number of rows."""
    fmt = OutputFormat(fmt)
    count = 0
    if fmt is OutputFormat.JSONL:
        for row in rows:
            probs = row["probs"]
            record = {
                "path": row["path"],
                "label": row["label"],
                "confidence": None if probs is None else round(max(probs), 6),
                "probs": None if probs is None else {c: round(p, 6) for c, p in zip(classes, probs)},
                "error": row["error"],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count
    writer = csv.writer(handle, lineterminator="\n")
    if fmt is OutputFormat.KAGGLE:
        writer.writerow(["index", "label"])
        for row in rows:
            writer.writerow([str(PurePosixPath(row["path"]).with_suffix("")), row["label"] or ""])
            count += 1
        return count
    writer.writerow(["path", "label", "confidence", *(f"prob_{c}" for c in classes), "error"])
    for row in rows:
        probs = row["probs"]
        if probs is None:
            writer.writerow([row["path"], "", "", *([""] * len(classes)), row["error"] or ""])
        else:
            writer.writerow([row["path"], row["label"], _fmt(max(probs)), *map(_fmt, probs), ""])
        count += 1
    return count
