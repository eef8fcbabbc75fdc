"""Per-provider limits: jobs in flight, submits per minute, back-off after a provider says "too many".

A plan's limits (sync.so: 1 to 15 jobs at once, 60 generations a minute; fal: per-account concurrency) are
held for everything a client does — batches, ``run``, concurrent API calls — by queueing, never by
exceeding. The bookkeeping lives behind :class:`LimitBackend`: :class:`LocalLimits` holds them in this
process; a shared backend (``[limits] backend = "redis://..."``) holds them across processes and machines.

A job takes an in-flight slot just before its first send and gives it back when it settles (finished, or its
outcome unknown) — whichever process settles it — so slots follow jobs, not the tasks that happen to wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

import anyio
from aiolimiter import AsyncLimiter

from .config import Settings

__all__ = ["LimitBackend", "Limits", "LocalLimits"]

log = logging.getLogger("lipsyncer.limits")

_SLOT_POLL = 1.0
"""Seconds between re-checks while waiting for a slot another process may free (local frees wake at once)."""


@runtime_checkable
class LimitBackend(Protocol):
    """Where slots and rates are counted. Implementations must make ``try_acquire`` atomic."""

    def try_acquire(self, provider_id: str, job_id: str, limit: int) -> bool:
        """Add ``job_id`` to the provider's in-flight set when it holds fewer than ``limit`` (or has it)."""

    def release(self, provider_id: str, job_id: str) -> None:
        """Remove ``job_id`` from the provider's in-flight set (idempotent)."""

    def in_flight(self, provider_id: str) -> int: ...

    async def take(self, provider_id: str, per_minute: float) -> None:
        """Wait for a submit token: at most ``per_minute`` submits in any minute."""

    async def pause(self, provider_id: str, seconds: float) -> None:
        """Hold every submit to the provider for ``seconds`` (its 429 / concurrency-limit answer)."""

    async def paused_for(self, provider_id: str) -> float:
        """Seconds left of the provider's pause (0 when none)."""

    async def aclose(self) -> None: ...


class LocalLimits:
    """Limits held in this process: a set of job ids per provider, an ``aiolimiter`` bucket per provider."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: dict[str, set[str]] = {}
        self._rates: dict[tuple[str, float], AsyncLimiter] = {}
        self._paused: dict[str, float] = {}

    def try_acquire(self, provider_id: str, job_id: str, limit: int) -> bool:
        held = self._slots.setdefault(provider_id, set())
        if job_id in held:
            return True
        if len(held) >= limit:
            return False
        held.add(job_id)
        return True

    def release(self, provider_id: str, job_id: str) -> None:
        self._slots.get(provider_id, set()).discard(job_id)

    def in_flight(self, provider_id: str) -> int:
        return len(self._slots.get(provider_id, ()))

    async def take(self, provider_id: str, per_minute: float) -> None:
        key = (provider_id, per_minute)
        if key not in self._rates:
            # A bucket of one, refilled every 60/per_minute s: no burst, so no minute ever sees more.
            self._rates[key] = AsyncLimiter(1, 60.0 / per_minute)
        await self._rates[key].acquire()

    async def pause(self, provider_id: str, seconds: float) -> None:
        until = self._clock() + seconds
        self._paused[provider_id] = max(self._paused.get(provider_id, 0.0), until)

    async def paused_for(self, provider_id: str) -> float:
        return max(0.0, self._paused.get(provider_id, 0.0) - self._clock())

    async def aclose(self) -> None:
        """Nothing to release."""


class Limits:
    """The client's view of its limits: admission before a send, release when a job settles."""

    def __init__(self, settings: Settings, backend: LimitBackend | None = None) -> None:
        self.settings = settings
        self.backend: LimitBackend = backend if backend is not None else LocalLimits()
        self._freed: dict[str, anyio.Event] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def limited(self, provider_id: str) -> bool:
        conf = self.settings.provider(provider_id)
        return conf.max_in_flight is not None or conf.submits_per_minute is not None

    @asynccontextmanager
    async def admission(self, provider_id: str, job_id: str) -> AsyncIterator[None]:
        """Wait for the provider's pause to end, an in-flight slot and a submit token; the block records
        the send while this process's admissions to the provider are held back (so they queue in order)."""
        conf = self.settings.provider(provider_id)
        if not self.limited(provider_id):
            await self._wait_pause(provider_id)
            yield
            return
        lock = self._locks.setdefault(provider_id, anyio.Lock())
        async with lock:
            await self._wait_pause(provider_id)
            if conf.max_in_flight is not None:
                while not self.backend.try_acquire(provider_id, job_id, conf.max_in_flight):
                    freed = self._freed.setdefault(provider_id, anyio.Event())
                    with anyio.move_on_after(_SLOT_POLL):
                        await freed.wait()
            if conf.submits_per_minute is not None:
                await self.backend.take(provider_id, conf.submits_per_minute)
            yield

    async def _wait_pause(self, provider_id: str) -> None:
        while (left := await self.backend.paused_for(provider_id)) > 0:
            log.info("%s asked us to slow down: holding its submits %.1f s", provider_id, left)
            await anyio.sleep(left)

    def release(self, provider_id: str, job_id: str) -> None:
        """The job settled (or moved to another provider): its slot is free for the next one."""
        self.backend.release(provider_id, job_id)
        freed = self._freed.pop(provider_id, None)
        if freed is not None:
            freed.set()

    async def back_off(self, provider_id: str, seconds: float | None) -> None:
        """The provider answered 429 or "concurrency limit": hold its submits (Retry-After honoured)."""
        await self.backend.pause(provider_id, seconds if seconds and seconds > 0 else 5.0)

    async def aclose(self) -> None:
        await self.backend.aclose()
