"""The package's import rules for inference: runtimes apart from engines, no cycle between runtimes, no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import garmentcv

PACKAGE = Path(garmentcv.__file__).parent
INFER = PACKAGE / "infer"
RUNTIMES = "garmentcv.infer.runtimes"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function (``from a import b``: ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph(folder: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, for every module below ``folder``."""
    modules = {_module_name(p): p for p in sorted(folder.rglob("*.py"))}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return path[path.index(child):] + [child]
            if child not in state and (found := visit(child)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_runtime_modules_have_no_import_cycle() -> None:
    graph = _graph(INFER / "runtimes")
    assert {RUNTIMES, f"{RUNTIMES}.base", f"{RUNTIMES}.onnxruntime", f"{RUNTIMES}.openvino"} <= set(graph)
    assert _cycle(graph) is None, _cycle(graph)
    # each runtime imports only the shared pieces, never the choice between runtimes nor the other runtime
    for runtime in ("onnxruntime", "openvino"):
        assert graph[f"{RUNTIMES}.{runtime}"] <= {f"{RUNTIMES}.base"}, graph[f"{RUNTIMES}.{runtime}"]
    assert graph[f"{RUNTIMES}.base"] == set()


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_each_runtime_imports_alone_in_a_fresh_interpreter(runtime: str) -> None:
    other = {"onnxruntime": "openvino", "openvino": "onnxruntime"}[runtime]
    script = (f"import sys, {RUNTIMES}.{runtime}\n"
              f"print(sorted(m for m in sys.modules if m.startswith('garmentcv.infer.')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert f"{RUNTIMES}.{runtime}" in loaded
    assert f"{RUNTIMES}.{other}" not in loaded
    assert not [m for m in loaded if m.startswith("garmentcv.infer.engines")], loaded


def test_the_runtime_choice_imports_in_a_fresh_interpreter() -> None:
    script = f"import {RUNTIMES}.base, {RUNTIMES}; print({RUNTIMES}.Model is {RUNTIMES}.base.Model)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_runtimes_never_import_the_engines() -> None:
    for path in sorted((INFER / "runtimes").rglob("*.py")):
        engines = sorted(m for m in _imports(path) if m.startswith("garmentcv.infer.engines")
                         or m in ("garmentcv.infer.classify", "garmentcv.infer.partial"))
        assert not engines, f"{path.relative_to(PACKAGE)} imports {engines}"


def test_engines_and_partial_results_have_modules_of_their_own() -> None:
    graph = _graph(INFER)
    assert {"garmentcv.infer.engines.local", "garmentcv.infer.engines.ray", "garmentcv.infer.partial"} <= set(graph)
    # the partial results know nothing of the engines nor of the runtimes
    assert not {m for m in graph["garmentcv.infer.partial"]
                if m.startswith(("garmentcv.infer.engines", RUNTIMES, "garmentcv.infer.classify"))}
    # each engine is reached only through the command line or the classify module's re-export
    users = {
        name for name, imported in graph.items() if any(m.startswith("garmentcv.infer.engines.") for m in imported)
    }
    assert users <= {"garmentcv.infer.cli", "garmentcv.infer.classify", "garmentcv.infer.engines.local",
                     "garmentcv.infer.engines.ray"}, users


def test_infer_modules_never_import_torch() -> None:
    for path in sorted(INFER.rglob("*.py")):
        torch = sorted(m for m in _imports(path) if m.split(".")[0] in ("torch", "torchvision"))
        assert not torch, f"{path.relative_to(PACKAGE)} imports {torch}"
