"""The targets, judged from the rows of one run: (what, measured, verdict) for the report."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.report import Row

Verdict = tuple[str, str, str]

INT8_SPEEDUP = 2.8
INT8_MAX_DROP_POINTS = 0.5
E2E_OF_MODEL_ONLY = 0.85
FP32_VS_EAGER = 1.5
INT8_VS_EAGER = 5.0
CEILING_FRACTION = 0.75
MEMORY_GROWTH = 1.2
RESNETS = ("resnet18", "resnet34")


def _find(rows: Sequence[Row], **match: object) -> Row | None:
    for row in rows:
        if row.status == "ok" and all(getattr(row, k) == v for k, v in match.items()):
            return row
    return None


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


#: The INT8 files judged: gcv export's (U8 activations), and its former S8-activation setting for comparison.
INT8_KINDS = ("int8", "int8-s8s8")


def _int8_speed(rows: Sequence[Row], archs: Sequence[str], sizes: Sequence[int]) -> list[Verdict]:
    out = []
    for kind in INT8_KINDS:
        for arch in archs:
            for size in sizes:
                common = dict(
                    section="model-only",
                    arch=arch,
                    image_size=size,
                    runtime="onnxruntime",
                    provider="cpu",
                    batch_size=32,
                )
                fp32, int8 = _find(rows, precision="fp32", **common), _find(rows, precision=kind, **common)
                if fp32 and int8 and fp32.images_per_s and int8.images_per_s:
                    ratio = int8.images_per_s / fp32.images_per_s
                    goal = f"{kind} >= {INT8_SPEEDUP}x FP32 onnxruntime, {arch} {size} px batch 32"
                    out.append((goal if arch in RESNETS else goal.replace(">=", "vs") + " (report only)",
                                f"{ratio:.2f}x ({int8.images_per_s:.1f} vs {fp32.images_per_s:.1f} images/s)",
                                _verdict(ratio >= INT8_SPEEDUP) if arch in RESNETS else "reported"))
    return out


def _accuracy(rows: Sequence[Row], archs: Sequence[str]) -> list[Verdict]:
    out = []
    for kind in INT8_KINDS:
        for arch in archs:
            fp32 = _find(rows, section="accuracy", arch=arch, precision="fp32")
            int8 = _find(rows, section="accuracy", arch=arch, precision=kind)
            if fp32 and int8 and fp32.accuracy is not None and int8.accuracy is not None:
                drop = (fp32.accuracy - int8.accuracy) * 100
                out.append((f"{kind} top-1 within {INT8_MAX_DROP_POINTS} point of FP32, {arch}",
                            f"{int8.accuracy * 100:.2f}% vs {fp32.accuracy * 100:.2f}% ({-drop:+.2f} points)",
                            _verdict(drop <= INT8_MAX_DROP_POINTS) if arch in RESNETS else "reported"))
    return out


def _end_to_end(rows: Sequence[Row], archs: Sequence[str], sizes: Sequence[int]) -> list[Verdict]:
    out = []
    for arch in archs:
        for size in sizes:
            original = _find(
                rows, section="end-to-end", arch=arch, image_size=size, runtime="torchvision-eager-dataloader"
            )
            for precision, goal in (("fp32", FP32_VS_EAGER), ("int8", INT8_VS_EAGER), ("int8-s8s8", INT8_VS_EAGER)):
                gcv = _find(
                    rows, section="end-to-end", arch=arch, image_size=size, runtime="gcv-classify", precision=precision
                )
                if gcv is None or not gcv.command_images_per_s:
                    continue
                model = _find(
                    rows,
                    section="model-only",
                    arch=arch,
                    image_size=size,
                    runtime="onnxruntime",
                    provider="cpu",
                    precision=precision,
                    batch_size=gcv.batch_size,
                )
                if model and model.images_per_s:
                    share = gcv.command_images_per_s / model.images_per_s
                    decode = _find(rows, section="end-to-end", arch=arch, image_size=size, runtime="decode-only")
                    bound = ""
                    if decode and decode.images_per_s:  # both sharing the same cores: 1 / (1/model + 1/decode)
                        limit = 1 / (1 / model.images_per_s + 1 / decode.images_per_s)
                        bound = (
                            f"; decode alone {decode.images_per_s:.0f}/s, shared-core bound {limit:.0f}/s "
                            f"= {limit / model.images_per_s:.0%}"
                        )
                    out.append(
                        (
                            f"gcv-classify >= {E2E_OF_MODEL_ONLY:.0%} of model-only, {arch} {size} px {precision} "
                            f"batch {gcv.batch_size}",
                            f"{share:.0%} ({gcv.command_images_per_s:.1f} vs {model.images_per_s:.1f} images/s{bound})",
                            _verdict(share >= E2E_OF_MODEL_ONLY),
                        )
                    )
                if original and original.command_images_per_s:
                    ratio = gcv.command_images_per_s / original.command_images_per_s
                    wall = (gcv.images_per_s or 0) / (original.images_per_s or 1)
                    out.append(
                        (
                            f"gcv-classify {precision} >= {goal}x torchvision eager + DataLoader, {arch} {size} px",
                            f"{ratio:.2f}x ({gcv.command_images_per_s:.1f} vs "
                            f"{original.command_images_per_s:.1f} images/s; wall {wall:.2f}x)",
                            _verdict(ratio >= goal),
                        )
                    )
    return out


def _ceiling(rows: Sequence[Row], sizes: Sequence[int]) -> list[Verdict]:
    out = []
    for arch in RESNETS:
        for size in sizes:
            candidates = [r for r in rows if r.section == "model-only" and r.status == "ok" and r.arch == arch
                          and r.image_size == size and r.runtime == "onnxruntime" and r.provider == "cpu"
                          and r.precision == "fp32" and r.fraction_of_ceiling is not None]
            if candidates:
                best = max(candidates, key=lambda r: r.fraction_of_ceiling or 0.0)
                out.append(
                    (
                        f"FP32 onnxruntime within 25% of the FLOP ceiling, {arch} {size} px (best batch)",
                        f"{best.fraction_of_ceiling:.0%} at batch {best.batch_size} ({best.images_per_s:.1f} of "
                        f"{best.ceiling_images_per_s:.1f} images/s)",
                        _verdict((best.fraction_of_ceiling or 0) >= CEILING_FRACTION),
                    )
                )
    return out


def _memory(rows: Sequence[Row]) -> list[Verdict]:
    runs = sorted(
        (r for r in rows if r.section == "memory" and r.status == "ok" and r.peak_rss_mb), key=lambda r: r.files or 0
    )
    if len(runs) < 2:
        return []
    small, large = runs[0], runs[-1]
    growth = (large.peak_rss_mb or 0) / (small.peak_rss_mb or 1)
    return [
        (
            f"gcv-classify peak memory on {large.files:,} files <= {MEMORY_GROWTH}x on {small.files:,}",
            f"{growth:.2f}x ({large.peak_rss_mb:.0f} vs {small.peak_rss_mb:.0f} MB)",
            _verdict(growth <= MEMORY_GROWTH),
        )
    ]


def judge(rows: Sequence[Row], archs: Sequence[str], sizes: Sequence[int]) -> list[Verdict]:
    """Every target the rows allow judging; targets whose figures are missing are left out."""
    return (_int8_speed(rows, archs, sizes) + _accuracy(rows, archs) + _end_to_end(rows, archs, sizes)
            + _ceiling(rows, sizes) + _memory(rows))
