"""Run lipsyncer on Celery workers: ``celery -A lipsyncer.contrib.celery worker``.

``app`` is configured from the lipsyncer config (``[celery] broker_url``, ``result_backend``; the job store
must be one every worker reaches, e.g. ``job_store = "postgresql://..."``) when it is first used. Producers
call :func:`enqueue`; the job is stored before its first task is sent, and its outcome is kept both in the
job store and under :func:`result` (a Celery ``AsyncResult``). Needs the ``celery`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.schema import LipsyncRequest
from ..webhooks import webhook_app
from .fleet import COMPLETE, POLL, SUBMIT, SWEEP, Fleet, JobResult, create_app, fleet_of, result_id

__all__ = [
    "COMPLETE",
    "POLL",
    "SUBMIT",
    "SWEEP",
    "Fleet",
    "JobResult",
    "app",
    "create_app",
    "enqueue",
    "fleet_webhook_app",
    "result",
    "result_id",
]

app = create_app()
"""The app ``celery -A lipsyncer.contrib.celery`` runs; settings are read when it is first configured."""


def enqueue(
    request: LipsyncRequest,
    *,
    idempotency_key: str,
    save_to: str | Path | None = None,
    app: Any = None,
) -> str:
    """Store the job, then send its submit task; returns the job id.

    The same ``idempotency_key`` again (from any producer) returns the stored job's id and sends nothing new
    to the provider. ``save_to`` is where the worker that completes the job saves the video (a path it can
    write: shared storage for a fleet of machines). Media must be URLs, or paths every worker can read.
    """
    return fleet_of(app if app is not None else _default()).enqueue(
        request, idempotency_key=idempotency_key, save_to=save_to
    )


def result(job_id: str, *, app: Any = None) -> JobResult:
    """The Celery ``AsyncResult`` of a job (a :class:`JobResult`): ``get()`` returns its result (as JSON) once
    completed, or raises the job's typed error (read from the job store, with all its attributes)."""
    return fleet_of(app if app is not None else _default()).result(job_id)


def fleet_webhook_app(app: Any = None) -> Any:
    """An ASGI webhook receiver (see :func:`lipsyncer.contrib.webhooks.webhook_app`) that records deliveries
    and enqueues a finished job's completion on the workers instead of completing it in the web process."""
    return webhook_app(fleet_of(app if app is not None else _default()).client(completer=True))


def _default() -> Any:
    return app
