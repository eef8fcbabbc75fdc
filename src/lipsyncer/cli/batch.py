"""``batch MANIFEST``: a season of jobs from a CSV or JSONL manifest, within limits and a budget.

The whole manifest is validated, routed and priced before anything is sent; each row's id is its idempotency
key, so running the same manifest again (after a crash, a Ctrl-C, a deploy) submits no row twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TextIO

import anyio
import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..core.batch import BatchItem, BatchPlan, Outcome, PlannedRow, plan_batch
from ..core.errors import LipsyncError
from ..core.manifest import ManifestError, read_manifest
from ..core.schema import Job, JobStatus
from .errors import EXIT_INPUT, EXIT_OK, describe
from .options import ConfigOpt, JsonOpt, SandboxOpt, StoreOpt
from .render import Ui
from .session import ClientOptions, open_session

__all__ = ["register"]

ManifestArg = Annotated[
    Path, typer.Argument(metavar="MANIFEST", help="A CSV (with a header row) or JSONL file, one job per row.")
]
ReportOpt = Annotated[
    Path | None,
    typer.Option("--report", metavar="FILE", help="Write one JSON line per row as rows finish."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Route and price every row; send nothing.")]
BudgetOpt = Annotated[
    float | None,
    typer.Option("--budget", metavar="USD", min=0.0, help="Refuse rows that would take the spend over this."),
]
RetryFailedOpt = Annotated[
    bool, typer.Option("--retry-failed", help="Send failed rows again, as new jobs (the failed ones stay).")
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option("--concurrency", min=1, metavar="N", help="Rows in progress at once (default: all)."),
]


def register(app: typer.Typer) -> None:
    app.command("batch")(batch_command)


def batch_command(
    manifest: ManifestArg,
    report: ReportOpt = None,
    dry_run: DryRunOpt = False,
    budget: BudgetOpt = None,
    retry_failed: RetryFailedOpt = False,
    concurrency: ConcurrencyOpt = None,
    sandbox: SandboxOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Run every row of a manifest within limits and a budget.

    MANIFEST columns: id, video, audio, model, sync_mode, temperature, active_speaker, output, webhook_url,
    max_cost. Rows already finished are skipped, unfinished ones resumed; no row is ever submitted twice.
    """
    ui = Ui.create(json_mode=as_json)
    try:
        rows = read_manifest(manifest)
    except ManifestError as exc:
        _problems(ui, exc)
        raise typer.Exit(EXIT_INPUT) from None
    cap = Decimal(str(budget)) if budget is not None else None

    async def go() -> int:
        async with open_session(ClientOptions(config=config, store=store, sandbox=sandbox)) as session:
            client = session.client
            try:
                plan = plan_batch(client, rows, budget=cap, retry_failed=retry_failed, source=manifest)
            except ManifestError as exc:
                _problems(ui, exc)
                return EXIT_INPUT
            if dry_run:
                _dry_run(ui, plan)
                return EXIT_OK
            return await _run(ui, client, plan, report, concurrency)

    code = anyio.run(go)
    if code:
        raise typer.Exit(code)


def _problems(ui: Ui, exc: ManifestError) -> None:
    ui.err.print(
        Text(f"error: {exc.path}: {len(exc.problems)} problem(s); nothing was sent", style="bold red")
    )
    for problem in exc.problems:
        ui.err.print(Text(f"  {problem}", style="red"), soft_wrap=True)
    if ui.json_mode:
        ui.emit_json({"problems": [problem.__dict__ for problem in exc.problems]})


def _money(amount: Decimal | None) -> str:
    return "unknown" if amount is None else f"${amount:.2f}"


def _dry_run(ui: Ui, plan: BatchPlan) -> None:
    if ui.json_mode:
        ui.emit_json(
            {
                "rows": [
                    {
                        "id": p.row.id,
                        "provider": p.provider,
                        "estimate": str(p.estimate.amount) if p.estimate else None,
                        "refused": p.refused,
                        "done": bool(p.stored and p.stored.state.finished),
                    }
                    for p in plan.rows
                ],
                "per_provider": {k: str(v) for k, v in plan.per_provider().items()},
                "total": str(plan.total),
                "budget": str(plan.budget) if plan.budget is not None else None,
            }
        )
        return
    table = Table(title=f"{len(plan.rows)} rows; nothing sent (--dry-run)", title_justify="left")
    table.add_column("provider")
    table.add_column("rows", justify="right")
    table.add_column("estimate", justify="right")
    counts: dict[str, int] = {}
    for p in plan.runnable:
        counts[p.provider or "?"] = counts.get(p.provider or "?", 0) + 1
    for provider, amount in plan.per_provider().items():
        table.add_row(provider, str(counts.get(provider, 0)), _money(amount))
    table.add_row(
        Text("total", style="bold"), str(len(plan.runnable)), Text(_money(plan.total), style="bold")
    )
    ui.show(table)
    for p in plan.rows:
        if p.refused:
            ui.say(f"refused {p.row.id} (line {p.row.line}): {p.refused}", style="yellow")


# ------------------------------------------------------------------------------------------- running


@dataclass
class _Tally:
    """What the live view shows, kept from status callbacks and outcomes."""

    total: int
    budget: Decimal | None
    started: float = field(default_factory=time.monotonic)
    flying: dict[str, str] = field(default_factory=dict)  # job id -> provider
    done: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    spent: Decimal = Decimal(0)
    finished: int = 0

    def status(self, job: Job, status: JobStatus) -> None:
        if not status.state.finished:
            self.flying[job.id] = job.provider

    def outcome(self, provider: str, ok: bool, job_id: str | None, cost: Decimal | None) -> None:
        self.flying.pop(job_id or "", None)
        bucket = self.done if ok else self.failed
        bucket[provider] = bucket.get(provider, 0) + 1
        self.spent += cost or Decimal(0)
        self.finished += 1

    def view(self) -> Table:
        providers = sorted(set(self.flying.values()) | set(self.done) | set(self.failed))
        table = Table(title=self._headline(), title_justify="left")
        for name in ("provider", "in flight", "done", "failed"):
            table.add_column(name, justify="left" if name == "provider" else "right")
        for provider in providers:
            flying = sum(1 for p in self.flying.values() if p == provider)
            table.add_row(
                provider, str(flying), str(self.done.get(provider, 0)), str(self.failed.get(provider, 0))
            )
        queued = self.total - self.finished - len(self.flying)
        table.caption = f"queued {max(queued, 0)}"
        return table

    def _headline(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.finished / elapsed * 60
        left = self.total - self.finished
        eta = f"{left / (self.finished / elapsed):.0f} s" if self.finished else "?"
        budget = f" of {_money(self.budget)}" if self.budget is not None else ""
        return (
            f"{self.finished}/{self.total} rows, spent {_money(self.spent)}{budget}, "
            f"{rate:.1f} rows/min, ETA {eta}"
        )


def _row_payload(planned: PlannedRow, outcome: Outcome | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": planned.row.id,
        "job_id": outcome.job_id if outcome else None,
        "state": "refused",
        "provider": planned.provider,
        "model": planned.row.request.model,
        "cost": None,
        "output": None,
        "error": planned.refused,
    }
    if outcome is None:
        return payload
    if outcome.result is not None:
        result = outcome.result
        payload.update(
            state="completed",
            provider=result.served_by.provider,
            model=result.served_by.model,
            cost=str(result.cost.amount) if result.cost else None,
            output=result.saved_to or result.video.url,
            error=None,
        )
    elif outcome.error is not None:
        job = outcome.error.job
        payload.update(
            state=job.state.value if isinstance(job, Job) else "failed",
            provider=job.provider if isinstance(job, Job) else planned.provider,
            error=str(outcome.error),
        )
    return payload


async def _run(ui: Ui, client: Any, plan: BatchPlan, report: Path | None, concurrency: int | None) -> int:
    by_key = {p.key: p for p in plan.rows}
    items = [BatchItem(p.key, p.row.request, p.row.output) for p in plan.runnable]
    tally = _Tally(total=len(plan.rows), budget=plan.budget)
    lines: list[dict[str, Any]] = []
    sink: TextIO | None = report.open("a", encoding="utf-8") if report else None
    live = ui.out.is_terminal and not ui.json_mode
    first_failure: LipsyncError | None = None

    def record(payload: dict[str, Any]) -> None:
        lines.append(payload)
        if sink is not None:
            sink.write(json.dumps(payload) + "\n")
            sink.flush()

    try:
        for p in plan.rows:
            if p.refused:
                record(_row_payload(p, None))
                tally.outcome(p.provider or "?", False, None, None)
        with (
            Live(tally.view(), console=ui.out, refresh_per_second=4, transient=False)
            if live
            else _Quiet() as view
        ):
            async for outcome in client.run_many(items, concurrency=concurrency, on_status=tally.status):
                planned = by_key[outcome.key]
                payload = _row_payload(planned, outcome)
                record(payload)
                cost = Decimal(payload["cost"]) if payload["cost"] else None
                tally.outcome(payload["provider"] or "?", outcome.ok, outcome.job_id, cost)
                if outcome.error is not None and first_failure is None:
                    first_failure = outcome.error
                if live:
                    view.update(tally.view())
                elif not ui.json_mode:
                    ui.say(
                        f"[{tally.finished}/{tally.total}] {planned.row.id}: {payload['state']}"
                        + (f" on {payload['provider']}" if payload["provider"] else "")
                        + (f" {_money(cost)}" if cost is not None else "")
                        + (f" ({payload['error']})" if payload["error"] else "")
                    )
    finally:
        if sink is not None:
            sink.close()
    _summary(ui, tally, lines)
    if all(line["state"] == "completed" for line in lines):
        return EXIT_OK
    if first_failure is not None:
        return describe(first_failure).code
    return EXIT_INPUT  # only budget refusals


class _Quiet:
    """Stands in for rich's Live when output is not a terminal."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, renderable: object) -> None:
        return None


def _summary(ui: Ui, tally: _Tally, lines: list[dict[str, Any]]) -> None:
    if ui.json_mode:
        ui.emit_json(
            {
                "rows": lines,
                "completed": sum(1 for line in lines if line["state"] == "completed"),
                "spent": str(tally.spent),
            }
        )
        return
    table = Table(title="batch summary", title_justify="left")
    for name in ("provider", "completed", "not completed", "spent"):
        table.add_column(name, justify="left" if name == "provider" else "right")
    providers = sorted({line["provider"] or "?" for line in lines})
    for provider in providers:
        mine = [line for line in lines if (line["provider"] or "?") == provider]
        spent = sum((Decimal(line["cost"]) for line in mine if line["cost"]), Decimal(0))
        ok = sum(1 for line in mine if line["state"] == "completed")
        table.add_row(provider, str(ok), str(len(mine) - ok), _money(spent))
    ui.show(table)
