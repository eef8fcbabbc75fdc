"""The sandbox's sense of time, injectable: the real monotonic clock, or a manual one a test moves by hand.

Every deadline the sandbox keeps (queue and processing times, start timeouts, webhook retries, result and CDN
expiry, held or slowed answers) is read through one ``Clock``. With ``ManualClock`` nothing advances until the
test calls ``advance``: a job stays queued, a webhook retry waits and a link stays valid however long the test
takes, so a test moves time instead of sleeping and its outcome never depends on the machine's speed.
Rendering still runs on worker threads in real time (it is work, not waiting); ``Sandbox.wait_idle`` waits for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio

__all__ = ["Clock", "ManualClock", "MonotonicClock"]

_MANUAL_POLL = 0.005  # real seconds between looks at a manual clock while an answer is held


class Clock:
    """Where the sandbox reads time. Subclass ``monotonic`` and ``time``; the rest has working defaults."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines are kept on it)."""
        raise NotImplementedError

    def time(self) -> float:
        """Unix seconds (timestamps in bodies, headers and ``created`` fields)."""
        raise NotImplementedError

    def real_timeout(self, delay: float) -> float | None:
        """How long a thread should block for ``delay`` clock seconds to pass; None: until ``on_advance`` fires."""
        return max(0.0, delay)

    def on_advance(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the clock is moved by hand (a real clock moves by itself: no-op)."""

    async def sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` have passed on this clock."""
        await anyio.sleep(max(0.0, seconds))


class MonotonicClock(Clock):
    """The default: ``time.monotonic()`` and ``time.time()``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "MonotonicClock()"


class ManualClock(Clock):
    """A clock that moves only when told to; thread-safe, so the test and the sandbox's threads may share it.

    ``ManualClock()`` starts at monotonic 0 and at the real unix time of its creation (so webhook receivers that
    check timestamps against their own clock still accept it); pass ``wall`` for fully reproducible timestamps.
    """

    def __init__(self, start: float = 0.0, *, wall: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = float(start)
        self._wall_offset = (time.time() if wall is None else float(wall)) - self._now
        self._listeners: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._now + self._wall_offset

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0) and wake whatever waits on it; returns the new reading."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds}) needs seconds >= 0")
        with self._lock:
            self._now += seconds
            now = self._now
            listeners = list(self._listeners)
        for callback in listeners:
            callback()
        return now

    def real_timeout(self, delay: float) -> float | None:
        return 0.0 if delay <= 0 else None

    def on_advance(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    async def sleep(self, seconds: float) -> None:
        deadline = self.monotonic() + max(0.0, seconds)
        # Polled, not an anyio.Event: ``advance`` may run on any thread, or on this very event loop.
        while self.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(_MANUAL_POLL)

    def __repr__(self) -> str:
        return f"ManualClock(at={self.monotonic():g})"
