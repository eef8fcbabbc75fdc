"""``AsyncLipsyncer``: a thin facade over the registry, router, submitter, lifecycle and waiting.

A request crosses each of those once: :class:`~lipsyncer.core.registry.Registry` builds what the client owns,
the router plans, :class:`~lipsyncer.core.submit.Submitter` writes the job ahead and sends it,
:class:`~lipsyncer.core.lifecycle.Lifecycle` stores every transition, and
:class:`~lipsyncer.core.waiting.Waiting` polls, completes and saves. Every client owns its settings, plugins,
provider instances and job store, so two clients with different configs live side by side in one process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx

from .batch import BatchItem, Outcome, run_batch
from .config import PollingPolicy, Settings
from .errors import (
    InvalidRequestError,
    LipsyncError,
    NoRouteError,
    SubmitOutcomeUnknownError,
)
from .jobs import JobStore, default_store_path, store_from_url
from .lifecycle import Lifecycle
from .media import MediaProbeError, check_local_media, output_duration, probe
from .plugins import PluginHost
from .provider import Provider, Storage
from .registry import Registry
from .router import Exclusion, Route, RoutePlan, Router
from .schema import Job, JobEvent, JobState, JobStatus, LipsyncRequest, LipsyncResult, MediaKind
from .submit import JOB_PARAM, CheckedRequest, Submitter
from .waiting import StatusCallback, Waiting, failure_of

__all__ = ["AsyncLipsyncer", "Completer", "StatusCallback"]

log = logging.getLogger("lipsyncer")

Completer = Callable[[Job], Awaitable[None]]
"""Hands a job its provider finished to whoever completes it (a task queue), instead of completing it inline."""


class AsyncLipsyncer:
    """Route, submit, wait, download. All I/O is async; :class:`~lipsyncer.Lipsyncer` is the blocking twin.

    Args:
        settings: a ready :class:`~lipsyncer.Settings`; when None, loaded from ``config`` and the usual places.
        config: a TOML file to read settings from (see the configuration page).
        env: replaces ``os.environ`` for keys and ``LIPSYNCER_*`` variables (tests, multi-tenant hosts).
        transport: one httpx transport for every provider, storage and download request (the in-process
            sandbox, a recording transport); borrowed, never closed by the client.
        store: the job store; when None, the one ``job_store`` names (a SQLite path or a ``postgresql://``
            URL; default: SQLite in the user data dir), owned and closed.
        plugins: plugin objects registered in-process, besides the installed entry points.
        entry_points: False to load no installed plugins (only ``plugins``).
        clock: unix-seconds clock for claim leases (tests move it instead of sleeping).
        completer: when set, a webhook saying a job finished calls it instead of completing the job in the
            receiving process (a fleet enqueues the completion, see ``lipsyncer.contrib.celery``).
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
        completer: Completer | None = None,
    ) -> None:
        self.completer = completer
        self.registry = Registry(
            settings, config=config, env=env, transport=transport, plugins=plugins, entry_points=entry_points
        )
        self._own_store = store is None
        self.store: JobStore = (
            store
            if store is not None
            else store_from_url(self.settings.job_store or default_store_path(dict(self.registry.env)))
        )
        self.lifecycle = Lifecycle(
            self.store,
            self._emit,
            lease=self.settings.claim_lease,
            clock=clock or time.time,
            settled=lambda job: self.registry.limits.release(job.provider, job.id),
            observed=self.plugins.observed,
        )
        self._submitter = Submitter(self.registry, self.lifecycle)
        self._waiting = Waiting(self.registry, self.lifecycle)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} providers={sorted(self.plugins.providers)} strategy={self.settings.strategy!r}>"

    async def __aenter__(self) -> AsyncLipsyncer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the providers, storages and HTTP clients this client built, and its own store. Idempotent."""
        if self.registry.closed:
            return
        await self.registry.aclose()
        if self._own_store:
            self.store.close()

    @property
    def closed(self) -> bool:
        return self.registry.closed

    # ------------------------------------------------------------------ what the client is made of

    @property
    def settings(self) -> Settings:
        return self.registry.settings

    @property
    def plugins(self) -> PluginHost:
        return self.registry.plugins

    @property
    def env(self) -> Mapping[str, str]:
        return self.registry.env

    @property
    def router(self) -> Router:
        return self.registry.router

    def provider(self, provider_id: str) -> Provider:
        """The client's instance of a provider (built on first use with this client's config and key)."""
        return self.registry.provider(provider_id)

    def credential_env(self, cls: type[Provider] | type[Storage]) -> str | None:
        return self.registry.credential_env(cls)

    def missing_credentials(self, cls: type[Provider]) -> str | None:
        return self.registry.missing_credentials(cls)

    def policy(self, job: Job) -> PollingPolicy:
        return self._waiting.policy(job)

    def _emit(self, event: JobEvent) -> None:
        self.plugins.emit(event)

    # ------------------------------------------------------------------ routing and estimates

    def resolve_request(self, request: LipsyncRequest) -> LipsyncRequest:
        """Fill what the request leaves to the config (its model), so scripts swap backends by config only."""
        if request.model is None and self.settings.model is not None:
            return request.model_copy(update={"model": self.settings.model})
        return request

    def route(self, request: LipsyncRequest) -> RoutePlan:
        """The ordered candidates and every excluded route with its reason. No network call."""
        request = self.resolve_request(request)
        return self._plan(request, _expected_output(request))

    def estimate(
        self,
        request: LipsyncRequest,
        *,
        video_seconds: float | None = None,
        audio_seconds: float | None = None,
    ) -> RoutePlan:
        """The plan with a cost per candidate, from local media durations (or the ones given)."""
        request = self.resolve_request(request)
        return self._plan(request, _expected_output(request, video_seconds, audio_seconds, required=True))

    def _plan(self, request: LipsyncRequest, output_seconds: float | None) -> RoutePlan:
        """The router's data-level plan, then each candidate provider's own check (with this client's config)."""
        plan = self.router.plan(request, output_seconds=output_seconds)
        kept: list[Route] = []
        refused: list[Exclusion] = []
        for route in plan.candidates:
            try:
                self.provider(route.provider.id).check(request, route.model)
            except LipsyncError as exc:
                refused.append(Exclusion(route.id, exc.message, "option"))
                continue
            kept.append(route)
        if not refused:
            return plan
        excluded = plan.excluded + tuple(refused)
        if not kept:
            raise NoRouteError(
                f"no route can serve this {request.model!r} request",
                reasons={e.route: e.reason for e in excluded},
                exclusions=excluded,
            )
        return replace(plan, candidates=tuple(kept), excluded=excluded)

    # ------------------------------------------------------------------ submit and wait

    async def submit(
        self,
        request: LipsyncRequest,
        *,
        idempotency_key: str | None = None,
        save_to: str | Path | None = None,
    ) -> Job:
        """Store the job, then send it to the first candidate that accepts it; returns the stored handle.

        The same ``idempotency_key`` again (from this process or another) returns the stored job and sends
        nothing. Falls back only on failures where the provider certainly did not take the job; a submit
        whose answer was lost is stored as ``unknown`` and re-sent only to a provider that honours the key.
        ``save_to`` is stored with the job, so whoever finishes it saves the video there.
        """
        return await self._submit(self._checked(request), idempotency_key=idempotency_key, save_to=save_to)

    def _checked(self, request: LipsyncRequest) -> CheckedRequest:
        """The request resolved against the config, its local media checked, routed and fingerprinted: what
        every submit of it needs, computed once (a batch of one request over many keys reuses it)."""
        request = self.resolve_request(request)
        check_local_media(request)  # an unreadable or swapped file is refused before any upload
        return CheckedRequest(request, self.route(request), request.fingerprint())

    async def _submit(
        self, checked: CheckedRequest, *, idempotency_key: str | None, save_to: str | Path | None
    ) -> Job:
        request, plan, fingerprint = checked
        if idempotency_key is not None:
            stored = self._submitter.replay(request, idempotency_key, fingerprint=fingerprint)
            if stored is not None:
                return stored
        job = self._submitter.prepare(
            request, plan, idempotency_key=idempotency_key, save_to=save_to, fingerprint=fingerprint
        )
        return await self._submitter.send(job, request, plan)

    def prepare(
        self,
        request: LipsyncRequest,
        *,
        idempotency_key: str | None = None,
        save_to: str | Path | None = None,
    ) -> Job:
        """Route and store the job without sending it (state ``submitting``, ``sends`` 0): a queue or worker
        sends it later with :meth:`send`. Its media must be URLs, or paths the sender can read."""
        request = self.resolve_request(request)
        if idempotency_key is not None:
            stored = self._submitter.replay(request, idempotency_key)
            if stored is not None:
                return stored
        check_local_media(request)
        for media in (request.video, request.audio):
            if media.kind not in (MediaKind.URL, MediaKind.PATH):
                raise InvalidRequestError(
                    f"a prepared job's media must be URLs or file paths, not {media.describe()}",
                    field="video" if media is request.video else "audio",
                    fix="pass a URL (or a path the sender can read), or use submit() in one process",
                )
        plan = self.route(request)
        return self._submitter.prepare(request, plan, idempotency_key=idempotency_key, save_to=save_to)

    async def send(self, job: Job | str) -> Job:
        """Send a prepared job (any process sharing the store may). A job already sent is returned as stored:
        nothing leaves twice, however often ``send`` is called (at-least-once queues)."""
        job = self.lifecycle.fresh(job)
        if job.state is not JobState.SUBMITTING or job.sends or job.remote_id is not None:
            return job
        request = LipsyncRequest.model_validate(job.request)
        return await self._submitter.send(job, request, self.route(request))

    async def status(self, job: Job | str) -> JobStatus:
        """One look-up (stored); a job without a remote id reports its state and why, with no network call."""
        return await self._waiting.status(self.lifecycle.fresh(job))

    async def wait(self, job: Job | str, *, on_status: StatusCallback | None = None) -> LipsyncResult:
        """Poll with backoff and jitter (or wake on a webhook) until the job finishes; return its result.
        With ``on_status`` watching, look-ups carry the provider's progress (fal's logs); without, they are
        brief (``progress`` stays None on fal)."""
        return await self._waiting.wait(self.lifecycle.fresh(job), on_status=on_status, current=True)

    async def run(
        self,
        request: LipsyncRequest,
        *,
        idempotency_key: str | None = None,
        save_to: str | Path | None = None,
        on_status: StatusCallback | None = None,
    ) -> LipsyncResult:
        """``submit`` then ``wait`` (and save the video to ``save_to`` as soon as it is done)."""
        job = await self.submit(request, idempotency_key=idempotency_key, save_to=save_to)
        # A replayed key's job may still need settling; submit returned the row as stored.
        return await self._resume_one(job, on_status, current=True)

    async def run_many(
        self,
        items: Iterable[BatchItem | tuple[str, LipsyncRequest]],
        *,
        concurrency: int | None = None,
        on_status: StatusCallback | None = None,
    ) -> AsyncIterator[Outcome]:
        """Run many jobs; yield each :class:`Outcome` (result or typed error, with its key) as it finishes.

        Each item's key is its idempotency key, so running the same items again submits nothing twice:
        finished jobs come back at once, unfinished ones are resumed. ``concurrency`` bounds the jobs in
        progress at once (None: all; the providers' ``max_in_flight`` and ``submits_per_minute`` still hold).
        ``on_status`` sees each job's state changes; a batch's look-ups are brief (no progress percent).
        Iterate to the end, or close the iterator (``contextlib.aclosing``) to cancel what is left.
        """
        async for outcome in run_batch(self, items, concurrency=concurrency, on_status=on_status):
            yield outcome

    async def cancel(self, job: Job | str) -> None:
        """Ask the provider to cancel, then record what it reports."""
        job = self.lifecycle.fresh(job)
        provider, _ = self._waiting.route_of(job)
        with self.registry.redactor.scrubbing():
            await provider.cancel(job)
        try:
            await self._waiting.status(job)
        except LipsyncError as exc:
            log.info("status after cancelling %s failed: %s", job.id, exc)

    async def resolve(self, job: Job | str, remote_id: str) -> Job:
        """Attach the provider's id to a job whose submit outcome is unknown (found in its dashboard)."""
        job = self.lifecycle.fresh(job)
        if job.remote_id is not None:
            if job.remote_id == remote_id:
                return job
            raise InvalidRequestError(
                f"job {job.id} already has remote id {job.remote_id!r}",
                field="remote_id",
                fix="resolve only jobs in state unknown (see `lipsyncer jobs list --state unknown`)",
            )
        return self.lifecycle.resolved(job, remote_id, how="hand")

    async def resume(
        self,
        job_id: str | None = None,
        *,
        on_status: StatusCallback | None = None,
        concurrency: int | None = None,
    ) -> list[LipsyncResult | LipsyncError]:
        """Finish one stored job, or every unfinished one, concurrently (``resume_concurrency`` at once).

        Queued and running jobs are waited on; completed ones not yet fetched or saved are completed;
        ``submitting`` rows whose submitter stopped become ``unknown``; ``unknown`` ones are re-sent with
        their key to a provider that honours it, and otherwise explained (the error says how to resolve).
        """
        jobs = [self.lifecycle.fresh(job_id)] if job_id is not None else self.unfinished()
        out: list[LipsyncResult | LipsyncError | None] = [None] * len(jobs)
        limiter = anyio.CapacityLimiter(concurrency or self.settings.resume_concurrency)

        async def one(index: int, job: Job) -> None:
            async with limiter:
                try:
                    out[index] = await self._resume_one(job, on_status)
                except LipsyncError as exc:
                    out[index] = exc

        async with anyio.create_task_group() as tg:
            for index, job in enumerate(jobs):
                tg.start_soon(one, index, job)
        return [r for r in out if r is not None]

    def unfinished(self) -> list[Job]:
        """Every job ``resume()`` would act on: submitting, unknown, queued, running, and completed but not
        yet fetched or saved where it was asked. Newest first."""
        states = [
            JobState.SUBMITTING,
            JobState.UNKNOWN,
            JobState.QUEUED,
            JobState.RUNNING,
            JobState.COMPLETED,
        ]
        return [
            j
            for j in self.store.list_jobs(states=states, limit=1_000_000)
            if j.state is not JobState.COMPLETED or self._waiting.unsaved(j)
        ]

    async def _resume_one(
        self, job: Job, on_status: StatusCallback | None, *, current: bool = False, progress: bool = True
    ) -> LipsyncResult:
        """Settle and wait for one job; ``current``: ``job`` is the row as just stored (not read again);
        ``progress`` as for :meth:`Waiting.wait`."""
        job = await self._settle_send(job, current=current)
        waiting = self._waiting.wait(job, on_status=on_status, current=True, progress=progress)
        del job  # not kept here while it is polled (see Waiting.wait)
        return await waiting

    async def _settle_send(self, job: Job, *, current: bool = False) -> Job:
        """A job whose send did not settle (prepared, or its sender stopped mid-send) sent now if it never
        left, else marked unknown; an unknown one re-sent where that is safe (same idempotency key)."""
        if not current:
            job = self.lifecycle.fresh(job)
        if job.state is JobState.SUBMITTING:
            if self.lifecycle.claimed_elsewhere(job.id):
                raise SubmitOutcomeUnknownError(
                    f"job {job.id} is being submitted by another process", provider=job.provider, job=job
                )
            if not job.sends:  # prepared, never sent: sending it now cannot bill twice
                job = await self.send(job)
            if job.state is JobState.SUBMITTING:
                job = self.lifecycle.unknown(
                    job, message="the process submitting it stopped before it stored the provider's answer"
                )
        if job.state is JobState.UNKNOWN and job.remote_id is None:
            job = await self._submitter.resend(job)
        return job

    # ------------------------------------------------------------------ webhooks and downloads

    async def handle_webhook(
        self,
        provider_id: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        url: str | None = None,
    ) -> Job | None:
        """Verify a delivery, record it and wake whoever waits on the job; complete it when nobody does.

        ``url`` is the URL the delivery came to: its ``lipsyncer_job`` parameter resolves a job whose submit
        answer was lost. A delivery for a finished job changes nothing (providers retry deliveries).
        """
        provider = self.provider(provider_id)
        with self.registry.redactor.scrubbing():
            event = await provider.parse_webhook(headers, body)
        job = self.store.find_remote(provider_id, event.remote_id)
        if job is None and url is not None:
            tagged_id = dict(parse_qsl(urlsplit(url).query)).get(JOB_PARAM)
            tagged = self.store.get(tagged_id) if tagged_id else None
            if tagged is not None and tagged.provider == provider_id and tagged.remote_id is None:
                job = self.lifecycle.resolved(tagged, event.remote_id, how="webhook")
                if job.remote_id != event.remote_id:
                    job = None
        if job is None:
            log.warning("webhook for unknown %s job %s ignored", provider_id, event.remote_id)
            return None
        if job.state.finished:
            return job
        job = self.lifecycle.observe(job, event.status)
        if self._waiting.has_waiter(job.id):
            self._waiting.deliver(job, event.output)
        elif event.status.state is JobState.COMPLETED and self.completer is not None:
            await self.completer(job)
        elif event.status.state is JobState.COMPLETED:
            await self._waiting.try_finish(job, event.output)
        return self.store.get(job.id)

    # ------------------------------------------------------------------ queues (fleet workers)

    async def complete(self, job: Job | str) -> LipsyncResult | None:
        """Fetch, store and save a job its provider finished — once, under the job's claim — without waiting:
        a queue's completion step. None while another owner holds the claim (it completes the job, or its
        lease runs out: call again later). A failed or unresolved job raises its failure."""
        job = self.lifecycle.fresh(job)
        if job.remote_id is None and not job.state.finished:
            raise failure_of(job)
        return await self._waiting.try_finish(job)

    async def download(self, result: LipsyncResult, path: str | Path) -> LipsyncResult:
        """Stream the video to ``path`` (atomic, resumable); the stored result records where it went."""
        job = self.lifecycle.fresh(result.job_id)
        return await self._waiting.save(job, result, path)


def _expected_output(
    request: LipsyncRequest,
    video_seconds: float | None = None,
    audio_seconds: float | None = None,
    *,
    required: bool = False,
) -> float | None:
    """Output length from local media (probed) or given durations; None when remote and not given."""
    try:
        if video_seconds is None and request.video.kind is MediaKind.PATH:
            video_seconds = probe(request.video.path).duration
        if audio_seconds is None and request.audio.kind is MediaKind.PATH:
            audio_seconds = probe(request.audio.path).duration
    except MediaProbeError as exc:
        if required:
            raise InvalidRequestError(
                str(exc), field="video", fix="pass video_seconds / audio_seconds explicitly"
            ) from None
        return None
    if video_seconds is None or audio_seconds is None:
        if required:
            raise InvalidRequestError(
                "cannot estimate: media durations are unknown for remote inputs",
                fix="pass video_seconds and audio_seconds (or local files)",
            )
        return None
    return output_duration(request.sync_mode, video_seconds, audio_seconds)
