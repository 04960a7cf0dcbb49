"""Smoke test of the benchmark runner (benchmarks/, not installed): ``--tiny`` end to end, outputs checked.

Not a timing test: it checks that every section produces its rows, with real figures where something was
measured and an explicit status where nothing could be. The ``--tiny`` run takes about a minute on 2 cores, so its
tests are marked ``benchmark`` and left out of the default run (``pytest -m benchmark`` runs them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.end_to_end import REPO_ROOT, gcv_classify_available, reported_rate, run_measured
from benchmarks.model_only import cuda_available
from benchmarks.report import FIELDS, read_csv
from benchmarks.results import KEYS
from benchmarks.timing import Timing, time_call


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--tiny", "--out", str(out)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (document,) = out.glob("*/run.json")  # OUT/<machine>/run.json
    return document


def _numbers(row: dict[str, str], *names: str) -> list[float]:
    return [float(row[n]) for n in names]


@pytest.mark.benchmark
def test_tiny_run_writes_every_section(tiny_run: Path) -> None:
    rows = read_csv(tiny_run.with_suffix(".csv"))
    assert tuple(rows[0].keys()) == FIELDS
    sections = [r["section"] for r in rows]
    assert sections.count("matmul") == 4  # --tiny: 2 sizes x numpy, torch
    assert sections.count("ceiling") == 1  # resnet18 at 32 px
    assert sections.count("model-only") == 12  # (eager, ort fp32, int8, int8-s8s8) x batch 1, 2 + CUDA fp32/fp16 x 1, 2
    assert (
        sections.count("end-to-end") == 5
    )  # decode only, gcv-classify fp32, int8, int8-s8s8, torchvision eager + DataLoader
    assert sections.count("memory") == 2  # 10 and 20 files
    assert sections.count("accuracy") == 3  # fp32, int8 (gcv-export), int8-s8s8 (former export setting)
    assert sections.count("int8-settings") == 0  # off in --tiny
    assert {r["machine"] for r in rows} == {rows[0]["machine"]} and "CPUs" in rows[0]["machine"]

    ceiling = next(r for r in rows if r["section"] == "ceiling")
    assert (ceiling["arch"], ceiling["image_size"]) == ("resnet18", "32")
    assert 0.05 < float(ceiling["gflops"]) < 0.1  # resnet18 at 32 px: 0.074 GFLOP (2 per multiply-add)

    cpu = [r for r in rows if r["section"] == "model-only" and r["provider"] == "cpu"]
    assert sorted((r["runtime"], r["precision"], r["batch_size"]) for r in cpu) == sorted(
        (rt, p, b) for rt, p in (("pytorch-eager", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                                 ("onnxruntime", "int8-s8s8")) for b in "12")
    for r in cpu:
        assert r["status"] == "ok" and int(r["repeats"]) == 2
        median, p90, ips, fraction = _numbers(r, "median_ms", "p90_ms", "images_per_s", "fraction_of_ceiling")
        assert 0 < median <= p90
        assert ips == pytest.approx(int(r["batch_size"]) / median * 1e3, rel=1e-4)
        assert fraction == pytest.approx(ips / float(ceiling["ceiling_images_per_s"]), rel=1e-4)
    cuda = [r for r in rows if r["section"] == "model-only" and r["provider"] == "cuda"]
    assert {r["precision"] for r in cuda} == {"fp32", "fp16"}
    if not cuda_available():
        assert {r["status"] for r in cuda} == {"not measured (no GPU in this run)"}

    assert gcv_classify_available(), "gcv-classify is a console script of garmentcv: pip install -e ."
    e2e = [r for r in rows if r["section"] in ("end-to-end", "memory") and r["runtime"] != "decode-only"]
    assert sorted((r["section"], r["runtime"], r["precision"], r["files"]) for r in e2e) == [
        ("end-to-end", "gcv-classify", "fp32", "10"),
        ("end-to-end", "gcv-classify", "int8", "10"),
        ("end-to-end", "gcv-classify", "int8-s8s8", "10"),
        ("end-to-end", "torchvision-eager-dataloader", "fp32", "10"),
        ("memory", "gcv-classify", "fp32", "10"),
        ("memory", "gcv-classify", "fp32", "20"),
    ]
    for r in e2e:
        assert r["status"] == "ok", r
        assert float(r["peak_rss_mb"]) > 20 and float(r["seconds"]) > 0
        assert float(r["images_per_s"]) == pytest.approx(int(r["files"]) / float(r["seconds"]), rel=1e-4)
        assert float(r["command_images_per_s"]) >= float(r["images_per_s"])  # the command's own time excludes start-up

    decode = next(r for r in rows if r["runtime"] == "decode-only")
    assert decode["status"] == "ok" and decode["files"] == "10" and float(decode["images_per_s"]) > 0

    accuracy = {r["precision"]: r for r in rows if r["section"] == "accuracy"}
    assert set(accuracy) == {"fp32", "int8", "int8-s8s8"}
    for r in accuracy.values():
        assert r["status"] == "ok" and r["files"] == "80" and 0.0 <= float(r["accuracy"]) <= 1.0


@pytest.mark.benchmark
def test_tiny_run_writes_report_and_chart(tiny_run: Path) -> None:
    text = tiny_run.with_suffix(".md").read_text()
    assert "Command: `python -m benchmarks run --tiny" in text
    for heading in ("## FP32 matmul rate", "## FLOP ceiling", "## Model only", "## End to end", "## Peak memory",
                    "## Top-1 accuracy"):
        assert heading in text
    assert "not measured (no GPU in this run)" in text or cuda_available()
    assert tiny_run.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.benchmark
def test_tiny_run_writes_result_document(tiny_run: Path) -> None:
    document = json.loads(tiny_run.read_text())
    assert tuple(document) == KEYS and document["suite"] == "run" and document["schema"] == 1
    assert tiny_run.parent.name == document["machine"]["slug"]
    assert document["command"].startswith("python -m benchmarks run --tiny --out ")
    assert document["machine"]["cores"] >= 1 and len(document["machine"]["load_after"]) == 3
    csv_rows = read_csv(tiny_run.with_suffix(".csv"))
    assert [r["section"] for r in document["rows"]] == [r["section"] for r in csv_rows]
    assert tuple(document["rows"][0]) == FIELDS


def test_timing_statistics() -> None:
    timing = Timing(seconds=(0.010, 0.030, 0.020, 0.040, 0.050, 0.060, 0.070, 0.080, 0.090, 0.100), batch_size=8)
    assert timing.median_ms == pytest.approx(55.0)
    assert timing.p90_ms == pytest.approx(90.0)  # nearest rank: 9th of 10
    assert timing.images_per_second == pytest.approx(8 / 0.055)
    assert Timing(seconds=(0.01, 0.02, 0.03), batch_size=1).p90_ms == pytest.approx(30.0)


def test_time_call_counts_warmup_and_repeats() -> None:
    calls: list[int] = []
    timing = time_call(lambda: calls.append(1), batch_size=4, warmup=3, min_repeats=5, budget_s=0.0)
    assert len(calls) == 8 and timing.repeats == 5 and timing.batch_size == 4
    with pytest.raises(ValueError):
        time_call(lambda: None, batch_size=1, min_repeats=0)


def test_reported_rate_reads_the_last_rate_printed() -> None:
    line = "12 image files: 12 classified, 0 errors; skipped none; 0.3 s, 40.5 images/s on cpu -> out.csv"
    assert reported_rate("model ...\n" + line + "\n") == 40.5
    assert reported_rate("10 images, 2.00 s, 5.00 images/s\n") == 5.0
    assert reported_rate("Error: no model") is None


def test_run_measured_reports_peak_memory_and_exit_code() -> None:
    big = run_measured([sys.executable, "-c", "b = bytearray(150_000_000); b[::4096] = b'x' * len(b[::4096])"])
    small = run_measured([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert big.returncode == 0 and small.returncode == 3
    assert big.peak_rss_mb > 150 > small.peak_rss_mb
