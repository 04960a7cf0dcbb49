"""Out-of-sample predicted probabilities by K-fold training: K fine-tunings of a gcv train checkpoint's network, each
on K-1 stratified folds of the labelled images, each scoring the fold it did not see (``gcv data audit --probs
kfold-training``).

Confident learning (Northcutt, Jiang and Chuang 2021, "Confident Learning: Estimating Uncertainty in Dataset Labels",
JAIR 70) needs, for every image, predicted probabilities from a model that was not trained on its label, and obtains
them by K-fold cross-validation. :func:`kfold_training_probs` is that method with the whole network trained per
fold; :func:`garmentcv.curate.audit.out_of_sample_probs` is the cheap one, a linear head on embeddings.

Needs torch (the ``[train]`` extra); it is imported inside the functions, so importing this module does not.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from garmentcv.errors import DatasetError
from garmentcv.train.config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR

logger = logging.getLogger(__name__)


def checkpoint_classes(checkpoint: Path) -> tuple[str, ...]:
    """The class names of the gcv train checkpoint ``checkpoint``, in index order.

    Raises:
        CheckpointError: missing, damaged or not a GarmentCV checkpoint
            (:func:`garmentcv.train.checkpoint.load_checkpoint`).
    """
    from garmentcv.train.checkpoint import load_checkpoint

    return tuple(load_checkpoint(Path(checkpoint))["classes"])


def _write_manifest(path: Path, paths: Sequence[Path], labels: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((str(Path(p).resolve()), label) for p, label in zip(paths, labels, strict=True))


def _check_manifest(path: Path, expected: int) -> None:
    """Refuse a fold manifest that gcv train would read with fewer images than were written (a hidden folder in
    the images' absolute paths makes the manifest reader skip them)."""
    from garmentcv.data.layouts import Layout, load_dataset

    read = load_dataset(path, Layout.CSV)
    if len(read.samples) != expected:
        shown = ", ".join(f"{s.path} ({s.reason})" for s in read.skipped[:3])
        raise DatasetError(f"{expected - len(read.samples)} of the {expected} images of a fold are not read back from "
                           f"its manifest: {shown}; move the dataset out of hidden folders (names starting with '.')")


def kfold_training_probs(paths: Sequence[Path], labels: np.ndarray, classes: Sequence[str], *, checkpoint: Path,
                         folds: int = 5, seed: int = 0, epochs: int = DEFAULT_EPOCHS, work_dir: Path | None = None,
                         image_size: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
                         device: str = "auto", progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Out-of-sample probabilities of every image by K fine-tunings of ``checkpoint``'s network.

    The images are split into ``folds`` stratified folds (scikit-learn's ``StratifiedKFold``, shuffled with
    ``seed``). For each fold, gcv train (:func:`garmentcv.train.loop.train`, its recipe: AdamW at ``lr`` decaying
    per epoch, the default augmentation) trains the checkpoint's arch on the other K-1 folds for ``epochs`` epochs,
    starting from the checkpoint's backbone with a new head (``TrainConfig.weights`` = the checkpoint), with the held
    fold as its validation set; the last epoch is kept whatever the validation says, so the held-out labels choose
    nothing. The held fold is then scored through that run's preprocessing (the checkpoint's, at ``image_size``) and
    its softmax kept. Every image is scored exactly once, by the one network that did not train on it.

    The fold runs are written in a temporary folder made in ``work_dir`` and removed at the end, also on an error.

    Args:
        paths: the N image files, in the order of the rows of the result.
        labels: ``(N,)`` class indices into ``classes``.
        classes: C class names; column order of the result. A class without images gets probability 0.
        checkpoint: a ``best.pt`` or ``last.pt`` written by gcv train: its arch, preprocessing and backbone weights
            are used (its head is not: each fold trains a new head for the classes present in ``labels``).
        folds: K, at least 2 and at most the smallest class's count.
        seed: the seed of the folds' shuffle and of each training (head init, batch order, augmentation).
        epochs: epochs of each fine-tuning.
        work_dir: folder in which the temporary folder of the K runs is made (created if missing); ``None``: the
            system's temporary folder.
        image_size: model input side in px; ``None``: the checkpoint's (its preprocessing's crop).
        batch_size: images per training step (at least 2) and per scoring batch.
        lr: AdamW learning rate of each fine-tuning.
        device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``; training and scoring.
        progress: called with ``(folds done, K)``: ``(0, K)`` before the first training, then after each fold.

    Returns:
        ``float64 (N, C)`` probabilities; each row sums to 1 over the classes present in ``labels``.

    Raises:
        ValueError: ``folds`` below 2, or ``paths`` and ``labels`` of different lengths, or a label outside
            ``0..C-1``.
        DatasetError: fewer than 2 classes in ``labels``, or a class with fewer than ``folds`` images; an image
            gcv train cannot read.
        CheckpointError: ``checkpoint`` is missing, damaged or not a GarmentCV checkpoint.
        WeightsError, InputSizeError, GarmentCVError: from gcv train (:func:`garmentcv.train.loop.train`).
    """
    import torch
    from sklearn.model_selection import StratifiedKFold
    from torch.utils.data import DataLoader

    from garmentcv.data.layouts import Sample
    from garmentcv.image import Preprocessing
    from garmentcv.models.registry import build_model
    from garmentcv.train.checkpoint import load_checkpoint
    from garmentcv.train.config import TrainConfig
    from garmentcv.train.data import EvalImages
    from garmentcv.train.loop import select_device, train

    classes = tuple(classes)
    labels = np.asarray(labels, dtype=np.int64)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if labels.shape != (len(paths),):
        raise ValueError(f"labels must be of shape ({len(paths)},) like paths, got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels must be class indices in 0..{len(classes) - 1}, got {labels.min()}..{labels.max()}")
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2 or counts.min() < folds:
        given = {classes[c]: int(n) for c, n in zip(present, counts, strict=True)}
        raise DatasetError(f"K-fold training with {folds} folds needs at least 2 classes of at least {folds} images "
                           f"each, got {given}; add images or lower the folds")
    source = load_checkpoint(Path(checkpoint))
    arch, weights = source["arch"], str(Path(checkpoint).resolve())
    size = image_size or Preprocessing.from_dict(source["preprocessing"]).crop
    names = [classes[c] for c in labels]
    scoring = select_device(device)
    probs = np.zeros((len(paths), len(classes)), dtype=np.float64)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="gcv-kfold-", dir=work_dir))
    try:
        if progress is not None:
            progress(0, folds)
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
        for fold, (fit, held) in enumerate(splits):
            manifests = {}
            for name, rows in (("train", fit), ("held", held)):
                manifests[name] = folder / f"{name}{fold}.csv"
                _write_manifest(manifests[name], [paths[i] for i in rows], [names[i] for i in rows])
                _check_manifest(manifests[name], len(rows))
            logger.info("fold %d/%d: training %s on %d images for %d epochs, scoring %d", fold + 1, folds, arch,
                        len(fit), epochs, len(held))
            run = train(TrainConfig(data=manifests["train"], val_data=manifests["held"], out=folder / f"run{fold}",
                                    archs=(arch,), weights=weights, epochs=epochs, image_size=size,
                                    batch_size=batch_size, seed=seed, lr=lr, device=device),
                        progress=False).archs[0]
            state = load_checkpoint(run.run_dir / "last.pt")  # the last epoch: the held-out labels chose nothing
            network = build_model(arch, len(state["classes"]), weights="none").model
            network.load_state_dict(state["state_dict"])
            network.to(scoring).eval()
            images = EvalImages([Sample(Path(paths[i]), names[i]) for i in held], state["classes"],
                                Preprocessing.from_dict(state["preprocessing"]))
            with torch.no_grad():
                logits = torch.cat([network(x.to(scoring)).float().cpu()
                                    for x, _ in DataLoader(images, batch_size=batch_size)])
            columns = [classes.index(c) for c in state["classes"]]  # the run's classes: those present, sorted
            probs[np.ix_(held, columns)] = torch.softmax(logits.double(), dim=1).numpy()
            if progress is not None:
                progress(fold + 1, folds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return probs
