"""Data-parallel training under ``torchrun``: the process group, sharded data, reduced figures.

``torchrun --nproc_per_node=N -m garmentcv.train DATA ...`` starts N copies of gcv train and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address) in their environment. When ``WORLD_SIZE > 1``,
:func:`process_group` joins the processes (gloo on the CPU, nccl on CUDA, one GPU per local rank) and
:class:`Dist` is this process's view of them; with ``WORLD_SIZE`` 1 or unset every helper is a no-op, so
the training loop has one code path. What each part does, after torchvision's ``references/classification``
and timm's ``train.py``:

- **Batches.** ``--batch-size`` is per process: a step trains on ``batch_size x world_size`` images and the
  gradients are averaged by DistributedDataParallel. Each epoch's training images are shared out by a
  :class:`~torch.utils.data.DistributedSampler` seeded with ``--seed`` and ``set_epoch(epoch)``, which pads the
  last round with repeated images so every process takes the same number of steps; augmentation is seeded per
  process from ``(seed, epoch, rank)``.
- **BatchNorm** keeps per-process batch statistics (DDP's default, torchvision's without ``--sync-bn``): each
  process normalises with its own batch, and DDP copies rank 0's running statistics to the others at every
  forward. :meth:`Dist.sync_buffers` copies them once more after an epoch's last step, so every process then
  holds exactly the weights that rank 0 saves. ``SyncBatchNorm`` is not offered: torch runs it on GPUs only,
  and it adds an all-reduce per BatchNorm layer per step, which pays only with a few images per process.
- **Validation** gives every image to exactly one process (``val[rank::world_size]``, no padding), each counts
  its confusion matrix and loss sum, and :meth:`Dist.sum` adds the counts: figures are computed from the
  summed matrix (counts, not means), so they equal a single-process evaluation of the same weights.
- **Files.** The run folder is rank 0's alone: it writes every file, reads ``last.pt`` on ``--resume`` and
  broadcasts it, so ``--out`` need not be on a shared file system (DATA must be readable by every process,
  at the same path). Other ranks show no progress or logs, only their errors.
- **Failures.** A collective that waits longer than ``GCV_DIST_TIMEOUT_S`` seconds (default 1800) fails
  with :class:`DistributedError`, so a stuck or dead process ends the job instead of hanging it; torchrun
  stops the other processes when one exits with an error. A process whose collective fails because another
  exited says so (:func:`collective_failure_message`); the other's own error says why.
- **Restarts.** ``torchrun --max-restarts N ... --resume auto``: every attempt runs the same command line; the
  first starts the run, each later one continues it from the last epoch rank 0 saved (``last.pt``). On one
  node each attempt joins through keys of its own in torchrun's rendezvous store (:func:`_init_process_group`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from garmentcv.data.layouts import Sample
from garmentcv.errors import CheckpointError, DatasetError, GarmentCVError
from garmentcv.image import Preprocessing
from garmentcv.metrics import ClassificationMetrics, classification_metrics
from garmentcv.train.config import TrainConfig
from garmentcv.train.data import BadImage, EvalImages, Split, TrainImages, find_bad_images, train_transform
from garmentcv.train.recipe import sampler_weights

logger = logging.getLogger(__name__)

#: Environment variable: seconds a collective may wait for the other processes before the job fails.
TIMEOUT_ENV = "GCV_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
#: Added per rank to an epoch's seed, so that processes draw different augmentations.
_RANK_SEED_STRIDE = 1_000_003


class DistributedError(GarmentCVError, RuntimeError):
    """The processes of a torchrun job cannot work together: bad launch environment, or a collective failed."""


@dataclass(frozen=True)
class LaunchInfo:
    """What torchrun told this process in its environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Without torchrun: rank 0 of 1. ``rank`` is global (0..world_size-1), ``local_rank`` the index on its node.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_primary(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def launch_info(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (as set by torchrun) from ``environ`` (default: os.environ).

    Raises:
        DistributedError: a variable is not an integer, or out of range (rank not below world size).
    """
    env = os.environ if environ is None else environ
    values: dict[str, int] = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = env.get(name)
        try:
            values[name] = default if raw in (None, "") else int(raw)
        except ValueError:
            raise DistributedError(f"environment variable {name}={raw!r} is not an integer; "
                                   "start gcv train with torchrun") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(
            f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not describe a process of a job (need "
            "0 <= RANK < WORLD_SIZE); start gcv train with torchrun, which sets them"
        )
    return LaunchInfo(rank, world, local)


def timeout_seconds(environ: Mapping[str, str] | None = None) -> float:
    """The collective timeout, seconds: ``GCV_DIST_TIMEOUT_S`` or :data:`DEFAULT_TIMEOUT_S`.

    Raises:
        DistributedError: the variable is not a positive number.
    """
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds, e.g. 1800")
    return value


@dataclass(frozen=True)
class Dist:
    """This process's place in the job and the collectives the training loop needs.

    With ``world_size`` 1 (no torchrun) no process group exists and every method returns its input.

    Attributes:
        rank, world_size, local_rank: as in :class:`LaunchInfo`.
        device: where this process trains (``cuda:<local_rank>`` under torchrun on CUDA).
        backend: ``gloo`` or ``nccl``; ``""`` for a single process.
        timeout_s: how long a collective may wait, seconds.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        """Whether there are other processes (a process group exists)."""
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        """Rank 0 writes the run folder, logs and shows progress."""
        return self.rank == 0

    def run_record(self, batch_size: int) -> dict[str, Any]:
        """What ``config.json`` records of the job besides the settings: world size and batch per step."""
        return {"world_size": self.world_size, "global_batch_size": batch_size * self.world_size}

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled, tensors included; returned on the CPU)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_primary else None]
        torch_dist.broadcast_object_list(box, src=0, device=self._comm_device)
        return _to_cpu(box[0])

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``tensor`` over the ranks (a new tensor on the CPU, same dtype and shape)."""
        if not self.enabled:
            return tensor.clone()
        work = tensor.to(self._comm_device)
        torch_dist.all_reduce(work, op=torch_dist.ReduceOp.SUM)
        return work.cpu()

    def mean(self, *values: float) -> tuple[float, ...]:
        """Each of ``values`` averaged over the ranks (for per-rank means over equal numbers of images)."""
        if not self.enabled:
            return tuple(values)
        total = self.sum(torch.tensor(values, dtype=torch.float64))
        return tuple(float(v) / self.world_size for v in total)

    def check_same(self, what: str, value: str) -> None:
        """Refuse to go on when ranks see different ``value`` (e.g. a digest of the split).

        Raises:
            DatasetError: names the ranks that differ from rank 0.
        """
        values = self.all_gather(value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise DatasetError(
                f"rank(s) {differ} see different {what} than rank 0: every process must read the same DATA "
                "(same files at the same path on every node); fix the copies and start again"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel over its parameters that now require grad (``model`` alone
        for one process). Wrap again after freezing or unfreezing parameters; DDP's constructor copies rank 0's
        parameters and buffers to every rank, so load a checkpoint into the bare model before wrapping."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank, in place."""
        if not self.enabled:
            return
        for buffer in model.buffers():
            torch_dist.broadcast(buffer.data, src=0)

    @contextlib.contextmanager
    def local_primary_first(self) -> Iterator[None]:
        """Run the block on each node's local rank 0 before the other ranks (e.g. to fill a download cache once)."""
        if self.enabled and self.local_rank != 0:
            self.barrier()
        yield
        if self.enabled and self.local_rank == 0:
            self.barrier()

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.enabled:
            torch_dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


@contextlib.contextmanager
def process_group(device: torch.device, environ: Mapping[str, str] | None = None) -> Iterator[Dist]:
    """Join the torchrun job described by ``environ`` for the duration of the block; yield this process's :class:`Dist`.

    ``device`` is the one :func:`garmentcv.train.loop.select_device` chose: CPU -> gloo; CUDA -> nccl on
    ``cuda:<LOCAL_RANK>``. Without torchrun (``WORLD_SIZE`` 1 or unset) nothing is joined. The group is
    destroyed on leaving the block. A failed or timed-out collective leaves as :class:`DistributedError`
    naming this rank.

    Raises:
        DistributedError: bad launch environment, ``LOCAL_RANK`` without its own CUDA device, the group
            cannot be joined, or a collective failed.
    """
    info = launch_info(environ)
    if not info.distributed:
        yield Dist(device=device)
        return
    timeout = timeout_seconds(environ)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise DistributedError(
                f"rank {info.rank}: LOCAL_RANK {info.local_rank} needs its own GPU, but {count} CUDA device(s) "
                "are visible; start at most that many processes per node (--nproc_per_node), or --device cpu"
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    where = f"rank {info.rank} of {info.world_size}"
    try:
        _init_process_group(backend, timedelta(seconds=timeout), environ)
    except (torch_dist.DistError, RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"{where}: cannot join the torchrun job over {backend} ({_first_line(exc)}); check the rendezvous "
            "address and that every node runs the same command"
        ) from exc
    dist = Dist(info.rank, info.world_size, info.local_rank, device, backend, timeout)
    logger.info("data-parallel: %d processes over %s, this is rank %d on %s",
                info.world_size, backend, info.rank, device)
    try:
        yield dist
    except (torch_dist.DistError, RuntimeError) as exc:
        if not isinstance(exc, torch_dist.DistError) and not _is_comm_failure(exc):
            raise
        raise DistributedError(collective_failure_message(where, exc, timeout)) from exc
    finally:
        torch_dist.destroy_process_group()


def _init_process_group(backend: str, timeout: timedelta, environ: Mapping[str, str] | None = None) -> None:
    """``init_process_group`` over torchrun's environment, in a store of this attempt's own on a one-node restart.

    torchrun (``--max-restarts``) keeps one rendezvous store for every attempt of the job
    (``TORCHELASTIC_USE_AGENT_STORE``), and the addresses the processes of an earlier attempt left in it can
    be read by the next one before they are replaced, so a restarted process connects to a process that is
    gone (https://github.com/pytorch/pytorch/issues/135712). With one torchrun agent every process of an attempt has
    the same ``TORCHELASTIC_RESTART_COUNT``, so the keys go under a prefix of that count. Several agents can count
    restarts differently; there the store stays as torch shares it (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
    in torchrun's environment gives every attempt a fresh store).
    """
    env = os.environ if environ is None else environ
    one_agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and env.get("GROUP_WORLD_SIZE") == "1"
    if not one_agent or "TORCHELASTIC_RESTART_COUNT" not in env:
        torch_dist.init_process_group(backend, timeout=timeout)
        return
    store, rank, world_size = next(torch_dist.rendezvous("env://", timeout=timeout))
    attempt = torch_dist.PrefixStore(f"garmentcv/attempt_{env['TORCHELASTIC_RESTART_COUNT']}", store)
    torch_dist.init_process_group(backend, store=attempt, rank=rank, world_size=world_size, timeout=timeout)


#: Words of the RuntimeErrors that gloo and nccl raise when a peer is gone or a collective times out.
_COMM_FAILURE_MARKERS = ("gloo", "nccl", "c10d", "connection reset", "connection closed", "timed out", "timeout")
#: Words of those errors when another process of the job has exited: its end of a connection closed.
_PEER_GONE_MARKERS = ("connection closed", "connection reset", "broken pipe", "remote worker", "remote process", "peer")
#: Words of those errors when a collective waited longer than the timeout.
_TIMEOUT_MARKERS = ("timed out", "timeout")


def collective_failure_message(where: str, exc: BaseException, timeout: float) -> str:
    """What a failed collective of this process (``where``: ``"rank 0 of 2"``) says, from torch's error ``exc``.

    Another process that exited closes its connections: this process then fails at once, and the message says
    so (the other's own error says why) rather than naming a wait it never did. A collective that waited more
    than ``timeout`` seconds says that, and how to allow longer. Anything else is named as a failed collective.
    """
    text = str(exc).lower()
    detail = re.sub(r"^\[[^\]]*:\d+\]\s*", "", _first_line(exc))  # gloo's "[.../pair.cc:561] " source location
    if any(marker in text for marker in _PEER_GONE_MARKERS):
        return (
            f"{where}: another process of the job exited or failed ({detail}); this one stopped because of it. "
            "The other's own error, in its output or log, says why"
        )
    if any(marker in text for marker in _TIMEOUT_MARKERS):
        return (
            f"{where}: waited more than {timeout:g} s for the other processes in a collective ({detail}); one of "
            f"them is stuck, stopped or much slower. If one is only slow, raise {TIMEOUT_ENV}"
        )
    return (
        f"{where}: a collective with the other processes failed ({detail}). Another process has probably failed "
        "(its error is in its output or log) or stopped"
    )


def _is_comm_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (not a torch DistError) is a failed collective: gloo raises those as plain RuntimeError."""
    text = str(exc).lower()
    return any(marker in text for marker in _COMM_FAILURE_MARKERS)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def rank_seed(epoch_seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s augmentation in the epoch seeded ``epoch_seed`` (rank 0: ``epoch_seed`` itself)."""
    return epoch_seed + _RANK_SEED_STRIDE * rank


class DistributedWeightedSampler(Sampler[int]):
    """``--balanced-sampler`` under DDP: ``ceil(n / world_size)`` indices per rank drawn with replacement by weight.

    Every rank draws the same ``ceil(n / world_size) x world_size`` indices from a generator seeded with
    ``seed + epoch`` (:meth:`set_epoch`) and takes every ``world_size``-th from its rank, like
    :class:`~torch.utils.data.DistributedSampler` does with a permutation.
    """

    def __init__(self, weights: Sequence[float], rank: int, world_size: int, seed: int) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        self.num_samples = math.ceil(len(weights) / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s indices next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples * self.world_size, replacement=True,
                                  generator=generator)
        return iter(drawn[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


def build_loaders(
    split: Split, classes: Sequence[str], pp: Preprocessing, cfg: TrainConfig, epoch: int, epoch_seed: int, dist: Dist
) -> tuple[DataLoader, DataLoader]:
    """This rank's DataLoaders for ``epoch``: its share of the training split and its validation shard.

    Training: a :class:`~torch.utils.data.DistributedSampler` (or :class:`DistributedWeightedSampler` with
    ``cfg.balanced_sampler``) seeded with ``cfg.seed`` and ``set_epoch(epoch)``; every rank gets
    ``ceil(n / world_size)`` images and batches of ``cfg.batch_size``, a last batch of one dropped on every
    rank alike. Augmentation: torch's global RNG and the loader's generator are seeded with
    :func:`rank_seed`. Validation: ``split.val[rank::world_size]``, no padding (a rank may get none).

    Raises:
        DatasetError: fewer than 2 training images per process.
    """
    per_rank = math.ceil(len(split.train) / dist.world_size)
    if per_rank < 2:
        raise DatasetError(
            f"only {len(split.train)} training image(s) after the split for {dist.world_size} processes; need at "
            "least 2 per process (BatchNorm cannot train on one): add images or start fewer processes"
        )
    seed = rank_seed(epoch_seed, dist.rank)
    torch.manual_seed(seed)
    train_images = TrainImages(split.train, classes, train_transform(pp, cfg))
    sampler: DistributedSampler | DistributedWeightedSampler
    if cfg.balanced_sampler:
        targets = [classes.index(s.label) for s in split.train]
        sampler = DistributedWeightedSampler(sampler_weights(targets), dist.rank, dist.world_size, cfg.seed)
    else:
        sampler = DistributedSampler(train_images, dist.world_size, dist.rank, shuffle=True, seed=cfg.seed)
    sampler.set_epoch(epoch)
    train_loader = DataLoader(
        train_images,
        batch_size=cfg.batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        num_workers=cfg.workers,
        drop_last=per_rank % cfg.batch_size == 1,
    )
    val_loader = DataLoader(
        EvalImages(split.val[dist.rank :: dist.world_size], classes, pp), batch_size=cfg.batch_size,
        shuffle=False, num_workers=cfg.workers,
    )  # fmt: skip
    return train_loader, val_loader


def metrics_from_confusion(matrix: np.ndarray) -> ClassificationMetrics:
    """:func:`~garmentcv.metrics.classification_metrics` of the images counted in ``matrix``.

    ``matrix`` is ``(C, C)`` integer counts, row = true class, column = predicted. Every figure depends only on
    these counts, so this equals the metrics of the original ``(true, predicted)`` lists in any order.

    Raises:
        ValueError: the matrix counts no image, or is not square.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"need a square confusion matrix, got shape {matrix.shape}")
    c = matrix.shape[0]
    true, pred = np.divmod(np.repeat(np.arange(c * c), matrix.ravel()), c)
    return classification_metrics(true, pred, c)


@torch.inference_mode()
def evaluate_sharded(
    model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int, dist: Dist
) -> tuple[float, ClassificationMetrics]:
    """Evaluate ``model`` (the bare module, eval mode, float32) on this rank's shard, then add up every rank's counts.

    Returns the same as :func:`garmentcv.train.loop.evaluate` over all ranks' images together: ``(mean
    cross-entropy per image, metrics)``; the metrics come from the summed confusion matrix and equal a
    single-process evaluation; the loss sum is added in another order, so it may differ in the last bits.
    """
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss_sum = 0.0
    counts = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images)
        loss_sum += float(criterion(logits, targets))
        pairs = targets.cpu() * num_classes + logits.argmax(1).cpu()
        counts += torch.bincount(pairs, minlength=num_classes * num_classes)
    total_loss = float(dist.sum(torch.tensor([loss_sum], dtype=torch.float64))[0])
    matrix = dist.sum(counts).view(num_classes, num_classes).numpy()
    n = int(matrix.sum())
    return total_loss / max(n, 1), metrics_from_confusion(matrix)


def find_bad_images_sharded(samples: Sequence[Sample], progress: bool, dist: Dist) -> list[BadImage]:
    """:func:`~garmentcv.train.data.find_bad_images` with the decoding shared out: rank r checks
    ``samples[r::world_size]``; every rank gets the whole list, in the order of ``samples``."""
    if not dist.enabled:
        return find_bad_images(samples, progress)
    mine = find_bad_images(samples[dist.rank :: dist.world_size], progress)
    found = [b for part in dist.all_gather(mine) for b in part]
    order = {s.path: i for i, s in enumerate(samples)}
    return sorted(found, key=lambda b: order[b.sample.path])


def split_digest(split: Split) -> str:
    """A short digest of the split's files and labels, to check that every rank sees the same data."""
    digest = hashlib.sha256()
    for side, samples in (("train", split.train), ("val", split.val)):
        for s in samples:
            digest.update(f"{side}\0{s.path}\0{s.label}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def check_resume_world_size(config_json: Path, world_size: int) -> None:
    """Refuse ``--resume`` of a run trained by another number of processes (none recorded: 1).

    The training images each process sees and the batches' order depend on the world size, so another one
    would not continue the same run.

    Raises:
        CheckpointError: the run's ``world_size`` differs; says how to resume or start anew.
    """
    stored = json.loads(config_json.read_text(encoding="utf-8")).get("world_size", 1)
    if stored != world_size:
        how = ("plain gcv train (no torchrun)" if stored == 1
               else f"torchrun with {stored} processes in all (--nnodes x --nproc_per_node)")
        raise CheckpointError(
            f"{config_json.parent}: the run was trained by {stored} process(es) (world size {stored}), this job has "
            f"{world_size}; the batches depend on the world size, so resume with {how}, or start a new --out"
        )
