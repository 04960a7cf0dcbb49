"""Mixed precision for training: which autocast dtype and memory format a run uses, and why.

``--amp`` asks; :func:`choose_amp` decides, as a pure function of what was asked, the device, the arch, the
input size and the CPU's features (:class:`CpuFeatures`, read by :func:`cpu_features` from ``/proc/cpuinfo``
and oneDNN's ``ONEDNN_MAX_CPU_ISA``). The decision (:class:`AmpPlan`) is logged and recorded in the run's
``config.json`` and checkpoints, with its reason.

The CPU rule is measured, not assumed: :data:`RULES` holds, per CPU tier (AMX, AVX-512 BF16 without AMX) and
arch, from which input size bf16 autocast (``torch.autocast("cpu", torch.bfloat16)``) trains faster than FP32 and
where channels_last does; without any bf16 instructions (``avx512_bf16``/``amx_bf16``) bf16 is emulated and never
chosen. How it was measured and the figures: docs/amp.md (:data:`RULE_DOCS`).

On CUDA, ``auto`` takes float16 autocast with a gradient scaler.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from garmentcv.cpus import cpu_info
from garmentcv.errors import GarmentCVError

logger = logging.getLogger(__name__)

#: The values of ``--amp``.
AMP_MODES: tuple[str, ...] = ("auto", "bf16", "fp16", "off")

#: oneDNN's environment variables that cap the instruction set it uses (the second is its former name).
ISA_ENV: tuple[str, ...] = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")

#: CPU tiers of the rule: AMX tiles with bf16, AVX-512 bf16 dot products only, or no bf16 instructions.
TIER_AMX, TIER_AVX512_BF16, TIER_NONE = "amx", "avx512_bf16", "none"

#: The measured rule of ``auto`` on the CPU: per (CPU tier, arch), steps ``(from_px, dtype, channels_last)`` in
#: increasing ``from_px``; an input of ``image_size`` px takes the last step with ``from_px <= image_size``. A
#: (tier, arch) absent here trains in FP32 with the default memory format. Each step is the fastest setting measured
#: for that tier, arch and size (training steps per second, batch 32; docs/amp.md has the figures and how to
#: measure a new arch). resnet34 (resnet18's BasicBlocks, twice as many) follows resnet18's rule.
RULES: dict[tuple[str, str], tuple[tuple[int, str | None, bool], ...]] = {
    (TIER_AMX, "resnet18"): ((0, None, False), (64, "bfloat16", True)),
    (TIER_AMX, "resnet34"): ((0, None, False), (64, "bfloat16", True)),
    (TIER_AMX, "efficientnet_b0"): ((0, None, True), (224, "bfloat16", True)),
    (TIER_AVX512_BF16, "resnet18"): ((0, None, False), (128, None, True)),
    (TIER_AVX512_BF16, "resnet34"): ((0, None, False), (128, None, True)),
    (TIER_AVX512_BF16, "efficientnet_b0"): ((0, None, True), (224, "bfloat16", True)),
}

#: The docs page of :data:`RULES`: how they were measured and the figures; every ``auto`` reason names it.
RULE_DOCS = "docs/amp.md"


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers bf16 training.

    Attributes:
        model: CPU model name (``/proc/cpuinfo``), ``""`` when unknown.
        avx512_bf16: the CPU reports ``avx512_bf16`` (bf16 dot products in AVX-512).
        amx_bf16: the CPU reports ``amx_bf16`` (AMX tiles with bf16).
        isa_limit: the ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) value in force, ``""`` when unset.
    """

    model: str = ""
    avx512_bf16: bool = False
    amx_bf16: bool = False
    isa_limit: str = ""

    @property
    def amx_usable(self) -> bool:
        """AMX bf16 present and not masked by oneDNN's ISA cap (a cap without ``AMX`` in its name masks it)."""
        limit = self.isa_limit.upper()
        return self.amx_bf16 and (limit in ("", "ALL", "DEFAULT") or "AMX" in limit)

    @property
    def tier(self) -> str:
        """:data:`TIER_AMX`, :data:`TIER_AVX512_BF16` or :data:`TIER_NONE`."""
        if self.amx_usable:
            return TIER_AMX
        return TIER_AVX512_BF16 if self.avx512_bf16 else TIER_NONE


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo"), environ: Mapping[str, str] | None = None) -> CpuFeatures:
    """Read the CPU's bf16 features from ``cpuinfo`` and oneDNN's ISA cap from ``environ`` (default os.environ).

    A missing or unreadable ``cpuinfo`` (not Linux) gives no features: ``auto`` then trains in FP32.
    """
    env = os.environ if environ is None else environ
    model, flags = cpu_info(cpuinfo)
    limit = next((env[name] for name in ISA_ENV if env.get(name)), "")
    return CpuFeatures(model, "avx512_bf16" in flags, "amx_bf16" in flags, limit)


@dataclass(frozen=True)
class AmpPlan:
    """The precision a run trains in, as decided by :func:`choose_amp`.

    Attributes:
        requested: the ``--amp`` value asked for.
        dtype: autocast dtype, ``"bfloat16"`` or ``"float16"``; ``None`` trains in FP32 (no autocast).
        device_type: ``"cpu"`` or ``"cuda"``, the autocast device.
        channels_last: the model and its inputs use ``torch.channels_last``.
        grad_scaler: a ``torch.amp.GradScaler`` scales the loss (float16 on CUDA).
        reason: why, in one sentence, with the CPU tier and the measured rule that decided.
    """

    requested: str
    dtype: str | None
    device_type: str
    channels_last: bool
    grad_scaler: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form (for config.json and checkpoints)."""
        return asdict(self)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for this plan's device and dtype, or a null context in FP32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=getattr(torch, self.dtype))

    def summary(self) -> str:
        """One line for the log, e.g. ``bf16 autocast, channels_last (auto: ...)``."""
        precision = {"bfloat16": "bf16 autocast", "float16": "fp16 autocast", None: "fp32"}[self.dtype]
        layout = ", channels_last" if self.channels_last else ""
        return f"{precision}{layout} ({self.reason})"


def choose_amp(
    requested: str, device_type: str, arch: str, image_size: int, cpu: CpuFeatures, cuda_bf16: bool = True
) -> AmpPlan:
    """Decide the training precision and memory format; a pure function of its arguments.

    Args:
        requested: ``auto``, ``bf16``, ``fp16`` or ``off`` (:data:`AMP_MODES`).
        device_type: ``"cpu"`` or ``"cuda"``.
        arch: a registered arch name (one the rule has not measured gets FP32 from ``auto`` on the CPU).
        image_size: model input side, px.
        cpu: the CPU's features (only read for ``device_type == "cpu"``).
        cuda_bf16: whether the CUDA device supports bf16 (``torch.cuda.is_bf16_supported()``).

    Raises:
        GarmentCVError: an unknown ``requested``; ``fp16`` on the CPU; ``bf16`` on a GPU without bf16.
    """
    if requested not in AMP_MODES:
        raise GarmentCVError(f"--amp {requested!r} is not one of {', '.join(AMP_MODES)}; choose one of them")
    if device_type == "cuda":
        return _choose_cuda(requested, cuda_bf16)
    if requested == "fp16":
        raise GarmentCVError(
            "--amp fp16 is for CUDA; on the CPU use --amp bf16 (or auto, which takes bf16 where it is measured faster)"
        )
    tier = cpu.tier
    features = {
        TIER_AMX: "AMX (amx_bf16)",
        TIER_AVX512_BF16: "avx512_bf16 without AMX",
        TIER_NONE: "no bf16 instructions",
    }
    where = features[tier] + (
        f", AMX masked by {cpu.isa_limit}" if cpu.amx_bf16 and not cpu.amx_usable else ""
    )
    if requested == "off":
        return AmpPlan(requested, None, "cpu", False, False, "off: FP32 as asked")
    if requested == "bf16":  # channels_last as the measured bf16 steps take it (all of them do)
        slow = "" if tier != TIER_NONE else "; this CPU emulates bf16, expect it slower than FP32"
        return AmpPlan(requested, "bfloat16", "cpu", tier != TIER_NONE, False, f"bf16 as asked, CPU with {where}{slow}")
    if tier == TIER_NONE:
        return AmpPlan(requested, None, "cpu", False, False,
                       "auto: FP32, this CPU has no bf16 instructions (avx512_bf16 or amx_bf16), so bf16 would be "
                       "emulated and slower")  # fmt: skip
    steps = RULES.get((tier, arch), ())
    step = next((st for st in reversed(steps) if st[0] <= image_size), None)
    if step is None:
        return AmpPlan(requested, None, "cpu", False, False,
                       f"auto: FP32, bf16 not measured faster than FP32 for {arch} on a CPU with {where} ({RULE_DOCS})")
    from_px, dtype, channels_last = step
    layout = " with channels_last" if channels_last else ""
    if dtype is not None:
        why = f"{arch} at {image_size} px >= {from_px} px, where bf16{layout} trains fastest"
        return AmpPlan(requested, dtype, "cpu", channels_last, False, f"auto: CPU with {where}, {why} ({RULE_DOCS})")
    bf16_from = next((st[0] for st in steps if st[1] is not None), None)
    why = (
        f"{arch} at {image_size} px < {bf16_from} px, below which bf16 was not measured faster"
        if bf16_from is not None
        else f"bf16 not measured faster than FP32{layout} for {arch}"
    )
    return AmpPlan(requested, None, "cpu", channels_last, False,
                   f"auto: FP32{layout}, {why} on a CPU with {where} ({RULE_DOCS})")  # fmt: skip


def _choose_cuda(requested: str, cuda_bf16: bool) -> AmpPlan:
    if requested == "off":
        return AmpPlan(requested, None, "cuda", False, False, "off: FP32 as asked")
    if requested == "bf16":
        if not cuda_bf16:
            raise GarmentCVError("--amp bf16: this CUDA device does not support bfloat16; use --amp fp16, auto or off")
        return AmpPlan(requested, "bfloat16", "cuda", False, False, "bf16 as asked (no gradient scaler needed)")
    reason = "fp16 as asked" if requested == "fp16" else "auto: CUDA trains in fp16 autocast with a gradient scaler"
    return AmpPlan(requested, "float16", "cuda", False, True, reason)


def plan_for(requested: str, device: Any, arch: str, image_size: int) -> AmpPlan:
    """:func:`choose_amp` for a ``torch.device``, this machine's CPU and its CUDA device's bf16 support.

    Raises:
        GarmentCVError: see :func:`choose_amp`.
    """
    import torch

    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_amp(requested, device.type, arch, image_size, cpu_features(), cuda_bf16)
