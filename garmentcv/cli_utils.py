"""What every ``gcv-*`` command shares: logging setup and the mapping of errors to exit codes.

Exit codes: 0 success; 1 a :class:`~garmentcv.errors.GarmentCVError` (bad data, weights, checkpoint or
model file; the message says what to do) or storage that is full, read-only, forbidden or failing (an
:class:`OSError` with an errno of :data:`garmentcv.fsutil.STORAGE_ERRNOS`); 2 wrong usage (click's own, and a path that does not exist:
:class:`~garmentcv.errors.PathNotFoundError`); 70 an internal error, i.e. a bug (``EX_SOFTWARE`` of BSD's
sysexits.h; ``--debug`` prints its traceback); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from garmentcv import __version__
from garmentcv.errors import GarmentCVError
from garmentcv.fsutil import storage_problem

EXIT_ERROR = 1
EXIT_USAGE = 2
#: ``EX_SOFTWARE`` from sysexits.h: an internal software error, distinct from bad input.
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
#: What Ctrl-C prints when the interrupted command has nothing more precise to say.
INTERRUPTED_MESSAGE = "Interrupted; finished files are intact, unfinished ones were not written."

#: The paragraph every command's ``--help`` ends with.
EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a problem with the input or with storage (full, read-only, no permission; the "
    "message says what to do); 2 wrong usage "
    "(bad option or value, a path that does not exist); 70 internal error (a bug: rerun with --debug and "
    "report the traceback); 130 interrupted."
)

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Send log records to stderr: INFO by default, WARNING with ``quiet``, DEBUG with ``verbose``.

    With ``quiet``, Pillow's decompression-bomb warning (an image over ``PIL.Image.MAX_IMAGE_PIXELS``) is not
    shown either: GarmentCV's own size check (:data:`garmentcv.image.MAX_IMAGE_PIXELS`) decides, and a refused
    image is reported by name wherever the command reports undecodable files.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    if quiet:
        from PIL import Image

        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def plural(count: int, noun: str) -> str:
    """``"1 error"``, ``"2 errors"``, ``"3 classes"``: ``count`` and ``noun``, made plural (``-es`` after
    ``s``, ``x``, ``z`` or ``sh``, else ``-s``; ``epoch`` -> ``epochs``) unless ``count`` is 1."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "x", "z", "sh")) else f"{count} {noun}s"


def raise_internal(exc: BaseException, debug: bool) -> NoReturn:
    """Report ``exc`` as a bug: exit :data:`EXIT_INTERNAL` with its type and message (the traceback with ``debug``)."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if debug else "; rerun with --debug for the traceback"
    click.echo(f"Internal error (a bug in garmentcv): {type(exc).__name__}: {exc}{hint}. Please report it.", err=True)
    sys.exit(EXIT_INTERNAL)


def handle_errors(func: F) -> F:
    """Add ``--debug`` and turn exceptions into a one-line message on stderr and a meaningful exit code.

    Our errors exit with their ``exit_code`` (1, or 2 for a path that does not exist); an :class:`OSError` of full,
    read-only, forbidden or failing storage (:data:`garmentcv.fsutil.STORAGE_ERRNOS`) exits 1 naming the file and
    what to do (:func:`garmentcv.fsutil.storage_problem`); Ctrl-C exits :data:`EXIT_INTERRUPTED` with the
    interrupt's own message when it carries one; any other exception is a bug: exit :data:`EXIT_INTERNAL` with
    its type and message, and the traceback with ``--debug``. Click's own usage errors and ``sys.exit`` pass
    through. Put it below the click decorators, above the function.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GarmentCVError as exc:
            if debug:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            # a command's own interrupt (a KeyboardInterrupt subclass with a message) says how to go on
            click.echo(f"Interrupted: {exc}" if str(exc) else INTERRUPTED_MESSAGE, err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OSError as exc:
            problem = storage_problem(exc)
            if problem is None:
                raise_internal(exc, debug)
            if debug:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"Error: {problem}", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as exc:
            raise_internal(exc, debug)

    if wrapper.__doc__ and "Exit codes" not in wrapper.__doc__:
        wrapper.__doc__ = inspect.cleandoc(wrapper.__doc__) + "\n\n" + EXIT_CODES_HELP
    option = click.option("--debug", is_flag=True, help="On an error, print the full Python traceback.")
    return option(wrapper)  # type: ignore[return-value]


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress bars or info logs on stderr (warnings, errors and the final summary remain)."
)
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")


def version_option(prog_name: str) -> Callable[[F], F]:
    """``--version`` for command ``prog_name``: prints ``gcv-train (garmentcv) 0.1.0`` and exits 0.

    Eager, so it runs before any other option or argument is checked; it imports nothing (the version is
    :data:`garmentcv.__version__`, not looked up in the installed metadata). Put it right below
    ``@click.command``/``@click.group``.
    """
    return click.version_option(
        __version__, "--version", prog_name=prog_name, message="%(prog)s (garmentcv) %(version)s",
        help="Show the version and exit.",
    )
