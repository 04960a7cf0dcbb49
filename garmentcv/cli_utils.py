"""What every ``gcv-*`` command shares: logging setup and the mapping of errors to exit codes.

Exit codes: 0 success; 1 a :class:`~garmentcv.errors.GarmentCVError` (bad data, weights, checkpoint or
model file; the message says what to do); 2 wrong usage (click's own); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from garmentcv.errors import GarmentCVError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Send log records to stderr: INFO by default, WARNING with ``quiet``, DEBUG with ``verbose``."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def handle_errors(func: F) -> F:
    """Turn our exceptions into a one-line message on stderr and a meaningful exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GarmentCVError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("Interrupted; finished files are intact, unfinished ones were not written.", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress bars or info logs on stderr (warnings, errors and the final summary remain)."
)
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
