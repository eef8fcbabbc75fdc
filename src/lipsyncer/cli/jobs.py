"""``jobs list | show | resume | download | cancel | resolve | prune | export | migrate``: the job store.

A job submitted by a process that was killed is resumed here; it is saved where that ``run`` asked (the output
path is part of the stored job), never submitted again.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated

import anyio
import typer

from ..core.client import AsyncLipsyncer
from ..core.config import load_settings
from ..core.errors import LipsyncError
from ..core.schema import Job, JobState, LipsyncResult, utcnow
from ..core.store import SCHEMA_VERSION, default_store_path, redacted, store_from_url
from .errors import CliInputError, describe
from .helptext import PlainCommand, PlainGroup
from .housekeeping import FINISHED, csv_rows, delete_jobs, jsonl_lines, parse_age, prunable
from .options import ConfigOpt, ForceOpt, JsonOpt, StoreOpt, WideOpt
from .payloads import error_payload, job_payload, result_payload
from .progress import StatusProgress
from .render import Ui, job_detail, jobs_table, result_lines
from .session import ClientOptions, open_session, store_setting

__all__ = ["build_jobs_app", "register"]

JobIdArg = Annotated[str, typer.Argument(metavar="ID", help="A job id (see `lipsyncer jobs list`).")]


def register(app: typer.Typer) -> None:
    app.add_typer(build_jobs_app(), name="jobs")


def build_jobs_app() -> typer.Typer:
    from . import APP_SETTINGS

    jobs = typer.Typer(
        help="Stored jobs: list, show, resume, download, prune.\n\n"
        "A job submitted by a process that died is resumed here, never submitted again.",
        cls=PlainGroup,
        **APP_SETTINGS,
    )
    jobs.command("list", cls=PlainCommand)(list_command)
    jobs.command("show", cls=PlainCommand)(show_command)
    jobs.command("resume", cls=PlainCommand, short_help="Wait for unfinished jobs and save their videos.")(
        resume_command
    )
    jobs.command("download", cls=PlainCommand)(download_command)
    jobs.command("cancel", cls=PlainCommand)(cancel_command)
    jobs.command("resolve", cls=PlainCommand)(resolve_command)
    jobs.command("prune", cls=PlainCommand)(prune_command)
    jobs.command("export", cls=PlainCommand)(export_command)
    jobs.command("migrate", cls=PlainCommand)(migrate_command)
    return jobs


StateOpt = Annotated[
    list[JobState] | None,
    typer.Option(
        "--state",
        "-s",
        metavar="STATE",
        help="Only jobs in this state (repeatable): " + ", ".join(s.value for s in JobState) + ".",
    ),
]
LimitOpt = Annotated[
    int, typer.Option("--limit", "-n", metavar="N", min=1, help="At most this many, newest first.")
]
_EVERY_JOB = 1_000_000


def _require(client: AsyncLipsyncer, job_id: str) -> Job:
    job = client.store.get(job_id)
    if job is None:
        raise CliInputError(
            f"no job {job_id!r} in {client.store!r}", fix="see `lipsyncer jobs list` (and --store)"
        )
    return job


def list_command(
    state: StateOpt = None,
    limit: LimitOpt = 20,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """The newest jobs in the store.

    id, state, route and submit time fit 80 columns; --wide adds remote ids and save paths.
    """
    ui = Ui.create(json_mode=as_json)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            found = session.client.store.list_jobs(states=state or None, limit=limit)
            if ui.json_mode:
                ui.emit_json({"jobs": [job_payload(j) for j in found]})
            elif found:
                ui.show(jobs_table(found, wide=wide))
            else:
                ui.say(f"no jobs in {session.client.store!r}")

    anyio.run(go)


def show_command(
    job_id: JobIdArg,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """One job: route, remote id, attempts, status history, result.

    The history has one row per change; --wide shows every look-up and remote ids.
    """
    ui = Ui.create(json_mode=as_json)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            job = _require(session.client, job_id)
            history = session.client.store.history(job.id)
            if ui.json_mode:
                ui.emit_json(job_payload(job, history))
            else:
                ui.show(*job_detail(job, history, wide=wide))

    anyio.run(go)


def resume_command(
    job_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="One job; default: every unfinished one.")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Finish stored jobs after a crash or a restart: wait for queued and running ones, fetch and save completed
    ones, settle interrupted submits (unknown outcomes are explained, never re-sent blindly)."""
    ui = Ui.create(json_mode=as_json)

    async def go() -> int:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            client = session.client
            pending = [_require(client, job_id)] if job_id is not None else client.unfinished()
            if not pending:
                ui.say("nothing to resume")
                if ui.json_mode:
                    ui.emit_json({"results": [], "errors": []})
                return 0
            with StatusProgress(ui.out) as progress:
                for job in pending:
                    progress.track(job)
                outcomes = await client.resume(job_id, on_status=progress)
            return _report(ui, outcomes)

    code = anyio.run(go)
    if code:
        raise typer.Exit(code)


def _report(ui: Ui, outcomes: list[LipsyncResult | LipsyncError]) -> int:
    results = [o for o in outcomes if isinstance(o, LipsyncResult)]
    errors = [o for o in outcomes if isinstance(o, LipsyncError)]
    for result in results:
        ui.show(result_lines(result))
    payloads = []
    for exc in errors:
        failure = describe(exc)
        job = getattr(exc, "job", None)
        job_id = job.id if isinstance(job, Job) else None
        payloads.append(error_payload(job_id, failure))
        ui.failure(failure)
    if ui.json_mode:
        ui.emit_json({"results": [result_payload(r) for r in results], "errors": payloads})
    return describe(errors[0]).code if errors else 0


def cancel_command(job_id: JobIdArg, config: ConfigOpt = None, store: StoreOpt = None) -> None:
    """Ask the provider to cancel a job.

    Providers without a cancel endpoint (the unified API) refuse: the job keeps running and is billed.
    """
    ui = Ui.create()

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            job = _require(session.client, job_id)
            if job.state.finished:
                raise CliInputError(f"job {job_id} is already {job.state.value}")
            await session.client.cancel(job)
            ui.say(f"cancellation requested for {job.id} on {job.provider} (remote id {job.remote_id})")

    anyio.run(go)


def resolve_command(
    job_id: JobIdArg,
    remote_id: Annotated[
        str,
        typer.Argument(metavar="REMOTE_ID", help="The provider's id for the job (its dashboard, its logs)."),
    ],
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Attach the provider's id to a job whose submit outcome is unknown; `jobs resume ID` then finishes it."""
    ui = Ui.create()

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            _require(session.client, job_id)
            try:
                job = await session.client.resolve(job_id, remote_id)
            except LipsyncError as exc:
                raise CliInputError(exc.message, fix=exc.fix) from None
            ui.say(f"{job.id} is {job.state.value} on {job.provider} as {job.remote_id}")
            ui.say(f"next: lipsyncer jobs resume {job.id}")

    anyio.run(go)


def download_command(
    job_id: JobIdArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Where to save it (default: where its `run` said, else JOB-ID.mp4 here; numbered if taken).",
        ),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Save a completed job's video (again, or elsewhere).

    Links expire (the unified API's after 24 h): an expired one fails with exit code 4.
    """
    from .run import output_path

    ui = Ui.create(json_mode=as_json)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            job = _require(session.client, job_id)
            if job.result is None:
                hint = (
                    f"`lipsyncer jobs resume {job.id}` waits for it and saves the video"
                    if job.state in (JobState.QUEUED, JobState.RUNNING)
                    else "only a completed job has a video"
                )
                raise CliInputError(f"job {job.id} is {job.state.value}: it has no video yet", fix=hint)
            default = Path(job.save_to) if job.save_to else Path.cwd() / f"{job.id}.mp4"
            target = output_path(output, default, force=force)
            result = await session.client.download(job.result, target)
            ui.show(result_lines(result))
            if ui.json_mode:
                ui.emit_json(result_payload(result))

    anyio.run(go)


def prune_command(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", metavar="AGE", help="Finished at least this long ago: 90m, 12h, 30d, 2w."
        ),
    ] = "30d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Remove old finished jobs from the store.

    Only completed, failed and cancelled jobs go; unfinished and unknown ones are always kept.
    """
    age: timedelta = parse_age(older_than)
    ui = Ui.create(json_mode=as_json)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            jobs_store = session.client.store
            found = prunable(
                jobs_store.list_jobs(states=FINISHED, limit=_EVERY_JOB), older_than=age, now=utcnow()
            )
            ids = [job.id for job in found]
            removed = 0 if dry_run else delete_jobs(jobs_store, ids)
            verb = "would remove" if dry_run else "removed"
            ui.say(f"{verb} {len(ids) if dry_run else removed} finished job(s) older than {older_than}")
            if dry_run and found:
                ui.show(jobs_table(found))
            if ui.json_mode:
                ui.emit_json({"dry_run": dry_run, "older_than": older_than, "jobs": ids, "removed": removed})

    anyio.run(go)


class ExportFormat(str, Enum):
    JSONL = "jsonl"
    CSV = "csv"


def export_command(
    fmt: Annotated[
        ExportFormat, typer.Option("--format", metavar="FORMAT", help="jsonl (every field) or csv (flat).")
    ] = ExportFormat.JSONL,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="PATH", help="Write here (default: stdout).")
    ] = None,
    state: StateOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", min=1, help="At most this many, newest first.")
    ] = _EVERY_JOB,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Every stored job as JSON lines or CSV.

    jsonl has each job record as `jobs show --json` prints it; csv has one flat row per job.
    """
    if output is not None and output.expanduser().exists() and not force:
        raise CliInputError(
            f"{output} already exists", fix="pass --force to overwrite it, or choose another -o"
        )

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            found = session.client.store.list_jobs(states=state or None, limit=limit)
            text = csv_rows(found) if fmt is ExportFormat.CSV else jsonl_lines(found)
            if output is None:
                typer.echo(text, nl=False)
            else:
                output.expanduser().write_text(text)
                Ui.create().say(f"wrote {len(found)} job(s) to {output}", style="dim")

    anyio.run(go)


def migrate_command(config: ConfigOpt = None, store: StoreOpt = None) -> None:
    """Bring the job store's schema up to this lipsyncer's version (stop the workers using it first).

    SQLite stores are migrated when opened; a PostgreSQL store is refused until this runs once."""
    ui = Ui.create()
    target = store_setting(store) if store is not None else load_settings(config).job_store
    opened = store_from_url(target or default_store_path(), migrate=True)
    try:
        ui.say(f"{redacted(str(target or default_store_path()))} is at schema version {SCHEMA_VERSION}")
    finally:
        opened.close()
