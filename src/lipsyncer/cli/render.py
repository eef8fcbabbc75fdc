"""Everything the CLI shows a person: consoles, plans, tables and results (the live bar is in :mod:`.progress`).

Machine output (``--json``) is in :mod:`.payloads`; when it is on, everything here goes to stderr so stdout
carries exactly one JSON document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.schema import Cost, Job, JobState, JobStatus, LipsyncResult
from .errors import Failure
from .payloads import ProviderRow
from .progress import changes, clock, status_text

if TYPE_CHECKING:
    from ..core.router import RoutePlan

__all__ = [
    "Ui",
    "cost_text",
    "estimate_table",
    "job_detail",
    "jobs_table",
    "money",
    "providers_tables",
    "rate",
    "result_lines",
]


def money(amount: Decimal | float | str, *, places: int = 4) -> str:
    """``$0.0833``, ``$0.15``, ``$1.00``: at most ``places`` decimals, at least cents, no float noise."""
    value = Decimal(str(amount)).quantize(Decimal(1).scaleb(-places))
    text = f"{value:f}"
    whole, _, cents = text.partition(".")
    cents = cents.rstrip("0").ljust(2, "0")
    return f"${whole}.{cents}"


def rate(price_per_second: Decimal | float | str) -> str:
    """A price per output second, as a person reads it: ``$0.0833/s``."""
    return f"{money(price_per_second)}/s"


def per_minute(price_per_second: Decimal | float | str) -> str:
    return f"{money(Decimal(str(price_per_second)) * 60, places=2)}/min"


def cost_text(cost: Cost) -> str:
    """``$0.25 (3.00 s at $0.0833/s, output duration)``; the JSON output keeps full precision."""
    basis = "output duration" if cost.basis == "output_duration" else cost.basis
    return f"{money(cost.amount)} ({cost.seconds:.2f} s at {rate(cost.price_per_second)}, {basis})"


def _table(title: str | None = None) -> Table:
    """Tables that fit 80 columns: no side borders, one space of padding; cells wrap between words."""
    return Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        title_justify="left",
        expand=False,
        min_width=len(title) if title else None,  # a title is never wrapped by a narrow table
    )


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped output: do not squeeze tables into 80 columns (rich's default for non-terminals).
        console = Console(stderr=stderr, highlight=False, width=160)
    return console


@dataclass
class Ui:
    """Where a command writes: ``out`` for people (stderr under ``--json``), ``err`` for problems."""

    json_mode: bool
    out: Console
    err: Console

    @classmethod
    def create(cls, *, json_mode: bool = False) -> Ui:
        err = _console(stderr=True)
        return cls(json_mode=json_mode, out=err if json_mode else _console(stderr=False), err=err)

    def say(self, text: str | Text = "", *, style: str | None = None) -> None:
        """A line of prose, soft-wrapped: the terminal folds it, so paths and URLs are never cut."""
        self.out.print(text if isinstance(text, Text) else Text(text, style=style or ""), soft_wrap=True)

    def show(self, *renderables: Any) -> None:
        for renderable in renderables:
            self.out.print(renderable, soft_wrap=isinstance(renderable, Text))

    def emit_json(self, payload: Any) -> None:
        """The one document on stdout (plain ``echo``: no wrapping, no colours, valid JSON whatever the width)."""
        typer.echo(json.dumps(payload, indent=2, default=str))

    def failure(self, failure: Failure) -> None:
        self.err.print(Text(f"error: {failure.message}", style="bold red"), soft_wrap=True)
        if failure.fix:
            self.err.print(Text(f"fix: {failure.fix}", style="yellow"), soft_wrap=True)


# ------------------------------------------------------------------------------------------- plans


def plan_text(plan: RoutePlan) -> Text:
    return Text(plan.explain())


def estimate_table(plan: RoutePlan, *, wide: bool = False) -> Table:
    table = _table(f"Estimated cost for {plan.output_seconds or 0:.2f} s of output ({plan.strategy} order)")
    table.add_column("#", justify="right")
    table.add_column("route", no_wrap=True)
    if wide:
        table.add_column("endpoint", no_wrap=True)
    table.add_column("price", justify="right", no_wrap=True)
    table.add_column("estimate", justify="right", style="bold", no_wrap=True)
    for i, route in enumerate(plan.candidates, 1):
        cost = plan.estimate(route)
        cells = [str(i), route.id, route.model.endpoint, rate(route.price_per_second)]
        if not wide:
            del cells[2]
        table.add_row(*cells, money(cost.amount) if cost else "?")
    return table


def excluded_lines(plan: RoutePlan) -> Text:
    text = Text()
    for e in plan.excluded:
        text.append(f"  - {e.route}: {e.reason}\n", style="dim")
    return text


# ------------------------------------------------------------------------------------------- results


def result_lines(result: LipsyncResult) -> Text:
    text = Text()
    text.append("Served by ", style="bold")
    text.append(f"{result.served_by}\n")
    text.append(f"  job {result.job_id}, remote id {result.remote_id}\n")
    failed = [a for a in result.attempts if a.error]
    text.append(f"  attempts: {len(result.attempts)}")
    if failed:
        text.append(" (" + "; ".join(f"{a.provider}:{a.model} {a.error}" for a in failed) + ")")
    text.append("\n")
    if result.cost is not None:
        text.append(f"  cost: {cost_text(result.cost)}\n")
    if result.timings.elapsed is not None:
        text.append(f"  elapsed: {clock(result.timings.elapsed)}\n")
    if result.saved_to:
        text.append("Saved to ", style="bold green")
        text.append(result.saved_to)
    else:
        text.append(f"Result at {result.video.url} (not saved)", style="yellow")
    return text


# ------------------------------------------------------------------------------------------- providers


def providers_tables(
    rows: Sequence[ProviderRow], storages: Sequence[dict[str, Any]], *, wide: bool = False
) -> list[Table]:
    """One row per model; ``wide`` adds features and plugin source (80 columns hold the rest)."""
    table = _table("Providers (every route honours sync_mode)")
    table.add_column("provider", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("price", justify="right", no_wrap=True)
    table.add_column("also honours", min_width=12)
    table.add_column("key")
    if wide:
        table.add_column("features")
        table.add_column("plugin")
    for row in rows:
        for i, model in enumerate(row.models):
            first = i == 0
            cells: list[Any] = [
                Text(row.id, style="bold" if row.enabled else "dim") if first else "",
                model["id"],
                per_minute(model["price_per_second"]),
                _options_text(model["options"]),
                _credentials_cell(row.credential_env, row.credentials) if first else "",
            ]
            if wide:
                cells += [", ".join(row.features) if first else "", row.plugin if first else ""]
            table.add_row(*cells, end_section=i == len(row.models) - 1)
    tables = [table]
    if storages:
        store_table = _table("Storages (host local files for providers that cannot upload them)")
        for column in ("storage", "key", "plugin"):
            store_table.add_column(column)
        for s in storages:
            store_table.add_row(
                s["id"], _credentials_cell(s["credential_env"], s["credentials"]), s["plugin"]
            )
        tables.append(store_table)
    return tables


def _options_text(options: Iterable[str]) -> str:
    """``webhook, temperature, speaker: auto point boxes``: short words, so a narrow cell wraps between them."""
    plain = [o for o in options if o != "sync_mode" and not o.startswith("active_speaker.")]
    speaker = [o.split(".", 1)[1] for o in options if o.startswith("active_speaker.")]
    parts = sorted(plain)
    if speaker:
        parts.append("speaker: " + " ".join(speaker))
    return ", ".join(parts) or "-"


def _credentials_cell(env_var: str | None, state: str) -> Text:
    if env_var is None:
        return Text("none needed", style="dim")
    return Text(f"{env_var} {state}", style="green" if state == "found" else "red")


# ------------------------------------------------------------------------------------------- jobs


def _when(moment: datetime | None, *, short: bool = False) -> str:
    """Local time; ``short`` drops the year and seconds (``11-28 09:14``) for narrow tables."""
    if moment is None:
        return ""
    return moment.astimezone().strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def jobs_table(jobs: Iterable[Job], *, wide: bool = False) -> Table:
    """id, state, route and submit time fit 80 columns; ``wide`` adds the remote id and the save path."""
    table = _table("Jobs (newest first)")
    for column in ("id", "state", "route", "submitted"):
        table.add_column(column, no_wrap=True)
    if wide:
        table.add_column("remote id", no_wrap=True)
        table.add_column("saved to")
    for job in jobs:
        cells: list[Any] = [
            job.id,
            Text(job.state.value, style=_STATE_STYLE.get(job.state, "")),
            f"{job.provider}:{job.model}",
            _when(job.submitted_at, short=not wide),
        ]
        if wide:
            saved = job.result.saved_to if job.result and job.result.saved_to else ""
            cells += [job.remote_id or "(unknown)", saved or (f"-> {job.save_to}" if job.save_to else "")]
        table.add_row(*cells)
    return table


_STATE_STYLE: Mapping[JobState, str] = MappingProxyType(
    {
        JobState.COMPLETED: "green",
        JobState.FAILED: "red",
        JobState.CANCELLED: "yellow",
        JobState.UNKNOWN: "magenta",
    }
)


def job_detail(job: Job, history: Sequence[JobStatus], *, wide: bool = False) -> list[Any]:
    """Everything stored about a job. Values are printed whole (long URLs are soft-wrapped by the terminal,
    never cut); the attempts table fits 80 columns, and ``wide`` adds remote ids and the raw request."""
    fields: list[tuple[str, str]] = [
        ("job", job.id),
        ("state", job.state.value),
        ("route", f"{job.provider}:{job.model} ({job.endpoint})"),
        ("remote id", job.remote_id or "(unknown: the submit's answer was lost)"),
        ("submitted", _when(job.submitted_at)),
        ("updated", _when(job.updated_at)),
        ("save to", job.save_to or ""),
        ("webhook", job.webhook_url or ""),
        ("attempts", str(len(job.attempts))),
    ]
    if job.error_code or job.error_message:
        fields.append(("error", " ".join(x for x in (job.error_code, job.error_message) if x)))
    if job.result is not None:
        fields += [
            ("served by", str(job.result.served_by)),
            ("cost", cost_text(job.result.cost) if job.result.cost else ""),
            ("video url", job.result.video.url),
            ("saved to", job.result.saved_to or "(not saved)"),
        ]
    if job.request:
        fields += [
            (f"request.{key}", str(value))
            for key, value in job.request.items()
            if value not in (None, {}, [])
        ]
    lines = Text()
    width = max(len(name) for name, value in fields if value)
    for name, value in fields:
        if value:
            lines.append(f"{name:<{width}}  ", style="bold")
            lines.append(f"{value}\n")
    out: list[Any] = [lines]
    if job.attempts:
        attempts = _table("Attempts")
        attempts.add_column("route", no_wrap=True)
        if wide:
            attempts.add_column("remote id", no_wrap=True)
        attempts.add_column("outcome")
        attempts.add_column("billed?", no_wrap=True)
        for a in job.attempts:
            cells = [f"{a.provider}:{a.model}"] + ([a.remote_id or ""] if wide else [])
            outcome = f"{a.error}: {a.message}" if a.error else "accepted"
            attempts.add_row(*cells, outcome, "maybe" if a.may_have_been_billed else "no")
        out.append(attempts)
    rows = history if wide else changes(history)
    if rows:
        table = _table("Status history" + ("" if wide else " (one row per change; --wide: every look-up)"))
        table.add_column("observed", no_wrap=True)
        table.add_column("status")
        for status in rows:
            table.add_row(_when(status.observed_at), status_text(status))
        out.append(table)
    hint = _next_step(job)
    if hint:
        out.append(Text(hint, style="yellow"))
    return out


def _next_step(job: Job) -> str | None:
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        return f"still {job.state.value}: `lipsyncer jobs resume {job.id}` waits for it and saves the video"
    if job.state is JobState.SUBMITTING:
        return f"being submitted (or its submitter stopped): `lipsyncer jobs resume {job.id}` settles it"
    if job.state is JobState.UNKNOWN:
        return (
            "the submit's outcome is unknown: find the job on the provider's dashboard, then "
            f"`lipsyncer jobs resolve {job.id} REMOTE_ID` (never send it again blindly)"
        )
    if job.state is JobState.COMPLETED and job.result is not None and not job.result.saved_to:
        return f"completed but not saved: `lipsyncer jobs download {job.id}` saves it (links expire)"
    return None
