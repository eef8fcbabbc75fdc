"""A single timer thread: runs short callbacks at deadlines on the sandbox's clock (webhook times, retries).

Job state itself is computed from the clock on every request, so nothing here drives it; the timer only exists
for what the sandbox must *do* at a given time without a client asking. With a ``ManualClock`` the thread
sleeps until the test advances the clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

from .clock import Clock

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, clock: Clock, name: str = "lipsyncer-sandbox-timer") -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._closed = False
        clock.on_advance(self._wake)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the timer thread once ``clock.monotonic() >= when``; False once closed."""
        with self._cond:
            if self._closed:
                return False
            heapq.heappush(self._heap, (when, next(self._counter), fn))
            self._cond.notify()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        delay = self._heap[0][0] - self._clock.monotonic()
                        if delay <= 0:
                            break
                        self._cond.wait(self._clock.real_timeout(delay))
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # a failing callback must not stop the timer
                log.exception("sandbox timer callback failed")
