"""``Lipsyncer``: the blocking client, the same surface as :class:`~lipsyncer.AsyncLipsyncer`.

It runs an ``AsyncLipsyncer`` on a private event loop in a daemon thread for the client's whole life, so
connections, webhook wake-ups and in-process sandboxes keep working across calls. The thread is a daemon and
a finalizer closes a client that was never closed, so a forgotten ``close()`` never hangs interpreter exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx
from anyio.from_thread import BlockingPortal

from .batch import BatchItem, Outcome
from .client import AsyncLipsyncer, StatusCallback
from .config import Settings
from .errors import ClientClosedError, LipsyncError
from .jobs import JobStore
from .plugins import PluginHost
from .router import RoutePlan
from .schema import Job, JobStatus, LipsyncRequest, LipsyncResult

__all__ = ["Lipsyncer"]

log = logging.getLogger("lipsyncer")
T = TypeVar("T")

_CLOSE_AT_EXIT = 5.0
"""Seconds an unclosed client gets to close its connections when the interpreter exits."""


class _Loop:
    """An event loop on a daemon thread, reachable through a blocking portal."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="lipsyncer-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # pragma: no cover - the loop failed to start
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None
        return self._portal

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already stopped
                self.portal.call(self.portal.stop)
            self._thread.join(timeout=_CLOSE_AT_EXIT)


def _close_at_exit(loop: _Loop, client: AsyncLipsyncer) -> None:
    """The finalizer of an unclosed client: close it briefly, then stop its loop."""
    try:
        loop.portal.start_task_soon(client.aclose).result(timeout=_CLOSE_AT_EXIT)
    except Exception as exc:  # best effort at exit: never raise from a finalizer
        log.debug("closing an unclosed Lipsyncer at exit failed: %r", exc)
    loop.stop()


class Lipsyncer:
    """The blocking client: the same methods as :class:`~lipsyncer.AsyncLipsyncer`, run on a private loop.

    Takes the same arguments as ``AsyncLipsyncer``. Use it in a ``with`` block (or call :meth:`close`);
    after closing, every method raises :class:`~lipsyncer.ClientClosedError`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        store: JobStore | None = None,
        plugins: Iterable[object] = (),
        entry_points: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = _Loop()
        try:
            self._async = AsyncLipsyncer(
                settings,
                config=config,
                env=env,
                transport=transport,
                store=store,
                plugins=plugins,
                entry_points=entry_points,
                clock=clock,
            )
        except BaseException:
            self._loop.stop()
            raise
        self._finalizer = weakref.finalize(self, _close_at_exit, self._loop, self._async)

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncLipsyncer", "Lipsyncer")

    def __enter__(self) -> Lipsyncer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and store this client built, and stop its loop. Idempotent."""
        if not self._finalizer.alive:
            return
        try:
            self._loop.portal.start_task_soon(self._async.aclose).result()
        finally:
            self._finalizer.detach()
            self._loop.stop()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    # ------------------------------------------------------------------ plumbing

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self.closed:
            raise ClientClosedError()

        async def call() -> T:
            return await fn(*args, **kwargs)

        future: Future[T] = self._loop.portal.start_task_soon(call)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (or any interruption of the caller) cancels the waiting, never the stored job.
            future.cancel()
            raise

    def _sync(self) -> AsyncLipsyncer:
        if self.closed:
            raise ClientClosedError()
        return self._async

    @property
    def settings(self) -> Settings:
        return self._async.settings

    @property
    def store(self) -> JobStore:
        return self._async.store

    @property
    def plugins(self) -> PluginHost:
        return self._async.plugins

    @property
    def aio(self) -> AsyncLipsyncer:
        """The async client underneath (for async code sharing this client's loop-bound resources)."""
        return self._async

    # ------------------------------------------------------------------ the surface

    def route(self, request: LipsyncRequest) -> RoutePlan:
        return self._sync().route(request)

    def estimate(
        self,
        request: LipsyncRequest,
        *,
        video_seconds: float | None = None,
        audio_seconds: float | None = None,
    ) -> RoutePlan:
        return self._sync().estimate(request, video_seconds=video_seconds, audio_seconds=audio_seconds)

    def submit(
        self,
        request: LipsyncRequest,
        *,
        idempotency_key: str | None = None,
        save_to: str | Path | None = None,
    ) -> Job:
        return self._call(self._async.submit, request, idempotency_key=idempotency_key, save_to=save_to)

    def prepare(
        self,
        request: LipsyncRequest,
        *,
        idempotency_key: str | None = None,
        save_to: str | Path | None = None,
    ) -> Job:
        return self._sync().prepare(request, idempotency_key=idempotency_key, save_to=save_to)

    def send(self, job: Job | str) -> Job:
        return self._call(self._async.send, job)

    def complete(self, job: Job | str) -> LipsyncResult | None:
        return self._call(self._async.complete, job)

    def status(self, job: Job | str) -> JobStatus:
        return self._call(self._async.status, job)

    def wait(self, job: Job | str, *, on_status: StatusCallback | None = None) -> LipsyncResult:
        return self._call(self._async.wait, job, on_status=on_status)

    def run(
        self,
        request: LipsyncRequest,
        *,
        idempotency_key: str | None = None,
        save_to: str | Path | None = None,
        on_status: StatusCallback | None = None,
    ) -> LipsyncResult:
        return self._call(
            self._async.run, request, idempotency_key=idempotency_key, save_to=save_to, on_status=on_status
        )

    def run_many(
        self,
        items: Iterable[BatchItem | tuple[str, LipsyncRequest]],
        *,
        concurrency: int | None = None,
        on_status: StatusCallback | None = None,
    ) -> Iterator[Outcome]:
        """Outcomes as jobs finish (see :meth:`AsyncLipsyncer.run_many`); leaving the loop early cancels
        what is left (the stored jobs stay resumable)."""
        if self.closed:
            raise ClientClosedError()
        done = object()
        outcomes: queue.Queue[object] = queue.Queue()

        async def pump() -> None:
            try:
                runner = self._async.run_many(items, concurrency=concurrency, on_status=on_status)
                async for outcome in runner:
                    outcomes.put(outcome)
            finally:
                outcomes.put(done)

        future: Future[None] = self._loop.portal.start_task_soon(pump)
        try:
            while (item := outcomes.get()) is not done:
                assert isinstance(item, Outcome)
                yield item
            future.result()
        finally:
            if not future.done():
                future.cancel()

    def cancel(self, job: Job | str) -> None:
        self._call(self._async.cancel, job)

    def resolve(self, job: Job | str, remote_id: str) -> Job:
        return self._call(self._async.resolve, job, remote_id)

    def resume(
        self,
        job_id: str | None = None,
        *,
        on_status: StatusCallback | None = None,
        concurrency: int | None = None,
    ) -> list[LipsyncResult | LipsyncError]:
        return self._call(self._async.resume, job_id, on_status=on_status, concurrency=concurrency)

    def download(self, result: LipsyncResult, path: str | Path) -> LipsyncResult:
        return self._call(self._async.download, result, path)

    def handle_webhook(
        self, provider_id: str, headers: Mapping[str, str], body: bytes, *, url: str | None = None
    ) -> Job | None:
        return self._call(self._async.handle_webhook, provider_id, headers, body, url=url)
