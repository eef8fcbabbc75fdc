"""Waiting for jobs: polling with backoff and deadlines, webhook wake-ups, completion under a claim, resume.

Whoever sees a job finish first — a waiter, a webhook handler, a resumer in another process — takes the job's
claim, fetches the result (retrying transient errors, as look-ups do), stores it and saves the video. Everyone
else waits for the stored row, so a job is fetched, completed and downloaded once.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from .config import PollingPolicy
from .download import download_video
from .errors import (
    ConfigError,
    DeadlineExceededError,
    JobFailedError,
    JobTargetMismatchError,
    LipsyncError,
    ProviderError,
    SubmitOutcomeUnknownError,
)
from .lifecycle import Lifecycle
from .media import MediaProbeError, probe
from .provider import ModelSpec, Provider, ProviderOutput
from .registry import Registry
from .schema import Cost, Job, JobState, JobStatus, LipsyncResult, ServedBy, Timings, utcnow
from .submit import unknown_error

__all__ = ["Polling", "StatusCallback", "Waiting", "finished"]

log = logging.getLogger("lipsyncer.waiting")
StatusCallback = Callable[[Job, JobStatus], Awaitable[None] | None]

_TRANSIENT_ERRORS = 8
"""Consecutive failed look-ups (or result fetches) tolerated before giving up (the job stays resumable)."""
_OTHERS_POLL = 0.5
"""Seconds between store reads while another owner completes a job this client also waits on."""


@dataclass(slots=True)
class Polling:
    """What polling one job keeps between look-ups (its row is read again each round)."""

    job_id: str
    provider: str
    look_up: Callable[[Job], Awaitable[JobStatus]]
    policy: PollingPolicy
    on_status: StatusCallback | None
    interval: float
    failures: int = 0
    started_running: float | None = None

    def delay(self) -> float:
        """Seconds to the next look-up: the interval, jittered."""
        return self.interval * (1 + random.uniform(-self.policy.jitter, self.policy.jitter))

    def grow(self) -> None:
        self.interval = min(self.interval * self.policy.multiplier, self.policy.max_interval)


class Waiting:
    """Status look-ups, waiting, completion and resume for one client."""

    def __init__(self, registry: Registry, lifecycle: Lifecycle) -> None:
        self.registry = registry
        self.lifecycle = lifecycle
        self._wakeups: dict[str, anyio.Event] = {}
        self._waiters: dict[str, int] = {}
        self._delivered: dict[str, ProviderOutput] = {}
        self._wake_listeners: list[Callable[[str], None]] = []

    # ------------------------------------------------------------------ what a job needs

    def route_of(self, job: Job) -> tuple[Provider, ModelSpec]:
        """The job's provider instance, refusing one that would send its look-ups elsewhere."""
        current = self.registry.target(job.provider)
        if job.target != current:
            raise JobTargetMismatchError(job.id, job.provider, job.target, current)
        provider = self.registry.provider(job.provider)
        spec = provider.model_spec(job.model)
        if spec is None:
            raise ConfigError(f"provider {job.provider!r} no longer serves model {job.model!r}")
        return provider, spec

    def policy(self, job: Job) -> PollingPolicy:
        _, spec = self.route_of(job)
        base = PollingPolicy.for_speed(spec.seconds_per_output_second)
        settings = self.registry.settings
        return base.merged(settings.polling).merged(settings.provider(job.provider).polling)

    def destination(self, job: Job) -> Path | None:
        """Where the job's video is to be saved: its ``save_to``, else the configured download_dir."""
        if job.save_to:
            return Path(job.save_to)
        if self.registry.settings.download_dir:
            return Path(self.registry.settings.download_dir) / f"{job.id}.mp4"
        return None

    def unsaved(self, job: Job) -> bool:
        return (
            job.state is JobState.COMPLETED
            and job.result is not None
            and job.result.saved_to is None
            and self.destination(job) is not None
        )

    # ------------------------------------------------------------------ look-ups

    async def status(self, job: Job) -> JobStatus:
        job = self.lifecycle.fresh(job)
        if job.remote_id is None:
            return JobStatus(
                state=job.state,
                raw_status="submitting" if job.state is JobState.SUBMITTING else "submit outcome unknown",
                error_message=job.error_message,
            )
        provider, _ = self.route_of(job)
        status = await provider.status(job)
        self.lifecycle.observe(job, status)
        return status

    async def wait(
        self,
        job: Job,
        *,
        on_status: StatusCallback | None = None,
        current: bool = False,
        progress: bool = True,
    ) -> LipsyncResult:
        """Poll with backoff and jitter (or wake on a webhook) until the job finishes; return its result.

        ``current``: ``job`` is the row as just read or written here, so it is not read again.
        ``progress``: look-ups carry the provider's progress detail when ``on_status`` watches them (a
        batch's callback counts states, so it passes False); unwatched ones are brief (see
        :meth:`Provider.brief_status`).
        """
        job, done = self.before_polling(job, current=current)
        if done is not None:
            return done
        if not finished(job):
            polling = self._poll(job, on_status, progress=progress)
            # The poller holds the job's newest row: thousands in flight need not each keep an old one here.
            del job
            job = await polling
        return await self.after_polling(job)

    def before_polling(self, job: Job, *, current: bool = False) -> tuple[Job, LipsyncResult | None]:
        """The row to poll, or the result of a job already completed; raises for a failed, cancelled or
        unresolved one."""
        if not current:
            job = self.lifecycle.fresh(job)
        if job.state is JobState.COMPLETED and job.result is not None and not self.unsaved(job):
            return job, job.result
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise _failure(job)
        if job.remote_id is None:
            raise _unknown(job)
        self.route_of(job)  # a job that cannot be looked up here is refused before anything waits
        return job, None

    async def after_polling(self, job: Job) -> LipsyncResult:
        """Settle a job its look-ups found finished: its result (fetched, stored and saved once), or its
        failure."""
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise _failure(job)
        return await self.finish(job, current=True)  # the row the last look-up stored

    def polling(self, job: Job, on_status: StatusCallback | None, *, progress: bool) -> tuple[Polling, float]:
        """What polling ``job`` keeps between look-ups, and the seconds until its first look-up: a look-up a
        moment ago (the submit's own answer) is this round's, so the first waits a round."""
        provider, _ = self.route_of(job)
        policy = self.policy(job)
        watched = progress and on_status is not None
        state = Polling(
            job_id=job.id,
            provider=job.provider,
            look_up=provider.status if watched else provider.brief_status,
            policy=policy,
            on_status=on_status,
            interval=policy.initial_interval,
        )
        return state, (0.0 if _age(job.last_status) >= state.interval else state.delay())

    def watching(self, job_id: str, delta: int) -> None:
        """Count this process's waiters on a job: a webhook for a job nobody here waits on is completed by
        the handler itself."""
        count = self._waiters.get(job_id, 0) + delta
        if count:
            self._waiters[job_id] = count
        else:
            self._waiters.pop(job_id, None)
            self._wakeups.pop(job_id, None)

    async def _poll(self, job: Job, on_status: StatusCallback | None, *, progress: bool) -> Job:
        state, delay = self.polling(job, on_status, progress=progress)
        job_id = state.job_id
        # Only a job given a webhook can be woken by one; the others sleep (an event and a cancel scope per
        # job are a fifth of what a job in flight holds). Any change is seen by the next round's read.
        wakeable = job.webhook_url is not None or bool(self.registry.settings.webhook_url)
        wake = self._wakeups.setdefault(job_id, anyio.Event()) if wakeable else None
        self.watching(job_id, +1)
        try:
            while True:
                if delay > 0:
                    # While it waits, a job is its id: the row (~10 KB as objects) is read again after the
                    # wait, so thousands of jobs in flight do not each hold one. The read also sees what a
                    # webhook, or another process, stored meanwhile.
                    del job
                    if wake is None:
                        await anyio.sleep(delay)
                    else:
                        with anyio.move_on_after(delay):
                            await wake.wait()
                        if wake.is_set():
                            wake = self._wakeups[job_id] = anyio.Event()
                    job = await self.next_round(state, grow=True)
                else:
                    job = await self.look_up(state, job)
                if finished(job):
                    return job
                delay = state.delay()
        finally:
            self.watching(job_id, -1)

    async def next_round(self, state: Polling, *, grow: bool) -> Job:
        """A round after a wait: read the row again (a webhook or another process may have settled the job);
        unless it is finished, grow the interval (``grow``) and look the job up."""
        job = self.lifecycle.fresh(state.job_id)
        if finished(job):
            return job
        if grow:
            state.grow()
        return await self.look_up(state, job)

    async def look_up(self, state: Polling, job: Job) -> Job:
        """One round of polling: look the job up and store what changed. A transient failure is counted (the
        next round tries again); too many in a row, any other failure, or a passed deadline raise."""
        status: JobStatus | None = None
        try:
            async with self.registry.requests(state.provider):
                with anyio.fail_after(state.policy.call_timeout), self.registry.redactor.scrubbing():
                    status = await state.look_up(job)
            state.failures = 0
        except (ProviderError, TimeoutError) as exc:
            state.failures += 1
            if not _transient(exc) or state.failures >= _TRANSIENT_ERRORS:
                raise
            log.info("status look-up for %s failed (%s); retrying", job.id, exc)
        if status is not None:
            before = job.version
            job = self.lifecycle.observe(job, status)
            if job.version != before and _recorded(job, status) and state.on_status is not None:
                maybe = state.on_status(job, status)
                if maybe is not None:
                    await maybe
            if status.state is JobState.RUNNING and state.started_running is None:
                state.started_running = time.monotonic()
        if not finished(job):
            _check_deadlines(job, state.policy, status, state.started_running)
        return job

    # ------------------------------------------------------------------ completion

    async def finish(
        self, job: Job, output: ProviderOutput | None = None, *, current: bool = False
    ) -> LipsyncResult:
        """Fetch, store and save a job the provider finished — once, under the job's claim. While another
        owner holds the claim, wait for the row it stores (its lease expires if it died)."""
        while True:
            result = await self.try_finish(job, output, current=current)
            if result is not None:
                return result
            current = False
            wake = self._wakeups.setdefault(job.id, anyio.Event())
            with anyio.move_on_after(_OTHERS_POLL):
                await wake.wait()

    async def try_finish(
        self, job: Job, output: ProviderOutput | None = None, *, current: bool = False
    ) -> LipsyncResult | None:
        """One go at :meth:`finish`: None when another owner holds the claim (a webhook handler must not
        block on another process; that owner completes the job). ``current`` as for :meth:`wait`."""
        provider, _ = self.route_of(job)
        if not current:
            job = self.lifecycle.fresh(job)
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise _failure(job)
        if job.state is JobState.COMPLETED and job.result is not None and not self.unsaved(job):
            return job.result
        async with self.lifecycle.holding(job.id) as mine:
            if mine:
                return await self._finish_claimed(job, provider, output)
        return None

    async def _finish_claimed(
        self, job: Job, provider: Provider, output: ProviderOutput | None
    ) -> LipsyncResult:
        job = self.lifecycle.fresh(job)
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise _failure(job)
        if job.state is not JobState.COMPLETED:
            output = output or self._delivered.pop(job.id, None) or await self._fetch(job, provider)
            result = LipsyncResult(
                video=output.video,
                served_by=ServedBy(provider=job.provider, model=job.model, endpoint=job.endpoint),
                remote_id=job.remote_id or "",
                job_id=job.id,
                attempts=job.attempts,
                cost=_cost(job, output.video.duration),
                timings=Timings(submitted_at=job.submitted_at, completed_at=utcnow()),
                raw=dict(output.raw),
            )
            job = self.lifecycle.completed(job, result)
            self._wake(job.id)
        assert job.result is not None
        dest = self.destination(job)
        if dest is not None and job.result.saved_to is None:
            return await self.save(job, job.result, dest)
        return job.result

    async def _fetch(self, job: Job, provider: Provider) -> ProviderOutput:
        """The result, retrying transient errors like look-ups do; a failed job is stored as failed."""
        policy = self.policy(job)
        failures = 0
        while True:
            try:
                async with self.registry.requests(job.provider):
                    with anyio.fail_after(policy.call_timeout * 2), self.registry.redactor.scrubbing():
                        return await provider.result(job)
            except JobFailedError as exc:
                status = JobStatus(
                    state=JobState.FAILED,
                    error_code=exc.code,
                    error_message=exc.reason or exc.message,
                    retryable=exc.retryable,
                )
                stored = self.lifecycle.observe(job, status)
                exc.job = stored
                raise
            except (ProviderError, TimeoutError) as exc:
                failures += 1
                if not _transient(exc) or failures >= _TRANSIENT_ERRORS:
                    raise
                log.info("result fetch for %s failed (%s); retrying", job.id, exc)
                await anyio.sleep(min(policy.initial_interval * 2 ** (failures - 1), policy.max_interval))

    async def save(self, job: Job, result: LipsyncResult, path: str | Path) -> LipsyncResult:
        """Stream the video to ``path`` (atomic, resumable); the stored result records where it went."""
        dest = await download_video(
            self.registry.http_for(result.served_by.provider), result.video, path, job_id=result.job_id
        )
        update: dict[str, Any] = {"saved_to": str(dest)}
        if result.video.duration is None:
            try:
                seconds: float | None = probe(dest).duration
            except MediaProbeError:
                seconds = None
            if seconds is not None:
                update["cost"] = _cost(job, seconds)
        result = result.model_copy(update=update)
        self.lifecycle.saved(job, result)
        self._wake(job.id)
        return result

    # ------------------------------------------------------------------ webhooks

    def has_waiter(self, job_id: str) -> bool:
        return job_id in self._waiters

    def deliver(self, job: Job, output: ProviderOutput | None) -> None:
        """Hand a webhook's output to this process's waiter (saves it a fetch) and wake it."""
        if output is not None:
            self._delivered[job.id] = output
        self._wake(job.id)

    def on_wake(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(job_id)`` whenever a job is woken (a webhook, a result stored here); returns what
        stops it."""
        self._wake_listeners.append(listener)
        return lambda: self._wake_listeners.remove(listener)

    def _wake(self, job_id: str) -> None:
        event = self._wakeups.get(job_id)
        if event is not None:
            event.set()
        for listener in self._wake_listeners:
            listener(job_id)


# ---------------------------------------------------------------------------------------- helpers


def finished(job: Job) -> bool:
    """Polling is over: the job is settled, or the provider said completed (the result is not stored yet)."""
    return job.state.finished or _provider_finished(job)


def _provider_finished(job: Job) -> bool:
    """The provider said completed; the result is not stored yet."""
    return job.last_status is not None and job.last_status.state is JobState.COMPLETED


def _age(status: JobStatus | None) -> float:
    """Seconds since ``status`` was observed (infinite without one)."""
    return math.inf if status is None else (utcnow() - status.observed_at).total_seconds()


def _recorded(job: Job, status: JobStatus) -> bool:
    """``status`` is the look-up the row stores (which keeps it without its logs)."""
    last = job.last_status
    return last is not None and (last.observed_at, last.state, last.progress, last.queue_position) == (
        status.observed_at,
        status.state,
        status.progress,
        status.queue_position,
    )


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or (isinstance(exc, ProviderError) and exc.retryable)


def _check_deadlines(
    job: Job, policy: PollingPolicy, status: JobStatus | None, started_running: float | None
) -> None:
    elapsed = (utcnow() - job.submitted_at).total_seconds()
    queued = status is None or status.state is JobState.QUEUED
    if (
        policy.start_deadline is not None
        and queued
        and started_running is None
        and elapsed > policy.start_deadline
    ):
        raise DeadlineExceededError(
            f"job {job.id} did not start within {policy.start_deadline:g} s", deadline="start", job=job
        )
    if policy.total_deadline is not None and elapsed > policy.total_deadline:
        raise DeadlineExceededError(
            f"job {job.id} did not finish within {policy.total_deadline:g} s", deadline="total", job=job
        )


def _failure(job: Job) -> JobFailedError:
    what = "was cancelled" if job.state is JobState.CANCELLED else "failed"
    reason = job.error_message or job.error_code or "no reason given"
    retryable = bool(job.last_status.retryable) if job.last_status is not None else False
    return JobFailedError(
        f"job {job.id} on {job.provider}:{job.model} {what}: {reason}",
        job=job,
        code=job.error_code,
        reason=job.error_message,
        retryable=retryable,
    )


def _unknown(job: Job) -> SubmitOutcomeUnknownError:
    if job.state is JobState.SUBMITTING:
        return SubmitOutcomeUnknownError(
            f"job {job.id} is being submitted to {job.provider} (or its submitter stopped mid-send: "
            "`resume` settles it)",
            provider=job.provider,
            job=job,
        )
    return unknown_error(job)


def _cost(job: Job, seconds: float | None) -> Cost | None:
    price = job.provider_data.get("price_per_second")
    if price is None:
        return None
    if seconds is not None:
        return Cost.of(Decimal(str(price)), seconds, "output_duration")
    expected = job.provider_data.get("expected_output_seconds")
    return Cost.of(Decimal(str(price)), float(expected), "estimate") if expected is not None else None


def failure_of(job: Job) -> LipsyncError:
    """The error a finished-but-not-completed (or unresolved) job stands for."""
    return _unknown(job) if job.remote_id is None else _failure(job)
