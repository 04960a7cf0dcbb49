"""A review-app :class:`~garmentcv.serve.handler.RowClassifier` over gcv classify's own code, for the tests.

Each call writes the photos into a temporary folder and classifies it with the local engine into jsonl, so the
rows are exactly those gcv classify writes for the same files.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from garmentcv.artifact import ModelInfo
from garmentcv.infer.classify import ClassifyConfig
from garmentcv.infer.engines.local import classify_folder
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.rows import OutputFormat


class OnnxClassifier:
    """gcv classify on a GarmentCV ONNX file, one folder per call; ``min_confidence`` adds ``needs_review``."""

    def __init__(self, model: Path, min_confidence: float | None = None) -> None:
        self.model = Path(model)
        self.min_confidence = min_confidence
        self.info: ModelInfo = read_model_info(self.model)
        self.class_names: tuple[str, ...] = tuple(self.info.classes)

    def classify_bytes(self, items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """The jsonl rows of gcv classify for ``items`` (name, bytes), in their order; names must be distinct."""
        with tempfile.TemporaryDirectory() as work:
            folder, out = Path(work) / "photos", Path(work) / "rows.jsonl"
            for name, data in items:
                target = folder / PurePosixPath(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            classify_folder(ClassifyConfig(folder=folder, out=out, model=self.model, format=OutputFormat.JSONL,
                                           progress=False, min_confidence=self.min_confidence, threads=1, workers=1))
            rows = {r["path"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
        return [rows[PurePosixPath(name).as_posix()] for name, _ in items]
