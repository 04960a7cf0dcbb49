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

Options (csv and jsonl only; kaggle must carry a label for every row and takes neither):

* ``min_confidence=P``: a ``needs_review`` column after ``confidence`` (csv: ``true``/``false``, empty on an
  error row; jsonl: ``true``/``false``/``null``), true when the confidence is below ``P``. ``label`` still
  holds the model's choice.
* ``topk=K``: instead of one probability per class, the K most probable classes, best first: csv columns
  ``top1_label,top1_prob,...,topK_label,topK_prob``; jsonl lists ``top_labels`` and ``top_probs`` in place
  of ``probs`` (ties: the lower class index first).

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


def needs_review(probs: Sequence[float] | None, min_confidence: float | None) -> bool | None:
    """Whether a row's confidence (its top probability) is below ``min_confidence``; ``None`` for an error row
    or without a threshold."""
    if probs is None or min_confidence is None:
        return None
    return max(probs) < min_confidence


def top_k(probs: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` largest probabilities, best first (ties: the lower index first)."""
    return sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:k]


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


def write_rows(handle: IO[str], rows: Iterable[Row], classes: Sequence[str], fmt: OutputFormat | str,
               min_confidence: float | None = None, topk: int | None = None,
               duplicates: dict[str, list[str]] | None = None) -> int:
    """Write ``rows`` (in order) to an open text file in format ``fmt``. Returns the number of rows.

    With the kaggle format, an index given by several files (``10.jpg`` and ``10.png``) is recorded in
    ``duplicates`` (index -> paths) when a dict is passed; the rows are written all the same.

    ``min_confidence`` adds ``needs_review``; ``topk`` replaces the per-class probabilities by the K best
    (see the module docstring).

    Raises:
        ValueError: ``min_confidence`` or ``topk`` with the kaggle format, or ``topk`` outside 1..len(classes).
    """
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.KAGGLE and (min_confidence is not None or topk is not None):
        raise ValueError("the kaggle format has a label column only: no needs_review, no top-k")
    if topk is not None and not 1 <= topk <= len(classes):
        raise ValueError(f"topk must be within 1..{len(classes)}, got {topk}")
    review = min_confidence is not None
    count = 0
    if fmt is OutputFormat.JSONL:
        for row in rows:
            probs = row["probs"]
            record: dict[str, Any] = {
                "path": row["path"],
                "label": row["label"],
                "confidence": None if probs is None else round(max(probs), 6),
            }
            if review:
                record["needs_review"] = needs_review(probs, min_confidence)
            if topk is None:
                record["probs"] = None if probs is None else {c: round(p, 6) for c, p in zip(classes, probs)}
            else:
                best = None if probs is None else top_k(probs, topk)
                record["top_labels"] = None if best is None else [classes[i] for i in best]
                record["top_probs"] = None if best is None else [round(probs[i], 6) for i in best]
            record["error"] = row["error"]
            handle.write(_json_line(record))
            count += 1
        return count
    writer = csv.writer(handle, lineterminator="\n")
    if fmt is OutputFormat.KAGGLE:
        writer.writerow(["index", "label"])
        seen: dict[str, str] = {}  # index -> first path: the one column kaggle matches on must be unique
        for row in rows:
            index = str(PurePosixPath(row["path"]).with_suffix(""))
            if index in seen and duplicates is not None:
                duplicates.setdefault(index, [seen[index]]).append(row["path"])
            seen.setdefault(index, row["path"])
            writer.writerow([index, row["label"] or ""])
            count += 1
        return count
    if topk is None:
        prob_columns = [f"prob_{c}" for c in classes]
    else:
        prob_columns = [f"top{i}_{part}" for i in range(1, topk + 1) for part in ("label", "prob")]
    writer.writerow(["path", "label", "confidence", *(["needs_review"] if review else []), *prob_columns, "error"])
    for row in rows:
        probs = row["probs"]
        if probs is None:
            writer.writerow([row["path"], "", "", *([""] if review else []), *([""] * len(prob_columns)),
                             row["error"] or ""])
        else:
            flag = ["true" if needs_review(probs, min_confidence) else "false"] if review else []
            if topk is None:
                values = list(map(_fmt, probs))
            else:
                values = [v for i in top_k(probs, topk) for v in (classes[i], _fmt(probs[i]))]
            writer.writerow([row["path"], row["label"], _fmt(max(probs)), *flag, *values, ""])
        count += 1
    return count
