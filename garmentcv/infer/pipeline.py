"""Batched prediction with decoding in parallel with inference (numpy, Pillow, onnxruntime; no torch).

Worker threads decode and preprocess the images of the next batches (the shared image contract: the uint8
crops of :func:`garmentcv.image.load_crop` for a format-2 file, :func:`garmentcv.image.load_input`'s
normalised float32 for a format-1 file; Pillow and numpy release the GIL while they work) while the calling
thread runs the model on the current batch. Each image is written straight into its row of a batch buffer;
``prefetch + 1`` buffers are allocated once and reused, so memory is bounded whatever the number of files and
no batch is allocated or stacked per batch.

Objects in object storage (:class:`garmentcv.infer.sources.RemoteFile`) are first fetched by threads of their own
(:func:`garmentcv.infer.sources.read_object`: one GET each, failed reads tried again with backoff), then decoded
from memory by the decoding threads: a fetch waits on the network, not on a CPU, so many run at once
(:data:`DEFAULT_FETCH_THREADS`) without taking a decoding thread. Local files are decoded straight from disk.

Threads: the runtime and decoding pools are sized from the CPUs this process may use (affinity and container
quota, :func:`garmentcv.cpus.available_cpus`), never from the machine's core count (:func:`split_cpus`); the fetch
pool, made only when an object comes, is sized for network latency (:data:`DEFAULT_FETCH_THREADS`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from garmentcv import calibration
from garmentcv import cpus as _cpus
from garmentcv.artifact import OUTPUT_NAME
from garmentcv.errors import ImageDecodeError
from garmentcv.image import Preprocessing
from garmentcv.infer.runtimes import Model
from garmentcv.infer.sources import DEFAULT_READ_RETRY, READ_ERROR, File, ReadRetry, RemoteFile, load_file, read_object

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Object fetches in flight at once, per process (a Ray worker: per worker). A GET of a photo waits tens of ms
#: for its first byte from S3 and similar stores, while decoding it takes a few ms of one CPU, so keeping a few
#: decoding threads busy takes several times as many reads in flight; fetching threads only wait, so they cost
#: no CPU. The read-ahead bounds them too: at most ``(prefetch + 1) * batch_size`` objects are in flight.
DEFAULT_FETCH_THREADS = 16


@dataclass(frozen=True)
class Prediction(Generic[T]):
    """The outcome for one item.

    Attributes:
        item: what the caller passed in.
        probs: ``softmax(logits / temperature)`` probabilities ``float64 (C,)`` in class order (temperature 1:
            the raw softmax); ``None`` for an error or a pass-through.
        error: why the image could not be classified; ``None`` when it was (or was passed through).
        passed: True for an item given without a path, handed back untouched in its place.
        logits: the model's raw logits ``float32 (C,)``; ``None`` with ``probs``.
        extras: the file's other outputs for the image by name (``embedding`` ``float32 (D,)``, ``ood_score`` a
            ``float32`` scalar array), when the model file has them; empty otherwise.
    """

    item: T
    probs: np.ndarray | None = None
    error: str | None = None
    passed: bool = False
    logits: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` of ``(N, C)`` logits in float64
    (:func:`garmentcv.calibration.softmax`)."""
    return calibration.softmax(logits, temperature)


def _load_into(batch: np.ndarray, slot: int, path: File, pp: Preprocessing, data: bytes | None = None) -> str | None:
    """Decode ``path`` (a file or an object, :mod:`garmentcv.infer.sources`; for an object, its fetched ``data``)
    into ``batch[slot]``: a uint8 ``(H, W, 3)`` crop or a float32 ``(3, H, W)`` input, by the buffer's dtype; return
    the reason on failure (the slot is zeroed)."""
    try:
        if data is not None and isinstance(path, RemoteFile):
            path.decode(data, pp, out=batch[slot])
        else:
            load_file(path, pp, out=batch[slot])
        return None
    except ImageDecodeError as exc:
        reason = exc.reason
    except Exception as exc:  # a decoder bug on one odd file must cost one row, not the run
        logger.warning("%s: unexpected %s while decoding: %s", path, type(exc).__name__, exc)
        reason = f"cannot decode: {type(exc).__name__}: {exc}"
    batch[slot] = 0.0
    return reason


def _fetch(file: RemoteFile, retry: ReadRetry) -> bytes | str:
    """The bytes of an object, or the reason it has none (``file not found``, ``cannot read: ...``)."""
    try:
        return read_object(file, retry)
    except ImageDecodeError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - a storage client's bug on one object must cost one row, not the run
        logger.warning("%s: unexpected %s while reading: %s", file.uri, type(exc).__name__, exc)
        return f"{READ_ERROR}: {type(exc).__name__}: {exc}"


def _settle(done: Future[str | None], decoded: Future[str | None]) -> None:
    """Pass the outcome of a decode on to the future its fetch promised."""
    if decoded.cancelled():
        done.cancel()
    elif decoded.exception() is not None:
        done.set_exception(decoded.exception())  # type: ignore[arg-type]
    else:
        done.set_result(decoded.result())


def split_cpus(threads: int | None, workers: int | None, cpus: int | None = None) -> tuple[int, int]:
    """Default onnxruntime ``threads`` and decoding ``workers``: each is ``N``, the CPUs this process may use.

    ``N`` is :func:`garmentcv.cpus.available_cpus` (affinity and cgroup quota), not ``os.cpu_count()``, which on
    a 64-core host running a 2-CPU container would start 64 threads in each pool. Both pools get all ``N``
    because they mostly take turns: the decoders fill the next batches while the model runs and then wait
    (bounded read-ahead), and onnxruntime's idle threads sleep instead of spinning (see
    :mod:`garmentcv.infer.runtimes.onnxruntime`). That split was measured fastest on small machines, ahead of
    dividing the CPUs between the pools (see docs/performance.md).

    Args:
        threads: onnxruntime intra-op threads asked for, or ``None``.
        workers: decoding threads asked for, or ``None``.
        cpus: ``N``; ``None`` reads :func:`garmentcv.cpus.available_cpus`.

    Returns:
        ``(threads, workers)``, each at least 1; a value given is kept as given.
    """
    n = cpus if cpus is not None else _cpus.available_cpus()
    return (threads or n, workers or n)


@dataclass
class _Job(Generic[T]):
    items: list[tuple[File | None, T]]
    buffer: np.ndarray
    batch: np.ndarray
    futures: list[Future[str | None] | None]


def predict_batches(
    model: Model,
    items: Iterable[tuple[File | None, T]],
    batch_size: int = 32,
    workers: int | None = None,
    prefetch: int = 2,
    temperature: float = 1.0,
    fetch_threads: int | None = None,
    read_retry: ReadRetry = DEFAULT_READ_RETRY,
) -> Iterator[list[Prediction[T]]]:
    """Classify ``(path, item)`` pairs in order, yielding one list of predictions per model batch.

    An item whose path is ``None`` is not classified but handed back in its place (``passed=True``), so a
    caller can interleave results it already has. Results come in exactly the input order, and each image's
    probabilities do not depend on the batch it falls in.

    Args:
        model: an open model of either runtime (:func:`garmentcv.infer.runtimes.open_runtime`), or one still
            opening (:class:`garmentcv.infer.runtimes.OpeningModel`: decoding starts at once, the first batch waits).
        items: ``(path or None, item)`` pairs, consumed lazily; a path is a local file or an object
            (:class:`garmentcv.infer.sources.RemoteFile`).
        batch_size: items per yielded list, images and pass-throughs together, so that a long run of
            pass-throughs (rows reused by a resumed run) flows through in bounded memory.
        workers: decoding threads; ``None`` uses every available CPU (:func:`garmentcv.cpus.available_cpus`).
        prefetch: batches decoded ahead of the one being run.
        temperature: the logits are divided by it before the softmax (1.0: the raw softmax); see
            :attr:`garmentcv.artifact.ModelInfo.applied_temperature`.
        fetch_threads: threads fetching objects, apart from the decoding ``workers``; ``None``:
            :data:`DEFAULT_FETCH_THREADS`. Not used for local files.
        read_retry: how a failed object read is tried again (an object that still fails gets a ``cannot read``
            error).

    Yields:
        Lists of :class:`Prediction`, one per batch, in input order.
    """
    pp = model.info.preprocessing
    pool = ThreadPoolExecutor(max_workers=workers or _cpus.available_cpus(), thread_name_prefix="gcv-decode")
    fetchers: list[ThreadPoolExecutor] = []  # made for the first object
    queue: deque[_Job[T]] = deque()
    free: list[np.ndarray] = []  # batch buffers whose batch has run; at most prefetch + 1 are ever made

    def fetch_then_decode(batch: np.ndarray, slot: int, file: RemoteFile) -> Future[str | None]:
        """Fetch on a fetching thread, then decode on a decoding thread; the future gives the decode's outcome."""
        if not fetchers:
            threads = fetch_threads or DEFAULT_FETCH_THREADS
            logger.debug("fetching objects with %d threads", threads)
            fetchers.append(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gcv-fetch"))
        done: Future[str | None] = Future()

        def fetched(f: Future[bytes | str]) -> None:
            if f.cancelled():  # the run is ending
                done.cancel()
                return
            outcome = f.result()
            if isinstance(outcome, str):
                batch[slot] = 0
                done.set_result(outcome)
                return
            try:
                decoding = pool.submit(_load_into, batch, slot, file, pp, outcome)
            except RuntimeError:  # the decoding pool is shut down: the run is ending
                done.cancel()
                return
            decoding.add_done_callback(lambda d: _settle(done, d))

        fetchers[0].submit(_fetch, file, read_retry).add_done_callback(fetched)
        return done

    def submit(pending: list[tuple[File | None, T]]) -> None:
        n = sum(path is not None for path, _ in pending)
        buffer = free.pop() if free else np.empty(model.info.input_shape(batch_size), dtype=model.info.input_dtype)
        batch = buffer[:n]
        futures: list[Future[str | None] | None] = []
        slot = 0
        for path, _ in pending:
            if path is None:
                futures.append(None)
            elif isinstance(path, RemoteFile):
                futures.append(fetch_then_decode(batch, slot, path))
                slot += 1
            else:
                futures.append(pool.submit(_load_into, batch, slot, path, pp))
                slot += 1
        queue.append(_Job(pending, buffer, batch, futures))

    def finish(job: _Job[T]) -> list[Prediction[T]]:
        reasons = [f.result() if f is not None else None for f in job.futures]
        extras: dict[str, np.ndarray] = {}
        if not len(job.batch):
            logits = np.empty((0, 0), dtype=np.float32)
        elif len(model.info.outputs) > 1:
            extras = model.outputs(job.batch)
            logits = extras.pop(OUTPUT_NAME)
        else:
            logits = model.logits(job.batch)
        probs = softmax(logits, temperature) if len(job.batch) else np.empty((0, 0))
        free.append(job.buffer)  # the model has read it; the logits are the runtime's own arrays
        out: list[Prediction[T]] = []
        slot = 0
        for (path, item), reason in zip(job.items, reasons, strict=True):
            if path is None:
                out.append(Prediction(item, passed=True))
                continue
            out.append(
                Prediction(item, error=reason) if reason else Prediction(
                    item, probs=probs[slot], logits=logits[slot], extras={k: v[slot] for k, v in extras.items()})
            )
            slot += 1
        return out

    try:
        pending: list[tuple[File | None, T]] = []
        for path, item in items:
            pending.append((path, item))
            if len(pending) == batch_size:
                submit(pending)
                pending = []
                if len(queue) > prefetch:
                    yield finish(queue.popleft())
        if pending:
            submit(pending)
        while queue:
            yield finish(queue.popleft())
    finally:
        for fetcher in fetchers:  # first: a fetch that ends hands its decode to the decoding pool
            fetcher.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)

