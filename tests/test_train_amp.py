"""--amp: the measured rule as a pure function, what config.json records, autocast really on (or off), bf16 runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from garmentcv.errors import GarmentCVError
from garmentcv.train import loop
from garmentcv.train.amp import AmpPlan, CpuFeatures, choose_amp, cpu_features
from garmentcv.train.cli import main as train_main
from garmentcv.train.config import TrainConfig

TINY = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}

AMX = CpuFeatures("Intel Xeon (AMX)", avx512_bf16=True, amx_bf16=True)
AMX_MASKED = CpuFeatures("Intel Xeon (AMX)", avx512_bf16=True, amx_bf16=True, isa_limit="AVX512_CORE_BF16")
AVX512_BF16 = CpuFeatures("AMD EPYC", avx512_bf16=True)
NO_BF16 = CpuFeatures("older x86")


@pytest.mark.parametrize(
    ("cpu", "arch", "size", "dtype", "channels_last"),
    [
        (AMX, "resnet18", 224, "bfloat16", True),  # the target case
        (AMX, "resnet18", 64, "bfloat16", True),
        (AMX, "resnet18", 63, None, False),
        (AMX, "resnet18", 32, None, False),  # the demo's size: FP32 as before
        (AMX, "resnet34", 224, "bfloat16", True),
        (AMX, "resnet34", 32, None, False),
        (AMX, "efficientnet_b0", 224, "bfloat16", True),  # quiet: bf16 + channels_last x1.29-1.37 over FP32 + CL
        (AMX, "efficientnet_b0", 128, None, True),  # FP32 channels_last beat bf16 (x0.84) and NCHW
        (AMX, "efficientnet_b0", 32, None, True),
        (AMX_MASKED, "resnet18", 224, None, True),  # FP32, channels_last x1.20 over NCHW from 128 px
        (AMX_MASKED, "efficientnet_b0", 224, "bfloat16", True),  # x1.14-1.16 over FP32 + CL
        (AVX512_BF16, "resnet18", 224, None, True),
        (AVX512_BF16, "resnet18", 127, None, False),
        (AVX512_BF16, "resnet18", 64, None, False),  # channels_last x0.91 there
        (AVX512_BF16, "resnet34", 128, None, True),
        (AVX512_BF16, "efficientnet_b0", 64, None, True),
        (NO_BF16, "resnet18", 224, None, False),  # not measured there: FP32 as before
        (NO_BF16, "efficientnet_b0", 224, None, False),
        (AMX, "some_new_arch", 224, None, False),  # not measured: FP32 as before
    ],
)
def test_auto_on_the_cpu_follows_the_measured_rule(cpu, arch, size, dtype, channels_last) -> None:
    plan = choose_amp("auto", "cpu", arch, size, cpu)
    assert (plan.dtype, plan.channels_last, plan.grad_scaler, plan.device_type) == (dtype, channels_last, False, "cpu")
    assert plan.requested == "auto" and plan.reason.startswith("auto: ")
    assert plan.reason.startswith("auto: FP32") == (dtype is None)


def test_the_reason_names_the_cpu_tier_the_sizes_and_the_docs_page_of_the_rule() -> None:
    assert choose_amp("auto", "cpu", "resnet18", 224, AMX).reason == (
        "auto: CPU with AMX (amx_bf16), resnet18 at 224 px >= 64 px, where bf16 with channels_last trains fastest "
        "(docs/amp.md)"
    )
    assert choose_amp("auto", "cpu", "resnet18", 32, AMX).reason == (
        "auto: FP32, resnet18 at 32 px < 64 px, below which bf16 was not measured faster on a CPU with AMX (amx_bf16) "
        "(docs/amp.md)"
    )
    assert choose_amp("auto", "cpu", "efficientnet_b0", 32, AVX512_BF16).reason == (
        "auto: FP32 with channels_last, efficientnet_b0 at 32 px < 224 px, below which bf16 was not measured faster on "
        "a CPU with avx512_bf16 without AMX (docs/amp.md)"
    )
    assert choose_amp("auto", "cpu", "resnet18", 224, AVX512_BF16).reason == (
        "auto: FP32 with channels_last, bf16 not measured faster than FP32 with channels_last for resnet18 on a CPU "
        "with avx512_bf16 without AMX (docs/amp.md)"
    )
    assert "AMX masked by AVX512_CORE_BF16" in choose_amp("auto", "cpu", "resnet18", 224, AMX_MASKED).reason
    assert choose_amp("auto", "cpu", "resnet18", 224, NO_BF16).reason == (
        "auto: FP32, this CPU has no bf16 instructions (avx512_bf16 or amx_bf16), so bf16 would be emulated and slower"
    )


@pytest.mark.parametrize("cpu", [AMX, AVX512_BF16, NO_BF16])
def test_off_and_bf16_are_obeyed_on_every_cpu(cpu: CpuFeatures) -> None:
    off = choose_amp("off", "cpu", "resnet18", 224, cpu)
    assert (off.dtype, off.channels_last, off.grad_scaler) == (None, False, False)
    forced = choose_amp("bf16", "cpu", "resnet18", 32, cpu)
    assert forced.dtype == "bfloat16" and not forced.grad_scaler and forced.channels_last == (cpu is not NO_BF16)
    assert ("emulates bf16" in forced.reason) == (cpu is NO_BF16)


def test_cuda_keeps_fp16_with_a_scaler_on_auto() -> None:
    assert choose_amp("auto", "cuda", "resnet18", 32, NO_BF16) == AmpPlan(
        "auto", "float16", "cuda", False, True, "auto: CUDA trains in fp16 autocast with a gradient scaler"
    )
    assert choose_amp("fp16", "cuda", "resnet18", 32, NO_BF16).grad_scaler
    bf16 = choose_amp("bf16", "cuda", "resnet18", 32, NO_BF16, cuda_bf16=True)
    assert (bf16.dtype, bf16.grad_scaler) == ("bfloat16", False)
    assert choose_amp("off", "cuda", "resnet18", 32, NO_BF16).dtype is None


def test_impossible_requests_are_refused_with_what_to_do() -> None:
    with pytest.raises(GarmentCVError, match="--amp fp16 is for CUDA; on the CPU use --amp bf16"):
        choose_amp("fp16", "cpu", "resnet18", 224, AMX)
    with pytest.raises(GarmentCVError, match="does not support bfloat16; use --amp fp16, auto or off"):
        choose_amp("bf16", "cuda", "resnet18", 224, AMX, cuda_bf16=False)
    with pytest.raises(GarmentCVError, match="'fast' is not one of auto, bf16, fp16, off"):
        choose_amp("fast", "cpu", "resnet18", 224, AMX)


def test_cpu_features_read_cpuinfo_and_onednns_isa_cap(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
        "flags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    assert cpu_features(info, {}) == CpuFeatures("Intel(R) Xeon(R) Processor", True, True, "")
    assert cpu_features(info, {}).tier == "amx"
    assert cpu_features(info, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}).tier == "avx512_bf16"
    assert cpu_features(info, {"DNNL_MAX_CPU_ISA": "AVX2"}).tier == "avx512_bf16"  # flags say bf16; rule: no AMX
    assert cpu_features(info, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}).tier == "amx"
    assert cpu_features(info, {"ONEDNN_MAX_CPU_ISA": "ALL"}).tier == "amx"
    assert cpu_features(tmp_path / "missing", {}) == CpuFeatures()
    assert CpuFeatures().tier == "none"


def _dtypes_seen(monkeypatch: pytest.MonkeyPatch, plan: AmpPlan | None) -> tuple[set[torch.dtype], set[bool]]:
    """Train one epoch of a tiny resnet18 under ``plan``; the dtypes the first conv's output had, and its layout."""
    from garmentcv.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 2, "none").model
    if plan is not None and plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtypes: set[torch.dtype] = set()
    layouts: set[bool] = set()

    def hook(_module, inputs, output) -> None:
        dtypes.add(output.dtype)
        layouts.add(inputs[0].is_contiguous(memory_format=torch.channels_last))

    model.conv1.register_forward_hook(hook)
    batches = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss, _ = loop.train_one_epoch(model, batches, optimizer, torch.device("cpu"), None, progress=False, amp=plan)
    assert math.isfinite(loss)
    return dtypes, layouts


def test_autocast_is_active_when_bf16_is_chosen_and_not_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    bf16 = choose_amp("auto", "cpu", "resnet18", 224, AMX)
    assert _dtypes_seen(monkeypatch, bf16) == ({torch.bfloat16}, {True})
    assert _dtypes_seen(monkeypatch, choose_amp("off", "cpu", "resnet18", 224, AMX)) == ({torch.float32}, {False})
    assert _dtypes_seen(monkeypatch, None) == ({torch.float32}, {False})  # callers that pass no plan: as before


def test_a_bf16_run_finishes_with_finite_loss_and_records_the_choice(
    make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("garmentcv.train.amp.cpu_features", lambda: AMX)  # the rule's AMX branch on any CI CPU
    data = make_lamoda(per_class=4)
    args = [str(data), "--out", str(tmp_path / "run"), "--arch", "resnet18", "--arch", "efficientnet_b0",
            "--weights", "none", "--image-size", "64", "--epochs", "1", "--batch-size", "3", "--amp", "auto", "-q"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["amp"] == "auto"
    assert stored["amp_chosen"] == {
        "resnet18": choose_amp("auto", "cpu", "resnet18", 64, AMX).to_dict(),
        "efficientnet_b0": choose_amp("auto", "cpu", "efficientnet_b0", 64, AMX).to_dict(),
    }
    assert stored["amp_chosen"]["resnet18"]["dtype"] == "bfloat16"
    assert (
        stored["amp_chosen"]["efficientnet_b0"]["dtype"],
        stored["amp_chosen"]["efficientnet_b0"]["channels_last"],
    ) == (None, True)
    metrics = json.loads((tmp_path / "run" / "resnet18" / "metrics.json").read_text())
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in metrics["history"])
    best = torch.load(tmp_path / "run" / "resnet18" / "best.pt", weights_only=True)
    assert best["amp"] == stored["amp_chosen"]["resnet18"]
    assert all(v.dtype != torch.bfloat16 for v in best["state_dict"].values())  # weights stay FP32


def test_fp16_on_the_cpu_is_a_usage_error_before_any_work(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    cfg = TrainConfig(data=data, out=tmp_path / "run", device="cpu", amp="fp16", **TINY)
    with pytest.raises(GarmentCVError, match="--amp fp16 is for CUDA"):
        loop.train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_with_another_amp_is_refused(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    loop.train(TrainConfig(data=data, out=tmp_path / "run", amp="off", **TINY), progress=False)
    again = TrainConfig(data=data, out=tmp_path / "run", amp="bf16", resume=True, **TINY)
    with pytest.raises(GarmentCVError, match=r"amp: 'off' -> 'bf16'"):
        loop.train(again, progress=False)


def test_benchmark_table_says_which_weights_each_gcv_train_row_started_from() -> None:
    from benchmarks.train_amp import _markdown

    machine = {"cpu_model": "Xeon", "logical_cpus": 2, "isa": ["amx_bf16"], "versions": {"torch": "2.14.1"},
               "load_avg": [0.1, 0.1, 0.1]}  # fmt: skip
    row = {"section": "gcv-train", "purpose": "speed", "arch": "resnet18", "size": 224, "amp": "bf16",
           "weights": "pre/resnet18/best.pt", "precision": "bfloat16", "memory_format": "channels_last", "epochs": 2,
           "train_images": 1000, "val_images": 1000, "images_per_s": 45.25, "vs_off": 2.5, "best_val_accuracy": 0.981,
           "accuracy_minus_off_points": -0.2, "val_accuracy_by_epoch": [0.97, 0.981]}  # fmt: skip
    lines = _markdown([row], machine, "python -m benchmarks.train_amp", (0.2, 0.1, 0.1)).splitlines()
    assert (
        "| speed | resnet18 | 224 | pre/resnet18/best.pt | bf16 | bfloat16 channels_last | 2 | 1000 / 1000 | 45.2 | "
        "x2.50 | 0.9810 | -0.20 | 0.9700 0.9810 |"
    ) in lines
