"""The documentation: the site builds with --strict, its references cover every option, the Python examples of README
and the docs run, README stays short, and every rendered table matches its results data file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import docs_tables  # noqa: E402  (scripts/ is not a package)

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _text(html_file: Path) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", " ", html_file.read_text(encoding="utf-8")))


def test_site_builds_strict_with_every_page_of_the_docs_folder(site: Path) -> None:
    for page in PAGES:
        name = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (site / name).is_file(), name
    assert (site / "benchmarks" / "index.html").is_file()  # benchmarks/README.md: how the benchmarks measure
    assert (site / "benchmarks" / "results" / "results.csv").read_bytes() == (
        REPO / "benchmarks" / "results" / "results.csv").read_bytes()


def _commands() -> dict[str, click.Command]:
    from garmentcv.cli import main as gcv_main
    from garmentcv.data.cli import main as data_main
    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.cli import classify_main, evaluate_main
    from garmentcv.serve.cli import main as serve_main
    from garmentcv.train.cli import main as train_main

    commands: dict[str, click.Command] = {"gcv": gcv_main, "gcv-train": train_main, "gcv-export": export_main,
                                          "gcv-classify": classify_main, "gcv-evaluate": evaluate_main,
                                          "gcv-serve": serve_main}
    assert isinstance(data_main, click.Group)
    commands.update({f"gcv-data {name}": sub for name, sub in data_main.commands.items()})
    return commands


def test_cli_reference_is_generated_from_every_option_of_every_command(site: Path) -> None:
    """Every option is on the page; a hidden one (an old name kept for one release) is named in the table of old
    names rather than generated, so only the visible options' help must be rendered."""
    text = _text(site / "cli" / "index.html")
    assert "Sentinel" not in text and "UNSET" not in text
    assert "<id>_<label>.jpg" in text  # placeholders of the help text are shown, not swallowed as HTML tags
    for name in ("gcv data fashion-mnist", "gcv data inspect", "gcv train", "gcv export", "gcv classify",
                 "gcv evaluate", "gcv serve"):
        assert f'id="{name.replace(" ", "-")}"' in (site / "cli" / "index.html").read_text(encoding="utf-8"), name
    for name, command in _commands().items():
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("-"):
                    assert opt in text, f"{name} {opt} is missing from the CLI reference"
            if isinstance(param, click.Option) and param.help and not param.hidden:
                first_words = " ".join(param.help.split()[:4])
                assert first_words in " ".join(text.split()), f"{name} {param.opts}: help not rendered"


def test_api_reference_renders_the_library_functions(site: Path) -> None:
    text = re.sub(r"\s*\.\s*", ".", _text(site / "api" / "index.html"))  # a.b.c is rendered as spans
    for name in ("garmentcv.train.loop.train", "garmentcv.export.exporter.export_checkpoint",
                 "garmentcv.infer.classify.classify_folder", "garmentcv.infer.evaluate.evaluate_model",
                 "garmentcv.infer.engines.ray.classify_ray", "garmentcv.image.load_crop"):
        assert name in text, name
    assert "ClassifyUsageError" in text or "GarmentCVError" in text


def test_tables_are_rendered_from_their_data_files(site: Path) -> None:
    text = " ".join(_text(site / "performance" / "index.html").split())
    rows = list(docs_tables.load_rows(docs_tables.parse_spec(
        "benchmarks/results/results.csv; where: section=end-to-end, image_size=224, arch=resnet18, precision=int8, "
        "runtime=gcv-classify; cols: command_images_per_s")))
    assert len(rows) == 1
    assert f"resnet18 gcv-classify int8 200 {float(rows[0]['command_images_per_s']):.1f}" in text
    assert "<!-- table:" not in (site / "performance" / "index.html").read_text(encoding="utf-8")
    demo = json.loads((REPO / "benchmarks" / "results" / "demo.json").read_text())
    results = " ".join(_text(site / "results" / "index.html").split())
    for row in demo["rows"]:
        assert f"{row['arch']} {row['precision']} {row['val_accuracy']:.4f} {row['test_accuracy']:.4f}" in results


def test_readme_is_at_most_10_kb() -> None:
    assert README.stat().st_size <= 10 * 1024


def test_readme_links_point_to_pages_and_headings_that_exist(site: Path) -> None:
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", README.read_text(encoding="utf-8"))
    assert len(links) >= 15
    for page, anchor in links:
        assert (REPO / page).is_file(), page
        if anchor:
            built = site / Path(page).relative_to("docs").with_suffix("") / "index.html"
            assert f'id="{anchor}"' in built.read_text(encoding="utf-8"), f"{page}#{anchor}"


def test_readme_tables_match_their_data_files() -> None:
    text = README.read_text(encoding="utf-8")
    assert docs_tables.BLOCK.search(text), "README has no rendered results table"
    assert docs_tables.refresh_blocks(text) == text, "run: python scripts/docs_tables.py README.md"


def test_readme_keeps_the_two_set_up_commands_and_ci_runs_the_test_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert "```\nbash scripts/demo.sh\n```" in text
    assert "```\nbash scripts/setup.sh && .venv/bin/python -m pytest -q\n```" in text
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-2:] == ["bash scripts/setup.sh", ".venv/bin/python -m pytest -q"]


def _examples() -> dict[str, list[str]]:
    """Each distinct page's Python code (its ```python blocks, in order) -> the pages that hold it."""
    found: dict[str, list[str]] = {}
    for page in [README, *PAGES]:
        blocks = PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))
        if blocks:
            found.setdefault("\n".join(blocks), []).append(page.relative_to(REPO).as_posix())
    return found


def test_the_readme_and_docs_have_python_examples() -> None:
    pages = {page for pages in _examples().values() for page in pages}
    assert {"README.md", "docs/quickstart.md", "docs/api.md"} <= pages


@pytest.mark.slow
@pytest.mark.parametrize("code", list(_examples()), ids=["+".join(p) for p in _examples().values()])
def test_python_examples_run(code: str, tmp_path: Path) -> None:
    """The blocks of a page run in order, as one script, in an empty folder (README's and the quick start's are
    the same example and run once)."""
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip(), "an example prints what it made"


def test_a_marker_in_a_code_block_stays_an_example(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b\n1,2.345\n3,4\n", encoding="utf-8")
    page = "<!-- table: d.csv; where: a=1|3; cols: a=A, b=B:.1f -->\n\n```\n<!-- table: d.csv; cols: a -->\n```\n"
    out = docs_tables.render_markdown(page, "x/page.md", root=tmp_path)
    assert out.startswith("| A | B |\n|---|---:|\n| 1 | 2.3 |\n| 3 | 4.0 |\n\n<small>Data: [`d.csv`](../d.csv)</small>")
    assert out.endswith("```\n<!-- table: d.csv; cols: a -->\n```\n")


def test_json_rows_several_files_and_nested_columns(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"accuracy": 0.5, "cal": {"t": 2}}), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"accuracy": 0.75, "cal": {"t": 1}}), encoding="utf-8")
    spec = docs_tables.parse_spec("a.json + b.json; rows: .; cols: _file=file, accuracy:.2f, cal.t=T")
    assert docs_tables.render(spec, tmp_path) == (
        "| file | accuracy | T |\n|---|---:|---|\n| a | 0.50 | 2 |\n| b | 0.75 | 1 |\n"
    )


def test_true_and_false_show_as_yes_and_no_and_other_text_as_it_is(tmp_path: Path) -> None:
    rows = [{"exposure": False, "share": 0.5}, {"exposure": True, "share": 0.25},
            {"exposure": "as a background class", "share": 0.125}]
    (tmp_path / "r.json").write_text(json.dumps({"rows": rows}), encoding="utf-8")
    spec = docs_tables.parse_spec("r.json; where: exposure=True|as a background class; cols: exposure, share:.1%")
    assert docs_tables.render(spec, tmp_path) == (
        "| exposure | share |\n|---|---:|\n| yes | 25.0% |\n| as a background class | 12.5% |\n"
    )


@pytest.mark.parametrize("marker, message", [
    ("missing.csv; cols: a", "missing.csv does not exist"),
    ("d.csv; cols: nope", "rows have no column 'nope'"),
    ("d.csv; where: a=9; cols: a", "no row matches"),
    ("d.csv; colz: a", "unknown field 'colz'"),
])
def test_a_wrong_marker_fails_the_build_with_what_is_wrong(tmp_path: Path, marker: str, message: str) -> None:
    (tmp_path / "d.csv").write_text("a\n1\n", encoding="utf-8")
    with pytest.raises(docs_tables.TableError, match=re.escape(message)):
        docs_tables.render(docs_tables.parse_spec(marker), tmp_path)


def test_placeholders_in_help_text_are_shown_not_swallowed_as_tags() -> None:
    html = "<p>csv: path,label,prob_<class>...,error; <code>x</code> <index>.jpg</p><br>"
    assert docs_tables.escape_placeholders(html) == (
        "<p>csv: path,label,prob_&lt;class&gt;...,error; <code>x</code> &lt;index&gt;.jpg</p><br>")


def test_a_where_column_picks_rows_of_one_shape_in_a_file_of_several(tmp_path: Path) -> None:
    data = {"rows": [{"method": "a", "precision": 0.5}, {"section": "retrain", "labels": "clean", "acc": 0.99},
                     {"section": "duplicates", "kind": "exact", "found": 3}]}
    (tmp_path / "mixed.json").write_text(json.dumps(data), encoding="utf-8")
    rows = docs_tables.load_rows(docs_tables.parse_spec("mixed.json; where: section=retrain; cols: labels, acc"),
                                 root=tmp_path)
    assert [(r["labels"], r["acc"]) for r in rows] == [("clean", 0.99)]
    with pytest.raises(docs_tables.TableError, match="no column 'sectoin'"):
        docs_tables.load_rows(docs_tables.parse_spec("mixed.json; where: sectoin=retrain; cols: labels"), root=tmp_path)
