"""The dataset report users run before training: ``gcv data inspect`` (numpy, Pillow, stdlib; no torch).

:func:`inspect_dataset` reads a dataset in any layout ``gcv train`` accepts (:func:`load_dataset`) and reads
every image once: the bytes are hashed (SHA-256) and decoded with the shared
:func:`~garmentcv.image.decode_image_bytes`, so a file that fails here fails in training too. It reports
files per class and the balance, skipped files, undecodable files, formats and colour modes, EXIF-rotated
files, image sizes, exact duplicates (and those that carry different labels) and, given a test folder,
training files that also appear there (leakage). Nothing is ever written to the dataset.

The checks cover corrupt files, extensions, sizes and class balance, plus duplicates and train/test leakage
limited to byte-identical files (SHA-256); near-duplicates (re-encoded or resized copies) are not detected.

Paths in the text report and in :meth:`DatasetReport.to_dict` go through :func:`display_path`: bytes of a file
name that are not valid UTF-8 are written as ``\\xNN`` (backslash, ``x``, two hex digits), so the report is
always valid UTF-8 text and JSON.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from garmentcv.data.layouts import Layout, SkippedFile, load_dataset, scan_images
from garmentcv.errors import ImageDecodeError
from garmentcv.image import decode_image_bytes, decoded_formats
from garmentcv.text import plural

logger = logging.getLogger(__name__)

#: More distinct (width, height) pairs than this and the size report becomes a summary.
MAX_LISTED_SIZES: int = 20
#: How many of the most common sizes a summary keeps.
COMMON_SIZES_IN_SUMMARY: int = 10
#: A largest/smallest class ratio at or above this is reported as a warning (not a blocker).
IMBALANCE_WARNING_RATIO: float = 3.0
#: EXIF tag of the orientation; values other than 1 mean the stored pixels are rotated or mirrored.
EXIF_ORIENTATION_TAG: int = 0x0112

def display_path(path: str | Path) -> str:
    """``path`` as printable UTF-8 text: bytes that are not valid UTF-8 become ``\\xNN``.

    Python names such bytes with lone surrogates (``surrogateescape``), which cannot be written as UTF-8;
    ``café`` saved in Latin-1 (``b"caf\\xe9"``) is shown as ``caf\\xe9``. Valid names are unchanged.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


#: Called after each file read with (files done, files in all).
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class DecodeFailure:
    """A file that the shared decode refuses, with its reason (e.g. ``truncated file``)."""

    path: Path
    label: str
    reason: str


@dataclass(frozen=True)
class RotatedFile:
    """A file whose EXIF orientation (2..8) rotates or mirrors it; training applies the rotation."""

    path: Path
    orientation: int


@dataclass(frozen=True)
class DuplicateGroup:
    """Training files with identical bytes. ``labels`` is parallel to ``paths``."""

    sha256: str
    paths: tuple[Path, ...]
    labels: tuple[str, ...]

    @property
    def conflicting(self) -> bool:
        """True when the copies carry different labels."""
        return len(set(self.labels)) > 1


@dataclass(frozen=True)
class Leak:
    """A test file whose bytes equal one or more training files."""

    test_path: Path
    train_paths: tuple[Path, ...]


@dataclass(frozen=True)
class SizeReport:
    """Image sizes in px as training sees them (after EXIF rotation), of the files that decode.

    Attributes:
        distinct: number of distinct (width, height) pairs.
        counts: ``((width, height), files)`` by falling count; every pair when ``distinct`` is at most
            :data:`MAX_LISTED_SIZES`, otherwise the :data:`COMMON_SIZES_IN_SUMMARY` most common.
        summarised: True when ``counts`` is not the full list.
        width: (min, median, max) width in px over all files; ``None`` when no file decodes.
        height: (min, median, max) height in px over all files; ``None`` when no file decodes.
    """

    distinct: int
    counts: tuple[tuple[tuple[int, int], int], ...]
    summarised: bool
    width: tuple[float, float, float] | None
    height: tuple[float, float, float] | None


@dataclass(frozen=True)
class DatasetReport:
    """Everything :func:`inspect_dataset` found. ``problems`` empty means ready to train.

    Attributes:
        root: dataset folder or manifest.
        layout: layout it was read with.
        classes: class names in index order.
        class_counts: files per class (before decoding), in class order.
        balance: largest / smallest class count (1.0 = balanced).
        skipped: files passed over by the layout (hidden, not an image), with reasons.
        decode_failures: files the shared decode refuses, sorted by path.
        formats: ``"FORMAT/MODE"`` (plus ``" with transparency"``) -> files, by falling count.
        exif_rotated: files with an EXIF orientation other than 1.
        sizes: the image sizes.
        duplicates: groups of byte-identical training files, all copies with the same label.
        label_conflicts: groups of byte-identical training files whose labels differ.
        test_root: the test folder, or ``None``.
        test_files: number of image files in the test folder.
        leaks: test files identical to training files.
        bytes_read: total bytes read (training and test), in bytes.
        problems: what must be fixed before training (empty when ready).
        warnings: what is worth a look but does not block training.
    """

    root: Path
    layout: Layout
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    balance: float
    skipped: tuple[SkippedFile, ...]
    decode_failures: tuple[DecodeFailure, ...]
    formats: dict[str, int]
    exif_rotated: tuple[RotatedFile, ...]
    sizes: SizeReport
    duplicates: tuple[DuplicateGroup, ...]
    label_conflicts: tuple[DuplicateGroup, ...]
    test_root: Path | None = None
    test_files: int = 0
    leaks: tuple[Leak, ...] = ()
    bytes_read: int = 0
    problems: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def files(self) -> int:
        """Number of labelled image files in the training data."""
        return sum(self.class_counts.values())

    @property
    def ready(self) -> bool:
        """True when nothing blocks training."""
        return not self.problems

    @property
    def verdict(self) -> str:
        """One line: ``ready to train`` or ``fix first: ...``."""
        return "ready to train" if self.ready else "fix first: " + "; ".join(self.problems)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form with the same facts as the text report (paths as :func:`display_path`)."""

        def group(g: DuplicateGroup) -> dict[str, Any]:
            return {
                "sha256": g.sha256,
                "files": [{"path": display_path(p), "label": lab} for p, lab in zip(g.paths, g.labels, strict=True)],
            }

        stats = ("min", "median", "max")
        return {
            "root": display_path(self.root),
            "layout": self.layout.value,
            "files": self.files,
            "classes": list(self.classes),
            "class_counts": dict(self.class_counts),
            "balance": self.balance,
            "skipped": [{"path": display_path(s.path), "reason": s.reason} for s in self.skipped],
            "decode_failures": [
                {"path": display_path(f.path), "label": f.label, "reason": f.reason} for f in self.decode_failures
            ],
            "formats": dict(self.formats),
            "exif_rotated": [{"path": display_path(r.path), "orientation": r.orientation} for r in self.exif_rotated],
            "sizes": {
                "distinct": self.sizes.distinct,
                "summarised": self.sizes.summarised,
                "counts": [{"width": w, "height": h, "files": n} for (w, h), n in self.sizes.counts],
                "width": None if self.sizes.width is None else dict(zip(stats, self.sizes.width, strict=True)),
                "height": None if self.sizes.height is None else dict(zip(stats, self.sizes.height, strict=True)),
            },
            "duplicates": [group(g) for g in self.duplicates],
            "label_conflicts": [group(g) for g in self.label_conflicts],
            "test": None
            if self.test_root is None
            else {
                "root": display_path(self.test_root),
                "files": self.test_files,
                "leaks": [
                    {"test_path": display_path(k.test_path), "train_paths": [display_path(p) for p in k.train_paths]}
                    for k in self.leaks
                ],
            },
            "bytes_read": self.bytes_read,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "ready": self.ready,
            "verdict": self.verdict,
        }


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror})") from exc


def _describe(data: bytes) -> tuple[str, int | None]:
    """``"FORMAT/MODE[ with transparency]"`` and the EXIF orientation of an image that decodes."""
    with Image.open(io.BytesIO(data), formats=decoded_formats()) as image:
        kind = f"{image.format}/{image.mode}"
        if "transparency" in image.info:
            kind += " with transparency"
        try:
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG)
        except (OSError, ValueError, SyntaxError):  # a broken EXIF block does not stop decoding
            orientation = None
    return kind, int(orientation) if isinstance(orientation, int) else None


def _stats(values: np.ndarray) -> tuple[float, float, float]:
    return float(values.min()), float(np.median(values)), float(values.max())


def _size_report(sizes: Counter[tuple[int, int]]) -> SizeReport:
    ordered = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    summarised = len(ordered) > MAX_LISTED_SIZES
    if not ordered:
        return SizeReport(0, (), False, None, None)
    pairs = np.array([p for p, _ in ordered], dtype=np.int64)
    repeats = np.array([n for _, n in ordered], dtype=np.int64)
    return SizeReport(
        distinct=len(ordered),
        counts=tuple(ordered[:COMMON_SIZES_IN_SUMMARY] if summarised else ordered),
        summarised=summarised,
        width=_stats(np.repeat(pairs[:, 0], repeats)),
        height=_stats(np.repeat(pairs[:, 1], repeats)),
    )


def _irregular(n: int, word: str, words: str) -> str:
    """``plural`` for nouns that take more than an ``s`` (class, copy)."""
    return f"{n} {word if n == 1 else words}"


def inspect_dataset(
    root: str | Path,
    layout: Layout | str | None = None,
    test: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> DatasetReport:
    """Read every image of a dataset once and report what would hurt training. Never writes to the data.

    Args:
        root: dataset folder or ``path,label`` manifest, in any layout of :func:`load_dataset`.
        layout: force a layout; ``None`` detects it.
        test: a folder of test images (labelled or not, searched recursively); its files are only hashed,
            to find training files that also appear there.
        progress: called after each file with (files done, files in all).

    Memory holds one 32-byte digest and an index per training file, a size counter and the findings;
    image bytes are dropped after each file.

    Raises:
        DatasetError: the dataset cannot be read at all (as :func:`load_dataset`: missing folder, unknown
            layout, invalid class names, fewer than 2 classes, empty class folder), or the test folder is
            missing.
    """
    dataset = load_dataset(root, layout)
    test_paths = list(scan_images(Path(test), recursive=True)) if test is not None else []
    total = len(dataset.samples) + len(test_paths)
    done = 0

    first_seen: dict[bytes, int] = {}  # digest -> index of the first training sample with those bytes
    copies: dict[bytes, list[int]] = {}  # digest -> indices of every sample, only for digests seen twice
    failures: list[DecodeFailure] = []
    formats: Counter[str] = Counter()
    rotated: list[RotatedFile] = []
    sizes: Counter[tuple[int, int]] = Counter()
    decoded_per_class: Counter[str] = Counter()
    bytes_read = 0

    for index, sample in enumerate(dataset.samples):
        try:
            data = _read(sample.path)
            bytes_read += len(data)
            digest = hashlib.sha256(data).digest()
            if digest in first_seen:
                copies.setdefault(digest, [first_seen[digest]]).append(index)
            else:
                first_seen[digest] = index
            array = decode_image_bytes(data, sample.path)
        except ImageDecodeError as exc:
            failures.append(DecodeFailure(sample.path, sample.label, exc.reason))
        else:
            kind, orientation = _describe(data)
            formats[kind] += 1
            if orientation not in (None, 1):
                rotated.append(RotatedFile(sample.path, orientation))
            sizes[(int(array.shape[1]), int(array.shape[0]))] += 1
            decoded_per_class[sample.label] += 1
        done += 1
        if progress is not None:
            progress(done, total)

    leaks: list[Leak] = []
    for path in test_paths:
        try:
            data = _read(path)
        except ImageDecodeError as exc:
            logger.warning("%s: skipped in the leakage check (%s)", path, exc.reason)
        else:
            bytes_read += len(data)
            digest = hashlib.sha256(data).digest()
            if digest in first_seen:
                indices = copies.get(digest, [first_seen[digest]])
                leaks.append(Leak(path, tuple(dataset.samples[i].path for i in indices)))
        done += 1
        if progress is not None:
            progress(done, total)

    groups = [
        DuplicateGroup(
            digest.hex(),
            tuple(dataset.samples[i].path for i in indices),
            tuple(dataset.samples[i].label for i in indices),
        )
        for digest, indices in copies.items()
    ]
    groups.sort(key=lambda g: str(g.paths[0]))
    duplicates = tuple(g for g in groups if not g.conflicting)
    conflicts = tuple(g for g in groups if g.conflicting)

    class_counts = dataset.class_counts()
    balance = max(class_counts.values()) / min(class_counts.values())
    usable = [name for name in dataset.classes if decoded_per_class[name] > 0]

    problems: list[str] = []
    if failures:
        problems.append(f"{plural(len(failures), 'file')} cannot be decoded; fix or remove them")
    if conflicts:
        files = sum(len(g.paths) for g in conflicts)
        problems.append(
            f"{plural(files, 'identical file')} in {plural(len(conflicts), 'group')} carry different labels; "
            "keep one copy with the right label"
        )
    if leaks:
        problems.append(
            f"{plural(len(leaks), 'test file')} also in the training data (leakage); remove them from one side"
        )
    if len(usable) < 2:
        problems.append(
            f"only {_irregular(len(usable), 'class', 'classes')} with a decodable image {usable}; "
            "training needs at least 2"
        )
    warnings: list[str] = []
    if duplicates:
        extra = sum(len(g.paths) - 1 for g in duplicates)
        warnings.append(
            f"{_irregular(extra, 'redundant copy', 'redundant copies')} of training files (same label); "
            "they weigh double and can land in both the training and the validation split"
        )
    if balance >= IMBALANCE_WARNING_RATIO:
        warnings.append(
            f"classes are imbalanced ({balance:.1f}x largest/smallest); consider more data for the small classes"
        )

    logger.info("inspected %s, %.1f MB", plural(done, "file"), bytes_read / 1e6)
    return DatasetReport(
        root=dataset.root,
        layout=dataset.layout,
        classes=dataset.classes,
        class_counts=class_counts,
        balance=balance,
        skipped=dataset.skipped,
        decode_failures=tuple(sorted(failures, key=lambda f: str(f.path))),
        formats=dict(sorted(formats.items(), key=lambda item: (-item[1], item[0]))),
        exif_rotated=tuple(rotated),
        sizes=_size_report(sizes),
        duplicates=duplicates,
        label_conflicts=conflicts,
        test_root=None if test is None else Path(test),
        test_files=len(test_paths),
        leaks=tuple(leaks),
        bytes_read=bytes_read,
        problems=tuple(problems),
        warnings=tuple(warnings),
    )


def _listed(items: list[str], limit: int) -> list[str]:
    shown = [f"  {line}" for line in items[:limit]]
    if len(items) > limit:
        shown.append(f"  ... and {len(items) - limit} more (all in --json)")
    return shown


def _rel(path: Path, root: Path) -> str:
    base = root.parent if root.is_file() else root
    try:
        shown = os.path.relpath(path, base) if path.is_relative_to(base) else str(path)
    except ValueError:
        shown = str(path)
    return display_path(shown)


def render_text(report: DatasetReport, limit: int = 20) -> str:
    """The human-readable report: one fact per line, lists cut at ``limit`` entries (``--json`` has all).

    Paths are shown relative to the dataset folder (test paths relative to the test folder), through
    :func:`display_path` (bytes that are not valid UTF-8 as ``\\xNN``).
    """
    root = report.root

    def rel(path: Path) -> str:
        return _rel(path, root)

    lines = [f"dataset: {display_path(root)} (layout {report.layout.value}, {plural(report.files, 'file')}, "
             f"{_irregular(len(report.classes), 'class', 'classes')})"]
    lines.append("classes: " + ", ".join(f"{name} {n}" for name, n in report.class_counts.items()))
    lines.append(f"balance: {report.balance:.2f} (largest / smallest class)")
    reasons = Counter(s.reason for s in report.skipped)
    lines.append(
        f"skipped: {len(report.skipped)}"
        + (" (" + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) + ")" if reasons else "")
    )
    lines += _listed([f"{rel(s.path)}: {s.reason}" for s in report.skipped], limit)
    lines.append(f"decode failures: {len(report.decode_failures)}")
    lines += _listed([f"{rel(f.path)}: {f.reason}" for f in report.decode_failures], limit)
    lines.append("formats: " + (", ".join(f"{k} {n}" for k, n in report.formats.items()) or "none"))
    lines.append(f"exif rotated: {len(report.exif_rotated)}")
    lines += _listed([f"{rel(r.path)}: orientation {r.orientation}" for r in report.exif_rotated], limit)
    sizes = report.sizes
    if sizes.summarised and sizes.width is not None and sizes.height is not None:
        lines.append(
            f"sizes: {sizes.distinct} distinct; width min/median/max {sizes.width[0]:g}/{sizes.width[1]:g}/"
            f"{sizes.width[2]:g} px, height {sizes.height[0]:g}/{sizes.height[1]:g}/{sizes.height[2]:g} px; "
            f"{len(sizes.counts)} most common:"
        )
    else:
        lines.append(f"sizes: {sizes.distinct} distinct (width x height px):")
    lines += [f"  {w}x{h}: {n}" for (w, h), n in sizes.counts]
    for title, groups in (("duplicates (same label)", report.duplicates),
                          ("duplicates with different labels", report.label_conflicts)):
        lines.append(f"{title}: {plural(len(groups), 'group')}, {sum(len(g.paths) for g in groups)} files")
        lines += _listed(
            [", ".join(f"{rel(p)} [{lab}]" for p, lab in zip(g.paths, g.labels, strict=True)) for g in groups], limit
        )
    if report.test_root is not None:
        test_root = report.test_root
        lines.append(f"test: {display_path(test_root)} ({plural(report.test_files, 'file')}); "
                     f"also in training data: {len(report.leaks)}")
        lines += _listed(
            [f"{_rel(k.test_path, test_root)} = {', '.join(rel(p) for p in k.train_paths)}" for k in report.leaks],
            limit,
        )
    lines += [f"warning: {w}" for w in report.warnings]
    lines.append(f"verdict: {report.verdict}")
    return "\n".join(lines)


__all__ = [
    "DatasetReport",
    "DecodeFailure",
    "DuplicateGroup",
    "Leak",
    "RotatedFile",
    "SizeReport",
    "display_path",
    "inspect_dataset",
    "render_text",
]
