"""``jobs list | show | resume | cancel | resolve | migrate``: the job store, read and acted on from any process.

A job submitted by a process that was killed is resumed here; it is saved where that ``run`` asked (the output
path is part of the stored job), never submitted again.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import typer

from ..core.client import AsyncLipsyncer
from ..core.config import load_settings
from ..core.errors import LipsyncError
from ..core.schema import Job, JobState, LipsyncResult
from ..core.store import SCHEMA_VERSION, default_store_path, redacted, store_from_url
from .errors import CliInputError, describe
from .options import ConfigOpt, JsonOpt, StoreOpt
from .payloads import error_payload, job_payload, result_payload
from .progress import StatusProgress
from .render import Ui, job_detail, jobs_table, result_lines
from .session import ClientOptions, open_session, store_setting

__all__ = ["build_jobs_app"]

JobIdArg = Annotated[str, typer.Argument(metavar="ID", help="A job id (see `lipsyncer jobs list`).")]


def build_jobs_app() -> typer.Typer:
    jobs = typer.Typer(help="Stored jobs: list, inspect, resume after a crash, cancel.", no_args_is_help=True)
    jobs.command("list")(list_command)
    jobs.command("show")(show_command)
    jobs.command("resume")(resume_command)
    jobs.command("cancel")(cancel_command)
    jobs.command("resolve")(resolve_command)
    jobs.command("migrate")(migrate_command)
    return jobs


def _require(client: AsyncLipsyncer, job_id: str) -> Job:
    job = client.store.get(job_id)
    if job is None:
        raise CliInputError(
            f"no job {job_id!r} in {client.store!r}", fix="see `lipsyncer jobs list` (and --store)"
        )
    return job


def list_command(
    state: Annotated[
        list[JobState] | None, typer.Option("--state", "-s", help="Only jobs in this state (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many, newest first.")] = 20,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """The newest jobs in the store."""
    ui = Ui.create(json_mode=as_json)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            found = session.client.store.list_jobs(states=state or None, limit=limit)
            if ui.json_mode:
                ui.emit_json({"jobs": [job_payload(j) for j in found]})
            elif found:
                ui.show(jobs_table(found))
            else:
                ui.say(f"no jobs in {session.client.store!r}")

    anyio.run(go)


def show_command(
    job_id: JobIdArg, as_json: JsonOpt = False, config: ConfigOpt = None, store: StoreOpt = None
) -> None:
    """One job: route, remote id, attempts, status history, result."""
    ui = Ui.create(json_mode=as_json)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, store=store)) as session:
            job = _require(session.client, job_id)
            history = session.client.store.history(job.id)
            if ui.json_mode:
                ui.emit_json(job_payload(job, history))
            else:
                ui.show(*job_detail(job, history))

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
    """Ask the provider to cancel a job (providers without a cancel endpoint refuse, and keep billing)."""
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
