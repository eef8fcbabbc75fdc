"""The only writer of job state.

Every change to a stored job goes through :class:`Lifecycle`: it reads the freshest row, checks that the
transition still applies to it, and writes it back as a compare-and-swap on the row's version. A writer that
lost the race re-reads and re-decides, so a waiter holding a stale copy can never overwrite what a webhook
handler (or another process) stored, a finished job never changes again, and each transition fires its
``job_event`` exactly once: only the writer whose swap succeeded emits.

Completing and downloading need the job's claim (:meth:`Lifecycle.holding`), so exactly one waiter, webhook
handler or process fetches the result and saves the video. A job is ``completed`` only once its result is
stored::

    (request) -> SUBMITTING -> QUEUED -> RUNNING -> COMPLETED -> (saved)
                    |  answer lost                      ^ result fetched and stored
                    v                                   |
                 UNKNOWN -- webhook / resolve() / idempotent re-send --> QUEUED
    any unfinished -> FAILED | CANCELLED
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio

from .errors import JobNotFoundError
from .jobs import JobStore
from .provider import Submission
from .schema import Attempt, Cost, EventKind, Job, JobEvent, JobState, JobStatus, LipsyncResult

__all__ = ["Lifecycle", "owner_id", "owner_is_dead"]

log = logging.getLogger("lipsyncer.lifecycle")

Emit = Callable[[JobEvent], None]
Change = Callable[[Job], "list[tuple[EventKind, dict[str, Any]]] | None"]
"""Mutates a draft of the freshest row; returns the events the transition fires, or None: nothing to do."""

_SETTLED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN})


def owner_id() -> str:
    """A claim owner unique to this client: host, process and a random part (two clients in one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer exists (SIGKILLed, crashed).

    Its claim is then free at once instead of after its lease: a killed submitter must not hold its jobs
    for minutes. Owners on other hosts are judged by their lease alone (hostnames are taken to be unique
    per process namespace, as containers and machines give them).
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class Lifecycle:
    """Versioned transitions and claims over a :class:`~lipsyncer.core.jobs.JobStore`."""

    def __init__(
        self,
        store: JobStore,
        emit: Emit,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        lease: float = 300.0,
        settled: Callable[[Job], None] | None = None,
        observed: Callable[[], bool] | None = None,
    ) -> None:
        """``settled`` is told when a job stops occupying its provider (finished, or its outcome unknown):
        the limits free its in-flight slot, whichever process settles it. ``observed`` says whether anyone
        takes events now (False: none is built; thousands of jobs make tens of thousands of them)."""
        self.store = store
        self._observed = observed
        self.owner = owner or owner_id()
        self.clock = clock
        self.lease = lease
        self._emit = emit
        self._settled = settled
        self._held: dict[str, int] = {}
        """Claims held under :meth:`renewing` (job id -> holds): its one task renews them all."""
        self._renewers = 0

    def __repr__(self) -> str:
        return f"<Lifecycle owner={self.owner!r} store={self.store!r}>"

    # ------------------------------------------------------------------ the one mechanism

    def fresh(self, job: Job | str) -> Job:
        """The stored row. Seeing it settled (perhaps by another process) frees what it held here."""
        job_id = job if isinstance(job, str) else job.id
        found = self.store.get(job_id)
        if found is None:
            raise JobNotFoundError(job_id, repr(self.store))
        if self._settled is not None and found.state in _SETTLED:
            self._settled(found)
        return found

    def _apply(self, job: Job, change: Change) -> Job:
        """Apply ``change`` to the freshest row and swap it in; on a lost race, re-read and re-decide."""
        current = job
        while True:
            # Changes assign fields and grow these two containers; nothing else is mutated in place, so a
            # shallow copy with its own containers is a private draft (a deep copy costs ten times more).
            draft = current.model_copy(
                update={"attempts": list(current.attempts), "provider_data": dict(current.provider_data)}
            )
            events = change(draft)
            if events is None:
                return current
            # A status event is a look-up the row took: its history entry is written with the row, one commit.
            seen = next((f["status"] for kind, f in events if kind == "status"), None)
            stored = self.store.update(draft, status=seen) if seen is not None else self.store.update(draft)
            if stored is not None:
                if events and (self._observed is None or self._observed()):
                    for kind, fields in events:
                        self._emit(_event(kind, stored, **fields))
                if self._settled is not None and stored.state in _SETTLED and current.state not in _SETTLED:
                    self._settled(stored)
                return stored
            current = self.fresh(job.id)

    # ------------------------------------------------------------------ submitting

    def begin(self, job: Job) -> tuple[Job, bool]:
        """Write the job ahead of its submit. Returns (the stored job, True) or, when its idempotency key is
        already stored, (that job, False): nothing is sent for it again."""
        job.state = JobState.SUBMITTING
        job.idempotency_key = job.idempotency_key or job.id
        stored = self.store.create(job)
        return stored, stored.id == job.id

    def sending(
        self,
        job: Job,
        *,
        provider: str,
        model: str,
        endpoint: str,
        target: str | None,
        data: Mapping[str, Any] | None = None,
    ) -> Job:
        """The route of the attempt about to leave (and what re-sending it needs), stored before it leaves;
        counts the send, so a resumer tells a job never sent from one whose answer may be lost."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.state not in (JobState.SUBMITTING, JobState.UNKNOWN) or draft.remote_id is not None:
                return None
            # Always written, even when the route is the one already stored (a prepared job sent to its
            # provider's real hosts): a send that is not counted would be sent again by a resumer.
            draft.provider, draft.model, draft.endpoint, draft.target = provider, model, endpoint, target
            draft.provider_data = {**draft.provider_data, **(data or {})}
            draft.state = JobState.SUBMITTING
            draft.sends += 1
            return []

        return self._apply(job, change)

    def accepted(self, job: Job, submission: Submission, attempt: Attempt) -> Job:
        """The provider answered with an id: the job is queued (and billed). The submit's answer may carry
        the first status (``initial_status``): it is observed in the same write."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.remote_id is not None or draft.state.finished:
                return None  # a webhook resolved it first
            draft.remote_id = submission.remote_id
            draft.state = JobState.QUEUED
            draft.status_url = submission.status_url
            draft.result_url = submission.result_url
            draft.cancel_url = submission.cancel_url
            draft.provider_data.update(submission.provider_data)
            draft.attempts.append(attempt)
            draft.error_code = draft.error_message = None
            initial = submission.initial_status
            return [("submitted", {}), *((_observed(draft, initial) or []) if initial is not None else [])]

        return self._apply(job, change)

    def attempt_failed(self, job: Job, attempt: Attempt) -> Job:
        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            draft.attempts.append(attempt)
            return [("attempt_failed", {"attempt": attempt, "message": attempt.message})]

        return self._apply(job, change)

    def refused(self, job: Job, *, code: str, message: str) -> Job:
        """Every route refused before accepting: nothing was billed, the job is failed."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.state is not JobState.SUBMITTING:
                return None
            draft.state = JobState.FAILED
            draft.error_code, draft.error_message = code, message
            return [("failed", {"message": message})]

        return self._apply(job, change)

    def unknown(self, job: Job, *, message: str) -> Job:
        """The submit left and its answer was lost: the job may be queued and billed."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.state is not JobState.SUBMITTING or draft.remote_id is not None:
                return None
            draft.state = JobState.UNKNOWN
            draft.error_code, draft.error_message = "submit_outcome_unknown", message
            return [("unknown", {"message": message})]

        return self._apply(job, change)

    def resolved(self, job: Job, remote_id: str, *, how: str) -> Job:
        """Attach the provider's id to a job whose submit answer was lost (webhook, by hand, re-send)."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.remote_id is not None or draft.state.finished:
                return None
            draft.remote_id = remote_id
            draft.state = JobState.QUEUED
            draft.error_code = draft.error_message = None
            return [("submitted", {"message": f"resolved by {how}"})]

        return self._apply(job, change)

    # ------------------------------------------------------------------ observing

    def observe(self, job: Job, status: JobStatus) -> Job:
        """Record a look-up or delivery. States only move forward; a finished job never changes.

        A provider's "completed" does not complete the job (its result is not stored yet): the job stays
        running with ``last_status`` completed until :meth:`completed` stores the result.

        The row's ``last_status`` leaves the provider's logs out (they grow with every look-up, and thousands
        of jobs in flight would each carry and rewrite them); the status history keeps each look-up whole.
        """

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.state.finished or draft.remote_id is None:
                return None
            return _observed(draft, status)

        return self._apply(job, change)

    def completed(self, job: Job, result: LipsyncResult) -> Job:
        """Store the result: the job is completed. Call it holding the job's claim."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.state.finished:
                return None
            draft.state = JobState.COMPLETED
            draft.result = result
            draft.error_code = draft.error_message = None
            return [("completed", {})]

        return self._apply(job, change)

    def saved(self, job: Job, result: LipsyncResult) -> Job:
        """The video is on disk where it was asked (``result.saved_to``). Call it holding the claim."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.state is not JobState.COMPLETED:
                return None
            if draft.result is not None and draft.result.saved_to == result.saved_to:
                return None
            draft.result = result
            return [("downloaded", {"message": result.saved_to})]

        return self._apply(job, change)

    def hand_polls(self, job: Job, poller: str) -> Job:
        """Give the job's look-ups to a new poll chain (a task queue restarting them); older chains stop."""

        def change(draft: Job) -> list[tuple[EventKind, dict[str, Any]]] | None:
            if draft.state.finished or draft.poller == poller:
                return None
            draft.poller = poller
            return []

        return self._apply(job, change)

    def failed(self, job: Job, status: JobStatus) -> Job:
        """The provider failed or cancelled the job (also for jobs cancelled from here)."""
        return self.observe(job, status)

    # ------------------------------------------------------------------ claims

    def claim(self, job_id: str) -> bool:
        """Take the job's claim: free, expired, ours already, or held by a dead process on this host."""
        now = self.clock()
        if self.store.claim(job_id, self.owner, until=now + self.lease, now=now):
            return True
        held = self.store.claim_of(job_id)
        if held is not None and owner_is_dead(held.owner):
            # Atomic still: succeeds only while the dead owner's lease is the one stored.
            return self.store.claim(job_id, self.owner, until=now + self.lease, now=held.until)
        return False

    def release(self, job_id: str) -> None:
        self.store.release(job_id, self.owner)

    def claimed_elsewhere(self, job_id: str) -> bool:
        """True while another live owner holds an unexpired claim (a submitter, completer or resumer)."""
        held = self.store.claim_of(job_id)
        return (
            held is not None
            and held.owner != self.owner
            and held.until > self.clock()
            and not owner_is_dead(held.owner)
        )

    @asynccontextmanager
    async def holding(self, job_id: str) -> AsyncIterator[bool]:
        """Hold the job's claim for the block (renewed while it runs); yields False when someone else has it."""
        if not self.claim(job_id):
            yield False
            return
        if self._renewers:  # the shared renewer keeps it: no task of its own
            self._held[job_id] = self._held.get(job_id, 0) + 1
            try:
                yield True
            finally:
                left = self._held.pop(job_id) - 1
                if left:
                    self._held[job_id] = left
                self.release(job_id)
            return
        try:
            async with _alongside(lambda: self._renew(job_id)):
                yield True
        finally:
            self.release(job_id)

    async def _renew(self, job_id: str) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            if not self._renewed(job_id):
                return

    def _renewed(self, job_id: str) -> bool:
        if self.claim(job_id):
            return True
        log.warning("lost the claim on %s while holding it (lease %.0f s)", job_id, self.lease)
        return False

    @asynccontextmanager
    async def renewing(self) -> AsyncIterator[None]:
        """While the block runs, one task renews every claim :meth:`holding` takes here, instead of a task
        per hold: thousands of jobs at once (a batch) then cost no task, task group or timer each."""
        async with _alongside(self._renew_held):
            self._renewers += 1
            try:
                yield
            finally:
                self._renewers -= 1

    async def _renew_held(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            for job_id in list(self._held):
                if job_id in self._held:
                    self._renewed(job_id)


@asynccontextmanager
async def _alongside(task: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run ``task`` while the block runs, and stop it after; the block's exception comes out as itself, not
    wrapped in an exception group."""
    raised: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(task)
        try:
            yield
        except BaseException as exc:
            raised = exc
        finally:
            tg.cancel_scope.cancel()
    if raised is not None:
        raise raised


def _observed(draft: Job, status: JobStatus) -> list[tuple[EventKind, dict[str, Any]]] | None:
    """:meth:`Lifecycle.observe`'s change to a job with a remote id: None when the look-up says nothing new."""
    last = draft.last_status
    if last is not None and (last.state, last.progress, last.queue_position) == (
        status.state,
        status.progress,
        status.queue_position,
    ):
        return None
    if last is not None and _rank(status.state) < _rank(last.state):
        return None  # an older look-up, or deliveries out of order
    draft.last_status = status.model_copy(update={"logs": []}) if status.logs else status
    if status.state in (JobState.FAILED, JobState.CANCELLED):
        draft.state = status.state
        draft.error_code, draft.error_message = status.error_code, status.error_message
        kind: EventKind = "cancelled" if status.state is JobState.CANCELLED else "failed"
        return [("status", {"status": status}), (kind, {"status": status})]
    if status.state in (JobState.RUNNING, JobState.COMPLETED):
        draft.state = JobState.RUNNING
    return [("status", {"status": status})]


_RANKS = {
    JobState.SUBMITTING: 0,
    JobState.UNKNOWN: 0,
    JobState.QUEUED: 1,
    JobState.RUNNING: 2,
    JobState.COMPLETED: 3,
    JobState.FAILED: 3,
    JobState.CANCELLED: 3,
}


def _rank(state: JobState) -> int:
    return _RANKS[state]


def _event(kind: EventKind, job: Job, **fields: Any) -> JobEvent:
    price = job.provider_data.get("price_per_second")
    expected = job.provider_data.get("expected_output_seconds")
    estimated = (
        Cost.of(Decimal(str(price)), float(expected), "estimate")
        if price is not None and expected is not None
        else None
    )
    actual = job.result.cost if job.result is not None and job.result.cost is not None else None
    if actual is not None and actual.basis != "output_duration":
        actual = None
    return JobEvent(
        kind=kind,
        job_id=job.id,
        provider=job.provider,
        model=job.model,
        estimated_cost=estimated,
        cost=actual,
        **fields,
    )
