"""Tables rendered from results data files, so that no measured figure is typed twice.

A page (or README.md) names a data file and what to show in one HTML comment::

    <!-- table: benchmarks/results/results.csv; where: section=end-to-end, image_size=224;
         cols: arch, runtime, precision, command_images_per_s=images/s:.1f -->

* ``table:`` a CSV or JSON file, relative to the repository root; several joined by `` + `` give one table (the
  pseudo-column ``_file`` names each row's file).
* ``rows:`` for JSON, the dotted path to a list of row objects (``0.end_to_end``, ``rows``), or ``.`` for the file's
  object as one row; default: the file itself when it is a list, else its ``rows`` key.
* ``where:`` keep rows whose column equals one of the ``|``-separated values (compared as text); a row without the
  column is left out (a file whose rows come in several shapes), a column no row has is an error.
* ``cols:`` ``column[=Header][:format]``, comma-separated; a column may be a dotted path into nested objects
  (``calibration.temperature``); ``format`` is a Python format spec applied to numbers (``.4f``, ``.1%``);
  true and false show as yes and no.

MkDocs runs this file as a hook (``hooks:`` in mkdocs.yml): each marker is replaced by the table and a link to its
data file, and the data files under ``benchmarks/results/`` and ``benchmarks/experiments/results/`` are published
beside the pages at the same paths. README.md, which GitHub shows as it is, keeps the rendered table between the
marker and ``<!-- /table -->``; ``python scripts/docs_tables.py README.md`` rewrites those blocks and
tests/test_docs.py checks that they match their files.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: Folders whose files are published with the site, at their repository paths.
DATA_DIRS = ("benchmarks/results", "benchmarks/experiments/results")
MARKER = re.compile(r"^<!--\s*table:(?P<spec>.*?)-->", re.S | re.M)
#: Fenced code blocks, where a marker is an example and stays as written.
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,}).*?^(?P=fence)[ \t]*$", re.S | re.M)
BLOCK = re.compile(r"^(?P<marker><!--\s*table:(?P<spec>.*?)-->)\n(?P<body>.*?)<!-- /table -->", re.S | re.M)


class TableError(ValueError):
    """A table marker that names a missing file, column or row set."""


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str


@dataclass(frozen=True)
class Spec:
    path: str
    rows: str | None
    where: dict[str, tuple[str, ...]]
    cols: tuple[Column, ...]


def parse_spec(text: str) -> Spec:
    """``FILE; rows: a.b; where: k=v|w; cols: c=Header:.2f`` -> :class:`Spec`."""
    parts = [p.strip() for p in " ".join(text.split()).split(";") if p.strip()]
    if not parts:
        raise TableError("empty table marker")
    fields = {"rows": None, "where": "", "cols": ""}
    for part in parts[1:]:
        name, _, value = part.partition(":")
        if name.strip() not in fields:
            raise TableError(f"table marker for {parts[0]}: unknown field {name.strip()!r} (rows, where, cols)")
        fields[name.strip()] = value.strip()
    where: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (w.strip() for w in (fields["where"] or "").split(","))):
        key, _, values = item.partition("=")
        where[key.strip()] = tuple(v.strip() for v in values.split("|"))
    cols = []
    for item in filter(None, (c.strip() for c in (fields["cols"] or "").split(","))):
        key, _, rest = item.partition("=")
        header, _, fmt = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if ":" in key:  # "col:.2f" without a header
            key, _, fmt = key.partition(":")
        cols.append(Column(key.strip(), header.strip() or key.strip(), fmt.strip()))
    if not cols:
        raise TableError(f"table marker for {parts[0]}: no cols")
    return Spec(parts[0], fields["rows"], where, tuple(cols))


def _lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(obj, list):
            obj = obj[int(part)]
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            raise KeyError(dotted)
    return obj


def _file_rows(name: str, spec: Spec, root: Path) -> list[dict[str, Any]]:
    path = root / name
    if not path.is_file():
        raise TableError(f"table data file {name} does not exist")
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            rows: Any = list(csv.DictReader(handle))
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        try:
            if spec.rows == ".":
                rows = [data]
            else:
                rows = _lookup(data, spec.rows) if spec.rows else (data if isinstance(data, list) else data["rows"])
        except (KeyError, IndexError, ValueError):
            raise TableError(f"{name}: no row list at {spec.rows or 'rows'!r}") from None
    else:
        raise TableError(f"{name}: tables come from .csv or .json files")
    return [{**row, "_file": path.stem} for row in rows]


def files_of(spec: Spec) -> list[str]:
    """The data files a marker names."""
    return [name.strip() for name in spec.path.split(" + ")]


def load_rows(spec: Spec, root: Path = REPO) -> list[dict[str, Any]]:
    """The rows of the marker's data files, filtered by ``where``."""
    rows = [row for name in files_of(spec) for row in _file_rows(name, spec, root)]
    for key in spec.where:
        if not any(_has(r, key) for r in rows):
            raise TableError(f"{spec.path}: rows have no column {key!r}")
    kept = [r for r in rows if all(_has(r, k) and str(_value(r, k, spec.path)) in vs for k, vs in spec.where.items())]
    if not kept:
        raise TableError(f"{spec.path}: no row matches {spec.where}")
    return kept


def _has(row: dict[str, Any], key: str) -> bool:
    try:
        _lookup(row, key)
    except (KeyError, IndexError, ValueError):
        return False
    return True


def _value(row: dict[str, Any], key: str, path: str) -> Any:
    try:
        return _lookup(row, key)
    except (KeyError, IndexError, ValueError):
        raise TableError(f"{path}: rows have no column {key!r}") from None


def _cell(value: Any, fmt: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if fmt:
        try:
            return format(float(value), fmt)
        except ValueError:
            return str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(spec: Spec, root: Path = REPO) -> str:
    """The markdown table of the marker (header, alignment row, one line per row), ending in a newline."""
    rows = load_rows(spec, root)
    align = ["---:" if c.fmt else "---" for c in spec.cols]
    lines = ["| " + " | ".join(c.header for c in spec.cols) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(_value(row, c.key, spec.path), c.fmt) for c in spec.cols) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(markdown: str, page_path: str | None = None, root: Path = REPO) -> str:
    """Replace every marker of a docs page (at the start of a line, outside fenced code) with its table and a link
    to the data file (relative to the page at ``page_path``, a path inside the site)."""
    def replace(match: re.Match[str]) -> str:
        spec = parse_spec(match.group("spec"))
        links = []
        for name in files_of(spec):
            link = posixpath.relpath(name, posixpath.dirname(page_path) or ".") if page_path else name
            links.append(f"[`{name}`]({link})")
        return f"{render(spec, root)}\n<small>Data: {', '.join(links)}</small>\n"

    out, last = [], 0
    for fence in FENCE.finditer(markdown):
        out += [MARKER.sub(replace, markdown[last:fence.start()]), fence.group(0)]
        last = fence.end()
    out.append(MARKER.sub(replace, markdown[last:]))
    return "".join(out)


def refresh_blocks(markdown: str, root: Path = REPO) -> str:
    """README's form: each ``marker ... <!-- /table -->`` block gets the table rendered from its file."""
    return BLOCK.sub(lambda m: f"{m.group('marker')}\n{render(parse_spec(m.group('spec')), root)}<!-- /table -->",
                     markdown)


# MkDocs hook events (https://www.mkdocs.org/user-guide/configuration/#hooks)

def on_files(files: Any, config: Any) -> Any:
    """Publish the results data files and benchmarks/README.md at their repository paths, so that pages can
    link them."""
    from mkdocs.structure.files import File

    paths = [REPO / "benchmarks" / "README.md"]
    for folder in DATA_DIRS:
        paths += [path for path in sorted((REPO / folder).rglob("*")) if path.is_file()]
    for path in paths:
        files.append(File.generated(config, path.relative_to(REPO).as_posix(), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri.startswith(DATA_DIRS):
        return markdown
    if page.file.src_uri == "benchmarks/README.md":  # its links into docs/ are written for the repository view
        markdown = markdown.replace("](../docs/", "](../")
    return render_markdown(markdown, page.file.src_uri)


#: Elements the generated CLI reference uses without attributes; any other bare ``<word>`` there is help text (a
#: placeholder such as ``prob_<class>``) that click prints as it is and HTML would swallow as an unknown tag.
_HTML_ELEMENTS = frozenset(
    "a abbr b blockquote br code dd del details div dl dt em h1 h2 h3 h4 h5 h6 hr i kbd li ol p pre s small span "
    "strong sub summary sup table tbody td th thead tr u ul".split()
)
_BARE_TAG = re.compile(r"</?([A-Za-z][\w-]*)>")


def escape_placeholders(html: str) -> str:
    """``<class>`` -> ``&lt;class&gt;`` for every bare tag that is not an HTML element (see :data:`_HTML_ELEMENTS`)."""
    def escape(match: re.Match[str]) -> str:
        tag = match.group(0)
        return tag if match.group(1).lower() in _HTML_ELEMENTS else tag.replace("<", "&lt;").replace(">", "&gt;")

    return _BARE_TAG.sub(escape, html)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """The CLI reference shows the commands' help as click prints it, placeholders included, and no default where
    click has none (mkdocs-click prints click 8.3's ``UNSET`` marker there)."""
    if page.file.src_uri != "cli.md":
        return html
    return escape_placeholders(html).replace("<code>Sentinel.UNSET</code>", "")


def main(argv: list[str]) -> int:
    """``python scripts/docs_tables.py FILE.md ...``: rewrite the table blocks of each file from its data."""
    for name in argv or ["README.md"]:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        new = refresh_blocks(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"{name}: tables refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
