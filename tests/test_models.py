"""The model registry: head swap for every arch, and every way of getting backbone weights offline."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from garmentcv.errors import WeightsError
from garmentcv.models import MODELS, UnknownArchError, build_model, default_preprocessing, get_spec

ARCHS = sorted(MODELS)
#: Other torchvision families, looked up by builder name in torchvision's model registry.
EXTRA_ARCHS = ["mobilenet_v3_small", "regnet_y_400mf", "convnext_tiny"]


def test_registry_uses_torchvision_names() -> None:
    assert ARCHS == ["efficientnet_b0", "resnet18", "resnet34"]


@pytest.mark.parametrize("arch", ARCHS + EXTRA_ARCHS)
def test_head_is_replaced_for_n_classes(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 3, "none").model.eval()
    head = model.get_submodule(get_spec(arch).head)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 3
    with torch.inference_mode():
        logits = model(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 3) and logits.dtype == torch.float32


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return get_spec(arch).builder(weights=None, num_classes=1000).state_dict()


def _assert_backbone_loaded(arch: str, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    head = get_spec(arch).head
    loaded = model.state_dict()
    backbone = [k for k in state if not k.startswith(head + ".")]
    assert backbone and all(torch.equal(loaded[k], state[k]) for k in backbone)
    assert loaded[f"{head}.weight"].shape[0] == 4  # fresh head, not the 1000-class one
    assert state[f"{head}.weight"].shape[0] == 1000


@pytest.mark.parametrize("arch", ARCHS + EXTRA_ARCHS[:2])
def test_imagenet_weights_come_from_the_torch_home_cache_without_network(
    arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_spec(arch)
    assert spec.cache_file == tmp_path / "hub" / "checkpoints" / Path(spec.weights.url).name
    state = _imagenet_state(arch)
    spec.cache_file.parent.mkdir(parents=True)
    torch.save(state, spec.cache_file)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download although the cache file exists")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    built = build_model(arch, 4, "imagenet")
    _assert_backbone_loaded(arch, built.model, state)
    assert built.weights_source.startswith("imagenet:") and spec.cache_file.name in built.weights_source


def test_offline_without_cache_names_the_cache_file_and_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as info:
        build_model("resnet18", 2, "imagenet")
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "--weights FILE" in message and "--weights none" in message


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_file_is_loaded_into_the_backbone(arch: str, tmp_path: Path) -> None:
    state = _imagenet_state(arch)
    torch.save(state, tmp_path / "w.pth")
    built = build_model(arch, 4, tmp_path / "w.pth")
    _assert_backbone_loaded(arch, built.model, state)
    assert built.weights_source == f"file:{(tmp_path / 'w.pth').resolve()}"


def test_bad_weights_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights file not found"):
        build_model("resnet18", 2, tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a loadable torch state dict"):
        build_model("resnet18", 2, tmp_path / "junk.pth")
    torch.save(_imagenet_state("resnet18"), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="do not fit resnet34"):
        build_model("resnet34", 2, tmp_path / "r18.pth")
    torch.save({"epoch": 3}, tmp_path / "dict.pth")
    with pytest.raises(WeightsError, match="expected a torchvision state dict"):
        build_model("resnet18", 2, tmp_path / "dict.pth")


@pytest.mark.parametrize("arch", ARCHS + ["mobilenet_v2"])
def test_a_weights_file_without_the_head_is_loaded_into_the_backbone(arch: str, tmp_path: Path) -> None:
    """A backbone-only state dict (e.g. ImageNet features converted from another layout): the head is new anyway."""
    head = get_spec(arch).head + "."
    state = _imagenet_state(arch)
    backbone = {k: v for k, v in state.items() if not k.startswith(head)}
    assert len(backbone) == len(state) - 2  # the head's weight and bias
    torch.save(backbone, tmp_path / "features.pth")
    built = build_model(arch, 4, tmp_path / "features.pth")
    _assert_backbone_loaded(arch, built.model, state)
    assert built.weights_source == f"file:{(tmp_path / 'features.pth').resolve()}"


def test_a_weights_file_missing_a_backbone_tensor_or_with_an_extra_one_is_refused_by_name(tmp_path: Path) -> None:
    state = _imagenet_state("mobilenet_v2")
    torch.save({k: v for k, v in state.items() if k != "features.3.conv.2.weight"}, tmp_path / "missing.pth")
    with pytest.raises(WeightsError) as info:
        build_model("mobilenet_v2", 2, tmp_path / "missing.pth")
    message = str(info.value)
    assert message.startswith(f"weights file:{(tmp_path / 'missing.pth').resolve()} do not fit mobilenet_v2: ")
    assert "1 tensor missing (features.3.conv.2.weight)" in message and "only the head (classifier.1.*)" in message
    torch.save({**state, "features.99.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"do not fit mobilenet_v2: 1 unexpected tensor \(features\.99\.weight\)"):
        build_model("mobilenet_v2", 2, tmp_path / "extra.pth")
    headless = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    torch.save({**headless, "classifier.1.weight": torch.zeros(10, 1280)}, tmp_path / "ten.pth")
    with pytest.raises(WeightsError, match=r"(?s)do not fit mobilenet_v2: .*size mismatch for classifier\.1\.weight"):
        build_model("mobilenet_v2", 2, tmp_path / "ten.pth")


def test_unknown_arch_lists_the_valid_names() -> None:
    with pytest.raises(UnknownArchError) as info:
        build_model("resnet19", 2)
    message = str(info.value)
    assert message.startswith(
        "unknown arch 'resnet19'; choose one of efficientnet_b0, resnet18, resnet34 (the tested defaults) or another "
        "torchvision classification builder: alexnet, convnext_base, "
    )
    listed = message.split("builder: ")[1].split(", ")
    assert len(listed) == 80 - 3 - 2 and "mobilenet_v3_small" in listed and "googlenet" not in listed


def test_any_torchvision_classifier_is_found_by_builder_name_with_its_weights_entry() -> None:
    """Head: the last 1000-output nn.Linear; weights: torchvision's DEFAULT entry, whose preprocessing is used."""
    import torchvision.models as tvm

    heads = {"mobilenet_v3_small": "classifier.3", "regnet_y_400mf": "fc", "convnext_tiny": "classifier.2",
             "vit_b_16": "heads.head", "swin_t": "head", "densenet121": "classifier", "vgg11": "classifier.6"}
    assert {arch: get_spec(arch).head for arch in heads} == heads
    assert get_spec("regnet_y_400mf").weights is tvm.RegNet_Y_400MF_Weights.IMAGENET1K_V2
    assert get_spec("mobilenet_v3_small").weights is tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    # the three of the study keep the V1 entries they were measured with
    assert get_spec("resnet18").weights is tvm.ResNet18_Weights.IMAGENET1K_V1
    pp = default_preprocessing("regnet_y_400mf")
    assert (pp.resize, pp.crop, pp.interpolation) == (232, 224, "bilinear")
    resizes = (default_preprocessing("convnext_tiny").resize, default_preprocessing("convnext_tiny", 64).resize)
    assert resizes == (236, 67)
    assert get_spec("mobilenet_v3_small").cache_file.name == "mobilenet_v3_small-047dcff4.pth"


@pytest.mark.parametrize(("arch", "reason"), [
    ("googlenet", "it returns auxiliary classifier outputs in training mode"),
    ("inception_v3", "it returns auxiliary classifier outputs in training mode"),
    ("squeezenet1_0", "its classifier is not an nn.Linear with 1000 outputs"),
])
def test_archs_whose_head_cannot_be_replaced_are_refused_with_the_reason(arch: str, reason: str) -> None:
    with pytest.raises(UnknownArchError, match=f"arch '{arch}' is not supported: {reason}"):
        build_model(arch, 2, "none")


def test_an_input_size_the_network_cannot_take_is_refused_before_any_work() -> None:
    from garmentcv.models.registry import InputSizeError, check_input_size

    with pytest.raises(InputSizeError, match="vit_b_16 cannot take 32 px input: Wrong image height! Expected 224"):
        check_input_size("vit_b_16", 32)
    with pytest.raises(InputSizeError, match=r"alexnet cannot take 32 px input: .*its ImageNet weights use 224 px"):
        check_input_size("alexnet", 32)
    for arch, size in [("vit_b_16", 224), ("convnext_tiny", 32), ("regnet_y_400mf", 32), ("resnet18", 16)]:
        check_input_size(arch, size)  # raises nothing: regnet's builder needs real tensors, the others run on meta


def test_offline_without_cache_is_an_error_for_any_arch_never_a_random_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(WeightsError) as info:
        build_model("mobilenet_v3_small", 2, "imagenet")
    assert str(tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth") in str(info.value)


def test_preprocessing_follows_each_weights_entry() -> None:
    assert default_preprocessing("efficientnet_b0").interpolation == "bicubic"
    assert default_preprocessing("resnet34").interpolation == "bilinear"
    for arch in ARCHS:
        pp = default_preprocessing(arch)
        assert (pp.resize, pp.crop) == (256, 224)
        assert pp.mean == (0.485, 0.456, 0.406) and pp.std == (0.229, 0.224, 0.225)
        assert (default_preprocessing(arch, 64).resize, default_preprocessing(arch, 64).crop) == (73, 64)


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage that is no pickle"], ids=["empty", "garbage"])
def test_a_corrupt_cached_imagenet_file_is_named_with_what_to_do(
    content: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = get_spec("resnet18").cache_file
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded over a cached file"))
    with pytest.raises(WeightsError) as info:
        build_model("resnet18", 2, "imagenet")
    message = str(info.value)
    assert str(cache) in message and "delete it" in message.lower() and "download it again" in message
    assert "empty" in message if not content else "corrupt" in message
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 broken zip"], ids=["empty", "garbage"])
def test_a_corrupt_weights_file_is_named_with_what_to_do(content: bytes, tmp_path: Path) -> None:
    bad = tmp_path / "w.pth"
    bad.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        build_model("resnet18", 2, bad)
    message = str(info.value)
    assert str(bad) in message and "not a loadable torch state dict" in message and "torch.save" in message
    assert "(105)" not in message and "central directory" not in message


@pytest.mark.parametrize("progress", [False, True])
def test_a_download_passes_progress_and_prints_nothing_itself(
    progress: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _imagenet_state("resnet18")
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix, progress))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    built = build_model("resnet18", 2, "imagenet", progress=progress)
    spec = get_spec("resnet18")
    assert calls == [(spec.weights.url, spec.cache_file, "f37072fd", progress)]
    _assert_backbone_loaded_n(built.model, state, 2)
    captured = capsys.readouterr()
    assert "Downloading" not in captured.out + captured.err


def _assert_backbone_loaded_n(model: torch.nn.Module, state: dict[str, torch.Tensor], n: int) -> None:
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state if not k.startswith("fc."))
    assert loaded["fc.weight"].shape[0] == n


def test_the_cli_arch_names_are_the_registry() -> None:
    """gcv-train's --arch all comes from a torch-free tuple so that --help and --version load no torch."""
    from garmentcv.train.config import ARCHS

    assert ARCHS == tuple(MODELS)
