"""What every ``gcv`` command shares: logging setup and the mapping of errors to exit codes.

Exit codes: 0 success; 1 a :class:`~garmentcv.errors.GarmentCVError` (bad data, weights, checkpoint or
model file; the message says what to do) or storage that is full, read-only, forbidden or failing (an
:class:`OSError` with an errno of :data:`garmentcv.fsutil.STORAGE_ERRNOS`); 2 wrong usage (click's own, a path that
does not exist: :class:`~garmentcv.errors.PathNotFoundError`, settings that do not go together: an error with
``exit_code`` 2); 70 an internal error, i.e. a bug (``EX_SOFTWARE`` of BSD's sysexits.h; ``--debug`` prints its
traceback); 130 interrupted by Ctrl-C.
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
from click.core import ParameterSource

from garmentcv import __version__
from garmentcv.errors import GarmentCVError
from garmentcv.fsutil import storage_problem
from garmentcv.text import plural

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "deprecated_alias",
    "docs_epilog",
    "handle_errors",
    "plural",  # its home is garmentcv.text; kept here for the modules that import it from this one
    "quiet_option",
    "setup_logging",
    "verbose_option",
    "version_option",
]

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


def _inherited(name: str) -> Callable[[click.Context, click.Parameter, bool], bool]:
    """A flag's callback: true when given here or on a group above (``gcv -q classify ...``).

    The flag given on a group is kept in :attr:`click.Context.meta`, which every nested context shares."""
    key = f"garmentcv.{name}"

    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[key] = True
        return bool(value or ctx.meta.get(key, False))

    return callback


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, callback=_inherited("quiet"),
    help="No progress bars or info logs on stderr (warnings and errors remain).",
)
verbose_option = click.option("-v", "--verbose", is_flag=True, callback=_inherited("verbose"),
                              help="Debug logging on stderr.")


def docs_epilog(page: str) -> str:
    """The line every ``--help`` ends with: ``Docs: docs/<page>.md``, the page that explains the command."""
    return f"Docs: docs/{page}.md"


def deprecated_alias(old: str, new: str, *, type: Any = None, flag_value: str | None = None,
                     required: bool = False) -> Callable[[F], F]:
    """Keep an old option name working for one release: a hidden option ``old`` that sets the parameter ``new``.

    Given, it prints ``Warning: OLD is deprecated; use NEW`` on stderr once and passes its value to ``new``, the
    name of an option (``"device"``) or of a positional argument (``"data"``) of the same command. Put it among
    the click decorators, above :func:`handle_errors`.

    Args:
        old: the old option, e.g. ``"--provider"``.
        new: the parameter's name in the function, e.g. ``"device"`` for ``--device``.
        type: the click type of the old option's value; give the new parameter's, so a value is checked the same.
        flag_value: makes ``old`` a flag that stands for ``new`` with this value (``--fail-on-error`` is
            ``--on-error fail``).
        required: the new parameter must then have a value (a positional declared with ``required=False`` so that
            its old option can stand in for it): without either, click's "Missing argument" usage error.

    Raises (when the command runs):
        click.UsageError: ``old`` and ``new`` (or two old names of ``new``) were both given with different values.
    """
    dest = "deprecated_" + old.lstrip("-").replace("-", "_")

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(dest)
            ctx = click.get_current_context()
            target = next(p for p in ctx.command.params if p.name == new)
            new_name = target.opts[0] if isinstance(target, click.Option) else target.human_readable_name
            if value is not None and value is not False:
                given = flag_value if flag_value is not None else value
                use = f"{new_name} {flag_value}" if flag_value is not None else (
                    new_name if isinstance(target, click.Option) else f"give {new_name} as the first argument")
                click.echo(f"Warning: {old} is deprecated; {'use ' if not use.startswith('give') else ''}{use}",
                           err=True)
                said = old if flag_value is not None else f"{old} {value}"
                setters: dict[str, tuple[str, Any]] = ctx.meta.setdefault("garmentcv.aliases", {})
                if new in setters:  # another old name of the same parameter came first
                    earlier, earlier_value = setters[new]
                elif ctx.get_parameter_source(new) not in (None, ParameterSource.DEFAULT):
                    earlier, earlier_value = f"{new_name} {kwargs[new]}", kwargs[new]
                else:
                    earlier, earlier_value = None, given
                if earlier is not None and earlier_value != given:
                    raise click.UsageError(f"{said} and {earlier} disagree; give {new_name} only", ctx)
                setters[new] = (said, given)
                kwargs[new] = given
            if required and kwargs.get(new) is None:
                raise click.MissingParameter(ctx=ctx, param=target)
            return func(*args, **kwargs)

        if flag_value is not None:
            option = click.option(old, dest, is_flag=True, hidden=True, help=f"Deprecated: {new} {flag_value}.")
        else:
            option = click.option(old, dest, type=type, default=None, hidden=True, help=f"Deprecated: {new}.")
        return option(wrapper)  # type: ignore[return-value]

    return decorator


def version_option(prog_name: str) -> Callable[[F], F]:
    """``--version`` for command ``prog_name``: prints ``gcv train (garmentcv) 0.1.0`` and exits 0.

    Eager, so it runs before any other option or argument is checked; it imports nothing (the version is
    :data:`garmentcv.__version__`, not looked up in the installed metadata). Put it right below
    ``@click.command``/``@click.group``.
    """
    return click.version_option(
        __version__, "--version", prog_name=prog_name, message="%(prog)s (garmentcv) %(version)s",
        help="Show the version and exit.",
    )
