"""``gcv classify --engine ray``: the same rows as the local engine, computed by a pool of Ray actors.

What runs where:

* The driver (the ``gcv classify`` process) lists the source (:mod:`garmentcv.infer.sources`), reuses the rows of
  an interrupted run (``--resume``), cuts the stream of files into blocks, hands them to the workers and writes
  every row, in order, to the same partial results as the local engine
  (:class:`garmentcv.infer.classify.ClassifyRun`), flushed batch by batch, then the output file, atomically.
  Rows already saved survive a dead driver or cluster; ``--resume`` classifies only the rest.
* Bounded memory: the driver reads files from the source only a window ahead of the rows it has saved,
  :data:`BLOCKS_PER_WORKER` blocks per worker (:func:`window_files`: 3,072 files for 8 workers at the default
  batch size), so its memory does not grow with the number of files.
* Workers are :class:`ClassifyWorker` actors: each opens ONE onnxruntime session in its constructor
  (``intra_op_num_threads`` = its CPUs, ``--cpus-per-worker``) and keeps it for its lifetime, with up to
  :data:`TASKS_PER_WORKER` blocks queued on it; it fetches and decodes its images itself with the shared image
  contract into the input the model file declares (uint8 crops of :func:`garmentcv.image.load_crop` for format 2,
  :func:`garmentcv.image.load_input`'s floats for format 1, through
  :func:`garmentcv.infer.pipeline.predict_batches`), so probabilities equal the local engine's (within 1e-6:
  onnxruntime's sums may differ in the last bits with another thread count) and bad files give the same error
  rows. Only file names go to the workers and only probabilities come back; image bytes never pass through the
  driver.
* The model file travels to the workers through Ray's object store (its bytes), so cluster nodes need no copy
  of it. Local files must be readable at the same absolute path on every node (a shared file system); object
  storage needs its credentials on every node (see :mod:`garmentcv.infer.sources`).
* A worker that dies (a decoder crash, the out-of-memory killer, a lost node) is replaced by a fresh one, and each
  block it held is split in two halves, each classified again by a worker with no other task, half after half,
  until the file that kills its worker is alone: a file whose worker dies :data:`SINGLE_FILE_TRIES` times with it
  alone gets an error row, :data:`WORKER_DIED`, and every other file its row. Ray itself neither restarts a worker
  nor retries a block (``max_restarts=0``, ``max_task_retries=0``): it would retry a block that kills its worker
  forever. Workers that keep dying with no block classified (:func:`deaths_allowed` times in a row: a model the
  workers cannot open, too little memory for one block) stop the run with the rows so far saved.

Ray is an optional extra (``pip install 'garmentcv[ray]'``; tested with the version pinned in constraints.txt).
Importing this module does not import Ray.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from garmentcv import cpus as _cpus
from garmentcv.artifact import CAM_NAME
from garmentcv.errors import GarmentCVError
from garmentcv.infer.classify import (
    ClassifyConfig,
    ClassifyRun,
    ClassifySummary,
    check_config,
    open_checked_source,
)
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.partial import WORKER_DIED
from garmentcv.infer.pipeline import Prediction, predict_batches
from garmentcv.infer.rows import Row
from garmentcv.infer.sources import (
    DEFAULT_READ_RETRY,
    File,
    ReadRetry,
    decode_file,
    encode_file,
)
from garmentcv.installs import MissingRuntimeError, pip_install
from garmentcv.text import plural

logger = logging.getLogger(__name__)

RAY_HINT = pip_install("ray")
#: Rows per block, in batches, at most: a block is what one worker classifies in one call.
BATCHES_PER_BLOCK = 4
#: Blocks queued on one worker at most (it runs the first; the next is there when it is done).
TASKS_PER_WORKER = 2
#: Blocks the driver holds per worker: those queued on it and one done, waiting to be saved after the rows before it.
BLOCKS_PER_WORKER = TASKS_PER_WORKER + 1
#: Times a file must kill its worker while it is classified alone before it gets a :data:`WORKER_DIED` row.
SINGLE_FILE_TRIES = 2


def window_files(workers: int, rows_per_block: int) -> int:
    """Items (files to classify and reused rows) the driver holds at most: :data:`BLOCKS_PER_WORKER` blocks of
    ``rows_per_block`` per worker."""
    return BLOCKS_PER_WORKER * workers * rows_per_block


def deaths_allowed(workers: int) -> int:
    """Worker deaths in a row, with no block classified in between, after which the run stops (a model that kills
    every worker opening it, too little memory for any block): room for every worker to die twice at once (a lost
    node) and for a few neighbouring files that kill their workers."""
    return 2 * workers + 8


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
    """``ray``, or a :class:`MissingRuntimeError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingRuntimeError(
            f"--engine ray needs Ray, which is not installed: {RAY_HINT} (or use the default --engine local)"
        ) from exc
    return ray


class ClassifyWorker:
    """A Ray actor: one model session for its lifetime, blocks of files in, probabilities out.

    Args:
        model_bytes: the ONNX file's bytes; the session is built from them in memory, so a worker writes no file.
        threads: onnxruntime intra-op threads and decoding threads (the actor's CPUs).
        temperature: the logits are divided by it before the softmax.
        read_retry: how a failed object read is tried again (``ClassifyConfig.read_retry``).
        fetch_threads: threads fetching objects of an object-storage source (``ClassifyConfig.fetch_threads``).
        name: the model file's path on the driver, which names the model in messages.
    """

    def __init__(self, model_bytes: bytes, threads: int, temperature: float,
                 read_retry: ReadRetry = DEFAULT_READ_RETRY, fetch_threads: int | None = None,
                 name: str = "model.onnx") -> None:
        from garmentcv.infer.runtimes.onnxruntime import open_model

        self.model = open_model(Path(name), "cpu", threads, data=model_bytes)
        self.threads = threads
        self.temperature = temperature
        self.read_retry = read_retry
        self.fetch_threads = fetch_threads
        self.width = len(self.model.info.classes)

    def ready(self) -> None:
        """Returns once the model is open (the constructor has run)."""

    def classify(self, files: list[bytes]) -> tuple[np.ndarray, list[str], list[dict[str, np.ndarray]]]:
        """Files (:func:`garmentcv.infer.sources.encode_file`) -> ``(probs float64 (N, C)`` (NaN on an error row),
        ``errors`` (``""`` when classified), ``extras`` (each file's other outputs by name, as
        :attr:`garmentcv.infer.pipeline.Prediction.extras`, but never ``cam``; empty on an error row)) in the order
        given."""
        items: list[tuple[File | None, int]] = [(decode_file(b), i) for i, b in enumerate(files)]
        probs = np.full((len(items), self.width), np.nan)
        errors = [""] * len(items)
        extras: list[dict[str, np.ndarray]] = [{} for _ in items]
        for predictions in predict_batches(self.model, items, batch_size=max(1, len(items)), workers=self.threads,
                                           temperature=self.temperature, fetch_threads=self.fetch_threads,
                                           read_retry=self.read_retry):
            for p in predictions:
                if p.error is not None:
                    errors[p.item] = p.error
                else:
                    probs[p.item] = p.probs
                    # the maps are for report pages, which compute their own: not shipped back per row
                    extras[p.item] = {name: np.array(value) for name, value in p.extras.items() if name != CAM_NAME}
        return probs, errors, extras


class _TokenAuthNotice(logging.Filter):
    """Drops Ray's notice that the cluster uses token authentication (Ray's default for a new local instance): said
    on every healthy run; other authentication messages (such as its warning that it is disabled) pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


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
    auth_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _TokenAuthNotice()
    auth_logger.addFilter(notice)
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
    finally:
        auth_logger.removeFilter(notice)
    logger.info("Ray: %s", ray.cluster_resources())
    return True


class _Block:
    """Consecutive items of the run (files to classify and reused rows) and, as they come, the files' results."""

    def __init__(self) -> None:
        self.items: list[tuple[File | None, Row]] = []
        self.files: list[int] = []  # indexes into items of the files to classify
        self.probs: list[np.ndarray | None] = []
        self.errors: list[str | None] = []
        self.extras: list[dict[str, np.ndarray]] = []
        self.left = 0  # files without a result yet

    def add(self, file: File | None, row: Row) -> None:
        if file is not None:
            self.files.append(len(self.items))
            self.probs.append(None)
            self.errors.append(None)
            self.extras.append({})
            self.left += 1
        self.items.append((file, row))

    def encoded(self, lo: int, hi: int) -> list[bytes]:
        """Files ``lo:hi`` (positions among the block's files) as sent to a worker."""
        return [encode_file(self.items[k][0]) for k in self.files[lo:hi]]  # type: ignore[arg-type]

    def name(self, position: int) -> str:
        """The row name of the file at ``position`` among the block's files."""
        return str(self.items[self.files[position]][1]["path"])

    def set(self, lo: int, probs: np.ndarray, errors: list[str],
            extras: list[dict[str, np.ndarray]] | None = None) -> None:
        """The results of files ``lo:lo + len(errors)`` (``extras``: their other outputs, or ``None`` for none).

        Raises:
            RayEngineError: as many results as files were not returned (a bug).
        """
        if len(errors) != len(probs) or lo + len(errors) > len(self.files):
            raise RayEngineError(f"a Ray worker returned {len(errors)} results for other files (a bug)")
        for k, (p, error) in enumerate(zip(probs, errors, strict=True), lo):
            self.probs[k], self.errors[k] = p, error
            self.extras[k] = extras[k - lo] if extras is not None else {}
        self.left -= len(errors)

    def predictions(self) -> Iterator[Prediction[Row]]:
        """The block's predictions in order (reused rows passed through); only once every file has its result."""
        results = iter(zip(self.probs, self.errors, self.extras, strict=True))
        for file, row in self.items:
            if file is None:
                yield Prediction(row, passed=True)
                continue
            probs, error, extras = next(results)
            yield Prediction(row, error=error) if error else Prediction(row, probs=np.asarray(probs), extras=extras)


@dataclass
class _Task:
    """Files ``lo:hi`` of a block (positions among its files), sent to one worker.

    Attributes:
        alone: run on a worker with no other task (a part of a task whose worker died), so that its worker's death
            is its own.
        tries: deaths of a worker running exactly these files alone.
    """

    block: _Block
    lo: int
    hi: int
    alone: bool = False
    tries: int = 0


class _Pool:
    """The workers, the tasks waiting for one, and the replacement of dead workers.

    A worker gets tasks once it has opened the model: up to :data:`TASKS_PER_WORKER` blocks queued on it (so it
    never waits for the driver), or one part of a task whose worker died, alone (so that its death names its
    files). The tasks of a dead worker are split in halves that wait at the front of the queue.

    Args:
        ray: the ``ray`` module, connected.
        new_worker: starts a :class:`ClassifyWorker` actor and returns its handle.
        workers: actors in the pool.
    """

    def __init__(self, ray: Any, new_worker: Callable[[], Any], workers: int) -> None:
        self.ray = ray
        self.new_worker = new_worker
        self.actors: list[Any] = [None] * workers
        self.starting: dict[Any, int] = {}  # ready() call -> slot of a worker opening its model
        self.ready: set[int] = set()  # slots of workers that opened the model
        self.tasks: list[list[_Task]] = [[] for _ in range(workers)]  # each worker's tasks, in the order given
        self.waiting: deque[_Task] = deque()
        self.running: dict[Any, tuple[int, Any, _Task]] = {}  # classify() call -> slot, worker, task
        self.deaths = 0  # in a row, with no task done in between
        self.allowed = deaths_allowed(workers)
        #: What ``ray.get`` raises for a call whose worker process died or became unreachable.
        self.died: tuple[type[BaseException], ...] = (
            ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError,
            ray.exceptions.NodeDiedError,
        )
        for slot in range(workers):
            self._start(slot)

    def add(self, block: _Block) -> None:
        """Queue the files of ``block`` (none: nothing to do) and start what idle workers can take."""
        if block.files:
            self.waiting.append(_Task(block, 0, len(block.files)))
        self.poll()

    def poll(self) -> None:
        """Collect the workers started and the tasks done, and give workers waiting tasks, without waiting."""
        self._dispatch()
        calls = [*self.running, *self.starting]
        if calls:
            ready, _ = self.ray.wait(calls, num_returns=len(calls), timeout=0)
            for ref in ready:
                self._collect(ref)
            self._dispatch()

    def wait(self) -> None:
        """Wait until a task is done or a worker started, collect it and give workers waiting tasks.

        Raises:
            RayEngineError: nothing is running (a bug), or the workers keep dying (see :func:`deaths_allowed`).
            ray.exceptions.RayError: a worker failed otherwise (an error opening the model, a bug in a worker).
        """
        self._dispatch()
        calls = [*self.running, *self.starting]
        if not calls:
            raise RayEngineError("rows are missing while no Ray worker is busy (a bug)")
        ready, _ = self.ray.wait(calls, num_returns=1)
        for ref in ready:
            self._collect(ref)
        self._dispatch()

    def close(self) -> None:
        """Stop the workers (their CPUs go back to the cluster)."""
        for actor in self.actors:
            if actor is not None:
                self.ray.kill(actor)
        self.actors = []

    def _start(self, slot: int) -> None:
        """A new worker in ``slot`` (its predecessor, if any, stopped): given tasks once it has opened the model."""
        if self.actors[slot] is not None:
            self.ray.kill(self.actors[slot])  # dead already, or unreachable: never given another task
        self.ready.discard(slot)
        self.tasks[slot] = []
        self.actors[slot] = self.new_worker()
        self.starting[self.actors[slot].ready.remote()] = slot

    def _free(self, task: _Task) -> int | None:
        """A worker that may take ``task`` now: none busy for a task alone, else the least busy with room."""
        fits = [slot for slot in self.ready
                if not self.tasks[slot] or not (task.alone or self.tasks[slot][0].alone
                                                or len(self.tasks[slot]) >= TASKS_PER_WORKER)]
        return min(fits, key=lambda slot: (len(self.tasks[slot]), slot)) if fits else None

    def _dispatch(self) -> None:
        while self.waiting and (slot := self._free(self.waiting[0])) is not None:
            task = self.waiting.popleft()
            actor = self.actors[slot]
            self.running[actor.classify.remote(task.block.encoded(task.lo, task.hi))] = (slot, actor, task)
            self.tasks[slot].append(task)

    def _collect(self, ref: Any) -> None:
        if ref in self.starting:
            slot, actor, task = self.starting.pop(ref), None, None
        else:
            slot, actor, task = self.running.pop(ref)
        current = actor is None or actor is self.actors[slot]  # not a task of a worker replaced since
        try:
            result = self.ray.get(ref)
        except self.died as exc:
            if getattr(exc, "actor_init_failed", False):
                raise  # an exception opening the model: the same on every worker
            if current:
                self._start(slot)
                self._count_death(exc)
            if task is not None:
                self._redo(task, exc)
            return
        if task is None:
            self.ready.add(slot)
            return
        task.block.set(task.lo, *result)
        self.deaths = 0
        if current:
            self.tasks[slot].remove(task)

    def _count_death(self, exc: BaseException) -> None:
        """Count a dead worker.

        Raises:
            RayEngineError: more than :func:`deaths_allowed` deaths in a row with no task done.
        """
        self.deaths += 1
        if self.deaths > self.allowed:
            raise RayEngineError(
                f"the Ray workers died {self.deaths} times in a row without classifying a block (the last: "
                f"{_first_line(exc)}); they may be unable to open the model or short of memory for a block"
            )

    def _redo(self, task: _Task, exc: BaseException) -> None:
        """Classify the files of a dead worker's task again, alone: in two halves, or the one file again, or give
        it an error row when its worker died :data:`SINGLE_FILE_TRIES` times with it alone."""
        n = task.hi - task.lo
        tries = task.tries + 1 if task.alone else 0
        if n > 1:
            middle = task.lo + n // 2
            logger.warning("a Ray worker died classifying %s from %s (%s); classifying each half again in a worker "
                           "of its own", plural(n, "file"), task.block.name(task.lo), _first_line(exc))
            self.waiting.extendleft([_Task(task.block, middle, task.hi, alone=True),
                                     _Task(task.block, task.lo, middle, alone=True)])
        elif tries < SINGLE_FILE_TRIES:
            self.waiting.appendleft(_Task(task.block, task.lo, task.hi, alone=True, tries=tries))
        else:
            logger.warning("a Ray %s %s alone, %s (a decoder crash or out of memory; %s): its row is an error",
                           WORKER_DIED, task.block.name(task.lo), plural(tries, "time"), _first_line(exc))
            task.block.set(task.lo, np.full((1, 1), np.nan), [WORKER_DIED])  # an error row's probs are not read


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class _Engine:
    """Ray for one run: connected (or started) and its pool made at the first file to classify, closed at the end."""

    def __init__(self, ray: Any, cfg: ClassifyConfig, options: RayOptions, temperature: float) -> None:
        self.ray, self.cfg, self.options, self.temperature = ray, cfg, options, temperature
        self.started = False
        self.pool: _Pool | None = None
        self.workers = 0

    def start(self) -> tuple[_Pool, int]:
        """Connect and start the workers (once); returns the pool and its number of workers.

        Raises:
            RayEngineError: Ray cannot be reached.
        """
        if self.pool is None:
            ray, options = self.ray, self.options
            self.started = _connect(ray, options)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.workers = options.num_workers or max(1, cpus // options.cpus_per_worker)
            actor = ray.remote(num_cpus=options.cpus_per_worker, max_restarts=0, max_task_retries=0)(ClassifyWorker)
            model = ray.put(Path(self.cfg.model).read_bytes())
            self.pool = _Pool(ray, lambda: actor.remote(model, options.cpus_per_worker, self.temperature,
                                                           self.cfg.read_retry, self.cfg.fetch_threads,
                                                           str(self.cfg.model)),
                              self.workers)
        return self.pool, self.workers

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.started:
            self.ray.shutdown()


def _predictions(engine: _Engine, items: Iterable[tuple[File | None, Row]],
                 batch_size: int) -> Iterator[Prediction[Row]]:
    """The predictions of ``items`` in order, reading ``items`` at most :func:`window_files` ahead of the last one
    yielded; Ray is started at the first file to classify (not at all when every row is reused)."""
    stream = iter(items)
    for file, row in stream:
        if file is not None:
            break
        yield Prediction(row, passed=True)
    else:
        return
    pool, workers = engine.start()
    rows_per_block = batch_size * BATCHES_PER_BLOCK
    ahead = deque([(file, row), *itertools.islice(stream, workers * rows_per_block - 1)])
    if len(ahead) < workers * rows_per_block:  # a small job (or the tail of a resumed one): every worker gets some
        files = sum(f is not None for f, _ in ahead)
        rows_per_block = min(rows_per_block, max(batch_size, -(-files // workers)))
    logger.info("classifying on %s of %s, in blocks of up to %s", plural(workers, "Ray worker"),
                plural(engine.options.cpus_per_worker, "CPU"), plural(rows_per_block, "file"))
    held: deque[_Block] = deque()
    most = BLOCKS_PER_WORKER * workers
    block = _Block()
    for file, row in itertools.chain(_drained(ahead), stream):
        block.add(file, row)
        if len(block.items) < rows_per_block:
            continue
        pool.add(block)
        held.append(block)
        block = _Block()
        while held and (held[0].left == 0 or len(held) >= most):
            while held[0].left:
                pool.wait()
            yield from held.popleft().predictions()
    pool.add(block)
    held.append(block)
    while held:
        while held[0].left:
            pool.wait()
        yield from held.popleft().predictions()


def _drained(items: deque[tuple[File | None, Row]]) -> Iterator[tuple[File | None, Row]]:
    """The items of ``items``, each dropped from it as it is given."""
    while items:
        yield items.popleft()


def _batches(predictions: Iterable[Prediction[Row]], batch_size: int) -> Iterator[list[Prediction[Row]]]:
    """``predictions`` in lists of ``batch_size`` (the last one shorter)."""
    stream = iter(predictions)
    while batch := list(itertools.islice(stream, batch_size)):
        yield batch


def classify_ray(cfg: ClassifyConfig, options: RayOptions = RayOptions(),
                 on_batch: Callable[[int], None] | None = None) -> ClassifySummary:
    """Classify ``cfg.folder`` (folder, manifest or object-storage prefix) into ``cfg.out`` on Ray.

    Same inputs, rows, order, formats, partial results and ``resume`` as
    :func:`garmentcv.infer.classify.classify_folder` (see the module docstring for what runs where), except that
    a file whose decoding kills its worker gets the error row :data:`WORKER_DIED`.
    ``cfg.threads`` and ``cfg.workers`` are not used: each worker gets ``options.cpus_per_worker`` of both.

    Args:
        cfg: the run's settings (``provider`` must be ``auto`` or ``cpu``: workers run on CPUs).
        options: the cluster and the pool.
        on_batch: as for :func:`~garmentcv.infer.classify.classify_folder`.

    Raises:
        MissingRuntimeError: Ray is not installed.
        RayEngineError: Ray cannot be reached; the workers failed (an error opening the model) or keep dying
            (:func:`deaths_allowed`); the rows so far are saved for ``--resume``.
        ClassifyUsageError: see :func:`~garmentcv.infer.classify.check_config` (``engine="ray"``: no ``cfg.threads``,
            ``cfg.workers``, ``runtime="openvino"`` or ``provider="cuda"``); and everything :func:`classify_folder`
            raises before any work.
        KeyboardInterrupt: passed on after the rows so far are saved.
    """
    start = time.perf_counter()
    check_config(cfg, engine="ray", ray=options)
    ray = import_ray()
    source = open_checked_source(cfg)
    run = ClassifyRun(cfg, source, read_model_info(Path(cfg.model)))
    try:
        return _classify(ray, cfg, options, run, start, on_batch)
    except BaseException:
        run.close()  # what failed before save() or finish() (Ray unreachable, a listing error): lock released
        raise


def _classify(ray: Any, cfg: ClassifyConfig, options: RayOptions, run: ClassifyRun, start: float,
              on_batch: Callable[[int], None] | None) -> ClassifySummary:
    """:func:`classify_ray` once its run holds the lock."""
    engine = _Engine(ray, cfg, options, run.temperature)
    bar = tqdm(desc="classify", unit="img", file=sys.stderr, disable=None if cfg.progress else True, dynamic_ncols=True)
    try:
        items = run.items()
        first = next(items, None)
        if first is not None and first[0] is not None:  # Ray's errors before any output when there is work
            engine.start()
        stream = itertools.chain([] if first is None else [first], items)
        batches = _batches(_predictions(engine, stream, cfg.batch_size), cfg.batch_size)
        try:
            run.save(batches, on_batch, progress=bar.update)
        except (ray.exceptions.RayError, RayEngineError) as exc:
            if isinstance(exc, RayEngineError) and engine.pool is None:
                raise  # Ray cannot be reached: nothing was sent to it
            failed = exc if isinstance(exc, RayEngineError) else f"the Ray workers failed: {exc}"
            raise RayEngineError(
                f"{failed}; the rows done so far are saved in {run.partial.dir}: fix the cause and run again with "
                "--resume"
            ) from exc
    finally:
        bar.close()
        engine.close()
    return run.finish(start, "cpu", options.cpus_per_worker, options.cpus_per_worker)
