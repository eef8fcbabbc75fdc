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
from types import MappingProxyType
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.router import RoutePlan
from ..core.schema import Job, JobState, JobStatus, LipsyncResult
from .errors import Failure
from .payloads import ProviderRow
from .progress import clock, status_text

__all__ = [
    "Ui",
    "estimate_table",
    "job_detail",
    "jobs_table",
    "providers_tables",
    "result_lines",
]


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
        self.out.print(text if isinstance(text, Text) else Text(text, style=style or ""))

    def show(self, *renderables: Any) -> None:
        self.out.print(*renderables)

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


def estimate_table(plan: RoutePlan) -> Table:
    table = Table(
        title=f"Estimated cost for {plan.output_seconds or 0:.2f} s of output ({plan.strategy} order)"
    )
    for name, justify in (("#", "right"), ("route", "left"), ("endpoint", "left"), ("price", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("estimate", justify="right", style="bold")
    for i, route in enumerate(plan.candidates, 1):
        cost = plan.estimate(route)
        table.add_row(
            str(i),
            route.id,
            route.model.endpoint,
            f"${route.price_per_second * 60:.2f}/min",
            f"${cost.amount:.4f}" if cost else "?",
        )
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
        text.append(f"  cost: {result.cost}\n")
    if result.timings.elapsed is not None:
        text.append(f"  elapsed: {clock(result.timings.elapsed)}\n")
    if result.saved_to:
        text.append("Saved to ", style="bold green")
        text.append(result.saved_to)
    else:
        text.append(f"Result at {result.video.url} (not saved)", style="yellow")
    return text


# ------------------------------------------------------------------------------------------- providers


def providers_tables(rows: Sequence[ProviderRow], storages: Sequence[dict[str, Any]]) -> list[Table]:
    table = Table(title="Providers", show_lines=False)
    for column in ("provider", "model", "options honoured", "price", "credentials", "features", "plugin"):
        table.add_column(column, overflow="fold")
    for row in rows:
        for i, model in enumerate(row.models):
            first = i == 0
            options = [o for o in model["options"] if o != "sync_mode"]
            table.add_row(
                Text(row.id, style="bold" if row.enabled else "dim") if first else "",
                model["id"],
                ", ".join(["sync_mode", *options]),
                f"${float(model['price_per_second']) * 60:.2f}/min",
                _credentials_cell(row.credential_env, row.credentials) if first else "",
                ", ".join(row.features) if first else "",
                row.plugin if first else "",
                end_section=i == len(row.models) - 1,
            )
    tables = [table]
    if storages:
        store_table = Table(title="Storages (host local files for providers that cannot upload them)")
        for column in ("storage", "credentials", "plugin"):
            store_table.add_column(column)
        for s in storages:
            store_table.add_row(
                s["id"], _credentials_cell(s["credential_env"], s["credentials"]), s["plugin"]
            )
        tables.append(store_table)
    return tables


def _credentials_cell(env_var: str | None, state: str) -> Text:
    if env_var is None:
        return Text("none needed", style="dim")
    return Text(f"{env_var}: {state}", style="green" if state == "found" else "red")


# ------------------------------------------------------------------------------------------- jobs


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = Table(title="Jobs (newest first)")
    for column in ("id", "state", "route", "remote id", "submitted", "saved to"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        saved = job.result.saved_to if job.result and job.result.saved_to else ""
        table.add_row(
            job.id,
            Text(job.state.value, style=_STATE_STYLE.get(job.state, "")),
            f"{job.provider}:{job.model}",
            job.remote_id or "(unknown)",
            _when(job.submitted_at),
            saved or (f"-> {job.save_to}" if job.save_to else ""),
        )
    return table


_STATE_STYLE: Mapping[JobState, str] = MappingProxyType(
    {
        JobState.COMPLETED: "green",
        JobState.FAILED: "red",
        JobState.CANCELLED: "yellow",
        JobState.UNKNOWN: "magenta",
    }
)


def job_detail(job: Job, history: Sequence[JobStatus]) -> list[Any]:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
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
            ("cost", str(job.result.cost) if job.result.cost else ""),
            ("video url", job.result.video.url),
            ("saved to", job.result.saved_to or "(not saved)"),
        ]
    for name, value in fields:
        if value:
            grid.add_row(name, value)
    out: list[Any] = [grid]
    if job.request:
        request = Table.grid(padding=(0, 2))
        request.add_column(style="bold")
        request.add_column(overflow="fold")
        for key, value in job.request.items():
            if value not in (None, {}, []):
                request.add_row(f"request.{key}", str(value))
        out.append(request)
    if job.attempts:
        attempts = Table(title="Attempts")
        for column in ("route", "remote id", "outcome", "billed?"):
            attempts.add_column(column, overflow="fold")
        for a in job.attempts:
            outcome = f"{a.error}: {a.message}" if a.error else "accepted"
            attempts.add_row(
                f"{a.provider}:{a.model}",
                a.remote_id or "",
                outcome,
                "maybe" if a.may_have_been_billed else "no",
            )
        out.append(attempts)
    if history:
        table = Table(title="Status history")
        for column in ("observed", "status"):
            table.add_column(column)
        for status in history:
            table.add_row(_when(status.observed_at), status_text(status))
        out.append(table)
    hint = _next_step(job)
    if hint:
        out.append(Text(hint, style="yellow"))
    return out


def _next_step(job: Job) -> str | None:
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        return f"still {job.state.value}: `lipsyncer jobs resume {job.id}` waits for it and saves the video"
    if job.state is JobState.UNKNOWN:
        return "the submit's outcome is unknown: check the provider's dashboard before sending it again"
    if job.state is JobState.COMPLETED and job.result is not None and not job.result.saved_to:
        return f"completed but not saved: `lipsyncer jobs resume {job.id}` downloads it (links expire)"
    return None
