"""Class activation maps in the graph: equal to a PyTorch reference hooked on the last feature map, refused for
backbones without global average pooling and one linear head, and exported to ONNX unchanged."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from garmentcv.export.cam import WithCam, cam_unavailable, check_cam
from garmentcv.models import build_model
from garmentcv.models.registry import get_spec

SIZE = 64
#: float32 summation order differs between the reference's pooling and the map's mean: within this, relative.
TOLERANCE = 1e-4


def _reference_cam(network: torch.nn.Module, head: str, pool: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The network's logits and Zhou et al.'s map from a forward hook on the pooling module's input."""
    captured = {}
    handle = network.get_submodule(pool).register_forward_hook(lambda m, args, out: captured.update(fmap=args[0]))
    try:
        logits = network(x)
    finally:
        handle.remove()
    weight = network.get_submodule(head).weight
    return logits, torch.einsum("ndyx,cd->ncyx", captured["fmap"], weight)


@pytest.mark.parametrize(("arch", "pool"), [("resnet18", "avgpool"), ("efficientnet_b0", "avgpool"),
                                            ("regnet_y_400mf", "avgpool")])  # fmt: skip
def test_cam_equals_the_hooked_feature_map_times_the_head_weights(arch: str, pool: str) -> None:
    torch.manual_seed(0)
    network = build_model(arch, 3, "none").model.eval()
    head = get_spec(arch).head
    wrapped = WithCam(network, head, SIZE).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        logits, embedding, cam = wrapped(x)
        expected_logits, expected_cam = _reference_cam(network, head, pool, x)
    assert cam.shape == expected_cam.shape == (2, 3, SIZE // 32, SIZE // 32)
    scale = float(expected_cam.abs().max())
    assert float((cam - expected_cam).abs().max()) <= TOLERANCE * scale
    assert float((logits - expected_logits).abs().max()) <= TOLERANCE * float(expected_logits.abs().max())
    assert embedding.shape == (2, network.get_submodule(head).in_features)
    # The map's spatial mean plus the bias is the logit (the property the exporter checks).
    assert check_cam(network, wrapped, x, arch) <= TOLERANCE * max(1.0, float(expected_logits.abs().max()))


@pytest.mark.parametrize(("arch", "why"), [
    ("mobilenet_v3_small", "layers between the pooling .* and the head .* need the pooled features"),  # 2 Linear
    ("convnext_tiny", r"layers between the pooling .* \(LayerNorm2d\)"),  # a LayerNorm after the pooling
])  # fmt: skip
def test_backbone_with_layers_after_the_pooling_has_no_cam(arch: str, why: str) -> None:
    network = build_model(arch, 2, "none").model
    reason = cam_unavailable(network, get_spec(arch).head, SIZE, arch)
    assert reason is not None
    assert re.search(why, reason), reason


def test_resnet_has_cam() -> None:
    network = build_model("resnet18", 2, "none").model
    assert cam_unavailable(network, get_spec("resnet18").head, SIZE, "resnet18") is None


def test_cam_survives_onnx_export_within_tolerance() -> None:
    import onnxruntime as ort

    from garmentcv.export.convert import DEFAULT_OPSET, trace_to_onnx

    torch.manual_seed(0)
    network = build_model("resnet18", 2, "none").model.eval()
    wrapped = WithCam(network, get_spec("resnet18").head, SIZE).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    proto = trace_to_onnx(wrapped, x[:2], DEFAULT_OPSET, outputs=("logits", "embedding", "cam"))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "embedding", "cam"]
    logits, embedding, cam = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapped(x)]
    for got, want in zip((logits, embedding, cam), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * float(np.abs(want).max()))
