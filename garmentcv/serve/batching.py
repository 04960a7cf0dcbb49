"""Micro-batching: the images of concurrent requests run through the model together, behind a bounded queue.

The pattern of Ray Serve's ``@serve.batch`` and of Triton's dynamic batcher: a request puts its decoded images in
a queue and awaits one future per image; one task takes up to ``max_batch_size`` images from the queue, waiting
at most ``max_wait_s`` after the oldest arrived for more to come, and runs them in one model call on a thread of its
own (the event loop stays free to read and decode other requests). Each image's probabilities do not depend on the
batch it falls in, so rows never mix between requests.

It waits only for images on their way: a request announces its images while they decode (:meth:`MicroBatcher.incoming`),
and when none is announced the queued images run at once, so a lone request never pays ``max_wait_s``. A lone image
that finds the batcher idle (nothing queued, decoding or running) goes further (:meth:`MicroBatcher.run_alone`): it is
decoded and run on the model thread in one hand-over, so it pays no more thread switches than a direct call; images
arriving meanwhile queue and batch as usual behind it.

Back-pressure: the queue holds at most ``max_queue`` images; a request whose images do not all fit is refused at
once (:class:`QueueFullError`, the service answers 503 with Retry-After), so memory never grows with the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

__all__ = ["BatcherClosedError", "MicroBatcher", "QueueFullError"]

logger = logging.getLogger(__name__)

E = TypeVar("E")


class QueueFullError(RuntimeError):
    """The queue has no room for all the images of a request; try again later."""


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down and takes no new images."""


@dataclass
class _Item:
    array: np.ndarray
    future: asyncio.Future[np.ndarray]
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Runs images from any number of concurrent callers in shared model calls; see the module docstring.

    Use from one event loop: :meth:`start`, then :meth:`submit` from request handlers and await the futures,
    then :meth:`close`, which lets every queued image run before it returns.

    Args:
        predict: runs one batch ``(N, ...)`` -> ``(N, C)`` probabilities; called on the batcher's own thread.
        max_batch_size: images per call at most.
        max_wait_s: how long the oldest queued image waits for others before its batch runs, s.
        max_queue: images queued at most.
        on_batch: called after each model call with ``(images, seconds)`` (metrics).
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int, max_wait_s: float,
                 max_queue: int, on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch_size >= 1, max_queue >= 1, max_wait_s >= 0; got {max_batch_size}, "
                             f"{max_queue}, {max_wait_s}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._items: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._incoming = 0
        self._alone = 0

    @property
    def depth(self) -> int:
        """Images waiting in the queue (not counting the batch the model is running)."""
        return len(self._items)

    def start(self) -> None:
        """Start the batching task on the running event loop (and the model thread)."""
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcv-serve-model")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gcv-serve-batcher")

    @property
    def idle(self) -> bool:
        """Whether nothing is queued, decoding or running: a lone image may take :meth:`run_alone`."""
        return (self._idle is not None and self._idle.is_set() and not self._items and self._incoming == 0
                and self._alone == 0 and not self._closing)

    async def run_alone(self, decode: Callable[[], np.ndarray | E]) -> tuple[np.ndarray | E, Any]:
        """Decode one image and run it alone on the model thread, in one hand-over (the path of a lone request; check
        :attr:`idle` first, though it is correct at any time). Images submitted meanwhile wait in the queue (counted by
        :attr:`depth` and the queue bound) until it is done, as behind a batch, and :meth:`close` waits for it.

        Args:
            decode: returns the image's model input (without the batch axis), or anything else (say, the reason it
                could not be decoded), which is returned as is without running the model.

        Returns:
            ``(decoded, prediction)``: what ``decode`` returned and the model's result for the image (element 0 of
            ``predict`` on a batch of 1), or ``None`` when ``decode`` gave no array.

        Raises:
            BatcherClosedError: :meth:`close` was called, or :meth:`start` was not.
            Exception: whatever ``predict`` raised.
        """
        if self._closing or self._idle is None or self._executor is None:
            raise BatcherClosedError("the service is shutting down")

        def work() -> tuple[np.ndarray | E, Any]:
            decoded = decode()
            if not isinstance(decoded, np.ndarray):
                return decoded, None
            start = time.perf_counter()
            prediction = self.predict(decoded[None])[0]
            if self.on_batch is not None:
                self.on_batch(1, time.perf_counter() - start)
            return decoded, prediction

        self._alone += 1
        self._idle.clear()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self._alone -= 1
            if not self._items and self._alone == 0:
                self._idle.set()
            if self._arrived is not None:
                self._arrived.set()  # the batcher may take the images queued meanwhile

    def has_room(self, images: int = 1) -> bool:
        """Whether ``images`` more would fit in the queue now."""
        return not self._closing and len(self._items) + images <= self.max_queue

    @contextlib.contextmanager
    def incoming(self, images: int) -> Iterator[None]:
        """Announce ``images`` on their way (decoding) for the block: a batch waits for them, up to ``max_wait_s``;
        submit them inside the block."""
        self._incoming += images
        try:
            yield
        finally:
            self._incoming -= images
            if self._arrived is not None:
                self._arrived.set()  # a batch waiting for them need not wait any longer

    def submit(self, arrays: list[np.ndarray]) -> list[asyncio.Future[np.ndarray]]:
        """Queue decoded images (each one model input, without the batch axis); all or none.

        Returns:
            One future per image giving its probabilities ``(C,)`` (or the model's exception). Cancelling a future
            (a request that timed out) drops its image if the model has not taken it yet.

        Raises:
            QueueFullError: they do not all fit in the queue.
            BatcherClosedError: :meth:`close` was called, or :meth:`start` was not.
        """
        if self._closing or self._arrived is None or self._idle is None:
            raise BatcherClosedError("the service is shutting down")
        if len(self._items) + len(arrays) > self.max_queue:
            raise QueueFullError(f"{len(self._items)} images are queued, the most is {self.max_queue}")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[np.ndarray]] = []
        for array in arrays:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._items.append(_Item(array, future))
            futures.append(future)
        if arrays:
            self._idle.clear()
            self._arrived.set()
        return futures

    async def _next_batch(self) -> list[_Item]:
        """Wait for an image (and for a lone image to leave the model), then, while more are on their way, for up to
        ``max_batch_size`` or until the oldest has waited ``max_wait_s``."""
        assert self._arrived is not None
        while not self._items or self._alone:  # images wait in the queue while a lone image holds the model
            self._arrived.clear()
            await self._arrived.wait()
        while len(self._items) < self.max_batch_size and self._incoming > 0:
            remaining = self._items[0].queued + self.max_wait_s - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        count = min(len(self._items), self.max_batch_size)
        return [self._items.popleft() for _ in range(count)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._idle is not None
        while True:
            batch = await self._next_batch()
            live = [item for item in batch if not item.future.done()]  # a cancelled request's images are dropped
            if live:
                stacked = np.stack([item.array for item in live])
                start = time.perf_counter()
                try:
                    probs = await loop.run_in_executor(self._executor, self.predict, stacked)
                except Exception as exc:  # noqa: BLE001 - the callers of this batch get the error, the service goes on
                    logger.error("the model failed on a batch of %d images: %s: %s", len(live), type(exc).__name__,
                                 exc)
                    for item in live:
                        if not item.future.done():
                            item.future.set_exception(exc)
                else:
                    if self.on_batch is not None:
                        self.on_batch(len(live), time.perf_counter() - start)
                    for item, p in zip(live, probs, strict=True):
                        if not item.future.done():
                            item.future.set_result(p)
            if not self._items and self._alone == 0:
                self._idle.set()

    async def close(self, timeout_s: float | None = None) -> None:
        """Take no new images, let the queued ones run (at most ``timeout_s``), then stop the task and the thread."""
        self._closing = True
        if self._task is None:
            return
        assert self._idle is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for item in self._items:
            if not item.future.done():
                item.future.set_exception(BatcherClosedError("the service shut down before this image ran"))
        self._items.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
