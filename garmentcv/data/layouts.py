"""Finding labelled images on disk: the three dataset layouts ``gcv train`` accepts (no torch).

* ``lamoda``: a flat folder of ``<id>_<label>.<ext>`` files, the Kaggle lamoda-images-classification layout
  (``images/train/0001_bluzy.jpg``); the label is the text after the last underscore.
* ``folders``: one sub-folder per class, ``root/<class>/*.jpg`` (torchvision's ``ImageFolder``); images may
  sit deeper inside a class folder.
* ``csv``: a manifest file with a ``path,label`` header; relative paths are relative to the manifest's folder.
  It is read as UTF-8, with or without a byte-order mark ("CSV UTF-8" of spreadsheet programs); bytes that
  are not valid UTF-8 in a file name are kept as they are (``surrogateescape``, as gcv train writes them).

Hidden files and folders (name starting with ``.``), files that are not images and symlinked folders (never
followed) are skipped and reported.
Class names are sorted; that order is the class index order stored in every artifact.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from garmentcv.errors import DatasetError
from garmentcv.image import is_image_file
from garmentcv.text import plural

logger = logging.getLogger(__name__)

#: Reason given for a symlinked folder, which scanning never follows (so a link cycle can never loop).
SYMLINKED_FOLDER = "symlinked folder (not followed)"

#: How manifests are read: UTF-8 with or without a byte-order mark; file names that are not valid UTF-8
#: round-trip through ``surrogateescape``, the way Python's os functions name them.
MANIFEST_ENCODING: dict[str, str] = {"encoding": "utf-8-sig", "errors": "surrogateescape"}

#: A valid class name: starts with a letter or digit, then letters, digits, ``.``, ``-``, ``_`` or spaces,
#: at most 64 characters (Unicode letters allowed, e.g. transliterated or Cyrillic labels).
CLASS_NAME_PATTERN = re.compile(r"^[^\W_][\w.\- ]{0,63}$")


class Layout(str, Enum):
    """How labels are attached to images in a dataset."""

    LAMODA = "lamoda"
    FOLDERS = "folders"
    CSV = "csv"


@dataclass(frozen=True)
class Sample:
    """One labelled image: its path and its class name."""

    path: Path
    label: str


@dataclass(frozen=True)
class SkippedFile:
    """A file or folder found while scanning that is not used, with the reason (``hidden``, ``not an image``,
    ``not in a class folder`` or :data:`SYMLINKED_FOLDER`)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class LabelledDataset:
    """The labelled images of one dataset.

    Attributes:
        root: the folder (or manifest file) the dataset was read from.
        layout: the layout it was read with.
        classes: class names, sorted; position = class index.
        samples: every usable image, sorted by path.
        skipped: files seen but not used, with reasons.
    """

    root: Path
    layout: Layout
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    skipped: tuple[SkippedFile, ...] = field(default=())

    @property
    def targets(self) -> list[int]:
        """Class index of each sample, in :attr:`samples` order."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [index[s.label] for s in self.samples]

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class, in class order."""
        counts = Counter(s.label for s in self.samples)
        return {name: counts[name] for name in self.classes}


def _classes(count: int) -> str:
    """``class`` or ``classes`` (``plural`` of garmentcv.cli_utils only adds an ``s``)."""
    return "class" if count == 1 else "classes"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def scan_images(
    folder: Path, recursive: bool = True, skipped: list[SkippedFile] | None = None
) -> Iterator[Path]:
    """Yield the image files below ``folder`` in sorted path order, streaming folder by folder.

    Hidden files and folders are not entered; symlinked folders are not followed (so a link cycle can
    never loop) and are reported as :data:`SYMLINKED_FOLDER`; non-image files are passed over. Each file
    or folder passed over is appended to ``skipped`` when a list is given. With ``recursive=False``
    sub-folders are neither entered nor reported.

    Raises:
        DatasetError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder; give the folder that holds the images")

    def walk(directory: Path) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise DatasetError(f"{directory}: cannot list folder ({exc.strerror})") from exc
        for entry in entries:
            path = Path(entry.path)
            if _is_hidden(entry.name):
                if skipped is not None:
                    skipped.append(SkippedFile(path, "hidden"))
                continue
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    yield from walk(path)
            elif entry.is_symlink() and entry.is_dir():
                if recursive and skipped is not None:
                    skipped.append(SkippedFile(path, SYMLINKED_FOLDER))
            elif entry.is_file():
                if is_image_file(path):
                    yield path
                elif skipped is not None:
                    skipped.append(SkippedFile(path, "not an image"))

    return walk(folder)


def detect_layout(root: Path) -> Layout:
    """Guess the layout of ``root``.

    A ``.csv`` file is a manifest; a folder with image files directly inside is ``lamoda``; a folder whose
    non-hidden sub-folders hold the images is ``folders``.

    Raises:
        DatasetError: ``root`` is missing, or the layout is ambiguous or unrecognisable.
    """
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return Layout.CSV
        raise DatasetError(f"{root}: a file that is not a .csv manifest; give a dataset folder or a path,label CSV")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such file or folder")
    entries = [e for e in os.scandir(root) if not _is_hidden(e.name)]
    has_images = any(e.is_file() and is_image_file(Path(e.name)) for e in entries)
    has_dirs = any(e.is_dir(follow_symlinks=False) for e in entries)
    if has_images and has_dirs:
        raise DatasetError(
            f"{root}: holds both image files and sub-folders, so the layout is ambiguous; "
            "pass --layout lamoda (flat <id>_<label> files) or --layout folders (one folder per class)"
        )
    if has_images:
        return Layout.LAMODA
    if has_dirs:
        return Layout.FOLDERS
    raise DatasetError(f"{root}: no images and no class folders found; the dataset layouts: docs/data.md")


def lamoda_label(path: Path) -> str:
    """The label of a Lamoda-style file name: the text after the last underscore of the stem.

    Raises:
        DatasetError: the name has no ``_<label>`` part.
    """
    stem = path.stem
    if "_" not in stem or not stem.rsplit("_", 1)[1]:
        raise DatasetError(
            f"{path}: file name has no label; the lamoda layout expects <id>_<label>.<ext>, e.g. 0001_bluzy.jpg"
        )
    return stem.rsplit("_", 1)[1]


def _read_lamoda(root: Path, skipped: list[SkippedFile]) -> list[Sample]:
    return [Sample(p, lamoda_label(p)) for p in scan_images(root, recursive=False, skipped=skipped)]


def _read_folders(root: Path, skipped: list[SkippedFile]) -> list[Sample]:
    samples: list[Sample] = []
    empty: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        if _is_hidden(entry.name):
            skipped.append(SkippedFile(path, "hidden"))
            continue
        if entry.is_symlink() and entry.is_dir():
            skipped.append(SkippedFile(path, SYMLINKED_FOLDER))
            continue
        if not entry.is_dir(follow_symlinks=False):
            skipped.append(SkippedFile(path, "not in a class folder"))
            continue
        found = [Sample(p, entry.name) for p in scan_images(path, recursive=True, skipped=skipped)]
        if not found:
            empty.append(str(path))
        samples.extend(found)
    if empty:
        raise DatasetError(
            f"{root}: {plural(len(empty), 'class folder')} without any image: {', '.join(empty)}; "
            "add images or remove the empty folders"
        )
    return samples


def _read_csv(manifest: Path, skipped: list[SkippedFile]) -> list[Sample]:
    base = manifest.parent
    samples: list[Sample] = []
    missing: list[str] = []
    with manifest.open(newline="", **MANIFEST_ENCODING) as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(
                f"{manifest}: expected a header with 'path' and 'label' columns, got {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            raw, label = (row["path"] or "").strip(), (row["label"] or "").strip()
            if not raw:
                raise DatasetError(f"{manifest}, line {line}: empty path")
            path = Path(raw) if Path(raw).is_absolute() else base / raw
            if any(_is_hidden(part) for part in Path(raw).parts if part not in (".", "..")):
                skipped.append(SkippedFile(path, "hidden"))
            elif not is_image_file(path):
                skipped.append(SkippedFile(path, "not an image"))
            elif not path.is_file():
                missing.append(f"{path} (line {line})")
            else:
                samples.append(Sample(path, label))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        verb = "does" if len(missing) == 1 else "do"
        raise DatasetError(f"{manifest}: {plural(len(missing), 'listed file')} {verb} not exist: {shown}")
    return samples


def load_dataset(root: str | Path, layout: Layout | str | None = None) -> LabelledDataset:
    """Read a labelled dataset in any supported layout.

    Args:
        root: dataset folder, or a ``path,label`` CSV manifest.
        layout: force a layout; ``None`` detects it with :func:`detect_layout`.

    Raises:
        DatasetError: the folder is missing or empty, fewer than 2 classes, a class without images, a label
            that is not a valid class name (:data:`CLASS_NAME_PATTERN`), or a manifest entry that is missing.
    """
    root = Path(root)
    layout = detect_layout(root) if layout is None else Layout(layout)
    skipped: list[SkippedFile] = []
    if layout is Layout.CSV:
        if not root.is_file():
            raise DatasetError(f"{root}: the csv layout needs a manifest file with path,label rows")
        samples = _read_csv(root, skipped)
    elif not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    elif layout is Layout.LAMODA:
        samples = _read_lamoda(root, skipped)
    else:
        samples = _read_folders(root, skipped)

    bad = sorted({s.label for s in samples if not CLASS_NAME_PATTERN.match(s.label)})
    if bad:
        examples = [str(next(s.path for s in samples if s.label == label)) for label in bad[:5]]
        raise DatasetError(
            f"{root}: {'an invalid class name' if len(bad) == 1 else 'invalid class names'} {bad[:5]} "
            f"(e.g. {', '.join(examples)}); a class name starts with a "
            "letter or digit and holds only letters, digits, '.', '-', '_' or spaces (64 characters at most)"
        )
    classes = tuple(sorted({s.label for s in samples}))
    if len(classes) < 2:
        raise DatasetError(
            f"{root}: found {plural(len(samples), 'image')} in "
            f"{len(classes)} {_classes(len(classes))} {list(classes)}; "
            "training needs at least 2 classes"
        )
    if skipped:
        reasons = Counter(s.reason for s in skipped)
        logger.info("skipped %s in %s: %s", plural(len(skipped), "item"), root, dict(reasons))
    samples.sort(key=lambda s: str(s.path))
    return LabelledDataset(root, layout, classes, tuple(samples), tuple(skipped))
