"""Corrections files: label fixes applied to a dataset's listing by ``gcv train --corrections``, images untouched.

A corrections file is a CSV (UTF-8, with or without a byte-order mark; RFC 4180 quoting, so any file name fits)
with a header naming at least the columns ``path``, ``label`` and ``action``, one row per image to correct:

* ``action`` ``relabel``: the image is trained with class ``label`` instead of the one its layout gives it
  (file name, class folder or manifest row). ``label`` must be one of the dataset's classes.
* ``action`` ``drop``: the image is left out of training and validation; ``label`` is ignored (may be empty).

``path`` is relative to the dataset: to the ``DATA`` folder, or to the manifest's folder for a csv manifest (the
way gcv classify writes paths for a folder it classified), with ``/`` separators; an absolute path names the file
itself. Other columns (a reviewer's note, a suggested label, a score) are kept out of the way: they are read and
ignored, so a fix list with extra columns can be edited into a corrections file.

Every row must name an image of the dataset, once; a file that cannot be used is refused whole, with the file's
name and line (:class:`CorrectionsError`), before any image is read. The review app's export
(:mod:`garmentcv.serve.review`) writes this format with :func:`write_corrections`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from garmentcv.data.layouts import CLASS_NAME_PATTERN, MANIFEST_ENCODING, LabelledDataset, Layout
from garmentcv.errors import DatasetError
from garmentcv.fsutil import sha256_of
from garmentcv.text import plural

logger = logging.getLogger(__name__)

#: The columns every corrections file has, in the order :func:`write_corrections` writes them.
COLUMNS: tuple[str, ...] = ("path", "label", "action")

#: ``relabel``: train the image with another class; ``drop``: leave it out.
RELABEL = "relabel"
DROP = "drop"
ACTIONS: tuple[str, ...] = (RELABEL, DROP)


class CorrectionsError(DatasetError):
    """A corrections file cannot be read or does not fit the dataset (the message names the file and line)."""


@dataclass(frozen=True)
class Correction:
    """One row of a corrections file.

    Attributes:
        path: the image, as written in the file (relative to the dataset, or absolute).
        label: the new class for ``relabel``; ``""`` for ``drop``.
        action: :data:`RELABEL` or :data:`DROP`.
        line: the row's line number in the file (1 is the header), for messages.
    """

    path: str
    label: str
    action: str
    line: int = 0


@dataclass(frozen=True)
class Corrections:
    """A corrections file as read.

    Attributes:
        source: the file.
        sha256: hex SHA-256 of its bytes (recorded in a run's ``config.json``).
        rows: its rows, in file order.
    """

    source: Path
    sha256: str
    rows: tuple[Correction, ...]


#: What to do about corrections that leave a class too few images (the end of :class:`CorrectionsError` messages).
TOO_FEW_ADVICE = (
    "review the corrections file and delete the rows you disagree with, or write it again from the fix list acting "
    "on fewer issue kinds (gcv data corrections FIX_LIST --issue label, for example)"
)


@dataclass(frozen=True)
class ClassChange:
    """How corrections changed the images of one class.

    Attributes:
        before: images of the class in the dataset.
        after: images of the class once the corrections are applied (``before - dropped - relabelled_out +
            relabelled_in``).
        dropped: its images dropped.
        relabelled_out: its images relabelled to another class.
        relabelled_in: images of other classes relabelled to it.
    """

    before: int
    after: int
    dropped: int = 0
    relabelled_out: int = 0
    relabelled_in: int = 0

    def __str__(self) -> str:
        """``4 -> 3 (2 dropped, 1 relabelled in)``; the parts in brackets that are zero are left out."""
        parts = [f"{n} {what}" for n, what in ((self.dropped, "dropped"), (self.relabelled_out, "relabelled out"),
                                               (self.relabelled_in, "relabelled in")) if n]
        return f"{self.before} -> {self.after}" + (f" ({', '.join(parts)})" if parts else "")


def describe_class_changes(changes: Mapping[str, ClassChange]) -> str:
    """``bluzy 4 -> 3 (2 dropped, 1 relabelled in), bryuki 4 -> 4``: every class, in the order of ``changes``."""
    return ", ".join(f"{name} {change}" for name, change in changes.items())


@dataclass(frozen=True)
class AppliedCorrections:
    """What :func:`apply_corrections` changed.

    Attributes:
        relabelled: the dataset paths relabelled, as ``(path, old class, new class)``.
        dropped: the dataset paths dropped.
        classes: every class of the dataset (in its order) -> how its images changed.
    """

    relabelled: tuple[tuple[Path, str, str], ...]
    dropped: tuple[Path, ...]
    classes: dict[str, ClassChange] = field(default_factory=dict)

    @property
    def images_before(self) -> int:
        """Images of the dataset before the corrections."""
        return sum(change.before for change in self.classes.values())


def _cell(row: dict[str, str | None], name: str) -> str:
    return (row.get(name) or "").strip()


def read_corrections(path: str | Path) -> Corrections:
    """Read and check a corrections file (the format: module docstring).

    Raises:
        CorrectionsError: the file cannot be read, lacks a column, or a row has an empty path, an unknown action,
            a relabel without a valid class name, or names a path an earlier row named (file and line given).
    """
    path = Path(path)
    try:
        digest = sha256_of(path)
        with path.open(newline="", **MANIFEST_ENCODING) as handle:
            text = handle.read()
    except OSError as exc:
        raise CorrectionsError(f"{path}: cannot read the corrections file ({exc.strerror or exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CorrectionsError(
            f"{path}, line 1: expected a header with the columns {','.join(COLUMNS)}, got "
            f"{','.join(reader.fieldnames or []) or 'nothing'} (missing {', '.join(missing)}); "
            "the format: docs/review.md"
        )
    rows: list[Correction] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise CorrectionsError(f"{path}, line {line}: more cells than the header has columns; quote file names "
                                   "that hold commas")
        name, action, label = _cell(row, "path"), _cell(row, "action").lower(), _cell(row, "label")
        if not name:
            raise CorrectionsError(f"{path}, line {line}: empty path; give the image's path relative to the dataset")
        if action not in ACTIONS:
            raise CorrectionsError(
                f"{path}, line {line}: action {_cell(row, 'action')!r} for {name}; use one of {', '.join(ACTIONS)}"
            )
        if action == RELABEL and not CLASS_NAME_PATTERN.match(label):
            raise CorrectionsError(
                f"{path}, line {line}: relabel of {name} to {label!r}, which is not a class name; give the class "
                "to train it as (letters, digits, '.', '-', '_' or spaces, starting with a letter or digit)"
            )
        key = os.path.normpath(name)
        if key in seen:
            raise CorrectionsError(
                f"{path}, line {line}: {name} was already corrected on line {seen[key]}; keep one row per image"
            )
        seen[key] = line
        rows.append(Correction(name, label if action == RELABEL else "", action, line))
    return Corrections(path, digest, tuple(rows))


def dataset_base(dataset: LabelledDataset) -> Path:
    """The folder relative corrections paths start from: the dataset folder, or a csv manifest's folder."""
    return dataset.root.parent if dataset.layout is Layout.CSV else dataset.root


def apply_corrections(dataset: LabelledDataset, corrections: Corrections) -> tuple[LabelledDataset, AppliedCorrections]:
    """``dataset`` with ``corrections`` applied: relabelled samples get their new class, dropped ones are left out.

    Files are matched by resolved path (a relative path joined to :func:`dataset_base`). The classes stay the
    dataset's: a relabel names one of them. Nothing on disk changes.

    Returns:
        The corrected dataset (samples in the same order, classes unchanged) and what changed, per class too.

    Raises:
        CorrectionsError: a row names no image of the dataset or relabels to a class the dataset lacks (naming the
            file and line), or the corrections leave a class without images (naming the file, with every class's
            images before and after).
    """
    base = dataset_base(dataset)
    by_path = {s.path.resolve(): i for i, s in enumerate(dataset.samples)}
    fixes: dict[int, Correction] = {}
    for row in corrections.rows:
        target = (Path(row.path) if Path(row.path).is_absolute() else base / row.path).resolve()
        where = f"{corrections.source}, line {row.line}"
        if target not in by_path:
            raise CorrectionsError(
                f"{where}: {row.path} is not an image of the dataset {dataset.root} (relative paths start at "
                f"{base}); fix the path or remove the row"
            )
        if row.action == RELABEL and row.label not in dataset.classes:
            raise CorrectionsError(
                f"{where}: relabel of {row.path} to {row.label!r}, which is not a class of {dataset.root} "
                f"({', '.join(dataset.classes)}); use one of those"
            )
        if by_path[target] in fixes:
            raise CorrectionsError(
                f"{where}: {row.path} names the same image as line {fixes[by_path[target]].line}; "
                "keep one row per image"
            )
        fixes[by_path[target]] = row
    samples, relabelled, dropped = [], [], []
    dropped_from: Counter[str] = Counter()
    for i, sample in enumerate(dataset.samples):
        fix = fixes.get(i)
        if fix is None:
            samples.append(sample)
        elif fix.action == DROP:
            dropped.append(sample.path)
            dropped_from[sample.label] += 1
        else:
            if fix.label != sample.label:
                relabelled.append((sample.path, sample.label, fix.label))
            samples.append(dataclasses.replace(sample, label=fix.label))
    before, after = dataset.class_counts(), Counter(s.label for s in samples)
    changes = {c: ClassChange(before[c], after[c], dropped_from[c], sum(old == c for _, old, _ in relabelled),
                              sum(new == c for _, _, new in relabelled)) for c in dataset.classes}
    emptied = [c for c in dataset.classes if not after[c]]
    if emptied:
        raise CorrectionsError(
            f"{corrections.source}: after its corrections, class(es) {', '.join(emptied)} of {dataset.root} have no "
            f"image left (images per class before -> after: {describe_class_changes(changes)}); {TOO_FEW_ADVICE}, "
            "or remove the class from the dataset"
        )
    logger.info("%s: %s relabelled, %s dropped", corrections.source, plural(len(relabelled), "image"),
                plural(len(dropped), "image"))
    applied = AppliedCorrections(tuple(relabelled), tuple(dropped), changes)
    return dataclasses.replace(dataset, samples=tuple(samples)), applied


def write_corrections(rows: Iterable[Correction], handle: io.TextIOBase | None = None) -> str:
    """Write ``rows`` as a corrections file (header :data:`COLUMNS`, csv module quoting, ``\\r\\n`` line ends).

    Writes to ``handle`` when given; returns the text either way.

    Raises:
        CorrectionsError: a row has an unknown action, an empty path, or a relabel to a label that is not a class
            name (what :func:`read_corrections` refuses).
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        if row.action not in ACTIONS or not row.path:
            raise CorrectionsError(f"cannot write a correction of {row.path!r} with action {row.action!r}")
        if row.action == RELABEL and not CLASS_NAME_PATTERN.match(row.label):
            raise CorrectionsError(f"cannot relabel {row.path} to {row.label!r}: not a class name")
        writer.writerow([row.path, row.label if row.action == RELABEL else "", row.action])
    text = out.getvalue()
    if handle is not None:
        handle.write(text)
    return text
