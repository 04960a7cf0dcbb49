"""Conventions shared by every command: which files are images (one source: Pillow's registry for the
formats GarmentCV decodes), the docs' list of them (docs/data.md), and ``--version``."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, features

import garmentcv
from garmentcv import image as gimage

DATA_PAGE = Path(__file__).resolve().parents[1] / "docs" / "data.md"

#: What Pillow 13 (the tested version) registers for JPEG, PNG, BMP, GIF, WEBP, TIFF and AVIF.
_EXPECTED = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_AVIF = {".avif", ".avifs"}


def test_image_extensions_are_exactly_pillows_registry_for_the_decoded_formats() -> None:
    Image.init()
    derived = {ext for ext, fmt in Image.registered_extensions().items() if fmt in gimage.DECODED_FORMATS}
    assert gimage.IMAGE_EXTENSIONS == frozenset(derived)
    assert gimage.image_extensions() is gimage.IMAGE_EXTENSIONS  # computed once
    assert gimage.IMAGE_EXTENSIONS == frozenset(_EXPECTED | (_AVIF if features.check("avif") else set()))
    assert ".mpo" not in gimage.IMAGE_EXTENSIONS and ".eps" not in gimage.IMAGE_EXTENSIONS


def test_avif_is_decoded_exactly_when_this_pillow_reads_it() -> None:
    assert ("AVIF" in gimage.DECODED_FORMATS) == features.check("avif") == ("AVIF" in Image.OPEN)
    assert features.check("avif"), "the tests run on a Pillow that reads AVIF (11.3+ wheels)"


def test_importing_garmentcv_image_does_not_initialise_every_pillow_plugin() -> None:
    code = (
        "import sys; import garmentcv.image; from PIL import Image; "
        "print(Image._initialized, 'PIL.EpsImagePlugin' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "False"]


def _docs_extensions() -> str:
    match = re.search(r"<!-- image-extensions -->\n(.*?)\n<!-- /image-extensions -->", DATA_PAGE.read_text("utf-8"),
                      re.S)
    assert match, "docs/data.md lacks the <!-- image-extensions --> block"
    return match.group(1)


def test_docs_list_exactly_the_computed_extensions() -> None:
    assert _docs_extensions() == gimage.extensions_markdown()
    listed = set(re.findall(r"`(\.[a-z0-9]+)`", _docs_extensions()))
    assert listed == set(gimage.IMAGE_EXTENSIONS)


def test_extensions_are_printed_by_python_m_garmentcv_image() -> None:
    out = subprocess.run([sys.executable, "-m", "garmentcv.image", "--extensions"], capture_output=True,
                         text=True, check=True).stdout
    assert out == gimage.extensions_markdown() + "\n"


def _commands():
    from garmentcv.data.cli import main as data_main
    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.cli import classify_main, evaluate_main
    from garmentcv.serve.cli import main as serve_main
    from garmentcv.train.cli import main as train_main

    return {"gcv data": data_main, "gcv train": train_main, "gcv export": export_main,
            "gcv classify": classify_main, "gcv evaluate": evaluate_main, "gcv serve": serve_main}


@pytest.mark.parametrize("name", ["gcv data", "gcv train", "gcv export", "gcv classify", "gcv evaluate",
                                  "gcv serve"])
def test_version_on_every_command(name: str) -> None:
    command = _commands()[name]
    result = CliRunner().invoke(command, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{name} (garmentcv) {garmentcv.__version__}\n"
    assert garmentcv.__version__ == "0.1.0"
    help_text = CliRunner().invoke(command, ["--help"]).stdout
    assert "--version" in help_text


def test_version_of_every_command_never_imports_torch() -> None:
    code = """
import sys
from click.testing import CliRunner
from garmentcv.data.cli import main as data_main
from garmentcv.export.cli import main as export_main
from garmentcv.infer.cli import classify_main, evaluate_main
from garmentcv.serve.cli import main as serve_main
from garmentcv.train.cli import main as train_main
commands = (data_main, export_main, evaluate_main, train_main, serve_main)
outs = [CliRunner().invoke(c, ["--version"]).stdout.strip() for c in commands]
print("|".join(outs))
print("torch" in sys.modules, "onnxruntime" in sys.modules)
sys.argv = ["gcv-classify", "--version"]
try:
    classify_main()
finally:
    print("torch" in sys.modules, "onnxruntime" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "gcv data (garmentcv) 0.1.0|gcv export (garmentcv) 0.1.0|gcv evaluate (garmentcv) 0.1.0|"
        "gcv train (garmentcv) 0.1.0|gcv serve (garmentcv) 0.1.0",
        "False False",
        "gcv classify (garmentcv) 0.1.0",
        "False False",
    ]


def test_jfif_and_jpe_are_classified_like_jpg(tmp_path: Path, onnx_model: Path, image_writer) -> None:
    jpeg = image_writer(tmp_path / "src.jpg", colour=(40, 160, 60), seed=3).read_bytes()
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jfif", "c.JPE", "d.txt"):
        (folder / name).write_bytes(jpeg)
    from garmentcv.infer.cli import classify_main

    out = tmp_path / "r.csv"
    result = CliRunner().invoke(classify_main, [str(folder), "--out", str(out), "--model", str(onnx_model), "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert [r["path"] for r in rows] == ["a.jpg", "b.jfif", "c.JPE"]
    assert [r["error"] for r in rows] == ["", "", ""]
    first = {k: v for k, v in rows[0].items() if k != "path"}
    assert all({k: v for k, v in r.items() if k != "path"} == first for r in rows)


#: Text that names a file outside the wheel: the benchmarks (``benchmarks/x.py``, ``python -m benchmarks.x``, their
#: results), RESULTS.md or README.md. The library links its docs page (docs/<page>.md) instead.
_OUTSIDE_THE_WHEEL = re.compile(r"benchmarks[/.]\w|RESULTS\.md|README(\.md|'s)|see README")


def test_the_library_names_no_file_outside_the_wheel() -> None:
    package = Path(garmentcv.__file__).parent
    found = []
    for module in sorted(package.rglob("*.py")):
        name = module.relative_to(package).as_posix()
        for number, line in enumerate(module.read_text(encoding="utf-8").splitlines(), 1):
            if _OUTSIDE_THE_WHEEL.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == []


def test_benchmarks_use_public_functions_of_the_library_only() -> None:
    """A benchmark measures what users call: it imports no private (underscored) name of garmentcv."""
    import ast

    private = []
    for path in sorted((Path(__file__).resolve().parents[1] / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("garmentcv"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def test_library_modules_import_no_private_name_of_another_module() -> None:
    """A module's underscored names are its own: another module that needs one uses a public name instead."""
    import ast

    private = []
    for path in sorted(Path(garmentcv.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("garmentcv"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
