"""Which runtime runs a model file on this machine: onnxruntime or OpenVINO, and at which inference precision.

The runtimes themselves live in :mod:`garmentcv.infer.runtimes.onnxruntime` and
:mod:`garmentcv.infer.runtimes.openvino`; both import only :mod:`garmentcv.infer.runtimes.base` (the
:class:`Model` protocol, the runtime names and :class:`RuntimeUnavailableError`, re-exported here), and this module
imports each of them only when it opens a model.

``--runtime auto`` takes the fastest runtime installed for this CPU and file by :func:`choose_runtime`, a pure
function of the file's precision, its runtime gates (:class:`garmentcv.artifact.RuntimeGate`: each (runtime,
inference precision) pair judged against FP32 at export; ``auto`` runs only a pair that passed, see
:func:`openvino_allowed`), the CPU's ISA flags, the model's input size and what is installed. The rule:

* OpenVINO at bf16 only on CPUs with AMX (``amx_bf16``), and only when the file's gate for OpenVINO at bf16 passed;
* OpenVINO for INT8 files on CPUs with 8-bit dot products (VNNI or AMX), at an inference precision whose gate
  passed;
* onnxruntime otherwise: FP32 files without AMX bf16 (OpenVINO at f32 is no faster), FP16 files (made for CUDA),
  CPUs without VNNI; CUDA stays onnxruntime's CUDA provider;
* onnxruntime for inputs smaller than :data:`OPENVINO_MIN_INPUT` (per file precision): there decoding photos
  limits the run, and end to end OpenVINO loses what its faster model gains.

The measurements behind the rule, per CPU condition, are in the documentation: docs/runtimes.md (the rule and
how to override it) and docs/performance.md (the figures, rendered from the benchmarks' results data files).

``ONEDNN_MAX_CPU_ISA`` caps the instruction sets oneDNN uses, and OpenVINO's CPU plugin honours it (its convolution
kernels change from ``brgconv_avx512_amx_bf16`` to ``brgconv_avx512_bf16``, and bf16 becomes slower than f32); the
rule therefore reads the flags through :func:`effective_flags`. Asking for a runtime that is not installed or cannot
run is a :class:`RuntimeUnavailableError` naming what to install, never a silent fallback; under ``auto`` a file
OpenVINO cannot compile runs on onnxruntime with a warning that gives the cause (as ``--device auto`` does for CUDA).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from garmentcv import cpus as _cpus
from garmentcv.artifact import ModelInfo
from garmentcv.infer.runtimes.base import (
    INFERENCE_PRECISIONS,
    OPENVINO_DIST,
    OPENVINO_INSTALL,
    RUNTIMES,
    Model,
    RuntimeUnavailableError,
)
from garmentcv.installs import installed_version

__all__ = [
    "AMX_FLAGS", "INFERENCE_PRECISIONS", "OPENVINO_DIST", "OPENVINO_INSTALL", "OPENVINO_MIN_INPUT", "RUNTIMES",
    "VNNI_FLAGS", "Model", "OpeningModel", "RuntimeChoice", "RuntimePlan", "RuntimeUnavailableError",
    "bf16_allowed", "choose_for_file", "choose_runtime", "cpu_flags", "effective_flags", "open_planned",
    "open_runtime", "openvino_allowed", "openvino_installed", "plan_runtime", "this_cpu_flags",
]

logger = logging.getLogger(__name__)

#: ISA flags of ``/proc/cpuinfo`` that decide the rule.
AMX_FLAGS = frozenset({"amx_tile", "amx_bf16", "amx_int8"})
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: Smallest input side (px) at which ``auto`` runs a file of this precision on OpenVINO. With smaller inputs decoding
#: photos limits the run and OpenVINO, end to end, is no faster than onnxruntime. Each threshold is the smallest
#: measured input size where OpenVINO was at least as fast end to end on every CPU condition where the rule uses it
#: (FP32: AMX only); sizes between the measured ones were not measured (see docs/performance.md).
OPENVINO_MIN_INPUT = {"int8": 96, "fp32": 64}


@dataclass(frozen=True)
class RuntimeChoice:
    """What :func:`choose_runtime` decided and why.

    Attributes:
        runtime: ``onnxruntime`` or ``openvino``.
        inference_precision: OpenVINO's ``f32`` or ``bf16``; ``None`` for onnxruntime (it runs the file as stored).
        reason: one sentence for the log and the summary.
    """

    runtime: str
    inference_precision: str | None
    reason: str


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """All ISA flags of the first CPU in ``cpuinfo`` (empty when unknown, e.g. not Linux)."""
    return _cpus.cpu_info(cpuinfo)[1]


def effective_flags(flags: Iterable[str], max_isa: str | None) -> frozenset[str]:
    """``flags`` less what ``ONEDNN_MAX_CPU_ISA=max_isa`` keeps oneDNN (and so OpenVINO's CPU plugin) from using.

    oneDNN's ISA names, in order: ``SSE41``, ``AVX``, ``AVX2``, ``AVX2_VNNI``, ``AVX512_CORE``,
    ``AVX512_CORE_VNNI``, ``AVX512_CORE_BF16``, ``AVX512_CORE_FP16``/``AVX10_1_512``, ``AVX512_CORE_AMX`` and up;
    ``ALL``/``DEFAULT`` or unset keep everything. Below ``*_AMX`` the AMX flags go; below ``*_BF16`` (and not
    ``*_FP16``/``AVX10*``) ``avx512_bf16``; below ``*_VNNI`` also the VNNI flags (``AVX2_VNNI`` keeps ``avx_vnni``).
    """
    flags = frozenset(flags)
    isa = (max_isa or "").strip().upper()
    if not isa or isa in ("ALL", "DEFAULT") or "AMX" in isa:
        return flags
    flags -= AMX_FLAGS
    if not any(k in isa for k in ("BF16", "FP16", "AVX10")):
        flags -= {"avx512_bf16"}
        if "VNNI" not in isa:
            flags -= {"avx512_vnni", "avx_vnni"}
        elif not isa.startswith("AVX512"):
            flags -= {"avx512_vnni"}
    return flags


def this_cpu_flags() -> frozenset[str]:
    """This machine's flags as oneDNN may use them: :func:`cpu_flags` through :func:`effective_flags`."""
    return effective_flags(cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA"))


def openvino_installed() -> bool:
    """Whether the ``openvino`` distribution is installed (no import)."""
    return installed_version(OPENVINO_DIST) is not None


def openvino_allowed(info: ModelInfo, precision: str) -> tuple[bool, str]:
    """Whether the file's gates let ``auto`` run it on OpenVINO at inference ``precision`` (``f32`` or ``bf16``), and
    a note saying why (not).

    A file with runtime gates (:attr:`ModelInfo.runtime_gates`): only a pair that passed. A file exported before
    them: bf16 as its bf16 gate says (:func:`bf16_allowed`; that gate compared OpenVINO with the file's own
    onnxruntime logits); f32 on FP32 and FP16 files (where ``auto`` never runs OpenVINO at f32) yes, on INT8 files
    no: OpenVINO's integer kernels never ran on their validation images, so they run where their INT8 gate ran,
    on onnxruntime.

    Raises:
        ValueError: an unknown ``precision``.
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"inference precision must be one of {INFERENCE_PRECISIONS}, got {precision!r}")
    if not info.runtime_gates:
        if precision == "bf16":
            return bf16_allowed(info)
        if info.precision == "int8":
            return False, ("the file predates per-runtime gates, so OpenVINO's INT8 kernels never ran on its "
                           "validation images (export it again with garmentcv[openvino] installed to gate them)")
        return (
            True,
            f"the file predates per-runtime gates; OpenVINO at f32 stays allowed for {info.precision.upper()} files",
        )
    gate = info.gate("openvino", precision)
    if gate is None:
        bf16_reasons = ", on a CPU without native bf16, or with --bf16-check off"
        return False, (
            f"the file has no gate result for OpenVINO at {precision} (exported without "
            f"garmentcv[openvino]{bf16_reasons if precision == 'bf16' else ''})"
        )
    if not gate.passed:
        return False, f"the file's gate for OpenVINO at {precision} failed at export: {gate.note}"
    return True, f"the file's gate for OpenVINO at {precision} passed at export ({gate.describe()})"


def bf16_allowed(info: ModelInfo) -> tuple[bool, str]:
    """Whether the file's bf16 gate lets OpenVINO run it in bf16, and a note saying why (not)."""
    if info.runtime_gates:
        return openvino_allowed(info, "bf16")
    check = info.bf16
    if check is None:
        return False, ("the file has no bf16 gate result (export it again with garmentcv[openvino] installed on a CPU "
                       "with bf16 to run the check)")
    if not check.passed:
        return False, f"the file's bf16 gate failed at export: {check.note}"
    return True, f"the file's bf16 gate passed at export ({check.describe()})"


def choose_runtime(
    requested: str, file_precision: str, flags: Iterable[str], openvino: bool, bf16_passed: bool, cuda: bool = False,
    input_size: int | None = None, f32_passed: bool = True, f32_note: str = "",
) -> RuntimeChoice:
    """Pick the runtime and OpenVINO inference precision (a pure function; see the module docstring).

    Args:
        requested: ``auto``, ``onnxruntime`` or ``openvino``.
        file_precision: the file's ``fp32``, ``fp16`` or ``int8``.
        flags: the CPU's usable ISA flags (:func:`this_cpu_flags`).
        openvino: whether OpenVINO is installed.
        bf16_passed: whether the file's gate lets OpenVINO run it at bf16 (:func:`bf16_allowed`).
        cuda: the model is to run on CUDA (``--device cuda``, or ``auto`` with onnxruntime offering CUDA).
        input_size: the model's input side in px (``preprocessing.crop``); under ``auto``, below
            :data:`OPENVINO_MIN_INPUT` onnxruntime runs the file. ``None``: not considered.
        f32_passed: whether the file's gate lets OpenVINO run it at f32 (:func:`openvino_allowed`); under ``auto``
            an OpenVINO choice at f32 that did not pass runs on onnxruntime instead. ``f32_note`` says why not.

    Raises:
        RuntimeUnavailableError: ``openvino`` asked for but not installed, or together with CUDA.
        ValueError: an unknown ``requested``.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {requested!r}")
    flags = frozenset(flags)
    amx = "amx_bf16" in flags
    bf16 = "bf16" if (amx and bf16_passed) else "f32"
    if requested == "openvino":
        if not openvino:
            raise RuntimeUnavailableError(f"--runtime openvino: OpenVINO is not installed; install it with "
                                          f"{OPENVINO_INSTALL}, or use --runtime onnxruntime")
        if cuda:
            raise RuntimeUnavailableError("--runtime openvino runs on the CPU only; use --device cpu, or --runtime "
                                          "onnxruntime for CUDA")
        return RuntimeChoice("openvino", bf16, "asked for")
    if requested == "onnxruntime":
        return RuntimeChoice("onnxruntime", None, "asked for")
    if cuda:
        return RuntimeChoice("onnxruntime", None, "CUDA runs on onnxruntime's CUDA provider")
    if file_precision == "int8" and VNNI_FLAGS & flags:
        faster = RuntimeChoice("openvino", bf16, (
            "an INT8 file on a CPU with 8-bit dot products (VNNI/AMX): OpenVINO runs it faster than onnxruntime"))
    elif file_precision == "fp32" and amx and bf16_passed:
        faster = RuntimeChoice("openvino", "bf16", (
            "an FP32 file that passed its bf16 gate on a CPU with AMX: OpenVINO at bf16 runs it faster than "
            "onnxruntime"))
    else:
        faster = None
    if faster is not None:
        minimum = OPENVINO_MIN_INPUT[file_precision]
        if input_size is not None and input_size < minimum:
            return RuntimeChoice("onnxruntime", None, (
                f"a {input_size} px input, below {minimum} px: there decoding photos limits the run and OpenVINO "
                f"measured slower end to end than onnxruntime on {file_precision.upper()} files; --runtime openvino "
                "still runs it"))
        if not openvino:
            return RuntimeChoice(
                "onnxruntime", None, f"OpenVINO is not installed ({faster.reason}; {OPENVINO_INSTALL})"
            )
        if faster.inference_precision == "f32" and not f32_passed:
            return RuntimeChoice("onnxruntime", None, (
                f"an {file_precision.upper()} file runs where it passed its gate, as OpenVINO at f32 did not: "
                f"{f32_note or 'not gated'}"))
        return faster
    if file_precision == "fp32":
        why = ("without AMX bf16 is slower than FP32" if not amx else "bf16 is not allowed for this file")
        return RuntimeChoice("onnxruntime", None, f"FP32: OpenVINO at f32 is no faster than onnxruntime and {why}")
    return RuntimeChoice("onnxruntime", None, f"an {file_precision.upper()} file on this CPU: onnxruntime")


@dataclass(frozen=True)
class RuntimePlan:
    """What :func:`open_planned` will open, known before the (slow) session creation or compilation.

    Attributes:
        path: the GarmentCV ONNX file.
        requested: the ``--runtime`` asked for (``auto`` may fall back to onnxruntime if OpenVINO cannot compile).
        provider: onnxruntime's ``auto``, ``cpu`` or ``cuda``.
        info: the file's metadata.
        choice: :func:`choose_runtime`'s decision.
        bf16_note: why the file's bf16 gate does not allow bf16 (empty when it does).
    """

    path: Path
    requested: str
    provider: str
    info: ModelInfo
    choice: RuntimeChoice
    bf16_note: str = ""

    @property
    def rows_runtime(self) -> tuple[str, str]:
        """``(runtime, inference precision)`` the rows will be computed in unless ``auto`` falls back."""
        return self.choice.runtime, self.choice.inference_precision or self.info.precision


def plan_runtime(path: Path, runtime: str = "auto", provider: str = "auto") -> RuntimePlan:
    """Read ``path``'s metadata and choose its runtime (:func:`choose_runtime`); nothing is compiled yet.

    Raises:
        ValueError: an unknown ``runtime``.
        ModelFileNotFoundError, ModelFileError: as :func:`garmentcv.infer.model_file.read_model_info`.
        RuntimeUnavailableError: see :func:`choose_runtime`.
    """
    from garmentcv.infer.model_file import read_model_info

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "openvino":  # refused before any work when OpenVINO is missing or CUDA is asked for too
        choose_runtime(runtime, "fp32", (), openvino_installed(), False, cuda=provider == "cuda")
    info = read_model_info(Path(path))
    choice, bf16_note = choose_for_file(
        info, runtime, cuda=provider == "cuda" or (provider == runtime == "auto" and _onnxruntime_offers_cuda()))
    return RuntimePlan(Path(path), runtime, provider, info, choice, bf16_note)


def choose_for_file(info: ModelInfo, runtime: str = "auto", cuda: bool = False, flags: Iterable[str] | None = None,
                    openvino: bool | None = None) -> tuple[RuntimeChoice, str]:
    """:func:`choose_runtime` for a file described by ``info`` (its precision, gates and input size).

    Args:
        info: the file's metadata.
        runtime: ``auto``, ``onnxruntime`` or ``openvino``.
        cuda: the model is to run on CUDA.
        flags: the CPU's usable flags; ``None``: :func:`this_cpu_flags`.
        openvino: whether OpenVINO is installed; ``None``: :func:`openvino_installed`.

    Returns:
        The choice, and why bf16 is not allowed for the file (``""`` when it is).

    Raises:
        RuntimeUnavailableError, ValueError: as :func:`choose_runtime`.
    """
    bf16, bf16_note = bf16_allowed(info)
    f32, f32_note = openvino_allowed(info, "f32")
    choice = choose_runtime(runtime, info.precision, this_cpu_flags() if flags is None else flags,
                            openvino_installed() if openvino is None else openvino, bf16, cuda=cuda,
                            input_size=info.preprocessing.crop, f32_passed=f32, f32_note=f32_note)
    return choice, "" if bf16 else bf16_note


def open_planned(plan: RuntimePlan, threads: int | None = None) -> Model:
    """Open ``plan``'s file on its runtime (for OpenVINO: compile it) and log the choice.

    Args:
        plan: from :func:`plan_runtime`.
        threads: CPU threads of the runtime; ``None``: every available CPU.

    Raises:
        ModelFileError, ProviderError: as :func:`garmentcv.infer.runtimes.onnxruntime.open_model`.
        RuntimeUnavailableError: OpenVINO asked for but failing to compile the file (under ``auto`` the file
            runs on onnxruntime instead, with a warning giving the cause).
    """
    path, info, choice = plan.path, plan.info, plan.choice
    if choice.runtime == "openvino":
        from garmentcv.infer.runtimes.openvino import open_openvino

        try:
            model = open_openvino(path, info, choice.inference_precision or "f32", threads)
        except RuntimeUnavailableError as exc:
            if plan.requested != "auto":
                raise
            # auto, like --device auto for CUDA: say why, then run the file where it runs (e.g. an OpenVINO that
            # compiles no S8S8 QOperator INT8 file: "No suitable implementations")
            logger.warning("OpenVINO cannot run %s, using onnxruntime: %s", path, exc)
            choice = RuntimeChoice("onnxruntime", None, f"OpenVINO failed: {exc}")
    if choice.runtime == "onnxruntime":
        from garmentcv.infer.runtimes.onnxruntime import open_model

        onnx_model = open_model(path, plan.provider, threads)
        logger.info("runtime onnxruntime %s on %s, %s file (%s)", _version("onnxruntime"), onnx_model.device,
                    info.precision, choice.reason)
        return onnx_model
    allowed, why = openvino_allowed(info, model.inference_precision)
    if not allowed and plan.requested == "openvino":
        # asked for explicitly: it runs, but its rows are not what the file was gated on
        (logger.warning if info.gate("openvino", model.inference_precision) else logger.info)(
            "--runtime openvino runs %s at %s, which auto would not: %s", path, model.inference_precision, why)
    if model.inference_precision != "bf16" and info.precision in ("fp32", "int8"):
        what = "" if info.precision == "fp32" else "the float parts of "
        logger.info("OpenVINO runs %s%s at f32: %s", what, path, plan.bf16_note or "this CPU has no usable AMX")
    logger.info("runtime openvino %s on CPU, %s file, inference precision %s (%s)", _version(OPENVINO_DIST),
                info.precision, model.inference_precision, choice.reason)
    return model


def open_runtime(path: Path, runtime: str = "auto", provider: str = "auto", threads: int | None = None) -> Model:
    """Open ``path`` on the runtime :func:`choose_runtime` picks (or the one asked for) and log the choice.

    The model is read (and for OpenVINO compiled) once; the returned object is kept for the whole run.

    Args:
        path: a GarmentCV ONNX file.
        runtime: ``auto``, ``onnxruntime`` or ``openvino``.
        provider: onnxruntime's ``auto``, ``cpu`` or ``cuda`` (:func:`garmentcv.infer.runtimes.onnxruntime.open_model`).
        threads: CPU threads of the runtime; ``None``: every available CPU.

    Raises:
        ModelFileNotFoundError, ModelFileError, ProviderError: as
            :func:`garmentcv.infer.runtimes.onnxruntime.open_model`.
        RuntimeUnavailableError: see :func:`choose_runtime`; OpenVINO installed but failing to compile the file.
    """
    return open_planned(plan_runtime(path, runtime, provider), threads)


class OpeningModel:
    """A :class:`Model` being opened in a background thread, so that decoding starts while it compiles.

    :attr:`info` is there at once (the file's metadata); :meth:`logits` and the runtime's attributes wait for the
    opening and raise what it raised. Opening in the background gains most where compiling takes long (OpenVINO);
    a warm-up batch after opening is not run, as it takes the cores from decoding (see docs/performance.md).
    """

    def __init__(self, plan: RuntimePlan, threads: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.plan = plan
        self.path = plan.path
        self.info = plan.info
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcv-open")
        self._future = pool.submit(open_planned, plan, threads)
        pool.shutdown(wait=False)  # the thread ends with the opening; nothing else is ever submitted

    def result(self) -> Model:
        """The open model, once opened (waits).

        Raises:
            Whatever :func:`open_planned` raised.
        """
        return self._future.result()

    @property
    def provider(self) -> str:
        return self.result().provider

    @property
    def runtime(self) -> str:
        return self.result().runtime

    @property
    def device(self) -> str:
        return self.result().device

    @property
    def inference_precision(self) -> str:
        return self.result().inference_precision

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """As :meth:`Model.logits`, after the opening."""
        return self.result().logits(batch)

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """As :meth:`Model.outputs`, after the opening."""
        return self.result().outputs(batch)


def _onnxruntime_offers_cuda() -> bool:
    """Whether onnxruntime offers its CUDA provider (``--device auto`` then tries CUDA first)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _version(dist: str) -> str:
    return installed_version(dist) or "?"
