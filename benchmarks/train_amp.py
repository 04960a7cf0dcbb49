"""``python -m benchmarks train_amp``: training images/s in FP32 against bf16 autocast on this CPU, and gcv train's.

Two sections, written to ``--out`` as ``train_amp.csv`` (one row per figure, the machine on every row),
``train_amp.md`` and ``train_amp.json``:

``steps``
    One training step (forward, cross-entropy, backward, AdamW step) on a fixed random batch, per arch and input
    size, in four variants: FP32 and ``torch.autocast("cpu", torch.bfloat16)``, each with contiguous (NCHW) and
    channels_last tensors. The variants take turns within every repeat, so a busy spell hits them alike; images/s
    is the median over ``--repeats``, the ratio is bf16 over FP32 in the same process. Each ``--isa`` runs in a
    fresh process: ``native`` as the machine is, ``no-amx`` with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``
    (oneDNN reads it once, at its first use), close to a CPU with AVX-512 BF16 but no AMX.
``gcv-train``
    The library's ``train()`` on a real Fashion-MNIST subset (``gcv data fashion-mnist``), once per ``--amp``
    value, same seed and split: training images/s (the training passes only, data loading included) and the
    best validation accuracy. Speed-only runs at ``--e2e-size``; accuracy runs at the demo's 32 px and more epochs.

garmentcv's rule (``garmentcv/train/amp.py``, ``RULES``) is read from these figures.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from benchmarks import options, results

logger = logging.getLogger("benchmarks")

#: ``--isa`` names -> the oneDNN ISA cap set in the measuring process ("" leaves it unset).
ISA_CAPS: dict[str, str] = {"native": "", "no-amx": "AVX512_CORE_BF16"}
#: The four variants timed per (arch, size): (precision, memory format).
VARIANTS: tuple[tuple[str, str], ...] = (("fp32", "nchw"), ("fp32", "channels_last"), ("bf16", "nchw"),
                                         ("bf16", "channels_last"))  # fmt: skip


@dataclass(frozen=True)
class StepPlan:
    """What one ``steps`` process measures."""

    archs: tuple[str, ...]
    sizes: tuple[int, ...]
    batch_size: int
    warmup: int
    repeats: int
    min_sample_s: float


def _step_rows(plan: StepPlan) -> list[dict[str, Any]]:
    """Time the four variants of every (arch, size) in this process; one row per variant."""
    import torch
    from torch import nn

    from garmentcv.models import build_model

    rows = []
    for arch in plan.archs:
        for size in plan.sizes:
            torch.manual_seed(0)
            images = torch.randn(plan.batch_size, 3, size, size)
            targets = torch.randint(0, 2, (plan.batch_size,))
            steps = {}
            for precision, layout in VARIANTS:
                torch.manual_seed(0)
                model = build_model(arch, 2, "none").model.train()
                x = images
                if layout == "channels_last":
                    model = model.to(memory_format=torch.channels_last)
                    x = images.contiguous(memory_format=torch.channels_last)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
                criterion = nn.CrossEntropyLoss()

                def step(model=model, x=x, y=targets, optimizer=optimizer, criterion=criterion,
                         bf16=precision == "bf16") -> None:  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()

                for _ in range(plan.warmup):
                    step()
                started = time.perf_counter()
                step()
                one = time.perf_counter() - started
                steps[(precision, layout)] = (step, max(1, round(plan.min_sample_s / max(one, 1e-6))))
            samples: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
            for _ in range(plan.repeats):  # the variants take turns within each repeat
                for variant, (step, count) in steps.items():
                    started = time.perf_counter()
                    for _ in range(count):
                        step()
                    samples[variant].append(plan.batch_size * count / (time.perf_counter() - started))
            fp32 = statistics.median(samples[("fp32", "nchw")])
            for (precision, layout), rates in samples.items():
                rows.append({
                    "arch": arch, "size": size, "precision": precision, "memory_format": layout,
                    "batch": plan.batch_size, "images_per_s": round(statistics.median(rates), 2),
                    "vs_fp32_nchw": round(statistics.median(rates) / fp32, 3), "repeats": len(rates),
                    "steps_per_repeat": steps[(precision, layout)][1],
                    "spread": round((max(rates) - min(rates)) / statistics.median(rates), 3),
                })  # fmt: skip
                logger.info("%s %d px %s %s: %.1f images/s (x%.2f)", arch, size, precision, layout,
                            rows[-1]["images_per_s"], rows[-1]["vs_fp32_nchw"])  # fmt: skip
    return rows


def _run_isa(isa: str, plan: StepPlan) -> list[dict[str, Any]]:
    """Run the ``steps`` section in a fresh process with ``isa``'s oneDNN cap; its rows, tagged with the ISA."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if ISA_CAPS[isa]:
        env["ONEDNN_MAX_CPU_ISA"] = ISA_CAPS[isa]
    command = [sys.executable, "-m", "benchmarks.train_amp", "--worker", json.dumps(plan.__dict__)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"steps with --isa {isa} failed:\n{done.stderr[-3000:]}")
    sys.stderr.write(done.stderr)
    result = json.loads(done.stdout)
    return [{"section": "steps", "isa": isa, "onednn_max_cpu_isa": ISA_CAPS[isa] or "(unset)",
             "amp_auto_chooses": _auto_choice(row["arch"], row["size"], ISA_CAPS[isa]), **row}
            for row in result]  # fmt: skip


def _auto_choice(arch: str, size: int, cap: str) -> str:
    """What ``--amp auto`` picks on this CPU under ``cap`` (to judge "never slower than FP32 where it picks bf16")."""
    from garmentcv.train.amp import choose_amp, cpu_features

    plan = choose_amp("auto", "cpu", arch, size, cpu_features(environ={"ONEDNN_MAX_CPU_ISA": cap} if cap else {}))
    return f"{plan.dtype or 'float32'}{' channels_last' if plan.channels_last else ''}"


def train_rows(data: Path, size: int, epochs: int, amps: tuple[str, ...], archs: tuple[str, ...], work: Path,
               batch_size: int, purpose: str, val_fraction: float, weights: str = "none", val_data: Path | None = None,
               workers: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """gcv train's library function once per ``amps`` value: training images/s and best validation accuracy.
    ``weights`` is gcv train's ``--weights`` (``none``: from scratch; a GarmentCV ``best.pt``: fine-tuned from it);
    ``val_data`` and ``workers`` are its ``--val-data`` and ``--workers``."""
    from garmentcv.train import loop
    from garmentcv.train.config import TrainConfig

    real = loop.train_one_epoch
    rows = []
    for arch in archs:
        for amp in amps:
            timed: list[tuple[float, int]] = []

            def counting(model, loader, *args, timed=timed, **kwargs):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                out = real(model, loader, *args, **kwargs)
                timed.append((time.perf_counter() - started, len(loader.dataset)))
                return out

            loop.train_one_epoch = counting
            try:
                cfg = TrainConfig(
                    data=data,
                    out=work / f"{purpose}-{arch}-{size}-{amp}",
                    archs=(arch,),
                    weights=weights,
                    image_size=size,
                    epochs=epochs,
                    batch_size=batch_size,
                    amp=amp,
                    val_fraction=val_fraction,
                    val_data=val_data,
                    workers=workers,
                )
                result = loop.train(cfg, progress=False)
            finally:
                loop.train_one_epoch = real
            (arch_result,) = result.archs
            chosen = json.loads((cfg.out / "config.json").read_text())["amp_chosen"][arch]
            last_s, last_n = timed[-1]  # the last epoch's rate: the first one also pays kernel set-up
            rows.append(
                {
                    "section": "gcv-train",
                    "purpose": purpose,
                    "arch": arch,
                    "size": size,
                    "amp": amp,
                    "weights": weights,
                    "precision": chosen["dtype"] or "float32",
                    "memory_format": "channels_last" if chosen["channels_last"] else "nchw",
                    "epochs": epochs,
                    "batch": batch_size,
                    "train_images": last_n,
                    "val_images": sum(arch_result.best["confusion_matrix"][0])
                    + sum(arch_result.best["confusion_matrix"][1]),
                    "images_per_s": round(last_n / last_s, 2),
                    "images_per_s_by_epoch": [round(n / t, 2) for t, n in timed],
                    "best_val_accuracy": arch_result.best["accuracy"],
                    "val_accuracy_by_epoch": [round(h["accuracy"], 4) for h in arch_result.history],
                }
            )
            logger.info("gcv train %s %s %d px --amp %s: %.1f images/s, best val accuracy %.4f", purpose, arch, size,
                        amp, rows[-1]["images_per_s"], rows[-1]["best_val_accuracy"])  # fmt: skip
    base = {(r["purpose"], r["arch"]): r for r in rows if r["amp"] == "off"}
    for r in rows:
        off = base.get((r["purpose"], r["arch"]))
        if off:
            r["vs_off"] = round(r["images_per_s"] / off["images_per_s"], 3)
            r["accuracy_minus_off_points"] = round(100 * (r["best_val_accuracy"] - off["best_val_accuracy"]), 2)
    return rows


def _markdown(rows: list[dict[str, Any]], machine: dict[str, Any], command: str, load_end: tuple[float, ...]) -> str:
    lines = [
        "# Training: FP32 against bf16 autocast on the CPU",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine['cpu_model']}, {machine['logical_cpus']} CPUs, ISA flags: {' '.join(machine['isa'])}  ",
        f"torch {machine['versions'].get('torch', '?')}; load average at start {machine['load_avg']}, at end "
        f"{tuple(round(v, 2) for v in load_end)} (other work on the 2 cores lowers every figure, ratios less).",
        "",
    ]
    steps = [r for r in rows if r["section"] == "steps"]
    if steps:
        lines += [
            "## One training step, batch "
            + str(steps[0]["batch"])
            + " (median images/s; ratio to FP32 NCHW in the same run)",
            "",
            "`native`: as the CPU is; `no-amx`: `ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`, AVX-512 BF16 without AMX.",
            "",
            "| ISA | arch | px | FP32 NCHW | FP32 CL | bf16 NCHW | bf16 CL | bf16 best / FP32 | `--amp auto` picks |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        keyed = {(r["isa"], r["arch"], r["size"], r["precision"], r["memory_format"]): r for r in steps}
        for isa, arch, size in dict.fromkeys((r["isa"], r["arch"], r["size"]) for r in steps):
            cell = {v: keyed[(isa, arch, size, *v)] for v in VARIANTS}
            best_bf16 = max(cell[("bf16", "nchw")]["images_per_s"], cell[("bf16", "channels_last")]["images_per_s"])
            fp32 = cell[("fp32", "nchw")]["images_per_s"]
            lines.append(
                f"| {isa} | {arch} | {size} | " + " | ".join(
                    f"{cell[v]['images_per_s']:.1f} (x{cell[v]['vs_fp32_nchw']:.2f})" for v in VARIANTS
                ) + f" | x{best_bf16 / fp32:.2f} | {cell[VARIANTS[0]]['amp_auto_chooses']} |"
            )  # fmt: skip
        noisy = [f"{r['isa']} {r['arch']} {r['size']} px {r['precision']} {r['memory_format']} ({r['spread']:.2f})"
                 for r in steps if r["spread"] > 0.5]  # fmt: skip
        if noisy:
            lines += ["", "Noisy cells ((max - min) / median of the samples > 0.5; the machine was busy during them): "
                      + "; ".join(noisy) + "."]  # fmt: skip
        lines.append("")
    train = [r for r in rows if r["section"] == "gcv-train"]
    if train:
        lines += [
            "## gcv-train (library `train()`), Fashion-MNIST subset",
            "",
            "Training images/s is the last epoch's training pass (decoding and augmentation in the main process "
            "included, validation excluded; the first epoch also pays kernel set-up); accuracy is the best epoch's on "
            "the validation split. `--weights none` trains from scratch; a checkpoint path fine-tunes its backbone.",
            "",
            "| purpose | arch | px | --weights | --amp | ran as | epochs | train / val images | images/s | vs off "
            "| best val accuracy | vs off, points | per epoch |",
            "|---|---|---:|---|---|---|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in train:
            lines.append(
                f"| {r['purpose']} | {r['arch']} | {r['size']} | {r.get('weights', 'none')} | {r['amp']} | "
                f"{r['precision']} {r['memory_format']} | "
                f"{r['epochs']} | {r['train_images']} / {r['val_images']} | {r['images_per_s']:.1f} | "
                f"x{r.get('vs_off', 1.0):.2f} | {r['best_val_accuracy']:.4f} | "
                f"{r.get('accuracy_minus_off_points', 0.0):+.2f} | "
                f"{' '.join(f'{a:.4f}' for a in r['val_accuracy_by_epoch'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def _csv(path: Path, rows: list[dict[str, Any]], machine_line: str) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r)) + ["machine"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {**{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()}, "machine": machine_line}
            )


def make_subset(per_class: int, work: Path) -> Path:
    """A Fashion-MNIST stand-in of ``per_class`` images per class in ``work`` (written once); its ``train`` folder."""
    from garmentcv.data.fashion_mnist import write_fashion_mnist

    out = work / f"fm{per_class}"
    if not (out / "train").is_dir():
        write_fashion_mnist(out, max_per_class=per_class)
    return out / "train"


@click.command(context_settings={"show_default": True})
@click.option(
    "--archs", default="resnet18,resnet34,efficientnet_b0", help="Comma-separated archs of the steps section."
)
@click.option("--sizes", default="32,64,128,224", help="Comma-separated input sides, px.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, help="Images per step.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, help="Untimed steps per variant first.")
@click.option(
    "--min-sample-s", type=click.FloatRange(min=0), default=0.5, help="Steps per sample: enough for this long."
)
@click.option("--isa", "isas", default="native,no-amx", help=f"Comma-separated, of {', '.join(ISA_CAPS)}.")
@click.option("--steps/--no-steps", default=True, help="Run the steps section.")
@click.option("--e2e-size", type=click.IntRange(min=16), default=224, help="gcv train speed runs: input side, px.")
@click.option(
    "--e2e-per-class",
    type=click.IntRange(min=0),
    default=0,
    help="gcv train speed runs: Fashion-MNIST images per class, half of them for validation (0: skip).",
)
@click.option("--e2e-epochs", type=click.IntRange(min=1), default=2, help="gcv train speed runs: epochs.")
@click.option(
    "--e2e-weights",
    default="none",
    help="gcv train speed runs: --weights (none: from scratch, which does not learn at 224 px in 2 epochs; a "
    "GarmentCV best.pt, e.g. the transfer experiment's pretrained backbone, so accuracy can be compared).",
)
@click.option("--e2e-amps", default="off,bf16", help="gcv train speed runs: --amp values, comma-separated (off first).")
@click.option(
    "--acc-per-class",
    type=click.IntRange(min=0),
    default=0,
    help="gcv train accuracy runs at 32 px: images per class (0: skip).",
)
@click.option("--acc-epochs", type=click.IntRange(min=1), default=3, help="gcv train accuracy runs: epochs.")
@click.option("--acc-archs", default="resnet18,efficientnet_b0", help="gcv train accuracy runs: archs.")
@click.option(
    "--acc-amps", default="off,bf16,auto", help="gcv train accuracy runs: --amp values, comma-separated (off first)."
)
@click.option("--rerender", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Measure nothing: rewrite a stored NAME.json's .md/.csv in OUT with the current rule's picks.")
@options.click_shared(repeats=5)
@click.option("--worker", default=None, hidden=True)
def main(archs: str, sizes: str, batch_size: int, warmup: int, min_sample_s: float, isas: str,
         steps: bool, e2e_size: int, e2e_per_class: int, e2e_epochs: int, e2e_weights: str, e2e_amps: str,
         acc_per_class: int, acc_epochs: int, acc_archs: str, acc_amps: str, rerender: Path | None,
         worker: str | None, out: Path, name: str | None, repeats: int, quiet: bool) -> None:  # fmt: skip
    """Training images/s, FP32 against bf16 autocast (and channels_last), and gcv train's accuracy with each."""
    options.setup_logging(quiet)
    if worker is not None:
        plan = json.loads(worker)
        rows = _step_rows(StepPlan(**{**plan, "archs": tuple(plan["archs"]), "sizes": tuple(plan["sizes"])}))
        print(json.dumps(rows))
        return
    if rerender is not None:
        stored = json.loads(rerender.read_text(encoding="utf-8"))
        rows = [
            {**r, "amp_auto_chooses": _auto_choice(r["arch"], r["size"], ISA_CAPS[r["isa"]])}
            if r["section"] == "steps"
            else r
            for r in stored["rows"]
        ]
        _write(
            out,
            name or rerender.stem,
            rows,
            stored["machine"],
            stored["command"],
            tuple(stored.get("load_end", ())),
            quiet=quiet,
        )
        return
    begun = results.start("train_amp")
    machine = begun.machine
    command = begun.command
    plan = StepPlan(tuple(archs.split(",")), tuple(int(s) for s in sizes.split(",")), batch_size, warmup, repeats,
                    min_sample_s)  # fmt: skip
    rows: list[dict[str, Any]] = []
    for isa in isas.split(",") if steps else ():
        if isa not in ISA_CAPS:
            raise click.BadParameter(f"{isa!r}; choose from {', '.join(ISA_CAPS)}", param_hint="--isa")
        rows += _run_isa(isa, plan)
    with tempfile.TemporaryDirectory(prefix="gcv-amp-") as tmp:
        work = Path(tmp)
        if e2e_per_class:
            data = make_subset(e2e_per_class, work)
            rows += train_rows(data, e2e_size, e2e_epochs, tuple(e2e_amps.split(",")), ("resnet18",), work, batch_size,
                                "speed", 0.5, e2e_weights)  # fmt: skip
        if acc_per_class:
            data = make_subset(acc_per_class, work)
            rows += train_rows(
                data,
                32,
                acc_epochs,
                tuple(acc_amps.split(",")),
                tuple(acc_archs.split(",")),
                work,
                batch_size,
                "accuracy",
                0.2,
            )
    _write(out, name, rows, machine.to_dict(), command, os.getloadavg(), begun=begun, quiet=quiet)


def _write(out: Path, name: str | None, rows: list[dict[str, Any]], machine: dict[str, Any], command: str,
           load_end: tuple[float, ...], begun: results.Run | None = None, quiet: bool = False) -> None:  # fmt: skip
    """The result document (``begun``: ``OUT/<machine>/train_amp[-NAME].json``) with its ``.md`` and ``.csv``; without
    ``begun`` (re-rendering a stored file) ``NAME.csv`` and ``NAME.md`` in ``out``. The markdown is echoed unless
    ``quiet``."""
    torch_version = machine["versions"].get("torch", "?")
    line = f"{machine['cpu_model']}; {machine['logical_cpus']} CPUs; {' '.join(machine['isa'])}; torch {torch_version}"
    text = _markdown(rows, machine, command, load_end)
    if begun is not None:
        path = results.write(begun, rows, out, name, markdown=text)
    else:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.json"
        (out / f"{name}.md").write_text(text, encoding="utf-8")
    _csv(path.with_suffix(".csv"), rows, line)
    options.report(text, quiet)


if __name__ == "__main__":
    main()
