"""``gcv-classify --engine ray``: the same rows as the local engine, computed by a pool of Ray Data actors.

What runs where:

* The driver (the ``gcv-classify`` process) lists the source (:mod:`garmentcv.infer.sources`), reuses the rows of
  an interrupted run (``--resume``), and writes every row, in order, to the same partial results as the local
  engine (:class:`garmentcv.infer.classify.ClassifyRun`), flushed batch by batch, then the output file,
  atomically. Rows already saved survive a dead driver or cluster; ``--resume`` classifies only the rest.
* Workers are :class:`ClassifyWorker` actors in ``Dataset.map_batches``: each opens ONE onnxruntime session in
  its constructor (``intra_op_num_threads`` = its CPUs, ``--cpus-per-worker``) and keeps it for its lifetime;
  it fetches and decodes its images itself with the shared image contract into the input the model file declares
  (uint8 crops of :func:`garmentcv.image.load_crop` for format 2, :func:`garmentcv.image.load_input`'s floats for
  format 1, through :func:`garmentcv.infer.pipeline.predict_batches`), so probabilities equal the local engine's (within
  1e-6: onnxruntime's sums may differ in the last bits with another thread count) and bad files give the same
  error rows. Only file names go to the workers and only probabilities come back; image bytes never pass
  through the driver.
* The model file travels to the workers through Ray's object store (its bytes), so cluster nodes need no copy
  of it. Local files must be readable at the same absolute path on every node (a shared file system); object
  storage needs its credentials on every node (see :mod:`garmentcv.infer.sources`).
* A worker that dies is restarted by Ray Data (actors run with ``max_restarts=-1`` and
  ``max_task_retries=-1``, Ray Data's defaults) and its blocks are retried, so the output still has exactly one
  row per file.

Ray is an optional extra (``pip install 'garmentcv[ray]'``; tested with the version pinned in constraints.txt:
Ray renamed the actor-pool arguments across versions, ``concurrency=`` being deprecated since 2.51 for
``compute=ActorPoolStrategy(size=N)``). Importing this module does not import Ray.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from garmentcv import cpus as _cpus
from garmentcv.cli_utils import plural
from garmentcv.errors import GarmentCVError
from garmentcv.infer.classify import (
    ClassifyConfig,
    ClassifyRun,
    ClassifySummary,
    ClassifyUsageError,
    open_checked_source,
)
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.pipeline import Prediction, predict_batches
from garmentcv.infer.rows import Row
from garmentcv.infer.sources import File, decode_file, encode_file
from garmentcv.installs import MissingRuntimeError

logger = logging.getLogger(__name__)

RAY_HINT = "pip install 'garmentcv[ray]'"
#: Rows per Ray block, in batches, at most: a block is the unit a worker takes and Ray retries.
BATCHES_PER_BLOCK = 4


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs.

    Attributes:
        address: the Ray cluster: ``auto`` (the one started on this machine with ``ray start``), ``HOST:PORT`` of
            its head, or ``ray://HOST:10001`` (Ray Client). ``None``: ``RAY_ADDRESS`` when set, else a new Ray
            instance on this machine with :func:`garmentcv.cpus.available_cpus` CPUs, stopped at the end. A
            process already connected to Ray (``ray.init`` called) keeps its connection.
        num_workers: actors in the pool; ``None``: the cluster's CPUs // ``cpus_per_worker`` (at least 1).
        cpus_per_worker: CPUs each actor reserves, = its onnxruntime intra-op threads and decoding threads.
    """

    address: str | None = None
    num_workers: int | None = None
    cpus_per_worker: int = 1


class RayEngineError(GarmentCVError, RuntimeError):
    """Ray could not be reached, or its workers failed in a way a retry did not mend."""


def import_ray() -> Any:
    """``ray`` with ``ray.data``, or a :class:`MissingRuntimeError` naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingRuntimeError(
            f"--engine ray needs Ray, which is not installed: {RAY_HINT} (or use the default --engine local)"
        ) from exc
    return ray


class ClassifyWorker:
    """A Ray Data actor: one model session for its lifetime, batches of files in, probabilities out.

    Args:
        model_bytes: the ONNX file's bytes.
        threads: onnxruntime intra-op threads and decoding threads (the actor's CPUs).
        temperature: the logits are divided by it before the softmax.
    """

    def __init__(self, model_bytes: bytes, threads: int, temperature: float) -> None:
        from garmentcv.infer.session import open_model

        with tempfile.TemporaryDirectory(prefix="gcv-ray-") as tmp:  # onnxruntime keeps the model in memory
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model_bytes)
            self.model = open_model(path, "cpu", threads)
        self.threads = threads
        self.temperature = temperature
        self.width = len(self.model.info.classes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"idx": int64 (N,), "file": bytes (N,)}`` -> ``{"idx", "probs": float64 (N, C) (NaN on an error
        row), "error": str (N,) ("" when classified)}``."""
        files = [decode_file(bytes(b)) for b in batch["file"]]
        probs = np.full((len(files), self.width), np.nan)
        errors = np.array([""] * len(files), dtype=object)
        items: list[tuple[File | None, int]] = [(file, i) for i, file in enumerate(files)]
        for predictions in predict_batches(self.model, items, batch_size=max(1, len(items)), workers=self.threads,
                                           temperature=self.temperature):
            for p in predictions:
                if p.error is not None:
                    errors[p.item] = p.error
                else:
                    probs[p.item] = p.probs
        return {"idx": batch["idx"], "probs": probs, "error": errors}


def _connect(ray: Any, options: RayOptions) -> bool:
    """Connect to (or start) Ray; True when this call started the connection (and so must end it).

    Raises:
        RayEngineError: the cluster cannot be reached.
    """
    if ray.is_initialized():
        logger.info("using the Ray connection this process already has")
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine unless asked for
    address = options.address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=_cpus.available_cpus(), include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = address or "a new local instance"
        raise RayEngineError(
            f"cannot start or reach Ray ({where}): {exc}; start a cluster with 'ray start --head' and pass "
            "--address auto (or HOST:PORT, ray://HOST:10001), or leave --address out for a local instance"
        ) from exc
    logger.info("Ray: %s", ray.cluster_resources())
    return True


def _results(ray: Any, cfg: ClassifyConfig, options: RayOptions, workers: int, todo: list[tuple[int, File]],
             temperature: float) -> Iterator[tuple[int, np.ndarray, str]]:
    """``(index into the run's items, probs, error)`` for each file of ``todo``, in the order of ``todo``."""
    import pyarrow as pa

    # Blocks of a few batches, fewer rows when that leaves a worker idle (a small job, the tail of a resumed one).
    rows_per_block = min(cfg.batch_size * BATCHES_PER_BLOCK, max(cfg.batch_size, -(-len(todo) // workers)))
    blocks = [
        pa.table({"idx": pa.array([i for i, _ in chunk], pa.int64()),
                  "file": pa.array([encode_file(f) for _, f in chunk], pa.binary())})
        for chunk in (todo[k:k + rows_per_block] for k in range(0, len(todo), rows_per_block))
    ]
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True  # rows come back in the order given: the partial stays sorted
    context.enable_progress_bars = False  # the driver's own bar counts rows saved
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    if not cfg.progress:  # -q: Ray Data's per-dataset info lines too
        data_logger.setLevel(logging.WARNING)
    try:
        dataset = ray.data.from_arrow(blocks).map_batches(
            ClassifyWorker,
            fn_constructor_kwargs={"model_bytes": Path(cfg.model).read_bytes(), "threads": options.cpus_per_worker,
                                   "temperature": temperature},
            batch_size=cfg.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.cpus_per_worker,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield from zip(batch["idx"].tolist(), batch["probs"], batch["error"].tolist())
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        data_logger.setLevel(level)


def _batches(items: list[tuple[File | None, Row]], results: Iterator[tuple[int, np.ndarray, str]],
             batch_size: int) -> Iterator[list[Prediction[Row]]]:
    """The predictions of ``items`` in order: reused rows passed through, the others from ``results``."""
    batch: list[Prediction[Row]] = []
    for i, (file, row) in enumerate(items):
        if file is None:
            batch.append(Prediction(row, passed=True))
        else:
            idx, probs, error = next(results)
            if idx != i:
                raise RayEngineError(f"Ray returned the row of item {idx} where item {i} was expected (a bug)")
            batch.append(Prediction(row, error=error) if error else Prediction(row, probs=np.asarray(probs)))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if next(results, None) is not None:  # also ends Ray's iterator cleanly before the connection is closed
        raise RayEngineError("Ray returned more rows than files were given (a bug)")
    if batch:
        yield batch


def classify_ray(cfg: ClassifyConfig, options: RayOptions = RayOptions(),
                 on_batch: Callable[[int], None] | None = None) -> ClassifySummary:
    """Classify ``cfg.folder`` (folder, manifest or object-storage prefix) into ``cfg.out`` on Ray.

    Same inputs, rows, order, formats, partial results and ``resume`` as
    :func:`garmentcv.infer.classify.classify_folder` (see the module docstring for what runs where).
    ``cfg.threads`` and ``cfg.workers`` are not used: each worker gets ``options.cpus_per_worker`` of both.

    Args:
        cfg: the run's settings (``provider`` must be ``auto`` or ``cpu``: workers run on CPUs).
        options: the cluster and the pool.
        on_batch: as for :func:`~garmentcv.infer.classify.classify_folder`.

    Raises:
        MissingRuntimeError: Ray (or pyarrow) is not installed.
        RayEngineError: Ray cannot be reached, or a worker failed beyond Ray's retries.
        ClassifyUsageError: ``provider="cuda"``; and everything :func:`classify_folder` raises before any work.
        KeyboardInterrupt: passed on after the rows so far are saved.
    """
    start = time.perf_counter()
    if cfg.provider == "cuda":
        raise ClassifyUsageError("--engine ray runs its workers on CPUs; use --provider auto or cpu")
    if options.cpus_per_worker < 1 or (options.num_workers is not None and options.num_workers < 1):
        raise ClassifyUsageError("--num-workers and --cpus-per-worker must be at least 1")
    ray = import_ray()
    source = open_checked_source(cfg)
    run = ClassifyRun(cfg, source, read_model_info(Path(cfg.model)))
    items = list(run.items())
    todo = [(i, file) for i, (file, _) in enumerate(items) if file is not None]
    workers = options.num_workers or 1
    bar = tqdm(desc="classify", unit="img", file=sys.stderr, disable=None if cfg.progress else True, dynamic_ncols=True)
    started = False
    try:
        if todo:
            started = _connect(ray, options)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            workers = options.num_workers or max(1, cpus // options.cpus_per_worker)
            logger.info("classifying %s on %s of %s", plural(len(todo), "file"), plural(workers, "Ray worker"),
                        plural(options.cpus_per_worker, "CPU"))
            results = _results(ray, cfg, options, workers, todo, run.temperature)
        else:
            results = iter(())
        try:
            run.save(_batches(items, results, cfg.batch_size), on_batch, progress=bar.update)
        except ray.exceptions.RayError as exc:
            raise RayEngineError(
                f"the Ray workers failed: {exc}; the rows done so far are saved in {run.partial.dir}: fix the cause "
                "and run again with --resume"
            ) from exc
    finally:
        bar.close()
        if started:
            ray.shutdown()
    return run.finish(start, "cpu", options.cpus_per_worker, options.cpus_per_worker)
