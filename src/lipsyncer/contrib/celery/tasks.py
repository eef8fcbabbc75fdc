"""The three tasks of a job: submit, poll (re-scheduled, never blocking), complete.

Each task body is a few store reads and at most one provider call; a task that runs twice — Celery's
at-least-once delivery, a worker killed mid-task — finds the job's stored state and does only what is left:
``send`` sends a prepared job once however often it runs, transitions are compare-and-swaps, and completion
happens under the job's claim.
"""

from __future__ import annotations

import logging
import random
import uuid
from typing import Any

import anyio

from ...core.client import AsyncLipsyncer
from ...core.config import PollingPolicy
from ...core.errors import DeadlineExceededError, LipsyncError, ProviderError
from ...core.schema import Job, JobState, utcnow
from ...core.store import job_summary
from ...core.submit import unknown_error
from .fleet import COMPLETE, POLL, SUBMIT, SWEEP, Fleet, backoff

__all__ = ["register"]

log = logging.getLogger("lipsyncer.celery")

_TRANSIENT_ERRORS = 8
"""Consecutive failed look-ups before a poll chain gives up (the job stays stored and resumable)."""
_CLAIM_RETRIES = 100
"""Times a completion waits (up to 30 s each) for another owner's claim: well past a claim's lease."""

_SLOT_WAIT = 2.0
"""Seconds (give or take half) a submit waits, re-scheduled, before asking again for an in-flight slot."""

_WORKER_DIED = "the worker sending it stopped before it stored the provider's answer"


def _summary(job: Job) -> dict[str, Any]:
    return {**job_summary(job), "version": job.version}


def _provider_finished(job: Job) -> bool:
    return job.state.finished or (job.last_status is not None and job.last_status.state is JobState.COMPLETED)


def register(app: Any, fleet: Fleet) -> None:
    """Define the tasks on ``app``: ``lipsyncer.submit``, ``.poll``, ``.complete`` and ``.sweep``."""
    # shared=False: each app runs its own fleet's tasks (Celery would otherwise hand every app the first ones).
    # max_retries=None: a submit waiting for a slot, or a completion for its provider, comes back until done.
    options = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "shared": False,
        "max_retries": None,
    }

    @app.task(name=SUBMIT, **options)  # type: ignore[untyped-decorator]
    def submit(self: Any, job_id: str) -> dict[str, Any]:
        """Send the prepared job (once, however often this runs), then start polling it."""

        async def go(client: AsyncLipsyncer) -> tuple[Job | None, float]:
            wait = await _admission_wait(client, client.lifecycle.fresh(job_id))
            if wait:
                return None, wait
            job = _unknown_if_its_sender_died(client, await client.send(job_id))
            first = client.policy(job).initial_interval if job.remote_id is not None else 0.0
            return job, first

        try:
            sent, first = fleet.runtime.call(go, job_id=job_id)
        except LipsyncError as exc:
            settled = exc.job is not None and (exc.job.state.finished or exc.job.state is JobState.UNKNOWN)
            if settled:
                fleet.send_complete(job_id)  # the job's result id carries the failure too
            raise
        if sent is None:  # the provider's limits say not yet: come back instead of holding a worker
            raise self.retry(countdown=first)
        job = sent
        if job.remote_id is not None:
            fleet.send_poll(job.id, step=0, failures=0, countdown=0.0 if _provider_finished(job) else first)
        elif job.state is JobState.UNKNOWN:
            fleet.send_complete(job_id)
            raise unknown_error(job)
        elif job.state.finished:
            fleet.send_complete(job_id)
        return _summary(job)  # SUBMITTING: another worker is sending it right now and goes on from there

    # A look-up's outcome is the job's row: storing each one's Celery result too would write a key per look-up
    # (tens per job, kept for result_expires) that nothing reads.
    @app.task(name=POLL, ignore_result=True, **options)  # type: ignore[untyped-decorator]
    def poll(
        self: Any, job_id: str, step: int = 0, failures: int = 0, chain: str | None = None
    ) -> dict[str, Any]:
        """One status look-up; then complete the job, or look again after the policy's backoff. A chain
        whose job a sweep handed to a newer chain stops: restarted polls replace, never add up."""

        async def go(client: AsyncLipsyncer) -> tuple[Job, str, PollingPolicy | None]:
            job = client.lifecycle.fresh(job_id)
            if _provider_finished(job):
                return job, "complete", None
            if job.remote_id is None or job.poller != chain:  # not sent yet or unknown; or not ours
                return job, "stop", None
            policy = client.policy(job)
            _check_deadlines(job, policy)
            try:
                with anyio.fail_after(policy.call_timeout):
                    await client.status(job)
            except (ProviderError, TimeoutError) as exc:
                transient = isinstance(exc, TimeoutError) or exc.retryable
                if not transient or failures + 1 >= _TRANSIENT_ERRORS:
                    raise
                log.info("status look-up for %s failed (%s); looking again later", job_id, exc)
                return job, "retry", policy
            job = client.lifecycle.fresh(job_id)
            return job, ("complete" if _provider_finished(job) else "again"), policy

        job, next_step, policy = fleet.runtime.call(go, job_id=job_id)
        if next_step == "complete":
            fleet.send_complete(job_id)
        elif policy is not None:
            failed = failures + 1 if next_step == "retry" else 0
            next_in = backoff(policy, step + 1)
            fleet.send_poll(job_id, step=step + 1, failures=failed, countdown=next_in, chain=chain)
        return {**_summary(job), "next": next_step}

    @app.task(name=COMPLETE, **options)  # type: ignore[untyped-decorator]
    def complete(self: Any, job_id: str) -> dict[str, Any]:
        """Fetch, store and save the result, once, under the job's claim. Its task id is the job's result id."""

        async def go(client: AsyncLipsyncer) -> tuple[dict[str, Any] | None, float]:
            job = client.lifecycle.fresh(job_id)
            if not _provider_finished(job) and job.remote_id is not None:
                return None, client.policy(job).initial_interval  # not done yet: the poll chain goes on
            result = await client.complete(job)
            return (None if result is None else result.model_dump(mode="json")), 0.0

        outcome, not_done = fleet.runtime.call(go, job_id=job_id)
        if outcome is not None:
            return outcome
        if not_done:
            raise self.retry(countdown=not_done)
        # Another owner holds the claim: it completes the job, or its lease runs out and this run does.
        countdown = min(2.0**self.request.retries, 30.0)
        raise self.retry(countdown=countdown, max_retries=_CLAIM_RETRIES)

    @app.task(name=SWEEP, **options)  # type: ignore[untyped-decorator]
    def sweep(self: Any) -> dict[str, int]:
        """Restart what a lost message would leave idle (a task Redis handed to a worker killed before it
        recorded it, a flushed broker, a chain ended by a deadline): send every prepared job never sent, look
        up every unfinished job with a remote id, and mark unknown a job whose sender died inside its send.
        Celery beat runs it every ``[celery] sweep_interval`` seconds. A job's restarted polls replace its
        older chain (``Job.poller``); whatever else it duplicates is safe to run twice."""

        async def go(client: AsyncLipsyncer) -> list[tuple[Job, bool]]:
            found = []
            for job in client.unfinished():
                if job.remote_id is not None and not _provider_finished(job):
                    job = client.lifecycle.hand_polls(job, uuid.uuid4().hex)  # its older chains stop
                before = job.state
                job = _unknown_if_its_sender_died(client, job)
                found.append((job, before is JobState.SUBMITTING and job.state is JobState.UNKNOWN))
            return found

        counts = {"submitted": 0, "polled": 0, "unknown": 0}
        for job, orphaned in fleet.runtime.call(go):
            if job.remote_id is not None:
                fleet.send_poll(job.id, step=0, failures=0, countdown=0.0, chain=job.poller)
                counts["polled"] += 1
            elif job.state is JobState.SUBMITTING and not job.sends:
                fleet.send_submit(job.id)
                counts["submitted"] += 1
            elif orphaned:  # its result id reports the unknown outcome, as the submit task would have
                fleet.send_complete(job.id)
                counts["unknown"] += 1
        return counts


def _unknown_if_its_sender_died(client: AsyncLipsyncer, job: Job) -> Job:
    """A job sent (its send counted) with no answer stored and no live sender holding its claim: the sender
    died between the send and storing the answer, so the outcome is unknown. Re-decided on the freshest row:
    a sender that stored its answer meanwhile wins."""
    if job.state is JobState.SUBMITTING and job.sends > 0 and not client.lifecycle.claimed_elsewhere(job.id):
        return client.lifecycle.unknown(job, message=_WORKER_DIED)
    return job


async def _admission_wait(client: AsyncLipsyncer, job: Job) -> float:
    """Seconds to come back after, when the provider's limits hold this job's send back (0: send now).

    ``send`` would wait for a slot inside the task, holding a worker while others need it to settle the jobs
    that free slots; instead the task takes the job's in-flight slot itself (``send`` then finds it taken
    for this job) or is re-scheduled. A submit rate is still waited for in ``send``: at most 60 / rate s."""
    if job.state is not JobState.SUBMITTING or job.sends or job.remote_id is not None:
        return 0.0
    limits = client.registry.limits
    paused = await limits.backend.paused_for(job.provider)
    if paused > 0:
        return paused
    cap = client.settings.provider(job.provider).max_in_flight
    if cap is not None and not limits.backend.try_acquire(job.provider, job.id, cap):
        return _SLOT_WAIT * random.uniform(0.5, 1.5)  # spread the retries of many waiting submits
    return 0.0


def _check_deadlines(job: Job, policy: PollingPolicy) -> None:
    """The polling policy's deadlines: the chain stops (the job stays stored; ``jobs resume`` picks it up)."""
    elapsed = (utcnow() - job.submitted_at).total_seconds()
    if policy.start_deadline is not None and job.state is JobState.QUEUED and elapsed > policy.start_deadline:
        raise DeadlineExceededError(
            f"job {job.id} did not start within {policy.start_deadline:g} s", deadline="start", job=job
        )
    if policy.total_deadline is not None and elapsed > policy.total_deadline:
        raise DeadlineExceededError(
            f"job {job.id} did not finish within {policy.total_deadline:g} s", deadline="total", job=job
        )
