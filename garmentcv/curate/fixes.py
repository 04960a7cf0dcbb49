"""The fix list ``gcv data audit`` writes, and its conversion into a corrections file for ``gcv train --corrections``.

A fix list is a CSV (UTF-8, csv module quoting, ``\\r\\n`` line ends) with exactly the columns :data:`FIX_COLUMNS`,
one row per (image, issue); an image with several issues has several rows:

* ``path``: the image, relative to the dataset (to the ``DATA`` folder, or to a csv manifest's folder), ``/``
  separators: the paths :mod:`garmentcv.data.corrections` reads.
* ``given_label``: its label in the dataset.
* ``suggested_label``: for ``label``, the class the out-of-sample probabilities favour; empty for the other issues.
* ``issue``: one of :data:`ISSUES`.
* ``score``: how strongly the image has the issue, 6 decimals, higher = more: ``1 - p(given label)`` for
  ``label``, the cosine similarity to its copy for the duplicates, the mean cosine distance to the nearest
  neighbours for ``outlier``, the file's ``ood_score`` for ``unknown``.

Rows come by issue (the order of :data:`ISSUES`), then score from the highest, then path.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from garmentcv.data.corrections import DROP, RELABEL, Correction, write_corrections
from garmentcv.data.layouts import MANIFEST_ENCODING
from garmentcv.errors import DatasetError
from garmentcv.fsutil import atomic_write

#: The columns of a fix list, in this order.
FIX_COLUMNS: tuple[str, ...] = ("path", "given_label", "suggested_label", "issue", "score")

#: A likely label error (confident learning on out-of-sample probabilities).
LABEL = "label"
#: A byte-identical copy of an image listed before it, in the dataset or a compared split.
EXACT_DUPLICATE = "exact_duplicate"
#: A near-copy (resized, re-encoded, lightly cropped) of an image listed before it: cosine above the threshold.
NEAR_DUPLICATE = "near_duplicate"
#: An image of none of the classes (the model file's unknown-item detector).
UNKNOWN = "unknown"
#: An image far from its nearest neighbours in embedding space.
OUTLIER = "outlier"
#: Every issue, in the order fix lists list them.
ISSUES: tuple[str, ...] = (LABEL, EXACT_DUPLICATE, NEAR_DUPLICATE, UNKNOWN, OUTLIER)

#: Two images at least this cosine-similar (L2-normalised embeddings) are near-duplicates, by default in every
#: command that looks for them (``gcv data audit`` and ``gcv data label-next``, ``--duplicate-cosine``). The rule:
#: of the thresholds measured on planted copies (docs/curate.md#copies-across-splits), the highest below the lowest
#: cosine of any resized or re-encoded copy to its original, so no such copy is out of reach and as few other pairs
#: are reported as that allows. Lightly cropped copies move further and are not counted on.
DEFAULT_DUPLICATE_COSINE = 0.995
#: Slack on every comparison with a cosine threshold, so that float32 rounding in the normalised embeddings and
#: their dot products does not drop an exact copy (cosine 1) or a pair at the threshold itself.
COSINE_TOLERANCE = 1e-6

#: The issues :func:`fixes_to_corrections` acts on by default: it relabels label errors and drops byte-identical
#: copies and images of none of the classes. Near-duplicates and outliers are left for a person to look at: whether
#: a cosine above the threshold means a copy depends on the embeddings (on small, uniform images most pairs of one
#: class lie that close), and a rare but right image is an outlier too.
DEFAULT_ISSUES: tuple[str, ...] = (LABEL, EXACT_DUPLICATE, UNKNOWN)


class FixListError(DatasetError):
    """A fix list cannot be read (the message names the file and line)."""


@dataclass(frozen=True)
class Fix:
    """One row of a fix list (columns: module docstring)."""

    path: str
    given_label: str
    suggested_label: str
    issue: str
    score: float


def sort_fixes(fixes: Iterable[Fix]) -> list[Fix]:
    """``fixes`` in fix-list order: issue (:data:`ISSUES` order), score from the highest, then path."""
    return sorted(fixes, key=lambda f: (ISSUES.index(f.issue), -f.score, f.path))


def write_fix_list(path: Path, fixes: Iterable[Fix]) -> Path:
    """Write ``fixes`` (in :func:`sort_fixes` order) to ``path`` atomically; returns ``path``."""
    with atomic_write(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIX_COLUMNS)
        for f in sort_fixes(fixes):
            writer.writerow([f.path, f.given_label, f.suggested_label, f.issue, f"{f.score:.6f}"])
    return path


def read_fix_list(path: Path) -> list[Fix]:
    """Read a fix list (extra columns are ignored, so an edited one still reads).

    Raises:
        FixListError: the file cannot be read, lacks a column, or a row has an unknown issue or a bad score.
    """
    try:
        with Path(path).open(newline="", **MANIFEST_ENCODING) as handle:
            text = handle.read()
    except OSError as exc:
        raise FixListError(f"{path}: cannot read the fix list ({exc.strerror or exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in FIX_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise FixListError(f"{path}, line 1: expected the columns {','.join(FIX_COLUMNS)}, missing "
                           f"{', '.join(missing)}; give a fix list written by gcv data audit")
    fixes = []
    for row in reader:
        issue = (row["issue"] or "").strip()
        if issue not in ISSUES:
            raise FixListError(f"{path}, line {reader.line_num}: issue {issue!r}; expected one of {', '.join(ISSUES)}")
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise FixListError(f"{path}, line {reader.line_num}: score {row['score']!r} is not a number")
        fixes.append(Fix(row["path"], row["given_label"] or "", row["suggested_label"] or "", issue, score))
    return fixes


def fixes_to_corrections(fixes: Sequence[Fix], issues: Iterable[str] = DEFAULT_ISSUES) -> list[Correction]:
    """The corrections a fix list asks for: one row per image, in fix-list order of its first chosen issue.

    Only rows whose issue is in ``issues`` count: ``label`` becomes a ``relabel`` to ``suggested_label``, every
    other issue a ``drop``. An image with both a relabel and a drop is dropped.

    Raises:
        FixListError: an issue that is not one of :data:`ISSUES`, or a ``label`` row without a suggested label.
    """
    chosen = set(issues)
    unknown = chosen - set(ISSUES)
    if unknown:
        raise FixListError(f"unknown issue(s) {', '.join(sorted(unknown))}; choose among {', '.join(ISSUES)}")
    actions: dict[str, Correction] = {}
    for fix in sort_fixes(f for f in fixes if f.issue in chosen):
        if fix.issue == LABEL:
            if not fix.suggested_label:
                raise FixListError(f"{fix.path}: a label issue without a suggested label")
            if fix.path not in actions:
                actions[fix.path] = Correction(fix.path, fix.suggested_label, RELABEL)
        elif fix.path not in actions or actions[fix.path].action == RELABEL:
            actions[fix.path] = Correction(fix.path, "", DROP)
    return list(actions.values())


@dataclass(frozen=True)
class CorrectionsWritten:
    """What :func:`write_corrections_file` wrote.

    Attributes:
        relabel: images relabelled.
        drop: images dropped.
        left: fix-list rows of the issues not acted on, by issue (only issues with rows, in :data:`ISSUES` order).
    """

    relabel: int
    drop: int
    left: dict[str, int]

    @property
    def corrections(self) -> int:
        """Rows of the corrections file (one per image)."""
        return self.relabel + self.drop


def write_corrections_file(fix_list: Path, out: Path, issues: Iterable[str] = DEFAULT_ISSUES) -> CorrectionsWritten:
    """Convert the fix list ``fix_list`` into the corrections file ``out`` (:func:`fixes_to_corrections`).

    Returns:
        The counts of relabels and drops written, and of the fix-list rows whose issue was not chosen.

    Raises:
        FixListError: as :func:`read_fix_list` and :func:`fixes_to_corrections`.
    """
    issues = tuple(issues)
    fixes = read_fix_list(fix_list)
    rows = fixes_to_corrections(fixes, issues)
    with atomic_write(out, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        write_corrections(rows, handle)
    left = {issue: sum(f.issue == issue for f in fixes) for issue in ISSUES if issue not in issues}
    return CorrectionsWritten(relabel=sum(r.action == RELABEL for r in rows), drop=sum(r.action == DROP for r in rows),
                              left={issue: n for issue, n in left.items() if n})
