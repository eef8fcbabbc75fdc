"""Look-ups for many jobs from one schedule: a job between look-ups is an entry in a heap, not a task.

``run_many`` keeps each waiting job's polling state (:class:`~lipsyncer.core.waiting.Polling`, a few hundred
bytes) in a heap ordered by when its next look-up is due, and one dispatcher starts a short task for each
look-up as it comes due. A task per job sleeping between look-ups costs ~5 KB more (the task, its coroutine
chain, its timer): at 500 jobs in flight, a third of a batch's memory. Each round is the one a single
``wait`` runs (:meth:`Waiting.look_up`), so both poll alike; a webhook for a scheduled job makes its next
round due at once.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from .errors import LipsyncError
from .schema import Job
from .waiting import Polling, Waiting, finished

__all__ = ["Schedule"]

_ROUNDS = 64
"""Look-ups under way at once. More would only wait for the providers' request slots, each as a task."""

Settled = Callable[[str, Job], Awaitable[None]]
Failed = Callable[[str, LipsyncError], Awaitable[None]]


class Schedule:
    """Due look-ups of many jobs, run in ``tg``: ``settled(key, job)`` once a job's look-ups find it finished,
    ``failed(key, error)`` when its polling gives up (as :meth:`Waiting.wait` would raise)."""

    def __init__(self, waiting: Waiting, tg: anyio.abc.TaskGroup, settled: Settled, failed: Failed) -> None:
        self._waiting = waiting
        self._tg = tg
        self._settled = settled
        self._failed = failed
        self._heap: list[tuple[float, int, str, bool]] = []  # due, entry, job id, grow the interval first
        self._entries = itertools.count()
        self._current: dict[str, int] = {}  # job id -> its live entry (a woken job's older one is skipped)
        self._keys: dict[str, tuple[str, Polling]] = {}  # job id -> key and state, while scheduled
        self._running: set[str] = set()  # jobs in a round now: never two rounds of one job at once
        self._woken: set[str] = set()  # woken during their round: the next round is due at once
        self._changed = anyio.Event()
        self._rounds = anyio.Semaphore(_ROUNDS)
        self._unlisten = waiting.on_wake(self._wake)

    def close(self) -> None:
        """The batch ended (or was abandoned): stop listening for wake-ups, and stop counting the jobs still
        scheduled as waited on here, so a webhook for one of them completes it in its handler."""
        self._unlisten()
        for job_id in list(self._keys):
            self._keys.pop(job_id)
            self._waiting.watching(job_id, -1)

    def add(self, key: str, state: Polling, delay: float) -> None:
        """Schedule a job's first look-up ``delay`` seconds from now (0: at once)."""
        self._waiting.watching(state.job_id, +1)
        self._keys[state.job_id] = (key, state)
        self._push(state.job_id, delay, grow=delay > 0)

    def _push(self, job_id: str, delay: float, *, grow: bool) -> None:
        entry = next(self._entries)
        self._current[job_id] = entry
        heapq.heappush(self._heap, (anyio.current_time() + delay, entry, job_id, grow))
        self._changed.set()

    def _wake(self, job_id: str) -> None:
        """A webhook (or this process) stored something for the job: its next round is due now."""
        if job_id in self._running:
            self._woken.add(job_id)
        elif job_id in self._current:
            self._push(job_id, 0.0, grow=True)

    async def run(self) -> None:
        """Start each look-up as it comes due, at most ``_ROUNDS`` at once (the rest stay heap entries, not
        tasks); runs until its task group is cancelled."""
        while True:
            if self._heap and self._heap[0][0] <= anyio.current_time():
                _, entry, job_id, grow = heapq.heappop(self._heap)
                if self._current.get(job_id) != entry or job_id not in self._keys:
                    continue  # woken since (a newer entry stands for it), or released by close()
                del self._current[job_id]
                self._running.add(job_id)
                await self._rounds.acquire()
                self._tg.start_soon(self._round, *self._keys[job_id], grow)
                continue
            self._changed = anyio.Event()
            wait = self._heap[0][0] - anyio.current_time() if self._heap else math.inf
            with anyio.move_on_after(wait):
                await self._changed.wait()

    async def _round(self, key: str, state: Polling, grow: bool) -> None:
        """One job's round, the one :meth:`Waiting.wait` runs (:meth:`Waiting.next_round`); then schedule the
        next round or hand the job on."""
        try:
            try:
                job = await self._waiting.next_round(state, grow=grow)
            finally:
                self._rounds.release()
        except LipsyncError as exc:
            self._done(state)
            await self._failed(key, exc)
            return
        except BaseException:
            self._done(state)
            raise
        if finished(job):
            self._done(state)
            await self._settled(key, job)  # the result's fetch and download, outside the round's slot
            return
        self._running.discard(state.job_id)
        woken = state.job_id in self._woken
        self._woken.discard(state.job_id)
        self._push(state.job_id, 0.0 if woken else state.delay(), grow=True)

    def _done(self, state: Polling) -> None:
        self._running.discard(state.job_id)
        self._woken.discard(state.job_id)
        if self._keys.pop(state.job_id, None) is not None:  # not already released by close()
            self._waiting.watching(state.job_id, -1)
