"""gcv-train under torchrun with test instruments, for tests/test_train_distributed.py.

Run as ``torchrun ... -m tests.ddp_worker DATA [gcv-train options]``. Environment:

- ``GCV_TEST_WRITES``: a file; every run-folder write of :mod:`garmentcv.train.loop` (checkpoints, JSON, CSV,
  comparison.md, plots) appends ``<RANK>\\t<path>`` to it, so a test can tell which ranks wrote what.
- ``GCV_TEST_FAULT`` = ``raise`` or ``hang``: rank ``GCV_TEST_FAULT_RANK`` (default 1) raises RuntimeError, or
  sleeps an hour, at the start of its ``GCV_TEST_FAULT_EPOCH``-th epoch (default 2).
- ``GCV_TEST_FAULT_ONCE``: a file; the fault happens only while it does not exist, and creates it, so that a job
  restarted by ``torchrun --max-restarts`` fails once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from garmentcv.train import loop
from garmentcv.train.cli import main

RANK = int(os.environ.get("RANK", "0"))


def _record(path: object) -> None:
    log = os.environ.get("GCV_TEST_WRITES")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{RANK}\t{path}\n")


def _recording(func: Callable[..., Any], path_arg: int) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _record(args[path_arg])
        return func(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _recording_atomic_write(path: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    _record(path)
    with _real_atomic_write(path, *args, **kwargs) as handle:
        yield handle


_real_atomic_write = loop.atomic_write
_real_train_one_epoch = loop.train_one_epoch
_epochs = {"n": 0}


def _faulty_train_one_epoch(*args: Any, **kwargs: Any) -> Any:
    _epochs["n"] += 1
    fault = os.environ.get("GCV_TEST_FAULT")
    at_rank = RANK == int(os.environ.get("GCV_TEST_FAULT_RANK", "1"))
    if fault and at_rank and _epochs["n"] == int(os.environ.get("GCV_TEST_FAULT_EPOCH", "2")):
        once = os.environ.get("GCV_TEST_FAULT_ONCE")
        if once:
            if os.path.exists(once):
                return _real_train_one_epoch(*args, **kwargs)
            open(once, "w").close()
        if fault == "hang":
            time.sleep(3600)
        raise RuntimeError(f"injected failure on rank {RANK}")
    return _real_train_one_epoch(*args, **kwargs)


if __name__ == "__main__":
    loop.save_checkpoint = _recording(loop.save_checkpoint, 0)
    loop.write_json = _recording(loop.write_json, 0)
    loop.save_confusion_matrix = _recording(loop.save_confusion_matrix, 2)
    loop.save_curves = _recording(loop.save_curves, 1)
    loop.atomic_write = _recording_atomic_write  # the CSV files and comparison.md
    loop.train_one_epoch = _faulty_train_one_epoch
    main()
