"""The training recipe: AdamW, an exponential learning-rate decay (optionally after a linear warm-up),
per-epoch validation, checkpoints, early stopping and resume. The recipe's parts live in :mod:`.recipe`.

Every epoch ``e`` seeds torch's RNG and the shuffling with ``(seed, e)``, so an epoch's batches, augmentation
and dropout depend only on the seed and the epoch number. Together with the optimizer state in
``last.pt`` this makes ``--resume`` end exactly where an uninterrupted run would (on the CPU).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from garmentcv.data.corrections import Corrections, apply_corrections, read_corrections
from garmentcv.data.layouts import LabelledDataset, Sample, load_dataset
from garmentcv.errors import (
    CheckpointError,
    GarmentCVError,
    OutputPathError,
    PathNotFoundError,
)
from garmentcv.fsutil import atomic_write, check_writable_output, write_json
from garmentcv.image import Preprocessing
from garmentcv.metrics import ClassificationMetrics, classification_metrics
from garmentcv.models.registry import (
    check_input_size,
    default_preprocessing,
    ensure_imagenet_weights,
    get_spec,
)
from garmentcv.text import plural
from garmentcv.train import distributed
from garmentcv.train.amp import AmpPlan, plan_for
from garmentcv.train.checkpoint import load_checkpoint, save_checkpoint, writing
from garmentcv.train.config import RESUME_AUTO, TrainConfig
from garmentcv.train.data import (
    Split,
    build_loaders,
    check_corrected_dataset,
    drop_bad_images,
    given_split,
    load_other_images,
    other_batches,
    split_dataset,
)
from garmentcv.train.distributed import Dist
from garmentcv.train.health import TrainingWarning, epoch_warnings, run_warnings
from garmentcv.train.recipe import (
    class_weights,
    early_stop,
    lr_factor,
    make_criterion,
    make_optimizer,
    outlier_exposure_loss,
    set_backbone_trainable,
    set_epoch_lr,
)
from garmentcv.train.report import comparison_table, save_confusion_matrix, save_curves
from garmentcv.train.transfer import build_for_training

logger = logging.getLogger(__name__)

#: ``on_epoch_end(arch, epoch, model)``: called after each epoch's validation with the model in eval mode, e.g. to
#: score extra image sets per epoch (scripts/transfer_experiment.py); it must not change the model.
EpochCallback = Callable[[str, int, nn.Module], None]


@dataclass(frozen=True)
class EpochResult:
    """Figures of one epoch. Losses are mean cross-entropy per image; accuracies are top-1, 0..1."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val: ClassificationMetrics
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-compatible form (validation metrics at top level)."""
        out = {k: v for k, v in asdict(self).items() if k != "val"}
        return {**out, **self.val.to_dict()}


@dataclass(frozen=True)
class ArchResult:
    """Outcome of training one arch: its folder, its best epoch's figures and the whole history.

    ``warnings`` are the run's failed checks (:func:`garmentcv.train.health.run_warnings`: at chance, diverged),
    also in ``metrics.json``; ``stopped_early_after`` the epoch early stopping ended it after, or None.
    """

    arch: str
    run_dir: Path
    best_epoch: int
    best: dict[str, Any]
    history: list[dict[str, Any]]
    params: int
    train_seconds: float
    weights_source: str
    warnings: tuple[TrainingWarning, ...] = ()
    stopped_early_after: int | None = None


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`: the run folder, the classes and one :class:`ArchResult` per arch.

    ``already_complete``: a resumed run had trained every epoch of every arch already (or stopped early), so
    nothing was trained, no image decoded (the data was only listed, to refuse a changed dataset) and nothing
    written but a missing ``comparison.md`` or plot; the results are those of its checkpoints.
    """

    out: Path
    classes: tuple[str, ...]
    archs: list[ArchResult]
    comparison: Path
    already_complete: bool = False


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is an error.

    Raises:
        GarmentCVError: ``cuda`` asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GarmentCVError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def _seed_epoch(seed: int, epoch: int) -> int:
    epoch_seed = seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)
    return epoch_seed


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    desc: str = "train",
    progress: bool = True,
    criterion: nn.Module | None = None,
    amp: AmpPlan | None = None,
    other: Iterator[torch.Tensor] | None = None,
    other_weight: float = 0.5,
) -> tuple[float, float]:
    """One pass over ``loader``: ``criterion`` (plain cross-entropy when None), backward, optimizer step.

    Autocast and memory format as ``amp`` says (:mod:`garmentcv.train.amp`); without ``amp``, float16 autocast
    on CUDA when ``scaler``. The loss reported is ``criterion``'s (smoothed or weighted if it is).

    Outlier exposure (Hendrycks, Mazeika and Dietterich 2019): with ``other`` (batches of images of none of the
    classes, :func:`garmentcv.train.data.other_batches`) each training batch is joined by the next other batch in
    one forward pass (BatchNorm sees both, as in the paper's code) and the loss becomes ``criterion + other_weight
    x`` :func:`~garmentcv.train.recipe.outlier_exposure_loss` of the other images' logits; the loss reported is
    that sum, the accuracy that of the training images alone.

    Returns:
        ``(mean loss per image, top-1 accuracy 0..1)`` over the images seen.
    """
    model.train()
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, file=sys.stderr, disable=None if progress else True)
    for images, targets in bar:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        n_in = len(images)
        if other is not None:
            images = torch.cat([images, next(other).to(device, non_blocking=True)])
        optimizer.zero_grad(set_to_none=True)
        # --amp (garmentcv/train/amp.py): the plan's autocast and memory format
        if amp is not None and amp.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if amp is not None:
            autocast = amp.autocast()
        else:
            autocast = torch.autocast("cuda", dtype=torch.float16) if scaler else contextlib.nullcontext()
        with autocast:
            outputs = model(images)
            logits = outputs[:n_in]
            loss = criterion(logits, targets)
            if other is not None:
                loss = loss + other_weight * outlier_exposure_loss(outputs[n_in:])
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = targets.numel()
        total_loss += loss.item() * n
        correct += int((logits.argmax(1) == targets).sum())
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int
) -> tuple[float, ClassificationMetrics]:
    """Evaluate in eval mode (float32). Returns ``(mean cross-entropy per image, metrics)``."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    total_loss, y_true, y_pred = 0.0, [], []
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images)
        total_loss += float(criterion(logits, targets))
        y_true += targets.tolist()
        y_pred += logits.argmax(1).tolist()
    return total_loss / max(len(y_true), 1), classification_metrics(y_true, y_pred, num_classes)


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence[str]]) -> None:
    # surrogateescape: a file name that is not valid UTF-8 is written back as its original bytes
    with writing(path), atomic_write(path, newline="", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_split_csv(path: Path, samples: tuple[Sample, ...]) -> None:
    _write_csv(path, ["path", "label"], ((str(s.path.resolve()), s.label) for s in samples))


def fit_arch(
    arch: str,
    cfg: TrainConfig,
    dataset: LabelledDataset,
    split: Split,
    device: torch.device,
    progress: bool = True,
    dist: Dist | None = None,
    on_epoch_end: EpochCallback | None = None,
    amp: AmpPlan | None = None,
    others: Sequence[Path] = (),
) -> ArchResult:
    """Train one arch into ``cfg.out / arch``: checkpoints, metrics.json and plots.

    ``others``: images of none of the classes (``cfg.other_data``, :func:`~garmentcv.train.data.load_other_images`)
    for outlier exposure, ``cfg.other_weight`` the weight of their loss (:func:`train_one_epoch`).

    With ``cfg.resume`` and an existing ``last.pt`` the run continues after its last finished epoch.
    ``amp`` is the precision plan (:func:`garmentcv.train.amp.plan_for` of ``cfg.amp`` when None).
    Under torchrun (``dist``, see :mod:`garmentcv.train.distributed`) every rank trains its share of each
    epoch in DistributedDataParallel; only rank 0 reads and writes ``cfg.out``.

    Raises:
        WeightsError, UnknownArchError: from :func:`garmentcv.models.registry.build_model`.
        CheckpointError: ``last.pt`` does not match this run (other arch or classes).
    """
    dist = dist or Dist(device=device)
    run_dir = cfg.out / arch
    if dist.is_primary:  # DDP: the run folder is rank 0's
        run_dir.mkdir(parents=True, exist_ok=True)
    classes = dataset.classes
    pp: Preprocessing = default_preprocessing(arch, cfg.image_size)
    torch.manual_seed(cfg.seed)
    built = build_for_training(arch, len(classes), cfg.weights, progress=progress)
    model = built.model.to(device)
    # --amp (garmentcv/train/amp.py): precision and memory format, decided and logged per arch
    amp = amp if amp is not None else plan_for(cfg.amp, device, arch, pp.crop)
    logger.info("%s: training in %s", arch, amp.summary())
    if amp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = get_spec(arch).head
    optimizer = make_optimizer(model, head, cfg.lr, cfg.weight_decay, cfg.backbone_lr_factor, cfg.decay_norm_bias)
    counts = [sum(s.label == c for s in split.train) for c in classes]
    weight = torch.tensor(class_weights(counts), dtype=torch.float32, device=device) if cfg.class_weights else None
    criterion = make_criterion(cfg.label_smoothing, weight)
    scaler = torch.amp.GradScaler("cuda") if amp.grad_scaler else None

    start, history, best_epoch, best_acc, spent = 1, [], 0, -1.0, 0.0
    last_path = run_dir / "last.pt"
    # DDP: rank 0 reads last.pt and broadcasts it; it is loaded into the bare model, wrapped in DDP per epoch
    state = load_checkpoint(last_path) if cfg.resume and dist.is_primary and last_path.is_file() else None
    state = dist.broadcast(state)
    if state is not None:
        if state["arch"] != arch or tuple(state["classes"]) != classes:
            raise CheckpointError(
                f"{last_path}: saved for {state['arch']} with classes {state['classes']}, not {arch} with "
                f"{list(classes)}; resume with the same data or choose a new --out"
            )
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        start, history = state["epoch"] + 1, list(state["history"])
        best_epoch, spent = state["best_epoch"], float(state["train_seconds"])
        best_acc = history[best_epoch - 1]["accuracy"] if best_epoch else -1.0
        logger.info("%s: resuming after epoch %d of %d from %s", arch, state["epoch"], cfg.epochs, last_path)

    common = {
        "arch": arch,
        "classes": list(classes),
        "preprocessing": pp.to_dict(),
        "weights_source": built.weights_source,
        "config": cfg.to_dict(),
        "amp": amp.to_dict(),  # --amp: what was chosen and why
    }
    for epoch in range(start, cfg.epochs + 1):
        if _stopped_early_after(history, cfg) is not None:
            break  # also when resuming a run that had stopped early
        started = time.perf_counter()
        epoch_seed = _seed_epoch(cfg.seed, epoch)
        if dist.enabled:  # DDP: this rank's share of the epoch, seeded per rank
            train_loader, val_loader = distributed.build_loaders(split, classes, pp, cfg, epoch, epoch_seed, dist)
        else:
            train_loader, val_loader = build_loaders(split, classes, pp, cfg, epoch_seed)
        # --other-data: seeded by the epoch (and rank), so a resumed run draws the same other batches
        other = other_batches(others, pp, cfg, distributed.rank_seed(epoch_seed, dist.rank) + 1) if others else None
        set_backbone_trainable(model, head, trainable=epoch > cfg.freeze_backbone_epochs)
        net = dist.wrap(model)  # DDP over the parameters trainable this epoch; the model itself without torchrun
        lr = cfg.lr * lr_factor(epoch, cfg.lr_gamma, cfg.warmup_epochs)
        set_epoch_lr(optimizer, cfg.lr, lr_factor(epoch, cfg.lr_gamma, cfg.warmup_epochs))
        train_loss, train_acc = train_one_epoch(
            net, train_loader, optimizer, device, scaler, f"{arch} {epoch}/{cfg.epochs}", progress, criterion, amp,
            other, cfg.other_weight,
        )
        del net
        if dist.enabled:  # DDP: every rank saw as many images, so the mean of means is the mean
            train_loss, train_acc = dist.mean(train_loss, train_acc)
            dist.sync_buffers(model)  # rank 0's BatchNorm statistics everywhere: evaluate what is saved
            val_loss, val = distributed.evaluate_sharded(model, val_loader, device, len(classes), dist)
        else:
            val_loss, val = evaluate(model, val_loader, device, len(classes))
        seconds = time.perf_counter() - started
        if on_epoch_end is not None:  # after the epoch's timing: what the caller measures is not training time
            on_epoch_end(arch, epoch, model)
            model.eval()
        spent += seconds
        result = EpochResult(epoch, lr, train_loss, train_acc, val_loss, val, seconds)
        history.append(result.to_dict())
        logger.info(
            "%s epoch %d/%d: lr %.5f | train loss %.4f acc %.4f | "
            "val loss %.4f acc %.4f P %.4f R %.4f F1 %.4f | %.1f s",
            arch, epoch, cfg.epochs, lr, train_loss, train_acc, val_loss, val.accuracy,
            val.precision, val.recall, val.f1, seconds,
        )  # fmt: skip
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()} if dist.is_primary else {}
        checks = [w.to_dict() for w in epoch_warnings(history[-1], classes)]  # this epoch's model: for gcv export
        payload = {**common, "state_dict": weights, "epoch": epoch, "metrics": {**result.to_dict(), "warnings": checks}}
        if val.accuracy > best_acc:
            best_acc, best_epoch = val.accuracy, epoch
            if dist.is_primary:  # DDP: only rank 0 writes (here and below)
                save_checkpoint(run_dir / "best.pt", {**payload, "best_epoch": epoch, "history": history})
        if dist.is_primary:
            save_checkpoint(
                last_path,
                {
                    **payload,
                    "best_epoch": best_epoch,
                    "history": history,
                    "train_seconds": spent,
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler else {},
                    "rng": {"torch": torch.get_rng_state()},
                },
            )
        stopped = _stopped_early_after(history, cfg)
        if dist.is_primary:
            _write_json(
                run_dir / "metrics.json",
                {"arch": arch, "classes": list(classes), "best_epoch": best_epoch, "stopped_early_after": stopped,
                 "warnings": [w.to_dict() for w in run_warnings(history, best_epoch, classes)], "history": history},
            )  # fmt: skip
        if stopped is not None:
            logger.info(
                "%s: early stopping after epoch %d: %s has not improved for %d epochs",
                arch, epoch, cfg.early_stopping_metric, cfg.early_stopping_patience,
            )  # fmt: skip

    if not history:
        raise CheckpointError(f"{run_dir}: nothing trained (epochs={cfg.epochs})")
    if dist.is_primary:
        _save_plots(arch, classes, history, best_epoch, run_dir)
    warnings = tuple(run_warnings(history, best_epoch, classes))
    for warning in warnings:
        logger.warning("%s: %s", arch, warning.message)
    params = sum(p.numel() for p in model.parameters())
    return ArchResult(arch, run_dir, best_epoch, history[best_epoch - 1], history, params, spent, built.weights_source,
                      warnings, _stopped_early_after(history, cfg))  # fmt: skip


def _write_json(path: Path, data: Any) -> None:
    """:func:`~garmentcv.fsutil.write_json`, a failed write naming ``path`` (:func:`~.checkpoint.writing`)."""
    with writing(path):
        write_json(path, data)


def _save_plots(
    arch: str, classes: Sequence[str], history: list[dict[str, Any]], best_epoch: int, run_dir: Path
) -> None:
    """``confusion_matrix.png`` of the best epoch and ``curves.png`` of the whole history, in ``run_dir``."""
    best = history[best_epoch - 1]
    with writing(run_dir / "confusion_matrix.png"):
        save_confusion_matrix(
            best["confusion_matrix"], classes, run_dir / "confusion_matrix.png",
            f"{arch}, epoch {best_epoch}: validation accuracy {best['accuracy']:.4f}",
        )  # fmt: skip
    with writing(run_dir / "curves.png"):
        save_curves(history, run_dir / "curves.png", arch)


def _stopped_early_after(history: list[dict[str, Any]], cfg: TrainConfig) -> int | None:
    """The epoch after which early stopping ends the run (the last of ``history``), or None to go on."""
    metric = cfg.early_stopping_metric
    values = [float(h[metric]) for h in history]
    stop = early_stop(values, cfg.early_stopping_patience, higher_is_better=metric != "val_loss")
    return len(history) if stop else None


def _check_recipe(cfg: TrainConfig) -> None:
    """Refuse fine-tuning settings out of range (the CLI's types check them too; a config.json or the API may not).

    Raises:
        GarmentCVError: names the setting, the rule and the value given.
    """
    problems = [
        f"{name} must be {rule}, got {value!r}"
        for name, value, ok, rule in (
            ("early_stopping_metric", cfg.early_stopping_metric, cfg.early_stopping_metric in ("val_loss", "accuracy"),
             "val_loss or accuracy"),
            ("label_smoothing", cfg.label_smoothing, 0 <= cfg.label_smoothing < 1, "in [0, 1)"),
            ("backbone_lr_factor", cfg.backbone_lr_factor, cfg.backbone_lr_factor > 0, "> 0"),
            ("warmup_epochs", cfg.warmup_epochs, cfg.warmup_epochs >= 0, ">= 0"),
            ("freeze_backbone_epochs", cfg.freeze_backbone_epochs, cfg.freeze_backbone_epochs >= 0, ">= 0"),
            ("early_stopping_patience", cfg.early_stopping_patience, cfg.early_stopping_patience >= 0, ">= 0"),
            ("resume", cfg.resume, cfg.resume in (False, True, RESUME_AUTO), f"true, false or {RESUME_AUTO!r}"),
            ("other_weight", cfg.other_weight, cfg.other_weight > 0, "> 0"),
        )
        if not ok
    ]  # fmt: skip
    if problems:
        raise GarmentCVError(f"{'; '.join(problems)}; fix the option (or the config.json it came from)")


def _check_resume_config(cfg: TrainConfig) -> None:
    """Refuse to resume the run in ``cfg.out`` with other settings than it was started with.

    Every setting that changes what an epoch does must be the same; ``epochs`` may grow (each epoch's learning
    rate and seed depend on its number only, so a run resumed with more epochs ends where a longer run would).

    Raises:
        CheckpointError: no run there, or settings that differ (named with both values).
    """
    stored_path = cfg.out / "config.json"
    if not stored_path.is_file():
        raise CheckpointError(f"{cfg.out}: no config.json, so there is no run to resume; drop --resume")
    record = json.loads(stored_path.read_text(encoding="utf-8"))
    stored = TrainConfig.from_dict(record)
    keys = ("data", "layout", "corrections", "batch_size", "lr", "lr_gamma", "weight_decay", "val_fraction",
            "val_data", "seed", "image_size", "weights", "rotation", "crop_scale", "jitter", "hflip", "workers",
            "freeze_backbone_epochs", "backbone_lr_factor", "warmup_epochs", "label_smoothing", "decay_norm_bias",
            "early_stopping_patience", "early_stopping_metric", "class_weights", "balanced_sampler", "archs",
            "amp", "other_data", "other_weight")  # fmt: skip
    changed = {k: (getattr(stored, k), getattr(cfg, k)) for k in keys if getattr(stored, k) != getattr(cfg, k)}
    if cfg.epochs < stored.epochs:
        changed["epochs"] = (stored.epochs, cfg.epochs)
    if "corrections" not in changed and cfg.corrections is not None:
        now = read_corrections(cfg.corrections).sha256
        if now != record.get("corrections_sha256"):
            raise CheckpointError(
                f"{cfg.out}: --resume, but the corrections file {cfg.corrections} changed since the run started "
                f"(sha256 {record.get('corrections_sha256')} -> {now}); restore it as it was, or train with the new "
                "corrections into a new --out"
            )
    if changed:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise CheckpointError(
            f"{cfg.out}: --resume with settings that differ from the run's ({detail}); use the same ones (--epochs "
            "may only grow)"
        )


def _auto_resume(out: Path) -> bool:
    """``--resume auto``: whether ``out`` holds a run to continue (its ``config.json``); else a new run starts there.

    A run folder whose processes died before their first checkpoint resumes too: each arch without a
    ``last.pt`` starts at epoch 1, with the settings checked against the run's.
    """
    found = (out / "config.json").is_file()
    logger.info("--resume auto: %s", f"continuing the run in {out}" if found else f"no run in {out} yet, starting one")
    return found


def _prepare_out(cfg: TrainConfig) -> bool:
    """Check the run folder before any work; returns whether this run creates it.

    Raises:
        OutputPathError: ``cfg.out`` cannot be written, or (without ``cfg.resume``) already holds files.
    """
    out = cfg.out
    existed = out.is_dir()
    if existed and not cfg.resume:
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise OutputPathError(
                f"--out {out} already holds files ({shown}), e.g. an earlier run; choose a new --out for a new "
                "run, or add --resume to continue that one"
            )
    check_writable_output(out / "config.json", "--out")  # creates the folder (and missing parents)
    return not existed


def _remove_unfinished_run(out: Path) -> None:
    """Remove a run folder this run created when no checkpoint was saved in it: nothing there to keep."""
    if not out.is_dir() or any(out.rglob("*.pt")):
        return
    logger.debug("removing %s: the run failed before saving a checkpoint", out)
    shutil.rmtree(out, ignore_errors=True)


def _read_split_csv(path: Path) -> dict[str, str]:
    """``path -> label`` of a split file written by :func:`_write_split_csv` (surrogateescape, like the writer)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing, so the run's split is unknown; "
                              "resume cannot continue, start a new --out")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return {row["path"]: row["label"] for row in csv.DictReader(handle)}


def _check_resume_data(cfg: TrainConfig, split: Split) -> None:
    """Refuse to resume when the dataset or its split differ from the run's saved train.csv/val.csv.

    Raises:
        CheckpointError: files were added, removed or relabelled, or the same files split differently.
    """
    saved_train, saved_val = _read_split_csv(cfg.out / "train.csv"), _read_split_csv(cfg.out / "val.csv")
    now = {str(s.path.resolve()): s.label for s in (*split.train, *split.val)}
    _check_same_files(cfg, now, {**saved_train, **saved_val})
    now_train = {str(s.path.resolve()) for s in split.train}
    if now_train != saved_train.keys():
        raise CheckpointError(
            f"{cfg.out}: --resume, but the same files now split differently from the run's train.csv/val.csv "
            "(another scikit-learn version?); resume with the versions that started the run, or use a new --out"
        )


def _check_resume_others(cfg: TrainConfig, others: Sequence[Path]) -> None:
    """Refuse to resume when the ``--other-data`` images differ from the run's ``other.csv``.

    Raises:
        CheckpointError: images were added or removed.
    """
    saved_path = cfg.out / "other.csv"
    saved = set()
    if saved_path.is_file():
        with open(saved_path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            saved = {row["path"] for row in csv.DictReader(handle)}
    now = {str(p.resolve()) for p in others}
    if now != saved:
        added, removed = sorted(now - saved), sorted(saved - now)
        detail = "; ".join(f"{plural(len(names), 'image')} {what} ({', '.join(names[:3])})"
                           for names, what in ((added, "added"), (removed, "removed")) if names)  # fmt: skip
        raise CheckpointError(
            f"{cfg.out}: --resume, but the --other-data images changed since the run started: {detail}; restore "
            "them as they were, or train with the new ones into a new --out"
        )


def _check_finished_run_data(cfg: TrainConfig) -> None:
    """:func:`_check_resume_data` for a run with no epoch left, from the file listing alone (no image decoded):
    the files and labels of DATA (and --val-data), less those in ``skipped_images.csv``, must be the run's.

    Raises:
        CheckpointError: files were added, removed or relabelled.
        DatasetError: the data cannot be read.
    """
    listed = training_dataset(cfg)[0].samples
    if cfg.val_data is not None:
        listed += load_dataset(cfg.val_data).samples
    skipped = set()
    if (cfg.out / "skipped_images.csv").is_file():
        with open(cfg.out / "skipped_images.csv", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            skipped = {row["path"] for row in csv.DictReader(handle)}
    current = {str(s.path.resolve()): s.label for s in listed if str(s.path.resolve()) not in skipped}
    saved = {**_read_split_csv(cfg.out / "train.csv"), **_read_split_csv(cfg.out / "val.csv")}
    _check_same_files(cfg, current, saved)


def training_dataset(cfg: TrainConfig) -> tuple[LabelledDataset, Corrections | None]:
    """The labelled images of ``cfg.data`` with ``cfg.corrections`` applied (:mod:`garmentcv.data.corrections`),
    and the corrections file as read (``None`` without one). Lists files only; no image is decoded.

    The corrected dataset is checked as the split will use it (:func:`~garmentcv.train.data.check_corrected_dataset`);
    corrections that drop more than half the images are logged as a WARNING with every class's counts.

    Raises:
        DatasetError: the data cannot be read; CorrectionsError (a DatasetError): the corrections file cannot be
            read, does not fit the data, or leaves a class without images or, unless ``cfg.val_data``, a class that
            had a validation image with a single one.
    """
    corrections = read_corrections(cfg.corrections) if cfg.corrections is not None else None
    dataset = load_dataset(cfg.data, cfg.layout)
    if corrections is not None:
        dataset, applied = apply_corrections(dataset, corrections)
        check_corrected_dataset(dataset, applied, corrections.source, split=cfg.val_data is None)
    return dataset, corrections


def _check_same_files(cfg: TrainConfig, current: dict[str, str], saved: dict[str, str]) -> None:
    """Refuse to resume when ``current`` (path -> label) is not the run's ``saved`` one; names the differences.

    Raises:
        CheckpointError: files were added, removed or relabelled.
    """
    added = sorted(current.keys() - saved.keys())
    removed = sorted(saved.keys() - current.keys())
    relabelled = sorted(p for p in current.keys() & saved.keys() if current[p] != saved[p])
    changes = [
        f"{plural(len(names), 'file')} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for names, what in ((added, "added"), (removed, "removed"), (relabelled, "relabelled"))
        if names
    ]
    if changes:
        raise CheckpointError(
            f"{cfg.out}: --resume, but the dataset changed since the run started: {'; '.join(changes)}. The split "
            "would change and images already trained on could land in validation; restore the data as it was, "
            "or train on the new data with a new --out"
        )


def train(cfg: TrainConfig, progress: bool = True, on_epoch_end: EpochCallback | None = None) -> TrainResult:
    """Train every arch of ``cfg`` on ``cfg.data`` and write the run folder ``cfg.out``.

    ``on_epoch_end(arch, epoch, model)``, when given, is called after each epoch's validation (model in eval mode).

    Writes ``config.json``, ``train.csv`` and ``val.csv`` (the split, as ``path,label`` manifests),
    ``comparison.md`` and, per arch, ``best.pt``, ``last.pt``, ``metrics.json``, ``confusion_matrix.png`` and
    ``curves.png``.

    A run folder that already holds files is refused unless ``cfg.resume``; a run that fails before its
    first checkpoint removes the run folder it created. ``cfg.resume`` ``"auto"`` continues the run in
    ``cfg.out`` when there is one (its ``config.json``) and starts it otherwise, so that one command line serves
    every attempt of ``torchrun --max-restarts``. A resumed run whose archs have all trained every epoch (or
    stopped early) trains nothing and reads no image: the result has ``already_complete`` set. ``epochs`` may
    grow on resume: the run then trains on to the new last epoch.

    Every write into the run folder is atomic; one that fails (a full disk, a quota, a read-only or failing
    disk) raises :class:`~garmentcv.train.checkpoint.RunFileError` naming the file. The end of each arch
    logs a WARNING for every failed check of :mod:`garmentcv.train.health` (at chance, diverged), also
    recorded in ``metrics.json``, ``comparison.md`` and the checkpoints' ``metrics``.

    Under torchrun (``WORLD_SIZE > 1``) every process calls this; they train data-parallel and only rank 0
    writes ``cfg.out`` and shows progress (:mod:`garmentcv.train.distributed`). ``config.json`` records the
    world size and the global batch (``batch_size x world_size``), and ``corrections_sha256``, the SHA-256 of
    ``cfg.corrections`` (applied to the data's labels before the split, :func:`training_dataset`).

    Raises:
        OutputPathError: ``cfg.out`` cannot be written, or holds files and ``cfg.resume`` is not set.
        RunFileError: a file of the run folder could not be written (an OutputPathError and an OSError).
        DatasetError: the data cannot be read or split.
        WeightsError, UnknownArchError, CheckpointError: see :func:`fit_arch`.
        DistributedError: under torchrun, the processes cannot join or a collective failed or timed out.
        InputSizeError: an arch cannot take ``cfg.image_size`` px input
            (:func:`~garmentcv.models.registry.check_input_size`).
    """
    for arch in cfg.archs:  # refuse an unknown arch, or a size it cannot take, before any work
        check_input_size(arch, default_preprocessing(arch, cfg.image_size).crop)
    if cfg.epochs < 1:
        raise GarmentCVError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 2:
        raise GarmentCVError(
            f"batch size must be at least 2, got {cfg.batch_size}: BatchNorm cannot train on a batch of one image"
        )
    _check_recipe(cfg)
    if cfg.weights not in ("imagenet", "none") and not Path(cfg.weights).exists():
        raise PathNotFoundError(
            f"--weights {cfg.weights}: file not found; give a torchvision state dict or a best.pt written by "
            "gcv train, 'imagenet' or 'none'"
        )
    with distributed.process_group(select_device(cfg.device)) as dist:  # DDP under torchrun, else one process
        if cfg.resume == RESUME_AUTO:  # DDP: rank 0 looks at the run folder and tells the others
            cfg = dataclasses.replace(cfg, resume=dist.broadcast(_auto_resume(cfg.out) if dist.is_primary else None))
        created = _prepare_out(cfg) if dist.is_primary else False
        try:
            return _train_into(cfg, progress and dist.is_primary, dist, on_epoch_end)
        except BaseException:
            if created:
                _remove_unfinished_run(cfg.out)
            raise


def _train_into(cfg: TrainConfig, progress: bool, dist: Dist, on_epoch_end: EpochCallback | None = None) -> TrainResult:
    """The work of :func:`train` once the run folder is known to be writable and free (rank 0's, under DDP)."""
    if cfg.resume and dist.is_primary:
        _check_resume_config(cfg)  # cheap, before the images are read
        distributed.check_resume_world_size(cfg.out / "config.json", dist.world_size)
    finished = dist.broadcast(_finished_run(cfg) if cfg.resume and dist.is_primary else None)
    if finished is not None:
        logger.info("%s: every arch has trained all its epochs (or stopped early); nothing to train", cfg.out)
        return finished
    device = dist.device
    # --amp (garmentcv/train/amp.py): decided before any work (fp16 on a CPU is refused here), saved in config.json
    amp = {arch: plan_for(cfg.amp, device, arch, default_preprocessing(arch, cfg.image_size).crop)
           for arch in cfg.archs}
    dataset, corrections = training_dataset(cfg)
    if cfg.weights == "imagenet":  # every arch's file before any work: a later arch's must not fail after hours
        with dist.local_primary_first():  # DDP: one download per node
            for arch in cfg.archs:
                ensure_imagenet_weights(arch, progress)
    val_set = load_dataset(cfg.val_data) if cfg.val_data is not None else None
    # DDP: each rank decodes a share
    bad = distributed.find_bad_images_sharded(dataset.samples + (val_set.samples if val_set else ()), progress, dist)
    dataset = drop_bad_images(dataset, bad, cfg.skip_bad_images)
    if val_set is None:
        split = split_dataset(dataset, cfg.val_fraction, cfg.seed)
    else:  # --val-data: a fixed validation set, every image of DATA trains
        split = given_split(dataset, drop_bad_images(val_set, bad, cfg.skip_bad_images))
    dist.check_same("the split (files and labels)", distributed.split_digest(split))  # DDP: every rank, same data
    others: tuple[Path, ...] = ()
    if cfg.other_data is not None:  # outlier exposure: images of none of the classes
        others = load_other_images(cfg.other_data, split, cfg.skip_bad_images, progress)
        logger.info("%s: %s of none of the classes for outlier exposure (weight %g)", cfg.other_data,
                    plural(len(others), "image"), cfg.other_weight)
    logger.info(
        "%s (%s layout): %d images in %d classes %s; %d train / %d validation; device %s",
        cfg.data, dataset.layout.value, len(dataset.samples), len(dataset.classes), dataset.class_counts(),
        len(split.train), len(split.val), device,
    )  # fmt: skip
    if dist.is_primary:  # DDP: only rank 0 reads and writes the run folder
        if cfg.resume and any((cfg.out / arch / "last.pt").is_file() for arch in cfg.archs):  # else nothing trained yet
            _check_resume_data(cfg, split)
            _check_resume_others(cfg, others)
        _write_json(cfg.out / "config.json", {**cfg.to_dict(), **dist.run_record(cfg.batch_size),
                                             "corrections_sha256": corrections.sha256 if corrections else None,
                                             "amp_chosen": {a: p.to_dict() for a, p in amp.items()}})
        _write_split_csv(cfg.out / "train.csv", split.train)
        _write_split_csv(cfg.out / "val.csv", split.val)
        if others:
            _write_csv(cfg.out / "other.csv", ["path"], ((str(p.resolve()),) for p in others))
        if bad:
            _write_csv(cfg.out / "skipped_images.csv", ["path", "reason"],
                       [(str(b.sample.path.resolve()), b.reason) for b in bad])

    results = [fit_arch(arch, cfg, dataset, split, device, progress, dist, on_epoch_end, amp[arch], others)
               for arch in cfg.archs]
    comparison = cfg.out / "comparison.md"
    if dist.is_primary:
        text = _comparison_markdown(cfg, dataset.classes, len(split.train), len(split.val), split.no_val_classes,
                                    results)
        with writing(comparison), atomic_write(comparison) as handle:
            handle.write(text)
    dist.barrier()  # DDP: every process ends when rank 0's files are written
    return TrainResult(cfg.out, dataset.classes, results, comparison)


def _comparison_markdown(
    cfg: TrainConfig, classes: Sequence[str], n_train: int, n_val: int, no_val_classes: Sequence[str],
    results: Sequence[ArchResult],
) -> str:
    """``comparison.md``: the data and settings, the warnings of each arch, then its best epoch in a table."""
    rows = [
        {"arch": r.arch, "best_epoch": r.best_epoch,
         **{k: r.best[k] for k in ("accuracy", "precision", "recall", "f1")},
         "params_m": r.params / 1e6, "train_seconds": r.train_seconds}
        for r in results
    ]  # fmt: skip
    header = (
        f"# Validation results\n\nData: `{cfg.data}` ({n_train} train / {n_val} validation images, "
        f"classes {', '.join(classes)}), {plural(cfg.epochs, 'epoch')}, image size "
        f"{cfg.image_size or 'the weights default'} px, weights `{cfg.weights}`.\n\n"
    )
    if no_val_classes:
        header += (
            f"No validation image for class {', '.join(no_val_classes)}: its figures are absent and the "
            "macro averages are over the other classes.\n\n"
        )
    warnings = "".join(f"**Warning**: {r.arch}, {w.message}.\n\n" for r in results for w in r.warnings)
    return header + warnings + comparison_table(rows)


def _finished_run(cfg: TrainConfig) -> TrainResult | None:
    """The result of the run in ``cfg.out`` when every arch's ``last.pt`` has trained ``cfg.epochs`` epochs or
    stopped early, read from its files (``comparison.md`` and the plots are written again only when missing);
    None when some arch has epochs left (or no ``last.pt``).

    Raises:
        CheckpointError: a ``last.pt`` is unreadable, or of another arch or other classes than the run's others.
    """
    states = []
    for arch in cfg.archs:
        if not (cfg.out / arch / "last.pt").is_file():
            return None
        state = load_checkpoint(cfg.out / arch / "last.pt")
        if state["epoch"] < cfg.epochs and _stopped_early_after(state["history"], cfg) is None:
            return None
        if state["arch"] != arch or (states and state["classes"] != states[0]["classes"]):
            raise CheckpointError(f"{cfg.out / arch / 'last.pt'}: saved for {state['arch']} with classes "
                                  f"{state['classes']}, not {arch} of this run; choose a new --out")  # fmt: skip
        states.append({k: v for k, v in state.items() if k not in ("state_dict", "optimizer", "scaler", "rng")})
    if not states:
        return None
    _check_finished_run_data(cfg)  # as a resume would: a changed dataset is refused, not called complete
    classes, results = tuple(states[0]["classes"]), []
    for arch, state in zip(cfg.archs, states, strict=True):
        run_dir, history, best_epoch = cfg.out / arch, list(state["history"]), int(state["best_epoch"])
        if not all((run_dir / name).is_file() for name in ("confusion_matrix.png", "curves.png")):
            _save_plots(arch, classes, history, best_epoch, run_dir)
        with torch.device("meta"):  # the parameter count (torchvision's head for C classes) without allocating weights
            params = sum(p.numel() for p in get_spec(arch).builder(weights=None, num_classes=len(classes)).parameters())
        warnings = tuple(run_warnings(history, best_epoch, classes))
        results.append(ArchResult(arch, run_dir, best_epoch, history[best_epoch - 1], history, params,
                                  float(state["train_seconds"]), state["weights_source"], warnings,
                                  _stopped_early_after(history, cfg)))  # fmt: skip
    comparison = cfg.out / "comparison.md"
    if not comparison.is_file():
        train_files, val_files = _read_split_csv(cfg.out / "train.csv"), _read_split_csv(cfg.out / "val.csv")
        no_val = tuple(c for c in classes if c not in set(val_files.values()))
        text = _comparison_markdown(cfg, classes, len(train_files), len(val_files), no_val, results)
        with writing(comparison), atomic_write(comparison) as handle:
            handle.write(text)
    return TrainResult(cfg.out, classes, results, comparison, already_complete=True)
