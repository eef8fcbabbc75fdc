"""The ``lipsyncer`` command: a thin typer layer over the client.

Each call builds a fresh app and a fresh client, so nothing is shared between invocations (or tests). Every
failure is turned into one line and an exit code in :class:`_Lipsyncer.main`; ``--debug`` shows the traceback.

Commands are loaded when named: ``lipsyncer --help`` imports no command module, so it never pays for httpx,
pydantic models, rich or the providers (see ``bench/startup.py``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any

import typer

from .. import __version__
from .errors import EXIT_INTERRUPTED, EXIT_OK, Failure, describe, describe_usage, redact_for_traceback
from .helptext import PlainGroup, tidy_help

__all__ = ["APP_SETTINGS", "COMMANDS", "build_app", "main"]

APP_SETTINGS: Mapping[str, Any] = MappingProxyType(
    {
        "no_args_is_help": True,
        "add_completion": False,
        "pretty_exceptions_enable": False,
        # Plain help: no rich import, and no `<bool>` / `<str>` type tags next to flags.
        "rich_markup_mode": None,
    }
)
"""What every typer app of the command is built with (the root, ``jobs``, ``sandbox``)."""

COMMANDS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "run": (".run", "Lip-sync VIDEO to AUDIO: route, submit, follow, save."),
        "route": (".run", "Which routes would serve a request, in order."),
        "estimate": (".run", "Cost per candidate route for a request."),
        "batch": (".batch", "Run every row of a manifest within limits and a budget."),
        "providers": (".providers", "Installed providers, models, prices and keys."),
        "jobs": (".jobs", "Stored jobs: list, show, resume, download, prune."),
        "demo": (".demo", "The whole pipeline offline on the sandbox, no key."),
        "sandbox": (".demo", "The offline emulator of the fal and unified APIs."),
    }
)
"""Each command: the module whose ``register(app)`` defines it, and its one-line summary for ``--help``
(a test checks each summary is the first line of the command's own help)."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_INTERRUPTED = Failure(
    "interrupted",
    "a submitted job is stored and keeps running: `lipsyncer jobs resume` picks it up",
    EXIT_INTERRUPTED,
)


class _Lipsyncer(PlainGroup):
    """The root group: typer parses, then every outcome becomes one line (at most two) and an exit code.

    Commands come from :data:`COMMANDS`, imported only when named.
    """

    # Typed loosely on purpose: typer ships its own copy of click, whose classes are not public.

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        holder = typer.Typer(**APP_SETTINGS)
        holder.callback()(_nothing)  # a callback keeps typer from collapsing a one-command app into it
        importlib.import_module(entry[0], __name__).register(holder)
        return typer.main.get_command(holder).commands.get(cmd_name)  # type: ignore[attr-defined]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The summaries from :data:`COMMANDS`: listing commands imports none of them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])

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
            if type(exc).__name__ == "NoArgsIsHelpError":  # a group called bare: its help is the answer
                typer.echo(tidy_help(exc.format_message()))
                code = exc.exit_code
            else:
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
    from .render import Ui

    Ui.create().failure(failure)
    return failure.code


def _nothing() -> None:
    """The holder app's callback (never shown: only the command it holds is used)."""


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
    """A new app per call; its commands are built when named, never kept on a module-level object."""
    app = typer.Typer(
        cls=_Lipsyncer,
        name="lipsyncer",
        context_settings={"help_option_names": ["-h", "--help"]},
        **APP_SETTINGS,
    )
    app.callback()(_root)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """The console script's entry point."""
    typer.main.get_command(build_app()).main(argv, prog_name="lipsyncer")
