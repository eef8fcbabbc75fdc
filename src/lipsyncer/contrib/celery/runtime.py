"""One lipsyncer client per worker process, on a private event loop that Celery's synchronous tasks call into.

A job's claim belongs to a client, so two tasks of one job running at once in one process (Celery's threads
pool, a duplicate delivery) would both hold it: the runtime runs one task per job at a time in a process.

Celery's prefork pool forks its children after importing the app: a client (its HTTP connections, its
database pool) built before the fork must not be shared by the children. The client is built lazily, in
the process that first uses it, and rebuilt when the process id changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ...core.client import AsyncLipsyncer

__all__ = ["Runtime"]

log = logging.getLogger("lipsyncer.celery")
T = TypeVar("T")


class Runtime:
    """Runs coroutines against this process's client; thread-safe (Celery's threads pool shares it)."""

    def __init__(self, build: Callable[[], AsyncLipsyncer]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._client: AsyncLipsyncer | None = None
        self._jobs: dict[str, tuple[anyio.Lock, int]] = {}  # touched on the loop only

    def __repr__(self) -> str:
        return f"<Runtime pid={self._pid} client={self._client!r}>"

    def _ensure(self) -> tuple[BlockingPortal, AsyncLipsyncer]:
        with self._lock:
            if self._pid != os.getpid() or self._portal is None or self._client is None:
                # A forked child inherits a copy of the parent's objects, not its loop thread: start afresh.
                self._portal_cm = start_blocking_portal()
                self._portal = self._portal_cm.__enter__()
                try:
                    self._client = self._portal.call(self._build)
                except BaseException:
                    self._portal_cm.__exit__(None, None, None)
                    self._portal = self._portal_cm = None
                    raise
                self._pid = os.getpid()
            return self._portal, self._client

    @property
    def client(self) -> AsyncLipsyncer:
        return self._ensure()[1]

    def call(self, fn: Callable[[AsyncLipsyncer], Awaitable[T]], *, job_id: str | None = None) -> T:
        """``await fn(client)`` on the loop; blocks the calling (worker) thread until it returns. With
        ``job_id``, after any other call for that job in this process has returned."""
        portal, client = self._ensure()

        async def run() -> T:
            if job_id is None:
                return await fn(client)
            lock, users = self._jobs.get(job_id) or (anyio.Lock(), 0)
            self._jobs[job_id] = (lock, users + 1)
            try:
                async with lock:
                    return await fn(client)
            finally:
                lock, users = self._jobs[job_id]
                if users == 1:
                    del self._jobs[job_id]
                else:
                    self._jobs[job_id] = (lock, users - 1)

        return portal.call(run)

    def close(self, **_signal: Any) -> None:
        """Close the client and stop the loop (a Celery shutdown signal handler; idempotent)."""
        with self._lock:
            if self._pid != os.getpid() or self._portal is None or self._portal_cm is None:
                return
            client, portal, cm = self._client, self._portal, self._portal_cm
            self._client = self._portal = self._portal_cm = None
            self._pid = None
        try:
            if client is not None:
                portal.call(client.aclose)
        except Exception as exc:  # best effort at shutdown
            log.debug("closing the worker's client failed: %r", exc)
        finally:
            cm.__exit__(None, None, None)
