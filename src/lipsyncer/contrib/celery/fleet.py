"""lipsyncer's side of a Celery app: its settings, one client per process, and how a job's tasks are sent.

A job crosses three tasks, none of which waits while the provider works: ``lipsyncer.submit`` sends the
prepared job, ``lipsyncer.poll`` makes one status look-up and re-schedules itself with the polling policy's
backoff as its countdown, and ``lipsyncer.complete`` fetches, stores and saves the result. Each is safe to
run twice (Celery delivers at least once): sends, transitions and completions are guarded by the job
store's idempotency keys, compare-and-swap and claims, not by the queue.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
from celery import Celery
from celery.result import AsyncResult
from celery.signals import worker_init, worker_process_shutdown, worker_shutdown

from ...core.client import AsyncLipsyncer
from ...core.config import PollingPolicy, Settings, load_settings
from ...core.errors import LipsyncError
from ...core.plugins import PluginHost
from ...core.schema import Job, JobState, LipsyncRequest
from ...core.store import import_driver
from ...core.waiting import failure_of
from .runtime import Runtime

__all__ = ["COMPLETE", "POLL", "SUBMIT", "SWEEP", "Fleet", "JobResult", "create_app", "fleet_of", "result_id"]

log = logging.getLogger("lipsyncer.celery")

SUBMIT = "lipsyncer.submit"
POLL = "lipsyncer.poll"
COMPLETE = "lipsyncer.complete"
SWEEP = "lipsyncer.sweep"


def result_id(job_id: str) -> str:
    """The Celery task id under which a job's outcome (its result, or its error) is stored."""
    return f"lipsyncer-{job_id}"


class Fleet:
    """Settings (read lazily, in the process that uses them) and the per-process client of one Celery app.

    Args:
        settings: ready settings; when None, loaded from ``config`` and the usual places when first needed.
        config, env, transport, plugins, entry_points: as for :class:`~lipsyncer.AsyncLipsyncer`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        plugins: Iterable[object] = (),
        entry_points: bool = True,
    ) -> None:
        self._settings = settings
        self._config = config
        self._env = env
        self._transport = transport
        self._plugins = tuple(plugins)
        self._entry_points = entry_points
        self.runtime = Runtime(lambda: self.client(completer=True))
        self.app: Any = None

    def __repr__(self) -> str:
        return f"<Fleet {self.runtime!r}>"

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            config = Path(self._config) if self._config is not None else None
            self._settings = load_settings(config, env=self._env)
        return self._settings

    def preload(self) -> None:
        """Import what every task's client loads (the plugins' providers, the job store's database driver,
        the HTTP stack, PyAV for probing media), opening nothing. A prefork worker calls it in its main process
        before the pool forks, so each child starts with them in memory it shares instead of importing them on
        its first task (~0.5 s of CPU per child)."""
        try:
            PluginHost(entry_points=self._entry_points, plugins=self._plugins)
            url = self.settings.job_store
            if (
                url is not None and "://" in url
            ):  # a plain path is SQLite, whose driver is the standard library's
                import_driver(url)
            _preload_libraries()
        except Exception as exc:  # the first task reports it, typed; a worker must still start
            log.debug("preloading for the worker pool failed: %s", type(exc).__name__)

    def client(self, *, completer: bool = True) -> AsyncLipsyncer:
        """A new client on this fleet's settings and store; with ``completer``, a webhook it handles enqueues
        the job's completion instead of completing it in the receiving process (use it for ``webhook_app``)."""
        return AsyncLipsyncer(
            self.settings,
            env=self._env,
            transport=self._transport,
            plugins=self._plugins,
            entry_points=self._entry_points,
            completer=self.enqueue_completion if completer else None,
        )

    def celery_config(self) -> dict[str, Any]:
        """The Celery settings lipsyncer needs; ``[celery] options`` overrides any of them."""
        section = self.settings.celery
        conf: dict[str, Any] = {
            "task_default_queue": section.queue,
            # At least once: a task is acknowledged after it ran, and re-delivered when its worker dies.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "result_extended": True,
            "broker_connection_retry_on_startup": True,
        }
        if section.broker_url:
            conf["broker_url"] = section.broker_url
        if section.result_backend:
            conf["result_backend"] = section.result_backend
        if section.sweep_interval is not None:
            # Redis hands a task out before it records it unacknowledged: a worker killed between the two
            # loses that task for good. The sweep, run by beat, restarts whatever such a loss leaves idle.
            conf["beat_schedule"] = {"lipsyncer-sweep": {"task": SWEEP, "schedule": section.sweep_interval}}
        conf.update(section.options)
        return conf

    # ------------------------------------------------------------------ sending tasks

    def enqueue(self, request: LipsyncRequest, *, idempotency_key: str, save_to: str | Path | None) -> str:
        """Store the job (routed, not sent), then send its submit task; returns the job id."""

        async def prepare(client: AsyncLipsyncer) -> Job:
            return client.prepare(request, idempotency_key=idempotency_key, save_to=save_to)

        job = self.runtime.call(prepare)
        self.send_submit(job.id)
        return job.id

    def send_submit(self, job_id: str) -> AsyncResult:
        return self.app.send_task(SUBMIT, args=[job_id])

    def send_poll(
        self, job_id: str, *, step: int, failures: int, countdown: float, chain: str | None = None
    ) -> AsyncResult:
        """One link of the job's poll chain ``chain`` (see ``Job.poller``; None: the chain its submit began)."""
        kwargs: dict[str, Any] = {"step": step, "failures": failures}
        if chain is not None:
            kwargs["chain"] = chain
        return self.app.send_task(POLL, args=[job_id], kwargs=kwargs, countdown=countdown)

    def send_complete(self, job_id: str, *, countdown: float | None = None) -> AsyncResult:
        """Its task id is the job's :func:`result_id`: every completion of a job reports under one id."""
        return self.app.send_task(COMPLETE, args=[job_id], task_id=result_id(job_id), countdown=countdown)

    async def enqueue_completion(self, job: Job) -> None:
        """The client's ``completer``: a webhook said the job finished; a worker completes it."""
        await anyio.to_thread.run_sync(lambda: self.send_complete(job.id))

    def result(self, job_id: str) -> JobResult:
        return JobResult(self, job_id)

    def stored_failure(self, job_id: str) -> LipsyncError | None:
        """The typed error the stored job stands for, when it will not complete (failed, cancelled, its
        outcome unknown); None otherwise."""

        async def read(client: AsyncLipsyncer) -> LipsyncError | None:
            job = client.lifecycle.fresh(job_id)
            settled = job.state in (JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN)
            return failure_of(job) if settled else None

        return self.runtime.call(read)


class JobResult(AsyncResult):  # type: ignore[misc]
    """A job's Celery result whose ``get()`` raises the job's own typed error.

    Celery rebuilds a task's error from its class name and message alone, so an error that carries more
    (``SubmitOutcomeUnknownError``'s provider and job, ``JobFailedError``'s code) comes back as a plain
    ``LipsyncError``. The job store keeps what happened: a failed task raises the error the stored job stands
    for, with every attribute, and the rebuilt one as its cause.
    """

    def __init__(self, fleet: Fleet, job_id: str) -> None:
        super().__init__(result_id(job_id), app=fleet.app)
        self.job_id = job_id
        self._fleet = fleet

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """As Celery's ``AsyncResult.get`` (same arguments); a failed job raises its stored typed error."""
        try:
            return super().get(*args, **kwargs)
        except Exception as exc:
            if not self.failed():
                raise  # a timeout, a broker error: not the job's outcome
            typed = self._fleet.stored_failure(self.job_id)
            if typed is None:
                raise
            raise typed from exc


def backoff(policy: PollingPolicy, step: int) -> float:
    """Seconds before look-up ``step`` (0 first): the policy's exponential backoff, capped, with jitter."""
    interval = min(policy.initial_interval * policy.multiplier ** min(step, 64), policy.max_interval)
    return interval * (1 + random.uniform(-policy.jitter, policy.jitter))


def create_app(fleet: Fleet | None = None, *, main: str = "lipsyncer") -> Any:
    """A Celery app with lipsyncer's tasks, configured from the lipsyncer config (``[celery]``) when first used.

    ``lipsyncer.contrib.celery.app`` is one of these; build your own to pass settings explicitly.
    """
    from .tasks import register

    fleet = fleet or Fleet()
    app = Celery(main, set_as_current=False)
    app.add_defaults(fleet.celery_config)  # a promise: read when the app's configuration is first needed
    app.lipsyncer_fleet = fleet
    fleet.app = app
    register(app, fleet)
    worker_process_shutdown.connect(fleet.runtime.close, weak=False)
    worker_shutdown.connect(fleet.runtime.close, weak=False)

    def preload(sender: Any = None, **_: Any) -> None:  # a worker's main process, before its pool starts
        if getattr(sender, "app", None) is app:
            fleet.preload()
            if _forks_a_pool(sender):
                # Python's advice for fork without exec: what the main process holds now lives as long as it
                # does, so no garbage collection walks it again (Celery collects before every fork) and no
                # child's collection writes to the pages it shares with its siblings.
                gc.freeze()

    worker_init.connect(preload, weak=False)
    return app


def _preload_libraries() -> None:
    """Libraries a task's client loads on first use, beyond the plugins and the store's driver."""
    import httpcore  # noqa: F401  (httpx loads its transport's HTTP stack on the first request)

    if importlib.util.find_spec("av") is not None:  # the media extra: local inputs and outputs are probed
        import av  # noqa: F401
    cffi = sys.modules.get("cffi")
    if cffi is not None:
        # billiard sets each prefork child's parent-death signal through cffi when cffi is imported, and
        # cffi builds its C parser on first use (~90 ms): build it once here, for every child.
        cffi.FFI().cdef("int prctl (int __option, ...);")


def _forks_a_pool(worker: Any) -> bool:
    """Whether this worker's pool forks children from the main process (prefork, Celery's default)."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    try:
        pool = get_implementation(getattr(worker, "pool_cls", None) or "prefork")
    except Exception:  # an unknown pool name: Celery itself reports it next
        return False
    return isinstance(pool, type) and issubclass(pool, TaskPool)


def fleet_of(app: Any) -> Fleet:
    fleet = getattr(app, "lipsyncer_fleet", None)
    if not isinstance(fleet, Fleet):
        from ...core.errors import ConfigError

        raise ConfigError(
            "this Celery app has no lipsyncer tasks",
            fix="build it with lipsyncer.contrib.celery.create_app()",
        )
    return fleet
