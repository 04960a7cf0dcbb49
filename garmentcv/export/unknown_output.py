"""The ``ood_score`` output: an unknown-item score computed inside the model file's graph (torch and onnx).

The score (:mod:`garmentcv.unknowns.scores`) is a function of the file's own ``logits`` and ``embedding`` outputs.
:func:`score_graph` exports :class:`garmentcv.unknowns.graph.UnknownScore` (with its reference data as
initialisers) to a small float32 ONNX graph, and :func:`attach_score` joins it behind the classifier's graph
(``onnx.compose.merge_models``), so every runtime and engine that runs the file computes the same score from the
same outputs, in float32 whatever the file's precision, with nothing but the file. The classifier's outputs are
gated first like any file's; the joined file is then checked against the numpy score of its own outputs
(:data:`SCORE_TOLERANCE`).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import torch
from onnx import compose

from garmentcv.artifact import CAM_NAME, EMBEDDING_NAME, OOD_SCORE_NAME, OUTPUT_NAME
from garmentcv.errors import ExportError
from garmentcv.unknowns.graph import UnknownScore

#: Largest difference accepted between the file's ``ood_score`` and the numpy score of the file's own logits and
#: embeddings, per unit of ``max(1, |score|)``: the same arithmetic in float32 against float64, whose rounding stays
#: near 1e-6 of the value for sums over a few thousand terms (the ``knn`` bank's dot products); 1e-3 is a wide
#: margin that still catches a wrong reference or a wrong input.
SCORE_TOLERANCE = 1e-3
_PREFIX = "ood_"
_INPUTS = {OUTPUT_NAME: f"{_PREFIX}in_logits", EMBEDDING_NAME: f"{_PREFIX}in_embedding"}


def score_graph(method: str, reference: dict[str, np.ndarray], temperature: float, classes: int, dim: int,
                opset: int) -> onnx.ModelProto:
    """The score alone as an ONNX graph: inputs logits ``(N, C)`` and embedding ``(N, D)`` (an input the method
    does not read is left out by the exporter), output ``ood_score`` ``(N,)`` float32.

    Raises:
        ExportError: torch's exporter fails.
    """
    module = UnknownScore(method, reference, temperature).eval()
    example = (torch.zeros(2, classes), torch.zeros(2, dim))
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints.*")  # one batch axis: meant
            program = torch.onnx.export(
                module, example, None, input_names=[_INPUTS[OUTPUT_NAME], _INPUTS[EMBEDDING_NAME]],
                output_names=[OOD_SCORE_NAME], opset_version=opset, dynamic_shapes=({0: batch}, {0: batch}),
                dynamo=True, external_data=False, optimize=True, verbose=False,
            )  # fmt: skip
    except Exception as exc:  # the exporter raises many types; every one means the score cannot be exported
        raise ExportError(f"torch's ONNX exporter failed on the {method} unknown score: {exc}") from exc
    return program.model_proto


def attach_score(model: onnx.ModelProto, score: onnx.ModelProto, keep_embedding: bool,
                 keep_cam: bool = False) -> onnx.ModelProto:
    """``model`` (outputs ``logits`` and ``embedding``, and ``cam`` with ``keep_cam``) with ``score`` behind it:
    outputs ``logits``, ``embedding`` when ``keep_embedding``, ``ood_score``, and ``cam`` with ``keep_cam``.

    Raises:
        ExportError: the graphs cannot be joined.
    """
    renamed = compose.add_prefix(score, _PREFIX + "g_", rename_inputs=False, rename_outputs=False)
    renamed.ir_version = model.ir_version
    present = {i.name for i in renamed.graph.input}
    io_map = [(name, _INPUTS[name]) for name in (OUTPUT_NAME, EMBEDDING_NAME) if _INPUTS[name] in present]
    outputs = [OUTPUT_NAME, *([EMBEDDING_NAME] if keep_embedding else []), OOD_SCORE_NAME,
               *([CAM_NAME] if keep_cam else [])]
    try:
        merged = compose.merge_models(model, renamed, io_map=io_map, outputs=outputs)
    except Exception as exc:  # onnx raises ValueError and checker errors
        raise ExportError(f"cannot join the unknown score to the classifier's graph: {exc}") from exc
    by_name = {o.name: o for o in merged.graph.output}  # merge_models keeps the first graph's outputs first
    ordered = [by_name[name] for name in outputs]
    del merged.graph.output[:]
    merged.graph.output.extend(ordered)
    del merged.metadata_props[:]  # merge_models copies them from both graphs (the quantizer leaves some): the model's
    merged.metadata_props.extend(model.metadata_props)  # alone, each key once
    return merged
