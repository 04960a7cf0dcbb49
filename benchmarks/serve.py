"""gcv serve under load from wrk, against gcv classify on the same photos in the same run.

One photo folder (benchmarks.photos: 4 of every 5 photos at 600x866) and the gcv-export files of a random-init arch
(speed does not depend on the weights) at each precision. For each file:

* ``classify``: :func:`garmentcv.infer.classify.classify_folder` on the folder (files / wall time, median of the
  repeats): the batch command's images/s;
* ``single image``: one photo's decode plus one model call of batch 1 in this process
  (:meth:`garmentcv.serve.handler.ModelHandler.decode` and :meth:`~garmentcv.serve.handler.ModelHandler.probabilities`),
  median over the photos: what a lone request cannot beat;
* ``serve``: ``gcv serve`` started as its own process on a free loopback port with its default threads, then wrk
  (``apt-get install wrk``) posting the photos in turn as raw bodies, one image per request, for ``--duration``
  seconds at each concurrency (connections; wrk threads: up to the CPUs), after a warm-up run. images/s = requests
  answered / duration; p50/p95/p99 latency from wrk's histogram; non-2xx answers and socket errors counted.

Rows: each concurrency's images/s and latency, its ratio to classify's images/s and p50 over the single image's time,
and the two targets (at concurrency 32, at least 0.85 of classify's images/s; at concurrency 1, p50 at most 1.3 times
the single image's time) met or not. The load generator runs on the same CPUs as the service. Usage:

    python -m benchmarks serve [--arch resnet18] [--size 224] [--files 200] [--precisions fp32,int8]
                               [--concurrency 1,8,32,128] [--duration 20] [--repeats 3]
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks import onnx_models, photos, results
from benchmarks import options as shared
from benchmarks.machine import MachineInfo
from garmentcv.cpus import available_cpus
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.serve.handler import HandlerSettings, open_handler

REPO = Path(__file__).resolve().parent.parent
#: The targets: images/s at this concurrency against classify's, and p50 at concurrency 1 against one image's time.
THROUGHPUT_TARGET = (32, 0.85)
LATENCY_TARGET = 1.3

_LUA = """
local paths = {%(paths)s}
local bodies = {}
local counter = 0

init = function(args)
  for i, path in ipairs(paths) do
    local f = assert(io.open(path, "rb"))
    bodies[i] = f:read("*all")
    f:close()
  end
end

request = function()
  counter = counter + 1
  local body = bodies[(counter %% #bodies) + 1]
  return wrk.format("POST", "/v1/classify", {["Content-Type"] = "image/jpeg"}, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('GCV_RESULT {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(95),
    latency:percentile(99)))
end
"""


def wrk_script(paths: Sequence[Path], out: Path) -> Path:
    """A wrk Lua script posting ``paths`` in turn as raw ``image/jpeg`` bodies and printing one ``GCV_RESULT`` JSON
    line (requests, duration, non-2xx answers, socket errors, latency percentiles in microseconds)."""
    listed = ", ".join(json.dumps(str(p)) for p in paths)
    out.write_text(_LUA % {"paths": listed}, encoding="utf-8")
    return out


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run; its ``GCV_RESULT`` figures.

    Raises:
        RuntimeError: wrk failed or printed no result.
    """
    threads = max(1, min(connections, available_cpus()))
    proc = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout",
                           "60s", "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("GCV_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return json.loads(line.removeprefix("GCV_RESULT "))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(model: Path, max_batch_size: int, max_wait_ms: float) -> Iterator[str]:
    """``gcv serve MODEL`` in its own process on a free loopback port, ready; yields its base URL; SIGTERM after."""
    import httpx

    port = _free_port()
    command = [sys.executable, "-c", "from garmentcv.cli import main; main()", "serve", str(model), "--port",
               str(port), "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
               "--max-connections", "1024", "--max-queue", "1024", "-q"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gcv serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("gcv serve was not ready within 300 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def single_image_ms(model: Path, paths: Sequence[Path]) -> float:
    """Median over ``paths`` of one photo's decode plus one batch-1 model call, ms (after one warm-up call)."""
    handler = open_handler(HandlerSettings(model=model))
    times = []
    for path in paths:
        data = path.read_bytes()
        started = time.perf_counter()
        handler.probabilities(handler.decode(path.name, data)[None])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def classify_rate(folder: Path, model: Path, out: Path, repeats: int) -> float:
    """gcv classify's images/s on ``folder`` (files / wall time of the library call), median of ``repeats``."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        summary = classify_folder(ClassifyConfig(folder=folder, out=out, model=model, progress=False))
        rates.append(summary.files / (time.perf_counter() - started))
    return statistics.median(rates)


def run(arch: str, size: int, files: int, precisions: Sequence[str], concurrency: Sequence[int], seconds: float,
        repeats: int, max_batch_size: int, max_wait_ms: float, machine: MachineInfo) -> tuple[str, list[dict]]:
    """Measure every precision and concurrency; return the markdown report and the rows."""
    if shutil.which("wrk") is None:
        raise SystemExit("the serve benchmark drives the service with wrk: apt-get install wrk")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gcv-serve-bench-") as tmp:
        work = Path(tmp)
        folder = photos.write_photo_folder(work / "photos", files)
        paths = sorted(folder.path.glob("*.jpg"))
        _, models = onnx_models.speed_files(arch, size, paths, work, precisions=precisions)
        script = wrk_script(paths, work / "post.lua")
        for precision, model in models.items():
            base = classify_rate(folder.path, model, work / "out.csv", repeats)
            single = single_image_ms(model, paths[: min(len(paths), 32)])
            rows.append({"section": "classify", "precision": precision, "images_per_s": round(base, 1)})
            rows.append({"section": "single-image", "precision": precision, "ms": round(single, 2)})
            with running_service(model, max_batch_size, max_wait_ms) as url:
                run_wrk(f"{url}/v1/classify", script, min(8, max(concurrency)), min(seconds, 3))  # warm-up
                for c in concurrency:
                    r = run_wrk(f"{url}/v1/classify", script, c, seconds)
                    rate = r["requests"] / (r["duration_us"] / 1e6)
                    rows.append({
                        "section": "serve", "precision": precision, "concurrency": c, "images_per_s": round(rate, 1),
                        "p50_ms": round(r["p50_us"] / 1000, 2), "p95_ms": round(r["p95_us"] / 1000, 2),
                        "p99_ms": round(r["p99_us"] / 1000, 2), "non_2xx": r["non_2xx"],
                        "socket_errors": r["socket_errors"], "vs_classify": round(rate / base, 3),
                        "p50_vs_single_image": round(r["p50_us"] / 1000 / single, 2),
                    })
    return _report(rows, arch, size, files, seconds, max_batch_size, max_wait_ms, machine), _with_targets(rows)


def _with_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` and one ``target`` row per precision and target that was measured (met or not)."""
    out = list(rows)
    at, share = THROUGHPUT_TARGET
    for row in rows:
        if row["section"] != "serve":
            continue
        if row["concurrency"] == at:
            out.append({"section": "target", "precision": row["precision"], "target": f"c{at} images/s >= "
                        f"{share} x classify", "value": row["vs_classify"], "met": row["vs_classify"] >= share})
        if row["concurrency"] == 1:
            out.append({"section": "target", "precision": row["precision"], "target": f"c1 p50 <= {LATENCY_TARGET} "
                        "x single image", "value": row["p50_vs_single_image"],
                        "met": row["p50_vs_single_image"] <= LATENCY_TARGET})
    return out


def _report(rows: list[dict[str, Any]], arch: str, size: int, files: int, seconds: float, max_batch_size: int,
            max_wait_ms: float, machine: MachineInfo) -> str:
    lines = [f"# gcv serve under wrk against gcv classify, {arch} {size} px, {files} photos", "",
             f"Machine: {machine.summary()}; available CPUs {available_cpus()}. {seconds:g} s per concurrency, "
             f"--max-batch-size {max_batch_size}, --max-wait-ms {max_wait_ms:g}; wrk on the same CPUs.", "",
             "| precision | concurrency | images/s | vs classify | p50 ms | p95 ms | p99 ms | p50 / single image | "
             "non-2xx |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["section"] == "serve":
            lines.append(f"| {r['precision']} | {r['concurrency']} | {r['images_per_s']} | {r['vs_classify']} | "
                         f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['p50_vs_single_image']} | "
                         f"{r['non_2xx']} |")
    lines.append("")
    for r in rows:
        if r["section"] == "classify":
            lines.append(f"- gcv classify {r['precision']}: {r['images_per_s']} images/s")
        elif r["section"] == "single-image":
            lines.append(f"- one image's decode + model call, {r['precision']}: {r['ms']} ms")
    return "\n".join(lines) + "\n"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``serve[-NAME].json``/``.md`` to ``OUT/<machine>/``; return 0."""
    parser = shared.suite_parser(__doc__, repeats=3)
    parser.add_argument("--arch", default="resnet18", help="registered arch (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument("--files", type=int, default=200, help="photos in the folder (default: %(default)s)")
    parser.add_argument("--precisions", default="fp32,int8", help="model files, comma-separated (default: "
                        "%(default)s)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 32, 128],
                        help="wrk connections, comma-separated (default: 1,8,32,128)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency (default: %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="gcv serve's (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="gcv serve's (default: %(default)s)")
    args = parser.parse_args(argv)
    shared.setup_logging(args.quiet)
    begun = results.start("serve", argv)
    text, rows = run(args.arch, args.size, args.files, [p for p in args.precisions.split(",") if p],
                     args.concurrency, args.duration, args.repeats, args.max_batch_size, args.max_wait_ms,
                     begun.machine)
    results.write(begun, rows, args.out, args.name, markdown=text)
    shared.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
