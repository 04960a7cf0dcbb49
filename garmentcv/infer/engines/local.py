"""The local engine: ``gcv classify`` on this machine, the model in this process and decoding threads beside it.

:func:`classify_folder` lists the source in sorted order (:mod:`garmentcv.infer.sources`), decodes images in
threads while the model runs (:func:`garmentcv.infer.pipeline.predict_batches`; the model opens in the background,
:class:`~garmentcv.infer.runtimes.OpeningModel`, so the first batches decode meanwhile), and hands the rows to
:class:`~garmentcv.infer.classify.ClassifyRun`, which saves them to the partial results
(:mod:`garmentcv.infer.partial`, for ``--resume``) and writes the output file.

Streaming: :func:`garmentcv.data.layouts.scan_images` yields files folder by folder in sorted order, rows are written
in that order as batches finish, so memory does not grow with the number of files (only with the number of entries
of the largest single folder, whose names are sorted: about 100 B each).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from garmentcv.infer.classify import (
    ClassifyConfig,
    ClassifyRun,
    ClassifySummary,
    check_model_outputs,
    check_topk,
    open_checked_source,
)
from garmentcv.infer.partial import RunLock
from garmentcv.infer.pipeline import predict_batches, split_cpus
from garmentcv.infer.runtimes import Model, OpeningModel, open_planned, plan_runtime

__all__ = ["classify_folder"]


def classify_folder(cfg: ClassifyConfig, on_batch: Callable[[int], None] | None = None) -> ClassifySummary:
    """Classify every image of ``cfg.folder`` (a folder, a manifest or an object-storage prefix,
    :mod:`garmentcv.infer.sources`) into ``cfg.out`` on this machine; see the module docstring and
    :mod:`garmentcv.infer.partial` (partial results, ``resume``).

    Args:
        cfg: the run's settings.
        on_batch: called after each batch is saved to the partial results with the number of rows saved so
            far in this run (progress hooks; tests use it to interrupt a run).

    Raises:
        PathNotFoundError: the source does not exist (exit code 2).
        DatasetError: the source is not a folder or manifest, or cannot be listed.
        OutputPathError: ``cfg.out`` cannot be written (checked before any other work).
        ModelFileNotFoundError: the model file does not exist.
        ModelFileError: the model file is unreadable or lacks GarmentCV metadata.
        ProviderError: ``cuda`` asked for but not usable.
        RuntimeUnavailableError: ``openvino`` asked for but not installed or not able to run the file.
        GarmentCVError: ``resume`` with partial results from another model, folder or options.
        ClassifyUsageError: see :func:`check_config` (with ``engine="local"``) and :func:`check_output_apart`;
            ``topk`` above the model's number of classes (before the model is opened).
        RunLockedError: another run is writing ``cfg.out`` (before any other work).
        EmptySourceError: no image file found, without ``cfg.allow_empty``.
        ClassifyStorageError: the partial results or the output cannot be written (full disk, permissions).
        RunInterrupted: Ctrl-C, passed on after the partial results are saved.
    """
    start = time.perf_counter()
    source = open_checked_source(cfg)
    lock = RunLock(Path(cfg.out))
    run: ClassifyRun | None = None
    try:
        threads, workers = split_cpus(cfg.threads, cfg.workers)
        plan = plan_runtime(cfg.model, cfg.runtime, cfg.provider)
        check_topk(cfg.topk, plan.info, cfg.model)  # before the model opens: its error comes alone
        check_model_outputs(cfg, plan.info)
        model: Model
        if cfg.resume:  # partial results are matched against the runtime that really runs (auto may fall back)
            model = open_planned(plan, threads)
        else:  # the first batches decode while the model opens (see OpeningModel)
            model = OpeningModel(plan, threads)
        rows_runtime = (model.runtime, model.inference_precision) if cfg.resume else plan.rows_runtime
        run = ClassifyRun(cfg, source, plan.info, rows_runtime, lock=lock)
        bar = tqdm(desc="classify", unit="img", file=sys.stderr, disable=None if cfg.progress else True,
                   dynamic_ncols=True)
        try:
            items = run.decoding(run.items(), cfg.batch_size)
            batches = predict_batches(model, items, cfg.batch_size, workers, temperature=run.temperature,
                                      fetch_threads=cfg.fetch_threads, read_retry=cfg.read_retry)
            try:
                first = next(batches, None)  # the model is open after the first batch: errors opening it come first
                run.ran_on((model.runtime, model.inference_precision))
                run.save(itertools.chain([] if first is None else [first], batches), on_batch, progress=bar.update)
            finally:
                batches.close()  # a run stopped early: reads and decodes not begun are dropped, not done
        finally:
            bar.close()
        return run.finish(start, model.provider, threads, workers)
    except BaseException:
        if run is not None:
            run.close()
        lock.release()
        raise
