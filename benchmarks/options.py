"""The options every suite shares, declared once: ``--out``, ``--name``, ``--repeats``, ``--quiet``.

Argparse suites take :func:`shared_parser` as a parent; click suites take :func:`click_shared`. A suite sets its own
default number of repeats; everything else means the same in every suite.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from benchmarks.results import DEFAULT_ROOT

F = TypeVar("F", bound=Callable[..., Any])

OUT_HELP = "results folder; files go to OUT/<machine>/SUITE[-NAME].*"
NAME_HELP = "suffix of the result files' names (SUITE-NAME.json)"
REPEATS_HELP = "timed repeats (interleaved where the suite compares); the median is reported"
QUIET_HELP = "print warnings only, not the report"


def shared_parser(repeats: int | None = 3) -> argparse.ArgumentParser:
    """A parent parser (``add_help=False``) with the shared options; ``repeats=None`` leaves ``--repeats`` out."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("shared options")
    group.add_argument("--out", type=Path, default=DEFAULT_ROOT, help=OUT_HELP + " (default: %(default)s)")
    group.add_argument("--name", default=None, help=NAME_HELP + " (default: none)")
    if repeats is not None:
        group.add_argument("--repeats", type=int, default=repeats, help=REPEATS_HELP + " (default: %(default)s)")
    group.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    return parser


def suite_parser(doc: str | None, repeats: int | None = 3) -> argparse.ArgumentParser:
    """An argparse parser for a suite: the first paragraph of ``doc`` as its description, the shared options."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0], parents=[shared_parser(repeats)])


def click_shared(repeats: int | None = 3, quiet: bool = True) -> Callable[[F], F]:
    """The shared options for a click command (parameters ``out``, ``name``, ``repeats``, ``quiet``);
    ``repeats=None`` or ``quiet=False`` leave that option out (a command with garmentcv's own -q/-v)."""

    def decorate(func: F) -> F:
        if quiet:
            func = click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP[0].upper() + QUIET_HELP[1:] + ".")(func)
        if repeats is not None:
            func = click.option("--repeats", type=click.IntRange(min=1), default=repeats,
                                help=REPEATS_HELP[0].upper() + REPEATS_HELP[1:] + ".")(func)  # fmt: skip
        func = click.option("--name", default=None, help=NAME_HELP[0].upper() + NAME_HELP[1:] + ".")(func)
        return click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_ROOT,
                            help=OUT_HELP[0].upper() + OUT_HELP[1:] + ".")(func)  # fmt: skip

    return decorate


def setup_logging(quiet: bool = False) -> None:
    """Warnings on stderr; the benchmarks' own progress at INFO unless ``quiet``."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("benchmarks").setLevel(logging.WARNING if quiet else logging.INFO)


def report(text: str, quiet: bool) -> None:
    """Print a suite's markdown report unless ``quiet``."""
    if not quiet:
        print(text, end="" if text.endswith("\n") else "\n")
