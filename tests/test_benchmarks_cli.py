"""``python -m benchmarks``: every suite reachable from one entry point, every result in one document."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import options, results
from benchmarks.__main__ import SUITES
from benchmarks.machine import MachineInfo

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "benchmarks"


def _suite_modules() -> dict[str, str]:
    """Every module of the package that defines a top-level ``main``: its last name -> its dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[path.stem] = dotted
    return found


def _machine(
    cpu_model: str = "AMD EPYC 9R14 96-Core Processor", isa: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16")
) -> MachineInfo:
    return MachineInfo(
        cpu_model=cpu_model,
        logical_cpus=2,
        isa=isa,
        memory_gb=8.0,
        load_avg=(0.25, 0.5, 0.75),
        python="3.12.1",
        platform="Linux",
        versions={"numpy": "2.1.0", "torch": "2.5.0", "onnx": "1.17.0"},
    )


def test_help_lists_every_suite_module() -> None:
    modules = _suite_modules()
    assert {"run", "decode", "train_amp", "transfer", "scratch_preset"} <= set(modules)
    assert {name: module for name, (module, _) in SUITES.items()} == modules
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.split("suites:\n", 1)[1].splitlines() if line.startswith("  ")]
    assert listed == list(SUITES)


def test_suite_help_shows_its_own_and_the_shared_options() -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks", "decode", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m benchmarks decode")
    for option in ("--files", "--work", "--out", "--name", "--repeats", "--quiet"):
        assert option in result.stdout


def test_unknown_suite_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr


def test_module_entry_points_still_work() -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks.decode", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--repeats" in result.stdout


@pytest.mark.parametrize(("cpu_model", "isa", "slug"), [
    ("AMD EPYC 9R14 96-Core Processor", ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"), "amd-epyc-avx512bf16"),
    ("Intel(R) Xeon(R) Platinum 8488C", ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"), "intel-xeon-amx"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", ("avx2", "fma"), "intel-core-avx2"),
    ("AMD EPYC 7R32", ("avx2", "avx512f", "avx512_vnni"), "amd-epyc-avx512vnni"),
    ("", (), "unknown"),
])
def test_machine_slug_names_vendor_family_and_widest_isa(cpu_model: str, isa: tuple[str, ...], slug: str) -> None:
    assert results.machine_slug(cpu_model, isa) == slug


def test_writer_produces_the_schema(tmp_path: Path) -> None:
    run = results.start("decode", ["--files", "4"], machine=_machine())
    path = results.write(
        run, [{"path": "load_crop", "cpu_ms_per_image": 1.5}], tmp_path, name="quick", markdown="# t\n"
    )
    assert path == tmp_path / "amd-epyc-avx512bf16" / "decode-quick.json"
    assert path.with_suffix(".md").read_text() == "# t\n"
    document = json.loads(path.read_text())
    assert tuple(document) == results.KEYS == ("schema", "suite", "machine", "commit", "started", "command", "rows")
    assert document["schema"] == 1 and document["suite"] == "decode"
    assert document["command"] == "python -m benchmarks decode --files 4"
    assert document["rows"] == [{"path": "load_crop", "cpu_ms_per_image": 1.5}]
    machine = document["machine"]
    assert tuple(machine) == results.MACHINE_KEYS
    assert machine["cpu_model"] == "AMD EPYC 9R14 96-Core Processor" and machine["slug"] == "amd-epyc-avx512bf16"
    assert machine["flags"] == ["avx2", "avx512f", "avx512_bf16"] and machine["cores"] == 2
    assert machine["versions"] == {"python": "3.12.1", "numpy": "2.1.0", "torch": "2.5.0"}
    assert machine["load_before"] == [0.25, 0.5, 0.75] and len(machine["load_after"]) == 3
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert document["commit"]["rev"] == head and isinstance(document["commit"]["dirty"], bool)
    assert document["started"].endswith("+00:00")
    assert not path.with_suffix(".csv").exists()


def test_writer_puts_the_rows_in_a_csv_beside_the_document_when_asked(tmp_path: Path) -> None:
    run = results.start("shared_core", [], machine=_machine())
    rows = [{"label": "fp32", "share": 0.91}, {"label": "int8", "share": 0.85}]
    path = results.write(run, rows, tmp_path, with_csv=True)
    assert path.with_suffix(".csv").read_text().splitlines() == ["label,share", "fp32,0.91", "int8,0.85"]


def test_writer_without_a_name_uses_the_suite(tmp_path: Path) -> None:
    run = results.start("opening", [], machine=_machine("Intel(R) Xeon(R) Platinum 8488C", ("amx_tile",)))
    assert results.write(run, [], tmp_path) == tmp_path / "intel-xeon-amx" / "opening.json"


def test_shared_parser_lets_a_suite_set_its_repeats() -> None:
    parser = options.suite_parser("Title.\n\nMore.", repeats=15)
    args = parser.parse_args(["--out", "x", "-q"])
    assert (args.out, args.name, args.repeats, args.quiet) == (Path("x"), None, 15, True)
    assert parser.description == "Title."


def test_a_suite_run_through_the_entry_point_writes_its_document(tmp_path: Path) -> None:
    argv = [
        "decode",
        "--files",
        "5",
        "--repeats",
        "1",
        "--out",
        str(tmp_path / "results"),
        "--work",
        str(tmp_path / "work"),
        "--name",
        "tiny",
        "-q",
    ]
    result = subprocess.run([sys.executable, "-m", "benchmarks", *argv], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""  # --quiet: no report on stdout
    (path,) = (tmp_path / "results").glob("*/decode-tiny.json")
    document = json.loads(path.read_text())
    assert tuple(document) == results.KEYS and document["command"] == "python -m benchmarks " + " ".join(argv)
    assert path.parent.name == document["machine"]["slug"]
    paths = [r["path"] for r in document["rows"]]
    assert paths[0] == "decode-only (Pillow DCT 1/2)" and "load_crop" in paths
    assert all(r["images"] == 4 and r["repeats"] == 1 and r["cpu_ms_per_image"] > 0 for r in document["rows"])
    assert document["rows"][0]["ratio_to_decode_only"] == 1.0
    assert path.with_suffix(".md").read_text().startswith("# Decoding at the floor")
    assert path.with_suffix(".csv").read_text().splitlines()[0].startswith("path,cpu_ms_per_image,")


def test_writer_puts_only_the_csv_rows_given_in_the_csv_for_a_document_of_several_shapes(tmp_path) -> None:
    import csv

    from benchmarks import results

    run = results.start("suite")
    path = results.write(run, [{"a": 1, "b": 2}, {"section": "target", "met": True}], tmp_path,
                         csv_rows=[{"a": 1, "b": 2}])
    with open(path.with_suffix(".csv"), newline="", encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == [{"a": "1", "b": "2"}]
    assert [r for r in results.json.loads(path.read_text())["rows"]] == [{"a": 1, "b": 2},
                                                                         {"section": "target", "met": True}]
