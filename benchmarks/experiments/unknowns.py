"""Which unknown-item score to use, and does outlier exposure pay? Measured on Fashion-MNIST, offline.

In-distribution: the stand-in's classes (bluzy = T-shirt/top + Shirt, bryuki = Trouser; garmentcv.data.fashion_mnist).
Other items: the seven remaining Fashion-MNIST classes, split in two:

* the exposure classes (``--exposure-classes``, by default one near and one far: dress and sandal): their training
  images are ``gcv train --other-data`` for the runs with outlier exposure;
* every other class is never seen by any stage (not training, not exposure, not threshold fitting) and is used only
  for the test, as near items (pullover, coat, dress, those not exposed) and far items (sandal, sneaker, ankle boot,
  bag, those not exposed).

Each arch is trained from scratch twice through :func:`garmentcv.train.loop.train`, without and with exposure. For
each model and each score of :data:`garmentcv.unknowns.scores.METHODS`: the reference is fitted on the training
images' embeddings, the temperature (msp, energy) and the threshold at ``--recall`` on the validation images, then on
test images: AUROC against the in-distribution test images and the share let through at that threshold, for near
and far unseen items separately (and, as a check of what exposure did to the classes it saw, for the exposure
classes' test images); the in-distribution test recall actually reached; the scorer's cost (ms per image, numpy on
logits and embeddings already computed) and the size of its reference data. The shares are also given for each
other class.

Two more runs per arch train the other images as classes (:func:`labelled_rows`), scored by the probability the
model gives them:

* a background class (``--background``, on by default): the exposure images labelled as one extra class,
  ``other``, the alternative to outlier exposure that needs no change to training;
* a reference (``--supervised``, on by default): every other class labelled under its own name. What it still lets
  through at the same recall is what the images themselves cannot tell apart at this size, which no detector that
  never saw those classes is expected to beat.

Writes into WORK: ``data/`` (the images, reused when present), ``sets/`` (manifests and the exposure folder),
``runs/`` (the gcv train run folders, replaced); and the result document ``OUT/<machine>/unknowns.json`` with its
table (``.md``). Usage::

    python -m benchmarks unknowns --tiny --work /tmp/unknowns --out /tmp/unknowns/results   # about 2 minutes
    python -m benchmarks unknowns --work experiments/unknowns
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks import options, results
from benchmarks.experiments.transfer import write_manifest
from garmentcv import conformal
from garmentcv.calibration import decide_temperature, softmax
from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging, verbose_option
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE, FASHION_MNIST_CLASSES, LAMODA_MAPPING, write_fashion_mnist
from garmentcv.data.layouts import Sample, load_dataset
from garmentcv.export.exporter import split_held_out
from garmentcv.models import build_model, default_preprocessing, get_spec
from garmentcv.train.checkpoint import load_checkpoint
from garmentcv.train.config import TrainConfig
from garmentcv.train.data import EvalImages
from garmentcv.train.loop import train
from garmentcv.unknowns import scores

logger = logging.getLogger(__name__)

#: The stand-in's classes by Fashion-MNIST class name (garmentcv.data.fashion_mnist.LAMODA_MAPPING).
IN_DISTRIBUTION: dict[str, str] = {FASHION_MNIST_CLASSES[i]: name for i, name in LAMODA_MAPPING.items()}
#: Other classes that look like the stand-in's (tops and one-pieces) and those that do not (shoes, bags).
NEAR: tuple[str, ...] = ("pullover", "coat", "dress")
FAR: tuple[str, ...] = ("sandal", "sneaker", "ankle-boot", "bag")
DEFAULT_EXPOSURE = ("dress", "sandal")
DEFAULT_ARCHS = ("resnet18", "efficientnet_b0")
#: The class the background-class run gives the exposure images (none of the stand-in's names).
BACKGROUND = "other"
#: Settings of the full run and of ``--tiny`` (about 2 minutes on 2 cores); options given override either.
FULL = {"train_per_class": 1000, "val_per_class": 500, "test_per_class": 1000, "exposure_per_class": 1000, "epochs": 8}
#: AdamW learning rate of every run: a tenth of gcv train's fine-tuning default, for training from scratch (at 0.01
#: the tiny runs diverge and the full ones stop short of what the data allows).
LR = 0.001
TINY = {"train_per_class": 80, "val_per_class": 40, "test_per_class": 40, "exposure_per_class": 60, "epochs": 2,
        "archs": ("resnet18",)}  # fmt: skip


@dataclass(frozen=True)
class Sets:
    """The experiment's image sets: manifests of the classes, and the other images by Fashion-MNIST class."""

    train: Path
    val: Path
    test: Path
    exposure: Path
    others: dict[str, list[Path]]
    supervised: Path
    background: Path
    pretrain: Path | None = None


def _by_class(samples: Sequence[Sample]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for s in samples:
        out.setdefault(s.label, []).append(s.path)
    return out


def _take(paths: dict[str, list[Path]], name: str, start: int, count: int) -> list[Path]:
    got = paths.get(name, [])[start : start + count]
    if len(got) < count:
        raise click.UsageError(f"class {name} has {len(paths.get(name, []))} images, fewer than {start + count}; "
                               "delete WORK/data to have it rebuilt with enough")  # fmt: skip
    return got


def make_sets(data: Path, exposure_classes: Sequence[str], train_per_class: int, val_per_class: int,
              test_per_class: int, exposure_per_class: int, out: Path, pretrain_per_class: int = 0) -> Sets:
    """Manifests of the stand-in's classes (train: the first ``train_per_class`` images of each Fashion-MNIST class
    of the training file, val: the next ``val_per_class``, test: the first ``test_per_class`` of the test file),
    the exposure folder (hard links to the first ``exposure_per_class`` training images of each exposure class) and
    the first ``test_per_class`` test images of every other class; and ``supervised.csv``: the training images
    of the stand-in's classes and the first ``exposure_per_class`` training images of every other class under its
    own Fashion-MNIST name; ``background.csv``: the same images of the stand-in's classes and the exposure images
    labelled :data:`BACKGROUND` (both for :func:`labelled_rows`).

    With ``pretrain_per_class``, also ``pretrain.csv``: the stand-in's Fashion-MNIST classes and the exposure
    classes under their own Fashion-MNIST names (five classes by default), ``pretrain_per_class`` training images
    each: for the stand-in's classes those after the validation images, for the exposure classes the first ones.
    No unseen class and no validation or test image is in it."""
    train_files = _by_class(load_dataset(data / "train").samples)
    with open(data / "test_labels.csv", newline="", encoding="utf-8") as handle:
        test_files = _by_class([Sample(data / "test" / f"{row['index']}.jpg", row["label"])
                                for row in csv.DictReader(handle)])  # fmt: skip
    pick = lambda files, start, n: [Sample(p, label) for name, label in IN_DISTRIBUTION.items()  # noqa: E731
                                    for p in _take(files, name, start, n)]
    train_csv = write_manifest(out / "train.csv", pick(train_files, 0, train_per_class))
    val_csv = write_manifest(out / "val.csv", pick(train_files, train_per_class, val_per_class))
    test_csv = write_manifest(out / "test.csv", pick(test_files, 0, test_per_class))
    exposure = out / "exposure"
    shutil.rmtree(exposure, ignore_errors=True)
    for name in exposure_classes:
        (exposure / name).mkdir(parents=True)
        for path in _take(train_files, name, 0, exposure_per_class):
            try:
                os.link(path, exposure / name / path.name)
            except OSError:
                shutil.copyfile(path, exposure / name / path.name)
    others = {name: _take(test_files, name, 0, test_per_class) for name in (*NEAR, *FAR)}
    supervised = write_manifest(out / "supervised.csv", [
        *pick(train_files, 0, train_per_class),
        *(Sample(p, name) for name in (*NEAR, *FAR) for p in _take(train_files, name, 0, exposure_per_class)),
    ])  # fmt: skip
    background = write_manifest(out / "background.csv", [
        *pick(train_files, 0, train_per_class),
        *(Sample(p, BACKGROUND) for name in exposure_classes for p in _take(train_files, name, 0, exposure_per_class)),
    ])  # fmt: skip
    pretrain = None
    if pretrain_per_class:
        after_val = train_per_class + val_per_class
        pretrain = write_manifest(out / "pretrain.csv", [
            *(Sample(p, name) for name in IN_DISTRIBUTION
              for p in _take(train_files, name, after_val, pretrain_per_class)),
            *(Sample(p, name) for name in exposure_classes for p in _take(train_files, name, 0, pretrain_per_class)),
        ])  # fmt: skip
    return Sets(train_csv, val_csv, test_csv, exposure, others, supervised, background, pretrain)


@dataclass(frozen=True)
class Outputs:
    """A model's logits ``(N, C)`` and embeddings ``(N, D)`` (the input of its linear head), float32."""

    logits: np.ndarray
    embeddings: np.ndarray


@torch.inference_mode()
def model_outputs(model: torch.nn.Module, head: torch.nn.Linear, samples: Sequence[Sample],
                  classes: Sequence[str], arch: str, image_size: int) -> Outputs:
    """Logits and embeddings of ``samples`` through gcv classify's preprocessing, in eval mode."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    try:
        loader = DataLoader(EvalImages(samples, classes, default_preprocessing(arch, image_size)), batch_size=128)
        logits = [model(images) for images, _ in loader]
    finally:
        hook.remove()
    return Outputs(torch.cat(logits).float().numpy(), torch.cat(captured).float().numpy())


def _load(run_dir: Path) -> tuple[torch.nn.Module, torch.nn.Linear, tuple[str, ...]]:
    state = load_checkpoint(run_dir / "best.pt")
    model = build_model(state["arch"], len(state["classes"]), weights="none").model
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, model.get_submodule(get_spec(state["arch"]).head), tuple(state["classes"])


def set_rows(val: Outputs, val_targets: np.ndarray, test: Outputs, test_targets: np.ndarray,
             classes: Sequence[str], coverage: float) -> list[dict[str, Any]]:
    """Prediction sets as gcv export fits them, measured on the test images: the validation rows split by
    :func:`~garmentcv.export.exporter.split_held_out` (temperature on one half, split conformal on the other), then
    empirical coverage and mean set size on the test images, overall and per class, for each conformal method,
    marginal and class-conditional. One row per method and option."""
    fit_rows, held_rows = split_held_out(val_targets)
    temperature = decide_temperature(val.logits[fit_rows], val_targets[fit_rows]).temperature or 1.0
    held = softmax(val.logits[held_rows], temperature)
    probs = softmax(test.logits, temperature)
    rows = []
    for method in conformal.METHODS:
        for conditional in (False, True):
            predictor = conformal.fit_conformal(held, val_targets[held_rows], coverage, method, conditional)
            inside = predictor.contains(probs)
            overall = conformal.set_figures(inside, test_targets)
            per_class = conformal.per_class_figures(inside, test_targets, classes)
            rows.append({
                "sets": method, "class_conditional": conditional, "target_coverage": coverage,
                "held_out_images": len(held_rows), "coverage": overall.coverage, "mean_size": overall.mean_size,
                "empty": overall.empty, "ambiguous": overall.ambiguous, "test_images": overall.images,
                "worst_class_gap": max(abs(f.coverage - coverage) for f in per_class.values()),
                **{f"coverage_{name}": f.coverage for name, f in per_class.items()},
            })  # fmt: skip
    return rows


def score_model(run_dir: Path, arch: str, exposed: bool, sets: Sets, image_size: int, recall: float,
                exposure_classes: Sequence[str], coverage: float = conformal.DEFAULT_COVERAGE) -> list[dict[str, Any]]:
    """One row per score method for the model in ``run_dir`` (see the module's docstring), then one per
    prediction-set method (:func:`set_rows`)."""
    model, head, classes = _load(run_dir)
    sample_sets = {"train": load_dataset(sets.train).samples, "val": load_dataset(sets.val).samples,
                   "test": load_dataset(sets.test).samples}  # fmt: skip
    outs = {key: model_outputs(model, head, s, classes, arch, image_size) for key, s in sample_sets.items()}
    targets = {key: np.array([classes.index(s.label) for s in samples]) for key, samples in sample_sets.items()}
    groups = {
        "near": [n for n in NEAR if n not in exposure_classes],
        "far": [n for n in FAR if n not in exposure_classes],
        "exposed": list(exposure_classes),
    }
    by_class = {n: model_outputs(model, head, [Sample(p, classes[0]) for p in sets.others[n]], classes, arch,
                                 image_size) for names in groups.values() for n in names}  # labels unused
    temperature = decide_temperature(outs["val"].logits, targets["val"]).temperature or 1.0
    weight = head.weight.detach().float().numpy()
    bias = head.bias.detach().float().numpy()
    accuracy = {key: float((outs[key].logits.argmax(1) == targets[key]).mean()) for key in ("val", "test")}
    rows = []
    for method in scores.METHODS:
        started = time.perf_counter()
        reference = scores.fit_reference(method, outs["train"].embeddings, targets["train"], outs["train"].logits,
                                         weight, bias)  # fmt: skip
        fit_s = time.perf_counter() - started
        s = {key: scores.score(method, outs[key].logits, outs[key].embeddings, reference, temperature)
             for key in ("val", "test")}
        by_class_s = {n: scores.score(method, o.logits, o.embeddings, reference, temperature)
                      for n, o in by_class.items()}
        s.update({group: np.concatenate([by_class_s[n] for n in names]) for group, names in groups.items() if names})
        timed = [outs["test"], *by_class.values()]  # every test image, one call
        logits, embeddings = np.concatenate([o.logits for o in timed]), np.concatenate([o.embeddings for o in timed])
        started = time.perf_counter()
        scores.score(method, logits, embeddings, reference, temperature)
        per_image_ms = (time.perf_counter() - started) * 1000 / len(logits)
        threshold = scores.fit_threshold(s["val"], recall)
        row: dict[str, Any] = {
            "arch": arch, "exposure": exposed, "method": method,
            "val_accuracy": accuracy["val"], "test_accuracy": accuracy["test"], "temperature": temperature,
            "test_recall": float((s["test"] <= threshold).mean()),
        }  # fmt: skip
        for group in groups:
            if group in s:
                row[f"auroc_{group}"] = scores.auroc(s["test"], s[group])
                row[f"let_through_{group}"] = scores.let_through(s[group], threshold)
        row.update({f"let_through_class_{n}": scores.let_through(v, threshold) for n, v in by_class_s.items()})
        row.update(ms_per_image=per_image_ms, fit_seconds=fit_s,
                   reference_kb=sum(np.asarray(v).nbytes for v in reference.values()) / 1024)
        rows.append(row)
        logger.info("%s %s: AUROC near %.3f far %.3f, let through near %.1f%% far %.1f%%", run_dir.parent.name,
                    method, row.get("auroc_near", float("nan")), row.get("auroc_far", float("nan")),
                    100 * row.get("let_through_near", float("nan")), 100 * row.get("let_through_far", float("nan")))
    for row in set_rows(outs["val"], targets["val"], outs["test"], targets["test"], classes, coverage):
        rows.append({"arch": arch, "exposure": exposed, "method": f"sets-{row['sets']}", **row})
        logger.info("%s %s%s sets: coverage %.3f (target %.2f), mean size %.3f, worst class gap %.3f",
                    run_dir.parent.name, row["sets"], " class-conditional" if row["class_conditional"] else "",
                    row["coverage"], coverage, row["mean_size"], row["worst_class_gap"])
    return rows


def labelled_rows(run_dir: Path, arch: str, sets: Sets, image_size: int, recall: float, method: str,
                  exposure_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The row of a model trained with other images as classes of their own, ``method`` ``"supervised"`` (every
    other class under its own name, ``supervised.csv``) or ``"background"`` (the ``exposure_classes`` as one class,
    ``background.csv``). Its score is the probability it gives the classes that are not the stand-in's,
    ``1 - sum of the stand-in's class probabilities`` (temperature 1), the threshold kept at ``recall`` on the
    validation images; then the shares let through as in :func:`score_model`, the near and far groups without the
    ``exposure_classes`` and those as the exposed group.

    For ``"supervised"`` every test class was seen under its own name: a class it lets through is one the data
    cannot tell from the stand-in's at that recall, whatever the detector."""
    model, head, classes = _load(run_dir)
    known = [classes.index(name) for name in sorted(set(IN_DISTRIBUTION.values()))]

    def outputs(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
        logits = model_outputs(model, head, samples, classes, arch, image_size).logits
        return 1.0 - softmax(logits, 1.0)[:, known].sum(axis=1), logits.argmax(axis=1)

    s, correct = {}, {}
    for key, manifest in (("val", sets.val), ("test", sets.test)):
        samples = load_dataset(manifest).samples
        s[key], predicted = outputs(samples)
        correct[key] = predicted == np.array([classes.index(x.label) for x in samples])
    by_class = {n: outputs([Sample(p, classes[0]) for p in sets.others[n]])[0] for n in (*NEAR, *FAR)}
    threshold = scores.fit_threshold(s["val"], recall)
    row: dict[str, Any] = {
        "arch": arch, "method": method,
        "exposure": "every other class labelled" if method == "supervised" else "as a background class",
        "val_accuracy": float(correct["val"].mean()), "test_accuracy": float(correct["test"].mean()),
        "temperature": 1.0, "test_recall": float((s["test"] <= threshold).mean()),
    }  # fmt: skip
    groups = {"near": [n for n in NEAR if n not in exposure_classes],
              "far": [n for n in FAR if n not in exposure_classes], "exposed": list(exposure_classes)}
    for group, names in groups.items():
        if names:
            other = np.concatenate([by_class[n] for n in names])
            row[f"auroc_{group}"] = scores.auroc(s["test"], other)
            row[f"let_through_{group}"] = scores.let_through(other, threshold)
    row.update({f"let_through_class_{n}": scores.let_through(v, threshold) for n, v in by_class.items()})
    row.update(ms_per_image=0.0, fit_seconds=0.0, reference_kb=0.0)
    logger.info("%s %s: let through near %.1f%% far %.1f%%", arch, method,
                100 * row.get("let_through_near", float("nan")), 100 * row.get("let_through_far", float("nan")))
    return [row]


def run_experiment(work: Path, archs: Sequence[str], exposure_classes: Sequence[str], train_per_class: int,
                   val_per_class: int, test_per_class: int, exposure_per_class: int, epochs: int, image_size: int,
                   batch_size: int, other_weight: float, recall: float, seed: int, source: Path,
                   progress: bool, lr: float = LR, weights: str = "none", pretrain_per_class: int = 0,
                   pretrain_epochs: int = 0, supervised: bool = True,
                   background: bool = True) -> list[dict[str, Any]]:
    """Build the data, train every arch without and with exposure, score every method; returns the rows.

    With ``pretrain_epochs``, each arch is first trained from scratch on ``pretrain.csv`` (:func:`make_sets`) and
    both runs start from that run's ``best.pt`` instead of ``weights``. With ``background`` and ``supervised``,
    each arch is also trained with the exposure classes as one background class and with every other class
    labelled, from the same start, for :func:`labelled_rows`."""
    data = work / "data"
    needed = max(train_per_class + val_per_class + pretrain_per_class, exposure_per_class, test_per_class)
    if not (data / "train").is_dir():
        write_fashion_mnist(data, source, max_per_class=needed, all_classes=True)
    sets = make_sets(data, exposure_classes, train_per_class, val_per_class, test_per_class, exposure_per_class,
                     work / "sets", pretrain_per_class if pretrain_epochs else 0)
    shutil.rmtree(work / "runs", ignore_errors=True)
    rows: list[dict[str, Any]] = []
    for arch in archs:
        init = weights
        if sets.pretrain is not None:
            started = time.perf_counter()
            pretrained = train(TrainConfig(data=sets.pretrain, out=work / "runs" / f"{arch}-pretrain", archs=(arch,),
                                           weights=weights, epochs=pretrain_epochs, image_size=image_size,
                                           batch_size=batch_size, seed=seed, lr=lr), progress=progress)
            pre = pretrained.archs[0]
            logger.info("%s pretrained on %s: validation accuracy %.4f (epoch %d), %.0f s", arch,
                        ", ".join(pretrained.classes), pre.best["accuracy"], pre.best_epoch,
                        time.perf_counter() - started)
            init = str(pre.run_dir / "best.pt")
        for exposed in (False, True):
            folder = work / "runs" / f"{arch}-{'exposure' if exposed else 'plain'}"
            started = time.perf_counter()
            result = train(TrainConfig(
                data=sets.train, val_data=sets.val, out=folder, archs=(arch,), weights=init, epochs=epochs,
                image_size=image_size, batch_size=batch_size, seed=seed, lr=lr,
                other_data=sets.exposure if exposed else None, other_weight=other_weight,
            ), progress=progress).archs[0]  # fmt: skip
            logger.info("%s: validation accuracy %.4f (epoch %d), %.0f s", folder.name, result.best["accuracy"],
                        result.best_epoch, time.perf_counter() - started)
            started_from = "pretrained" if sets.pretrain is not None else Path(init).name if init != "none" else "none"
            rows += [{**r, "train_seconds": result.train_seconds, "init": started_from}
                     for r in score_model(result.run_dir, arch, exposed, sets, image_size, recall, exposure_classes)]
        labelled = [("background", sets.background, exposure_classes)] if background and exposure_classes else []
        labelled += [("supervised", sets.supervised, ())] if supervised else []
        for method, manifest, exposed_to in labelled:
            result = train(TrainConfig(data=manifest, out=work / "runs" / f"{arch}-{method}", archs=(arch,),
                                       weights=init, epochs=epochs, image_size=image_size, batch_size=batch_size,
                                       seed=seed, lr=lr), progress=progress).archs[0]  # fmt: skip
            rows += [{**r, "train_seconds": result.train_seconds, "init": started_from}
                     for r in labelled_rows(result.run_dir, arch, sets, image_size, recall, method, exposed_to)]
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per arch, exposure and score method; the models; the share let through by other class
    (where the rows have it); the prediction sets."""
    score_rows = [r for r in rows if "sets" not in r]
    sets_ = [r for r in rows if "sets" in r]
    lines = ["| arch | exposure | method | AUROC near | AUROC far | let through near | let through far | "
             "let through exposed classes | ID test recall | ms/image | reference KB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    pct = lambda r, k: f"{100 * r[k]:.1f}%" if k in r else "-"  # noqa: E731
    exp = lambda e: e if isinstance(e, str) else "yes" if e else "no"  # noqa: E731
    num = lambda r, k: f"{r[k]:.3f}" if k in r else "-"  # noqa: E731
    for r in score_rows:
        lines.append(f"| {r['arch']} | {exp(r['exposure'])} | {r['method']} | {num(r, 'auroc_near')} | "
                     f"{num(r, 'auroc_far')} | {pct(r, 'let_through_near')} | {pct(r, 'let_through_far')} | "
                     f"{pct(r, 'let_through_exposed')} | {pct(r, 'test_recall')} | {r['ms_per_image']:.4f} | "
                     f"{r['reference_kb']:.0f} |")
    models = {(r["arch"], r["exposure"]): r for r in score_rows}
    lines += ["", "| arch | init | exposure | validation accuracy | test accuracy | temperature | train seconds |",
              "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {a} | {r.get('init', 'none')} | {exp(e)} | {r['val_accuracy']:.4f} | "
              f"{r['test_accuracy']:.4f} | "
              f"{r['temperature']:.3f} | {r['train_seconds']:.0f} |" for (a, e), r in models.items()]
    first = score_rows[0] if score_rows else {}
    names = [k.removeprefix("let_through_class_") for k in first if k.startswith("let_through_class_")]
    if names:
        lines += ["", "| arch | exposure | method | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---:|" * len(names)]
        lines += [f"| {r['arch']} | {exp(r['exposure'])} | {r['method']} | "
                  + " | ".join(pct(r, f"let_through_class_{n}") for n in names) + " |" for r in score_rows]
    if sets_:
        lines += ["", "| arch | exposure | sets | class-conditional | target | coverage | worst class gap | "
                  "mean size | empty | two or more | test images |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['arch']} | {'yes' if r['exposure'] else 'no'} | {r['sets']} | "
                  f"{'yes' if r['class_conditional'] else 'no'} | {r['target_coverage']:.3f} | {r['coverage']:.3f} | "
                  f"{r['worst_class_gap']:.3f} | {r['mean_size']:.3f} | {r['empty']} | {r['ambiguous']} | "
                  f"{r['test_images']} |" for r in sets_]
    return "\n".join(lines) + "\n"


def _names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    wrong = [n for n in names if n not in (*NEAR, *FAR)]
    if wrong:
        raise click.BadParameter(f"{', '.join(wrong)}: not another Fashion-MNIST class; choose from "
                                 f"{', '.join((*NEAR, *FAR))}")  # fmt: skip
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("experiments/unknowns"),
              help="Folder for the data (data/ is reused when present), the sets and the runs.")
@click.option("--tiny", is_flag=True, help="Small settings for a check that it works (about 2 minutes).")
@click.option("--arch", "archs", multiple=True, show_default=", ".join(DEFAULT_ARCHS),
              help="Arch(s) trained from scratch; repeat the option.")
@click.option("--exposure-classes", default=",".join(DEFAULT_EXPOSURE), callback=_names,
              help="Other classes whose training images are --other-data; the rest are never seen.")
@click.option("--train-per-class", type=click.IntRange(min=2), show_default=str(FULL["train_per_class"]),
              help="Training images per Fashion-MNIST class of the stand-in.")
@click.option("--val-per-class", type=click.IntRange(min=2), show_default=str(FULL["val_per_class"]),
              help="Validation images per class (temperature and threshold).")
@click.option("--test-per-class", type=click.IntRange(min=2), show_default=str(FULL["test_per_class"]),
              help="Test images per class, the stand-in's and each other class.")
@click.option("--exposure-per-class", type=click.IntRange(min=1), show_default=str(FULL["exposure_per_class"]),
              help="Exposure images per exposure class.")
@click.option("--epochs", type=click.IntRange(min=1), show_default=str(FULL["epochs"]), help="Training epochs.")
@click.option("--image-size", type=click.IntRange(min=16), default=32, help="Model input side in px.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=LR, help="AdamW learning rate.")
@click.option("--weights", default="none",
              help="Initial weights of every run (gcv train --weights): none, or a pretrained run's best.pt.")
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=0,
              help="Pretrain each arch first on the stand-in's and the exposure classes by their own names (0: no).")
@click.option("--pretrain-per-class", type=click.IntRange(min=1), default=2000,
              help="Pretraining images per class, none of them validation or test images.")
@click.option("--background/--no-background", default=True,
              help="Also train with the exposure classes as one background class, the alternative to exposure.")
@click.option("--supervised/--no-supervised", default=True,
              help="Also train with every other class labelled: the reference no detector is expected to beat.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, help="Training batch (and exposure batch).")
@click.option("--other-weight", type=click.FloatRange(min=0, min_open=True), default=0.5,
              help="Weight of the exposure loss (gcv train --other-weight).")
@click.option("--recall", type=click.FloatRange(0, 1, min_open=True), default=0.95,
              help="In-distribution recall the threshold keeps on the validation images.")
@click.option("--seed", type=int, default=0, help="Seed of every run.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
              help="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist).")
@options.click_shared(repeats=None, quiet=False)
@quiet_option
@verbose_option
@handle_errors
def main(work: Path, tiny: bool, archs: tuple[str, ...], exposure_classes: tuple[str, ...], out: Path,
         name: str | None, quiet: bool, verbose: bool, **given: Any) -> None:
    """Unknown-item scores with and without outlier exposure on Fashion-MNIST; print the table."""
    setup_logging(quiet, verbose)
    chosen = {**(TINY if tiny else FULL), **{k: v for k, v in given.items() if v is not None}}
    archs = archs or chosen.pop("archs", DEFAULT_ARCHS)
    chosen.pop("archs", None)
    begun = results.start("unknowns")
    started = time.perf_counter()
    rows = run_experiment(work, archs, exposure_classes, progress=not quiet, **chosen)
    minutes = (time.perf_counter() - started) / 60
    text = table(rows) + (f"\nExposure classes: {', '.join(exposure_classes)}. Wall time {minutes:.1f} min "
                          f"({torch.get_num_threads()} torch threads).\n")  # fmt: skip
    results.write(begun, rows, out, name, markdown=text)
    if not quiet:
        click.echo(text)


if __name__ == "__main__":
    sys.exit(main())
