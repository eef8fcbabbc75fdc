"""How failures reach a shell: one line (and the fix) on stderr, and an exit code a script can branch on.

The codes group errors by what the caller should do next, not by where they were raised: fix the input (3),
look at the provider (4), accept a failed job (5), or come back later because the job is stored (6).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import typer

from ..core.errors import (
    CancelNotSupportedError,
    ConfigError,
    DeadlineExceededError,
    InvalidRequestError,
    JobFailedError,
    LipsyncError,
    MissingCredentialsError,
    NoRouteError,
    PluginError,
    ProviderError,
    ResultExpiredError,
    StorageError,
    SubmitOutcomeUnknownError,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_PROVIDER",
    "EXIT_USAGE",
    "CliInputError",
    "Failure",
    "describe",
    "describe_usage",
    "exit_code",
    "redact_for_traceback",
]

EXIT_OK = 0
EXIT_ERROR = 1
"""An unexpected error (a bug, or an error class without a better code)."""
EXIT_USAGE = 2
"""Bad command line: unknown flag, missing argument, malformed value (click's own code)."""
EXIT_INPUT = 3
"""Refused before any network call: missing file, unknown model, unhonoured option, no credentials, config."""
EXIT_PROVIDER = 4
"""A provider or storage refused or failed a call (auth, quota, 4xx/5xx, download)."""
EXIT_JOB_FAILED = 5
"""The provider accepted the job and it failed or was cancelled."""
EXIT_PENDING = 6
"""The job is stored but not finished (a deadline passed, or the submit's outcome is unknown)."""
EXIT_INTERRUPTED = 130


class CliInputError(LipsyncError):
    """Input the CLI itself refuses (an unknown job id, a bad flag combination) before touching the client."""


@dataclass(frozen=True)
class Failure:
    """What the user sees: a headline, an optional fix, and the exit code."""

    message: str
    fix: str | None
    code: int


def exit_code(exc: BaseException) -> int:
    from ..core.download import DownloadError  # imports httpx: only once something has failed

    if isinstance(
        exc,
        (
            CliInputError,
            InvalidRequestError,
            NoRouteError,
            MissingCredentialsError,
            ConfigError,
            PluginError,
            CancelNotSupportedError,
        ),
    ):
        return EXIT_INPUT
    if isinstance(exc, (ProviderError, StorageError, ResultExpiredError, DownloadError)):
        return EXIT_PROVIDER
    if isinstance(exc, JobFailedError):
        return EXIT_JOB_FAILED
    if isinstance(exc, (DeadlineExceededError, SubmitOutcomeUnknownError)):
        return EXIT_PENDING
    return EXIT_ERROR


def describe(exc: BaseException) -> Failure:
    """One line for any error; multi-line messages (a route plan's reasons) are folded into it."""
    if not isinstance(exc, LipsyncError):
        text = str(exc) or type(exc).__name__
        return Failure(
            f"unexpected {type(exc).__name__}: {_one_line(text)}", "re-run with --debug", EXIT_ERROR
        )
    if isinstance(exc, NoRouteError):
        return _no_route(exc)
    text = str(exc)
    if exc.fix and text.endswith(f" (fix: {exc.fix})"):
        text = text[: -len(f" (fix: {exc.fix})")]
    return Failure(_one_line(text), exc.fix, exit_code(exc))


def redact_for_traceback(exc: BaseException, environ: Mapping[str, str] | None = None) -> BaseException:
    """``exc`` and its chain with credentials taken out, before ``--debug`` lets Python print the traceback.

    The client's providers already redact their errors; this is the last line, for whatever escaped them. The
    CLI has no client left at this point, so it redacts the values of credential-named variables
    (``*_KEY``, ``*_TOKEN``, ``*_SECRET``...) of the environment.
    """
    from ..core.redact import Redactor  # only on --debug: --help must not pay for httpx

    return Redactor.from_environ(os.environ if environ is None else environ).exception(exc)


def describe_usage(exc: typer.TyperException) -> Failure:
    """Typer's (vendored click's) usage errors: the message without the usage box."""
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", None) or "lipsyncer"
    return Failure(_one_line(exc.format_message()), f"see '{where} --help'", exc.exit_code)


def _no_route(exc: NoRouteError) -> Failure:
    head = exc.message.split("\n", 1)[0]
    if not head.startswith("no provider serves model"):
        # Name the routes that serve the model and why each was left out: the "why" is the useful part.
        relevant = [e for e in exc.exclusions if e.kind not in ("model", "pinned")]
        if relevant:
            head = f"{head}: " + "; ".join(f"{e.route}: {e.reason}" for e in relevant)
    fixes = list(exc.suggestions)
    credentials = any(e.kind == "credentials" for e in exc.exclusions)
    if exc.fix and not fixes:
        fixes.append(f"{exc.fix}, or try it offline with --sandbox" if credentials else exc.fix)
    if not fixes:
        fixes.append("see `lipsyncer providers` for what each provider serves and honours")
    return Failure(_one_line(head), "; ".join(fixes), EXIT_INPUT)


def _one_line(text: str) -> str:
    parts = [p.strip().removeprefix("- ") for p in text.splitlines() if p.strip()]
    return "; ".join(parts)
