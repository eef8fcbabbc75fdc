"""The ``lipsyncer`` command: a thin typer layer over the client.

Each call builds a fresh app and a fresh client, so nothing is shared between invocations (or tests). Every
failure is turned into one line and an exit code in :class:`_Lipsyncer.main`; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from .errors import EXIT_INTERRUPTED, EXIT_OK, Failure, describe, describe_usage, redact_for_traceback
from .render import Ui

__all__ = ["build_app", "main"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_INTERRUPTED = Failure(
    "interrupted",
    "a submitted job is stored and keeps running: `lipsyncer jobs resume` picks it up",
    EXIT_INTERRUPTED,
)


class _Lipsyncer(TyperGroup):
    """The root group: typer parses, then every outcome becomes one line (at most two) and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv, debug = _hoist_debug(list(sys.argv[1:] if args is None else args))
        if not debug and os.environ.get("LIPSYNCER_DEBUG", "").lower() in _TRUE:
            argv, debug = ["--debug", *argv], True
        try:
            outcome = super().main(
                argv,
                prog_name or "lipsyncer",
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            code = outcome if isinstance(outcome, int) else EXIT_OK
            if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130)
                code = _fail(_INTERRUPTED)
        except typer.TyperException as exc:  # usage errors: never worth a traceback
            failure = describe_usage(exc)
            # An empty message: a group called without a command, whose help typer has just printed.
            code = _fail(failure) if failure.message else failure.code
        except (KeyboardInterrupt, typer.Abort):
            code = _fail(_INTERRUPTED)
        except Exception as exc:
            if debug:
                redact_for_traceback(exc)
                raise
            code = _fail(describe(exc))
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(failure: Failure) -> int:
    Ui.create().failure(failure)
    return failure.code


def _hoist_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Accept ``--debug`` anywhere before ``--``: move it to the root group, which owns it."""
    end = argv.index("--") if "--" in argv else len(argv)
    head, tail = argv[:end], argv[end:]
    found = "--debug" in head
    head = [a for a in head if a != "--debug"]
    return (["--debug"] if found else []) + head + tail, found


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"lipsyncer {__version__}")
        raise typer.Exit()


def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Full tracebacks and debug logs instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Every hosted lip-sync API behind one interface: route, run, follow and resume lip-sync jobs."""
    if debug:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("lipsyncer").setLevel(logging.DEBUG)


def build_app() -> typer.Typer:
    """A new app per call: commands are registered on it here, never on a module-level object."""
    from . import batch, demo, providers, run
    from .jobs import build_jobs_app

    app = typer.Typer(
        cls=_Lipsyncer,
        name="lipsyncer",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    run.register(app)
    batch.register(app)
    providers.register(app)
    app.add_typer(build_jobs_app(), name="jobs")
    demo.register(app)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """The console script's entry point."""
    typer.main.get_command(build_app()).main(argv, prog_name="lipsyncer")
