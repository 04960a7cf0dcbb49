"""gcv serve under load from wrk, against gcv classify on the same photos in the same run.

One photo folder (benchmarks.photos: 4 of every 5 photos at 600x866) and the gcv export files of a random-init arch
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
the single image's time) met or not. The load generator runs on the same CPUs as the service.

With ``--ray-replicas 1,2``, ``gcv serve --engine ray`` (a local Ray, one CPU per replica) at ``--ray-concurrency``
on the first precision. With ``--soak SECONDS``, a run mixing the photos with bad bodies (truncated, not an image,
empty, EPS, a decompression bomb, a wrong content type; about one in five) on the first precision: answers by status
class (no 5xx is the target) and the service's resident memory sampled every 5 s (flat: the last sample at most 1.1
times the first). Usage:

    python -m benchmarks serve [--arch resnet18] [--size 224] [--files 200] [--precisions fp32,int8]
                               [--concurrency 1,8,32,128] [--duration 20] [--repeats 3]
                               [--ray-replicas 1,2] [--soak 600]
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
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
local items = {%(items)s}
local bodies = {}
local counter = 0
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  for i, item in ipairs(items) do
    local f = assert(io.open(item[1], "rb"))
    bodies[i] = {f:read("*all"), item[2]}
    f:close()
  end
  s2, s4, s5 = 0, 0, 0
end

request = function()
  counter = counter + 1
  local body = bodies[(counter %% #bodies) + 1]
  return wrk.format("POST", "/v1/classify", {["Content-Type"] = body[2]}, body[1])
end

response = function(status, headers, body)
  if status >= 500 then s5 = s5 + 1 elseif status >= 400 then s4 = s4 + 1 else s2 = s2 + 1 end
end

done = function(summary, latency, requests)
  local t2, t4, t5 = 0, 0, 0
  for _, thread in ipairs(threads) do
    t2 = t2 + thread:get("s2")
    t4 = t4 + thread:get("s4")
    t5 = t5 + thread:get("s5")
  end
  local e = summary.errors
  io.write(string.format('GCV_RESULT {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"status_2xx": %%d, "status_4xx": %%d, "status_5xx": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout, t2, t4, t5,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def wrk_script(paths: Sequence[Path], out: Path, content_types: Sequence[str] | None = None) -> Path:
    """A wrk Lua script posting ``paths`` in turn as raw bodies (``image/jpeg``, or ``content_types``, one per path)
    and printing one ``GCV_RESULT`` JSON line: requests, duration, non-2xx answers, socket errors, answers by status
    class, latency percentiles in microseconds."""
    types = list(content_types) if content_types is not None else ["image/jpeg"] * len(paths)
    listed = ", ".join(f"{{{json.dumps(str(p))}, {json.dumps(t)}}}" for p, t in zip(paths, types, strict=True))
    out.write_text(_LUA % {"items": listed}, encoding="utf-8")
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


@dataclass(frozen=True)
class Service:
    """A running ``gcv serve``: its base URL and process id."""

    url: str
    pid: int


@contextlib.contextmanager
def running_service(model: Path, max_batch_size: int, max_wait_ms: float, replicas: int | None = None,
                    threads: int | None = None) -> Iterator[Service]:
    """``gcv serve MODEL`` in its own process on a free loopback port, ready; SIGTERM after. ``replicas``: with
    ``--engine ray`` and that many replicas (a local Ray started by the command)."""
    import httpx

    port = _free_port()
    command = [sys.executable, "-c", "from garmentcv.cli import main; main()", "serve", str(model), "--port",
               str(port), "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
               "--max-connections", "1024", "--max-queue", "1024", "-q"]
    if replicas is not None:
        command += ["--engine", "ray", "--replicas", str(replicas)]
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0"}
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
        yield Service(url, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, MB (``VmRSS``; 0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def bad_inputs(folder: Path, photo: Path) -> list[tuple[Path, str]]:
    """One file of each bad input the service must answer without a 5xx, with the content type sent: a truncated
    photo, text, an empty body, EPS, a PNG header of 20000x20000 px (a decompression bomb) and a wrong type."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    folder.mkdir(parents=True, exist_ok=True)
    whole = photo.read_bytes()
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b""))
    files = {"truncated.jpg": (whole[: len(whole) // 2], "image/jpeg"), "text.jpg": (b"not an image", "image/jpeg"),
             "empty.jpg": (b"", "image/jpeg"), "eps.jpg": (b"%!PS-Adobe-3.0 EPSF-3.0\n", "application/octet-stream"),
             "bomb.png": (bomb, "image/png"), "json.txt": (b"{}", "application/json")}
    out = []
    for name, (data, content_type) in files.items():
        (folder / name).write_bytes(data)
        out.append((folder / name, content_type))
    return out


def soak(service: Service, script: Path, connections: int, seconds: float, every_s: float = 5.0) -> dict[str, Any]:
    """wrk against ``service`` for ``seconds`` while its memory is sampled every ``every_s`` s: wrk's figures and
    ``rss_mb_first``, ``rss_mb_max``, ``rss_mb_last`` (the first sample is taken after ``every_s``)."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            samples.append(rss_mb(service.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        figures = run_wrk(f"{service.url}/v1/classify", script, connections, seconds)
    finally:
        stop.set()
        sampler.join()
    samples = samples or [rss_mb(service.pid)]
    return {**figures, "rss_mb_first": round(samples[0], 1), "rss_mb_max": round(max(samples), 1),
            "rss_mb_last": round(samples[-1], 1)}


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


@dataclass(frozen=True)
class Plan:
    """What one run of the suite measures (its command-line options)."""

    arch: str = "resnet18"
    size: int = 224
    files: int = 200
    precisions: tuple[str, ...] = ("fp32", "int8")
    concurrency: tuple[int, ...] = (1, 8, 32, 128)
    seconds: float = 20.0
    repeats: int = 3
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    ray_replicas: tuple[int, ...] = ()
    ray_concurrency: int = 32
    soak_seconds: float = 0.0
    soak_concurrency: int = 32


def _serve_row(section: str, precision: str, c: int, r: dict[str, Any], base: float, single: float,
               **extra: Any) -> dict[str, Any]:
    rate = r["requests"] / (r["duration_us"] / 1e6)
    return {"section": section, "precision": precision, **extra, "concurrency": c, "images_per_s": round(rate, 1),
            "p50_ms": round(r["p50_us"] / 1000, 2), "p95_ms": round(r["p95_us"] / 1000, 2),
            "p99_ms": round(r["p99_us"] / 1000, 2), "non_2xx": r["non_2xx"], "status_5xx": r["status_5xx"],
            "socket_errors": r["socket_errors"], "vs_classify": round(rate / base, 3),
            "p50_vs_single_image": round(r["p50_us"] / 1000 / single, 2)}


def run(plan: Plan, machine: MachineInfo) -> tuple[str, list[dict[str, Any]]]:
    """Measure every precision and concurrency (then Ray Serve's replicas and the soak, when asked, on the first
    precision); return the markdown report and the rows."""
    if shutil.which("wrk") is None:
        raise SystemExit("the serve benchmark drives the service with wrk: apt-get install wrk")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gcv-serve-bench-") as tmp:
        work = Path(tmp)
        folder = photos.write_photo_folder(work / "photos", plan.files)
        paths = sorted(folder.path.glob("*.jpg"))
        _, models = onnx_models.speed_files(plan.arch, plan.size, paths, work, precisions=plan.precisions)
        script = wrk_script(paths, work / "post.lua")
        for n, (precision, model) in enumerate(models.items()):
            base = classify_rate(folder.path, model, work / "out.csv", plan.repeats)
            single = single_image_ms(model, paths[: min(len(paths), 32)])
            rows.append({"section": "classify", "precision": precision, "images_per_s": round(base, 1)})
            rows.append({"section": "single-image", "precision": precision, "ms": round(single, 2)})
            with running_service(model, plan.max_batch_size, plan.max_wait_ms) as service:
                url = f"{service.url}/v1/classify"
                run_wrk(url, script, min(8, max(plan.concurrency)), min(plan.seconds, 3))  # warm-up
                for c in plan.concurrency:
                    rows.append(_serve_row("serve", precision, c, run_wrk(url, script, c, plan.seconds), base,
                                           single))
                if n == 0 and plan.soak_seconds > 0:
                    good = [(path, "image/jpeg") for path in paths]
                    bad = bad_inputs(work / "bad", paths[0])
                    mixed = good[:] + bad * max(1, len(good) // (4 * len(bad)))  # about one bad body in five
                    soak_script = wrk_script([m[0] for m in mixed], work / "soak.lua", [m[1] for m in mixed])
                    r = soak(service, soak_script, plan.soak_concurrency, plan.soak_seconds)
                    rows.append({**_serve_row("soak", precision, plan.soak_concurrency, r, base, single),
                                 "seconds": plan.soak_seconds, "status_2xx": r["status_2xx"],
                                 "status_4xx": r["status_4xx"], "rss_mb_first": r["rss_mb_first"],
                                 "rss_mb_max": r["rss_mb_max"], "rss_mb_last": r["rss_mb_last"]})
            for replicas in plan.ray_replicas if n == 0 else ():
                with running_service(model, plan.max_batch_size, plan.max_wait_ms, replicas=replicas,
                                     threads=1) as service:
                    url = f"{service.url}/v1/classify"
                    run_wrk(url, script, plan.ray_concurrency, min(plan.seconds, 3))  # warm-up
                    r = run_wrk(url, script, plan.ray_concurrency, plan.seconds)
                    rows.append(_serve_row("ray-serve", precision, plan.ray_concurrency, r, base, single,
                                           replicas=replicas))
    return _report(rows, plan, machine), _with_targets(rows)


def _with_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` and one ``target`` row per precision and target that was measured (met or not)."""
    out = list(rows)
    at, share = THROUGHPUT_TARGET
    for row in rows:
        if row["section"] == "soak":
            grew = row["rss_mb_last"] / row["rss_mb_first"] if row["rss_mb_first"] else float("inf")
            out.append({"section": "target", "precision": row["precision"], "target": "soak: no 5xx",
                        "value": row["status_5xx"], "met": row["status_5xx"] == 0 and row["socket_errors"] == 0})
            out.append({"section": "target", "precision": row["precision"], "target": "soak: memory flat (last <= "
                        "1.1 x first sample)", "value": round(grew, 3), "met": grew <= 1.1})
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


def _report(rows: list[dict[str, Any]], plan: Plan, machine: MachineInfo) -> str:
    lines = [f"# gcv serve under wrk against gcv classify, {plan.arch} {plan.size} px, {plan.files} photos", "",
             f"Machine: {machine.summary()}; available CPUs {available_cpus()}. {plan.seconds:g} s per concurrency, "
             f"--max-batch-size {plan.max_batch_size}, --max-wait-ms {plan.max_wait_ms:g}; wrk on the same CPUs.",
             "", "| run | precision | concurrency | images/s | vs classify | p50 ms | p95 ms | p99 ms | "
             "p50 / single image | non-2xx | 5xx |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["section"] in ("serve", "ray-serve", "soak"):
            name = {"serve": "gcv serve", "soak": f"soak {r.get('seconds', 0):g} s, good and bad",
                    "ray-serve": f"Ray Serve, {r.get('replicas')} replicas"}[r["section"]]
            lines.append(f"| {name} | {r['precision']} | {r['concurrency']} | {r['images_per_s']} | "
                         f"{r['vs_classify']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
                         f"{r['p50_vs_single_image']} | {r['non_2xx']} | {r['status_5xx']} |")
    lines.append("")
    for r in rows:
        if r["section"] == "classify":
            lines.append(f"- gcv classify {r['precision']}: {r['images_per_s']} images/s")
        elif r["section"] == "single-image":
            lines.append(f"- one image's decode + model call, {r['precision']}: {r['ms']} ms")
        elif r["section"] == "soak":
            lines.append(f"- soak: {r['status_2xx']} answers 2xx, {r['status_4xx']} 4xx (the bad inputs), "
                         f"{r['status_5xx']} 5xx; service memory {r['rss_mb_first']} MB at the first sample, at most "
                         f"{r['rss_mb_max']} MB, {r['rss_mb_last']} MB at the end")
    for r in _with_targets(rows):
        if r["section"] == "target":
            lines.append(f"- target {r['precision']} {r['target']}: {r['value']} ({'met' if r['met'] else 'NOT met'})")
    return "\n".join(lines) + "\n"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> int:
    """Measure, write ``serve[-NAME].json``/``.md`` to ``OUT/<machine>/``; return 0."""
    parser = shared.suite_parser(__doc__, repeats=3)
    parser.add_argument("--arch", default="resnet18", help="registered arch (default: %(default)s)")
    parser.add_argument("--size", type=int, default=224, help="input size, px (default: %(default)s)")
    parser.add_argument("--files", type=int, default=200, help="photos in the folder (default: %(default)s)")
    parser.add_argument("--precisions", default="fp32,int8", help="model files, comma-separated (default: "
                        "%(default)s)")
    parser.add_argument("--concurrency", type=_ints, default=(1, 8, 32, 128),
                        help="wrk connections, comma-separated (default: 1,8,32,128)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency (default: %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="gcv serve's (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="gcv serve's (default: %(default)s)")
    parser.add_argument("--ray-replicas", type=_ints, default=(),
                        help="also gcv serve --engine ray with these replica counts, comma-separated, on the first "
                        "precision at --ray-concurrency (default: none)")
    parser.add_argument("--ray-concurrency", type=int, default=32, help="wrk connections for Ray (default: "
                        "%(default)s)")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="also a soak of this many seconds mixing good and bad bodies on the first precision, "
                        "counting 5xx and sampling the service's memory (default: none; 600 for the 10-minute soak)")
    args = parser.parse_args(argv)
    shared.setup_logging(args.quiet)
    plan = Plan(arch=args.arch, size=args.size, files=args.files,
                precisions=tuple(p for p in args.precisions.split(",") if p), concurrency=args.concurrency,
                seconds=args.duration, repeats=args.repeats, max_batch_size=args.max_batch_size,
                max_wait_ms=args.max_wait_ms, ray_replicas=args.ray_replicas, ray_concurrency=args.ray_concurrency,
                soak_seconds=args.soak)
    begun = results.start("serve", argv)
    text, rows = run(plan, begun.machine)
    results.write(begun, rows, args.out, args.name, markdown=text)
    shared.report(text, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
