"""The client facades: ``AsyncLipsyncer`` does the work, ``Lipsyncer`` runs it on a private event loop.

Every client owns its settings, plugin manager, provider instances and job store, so two clients with
different configs live side by side in one process.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import httpx
from pydantic import SecretStr

from .config import PollingPolicy, Settings, load_settings
from .download import download_video
from .errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    InvalidRequestError,
    JobFailedError,
    JobNotFoundError,
    LipsyncError,
    NoRouteError,
    ProviderError,
    QuotaExceededError,
    StorageError,
    SubmitOutcomeUnknownError,
)
from .http import RebaseTransport
from .jobs import JobStore, SQLiteJobStore, default_store_path
from .media import MediaProbeError, output_duration, probe
from .plugins import PluginHost
from .provider import ModelSpec, Provider, ProviderContext, ProviderOutput, Storage, StorageContext
from .router import Exclusion, Route, RoutePlan, Router
from .schema import (
    Attempt,
    Cost,
    EventKind,
    Job,
    JobEvent,
    JobState,
    JobStatus,
    LipsyncRequest,
    LipsyncResult,
    MediaKind,
    ServedBy,
    Timings,
    utcnow,
)

__all__ = ["AsyncLipsyncer", "Lipsyncer", "StatusCallback"]

log = logging.getLogger("lipsyncer")
StatusCallback = Callable[[Job, JobStatus], Awaitable[None] | None]
T = TypeVar("T")

_TRANSIENT_STATUS_ERRORS = 8
"""Consecutive failed look-ups tolerated while waiting before giving up (the job stays resumable)."""


class AsyncLipsyncer:
    """Route, submit, wait, download. All I/O is async; see :class:`Lipsyncer` for the blocking twin."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        config: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        store: JobStore | None = None,
        plugins: Iterable[object] = (),
        entry_points: bool = True,
    ) -> None:
        """``transport`` sends every provider, storage and download request through one httpx transport
        (the in-process sandbox, a recording transport in tests); ``env`` replaces ``os.environ`` for keys."""
        self.env: Mapping[str, str] = dict(os.environ) if env is None else dict(env)
        self.settings = settings if settings is not None else load_settings(config, env=self.env)
        self.plugins = PluginHost(
            allow=self.settings.plugins.allow,
            block=self.settings.plugins.block,
            strict=self.settings.plugins.strict,
            entry_points=entry_points,
            plugins=plugins,
        )
        self._transport = transport
        self._own_store = store is None
        self.store: JobStore = (
            store
            if store is not None
            else SQLiteJobStore(self.settings.job_store or default_store_path(dict(self.env)))
        )
        self._providers: dict[str, Provider] = {}
        self._storage: Storage | None = None
        self._http: dict[str, httpx.AsyncClient] = {}
        self._wakeups: dict[str, anyio.Event] = {}
        if self.settings.storage is not None and self.settings.storage not in self.plugins.storages:
            raise ConfigError(
                f"storage {self.settings.storage!r} is not installed",
                fix=f"use one of: {', '.join(sorted(self.plugins.storages)) or 'none installed'}",
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} providers={sorted(self.plugins.providers)} strategy={self.settings.strategy!r}>"

    async def __aenter__(self) -> AsyncLipsyncer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        if self._storage is not None:
            await self._storage.aclose()
        for client in self._http.values():
            await client.aclose()
        self._providers.clear()
        self._http.clear()
        if self._own_store and isinstance(self.store, SQLiteJobStore):
            self.store.close()

    # ------------------------------------------------------------------ wiring

    def credential_env(self, cls: type[Provider] | type[Storage]) -> str | None:
        """The env var that holds this provider's key (config may rename it); None when it needs none."""
        conf = self.settings.provider(cls.id) if issubclass(cls, Provider) else None
        return (conf.api_key_env if conf and conf.api_key_env else None) or cls.credential_env

    def _key(self, cls: type[Provider] | type[Storage]) -> SecretStr | None:
        var = self.credential_env(cls)
        value = self.env.get(var) if var else None
        return SecretStr(value) if value else None

    def missing_credentials(self, cls: type[Provider]) -> str | None:
        var = self.credential_env(cls)
        return var if var and not self.env.get(var) else None

    def _transport_for(self, hosts: tuple[str, ...], base_url: str | None) -> httpx.AsyncBaseTransport | None:
        if base_url is None:
            return self._transport
        return RebaseTransport(base_url, hosts=hosts, transport=self._transport)

    def provider(self, provider_id: str) -> Provider:
        """The client's instance of a provider (built on first use with this client's config and key)."""
        if provider_id not in self._providers:
            try:
                cls = self.plugins.providers[provider_id]
            except KeyError:
                raise ConfigError(f"provider {provider_id!r} is not installed") from None
            conf = self.settings.provider(provider_id)
            self._providers[provider_id] = cls(
                ProviderContext(
                    settings=conf,
                    api_key=self._key(cls),
                    transport=self._transport_for(cls.hosts, conf.base_url),
                    storage=self._storage_instance(),
                    options=self._options(conf.options),
                )
            )
        return self._providers[provider_id]

    def _options(self, own: Mapping[str, Any]) -> dict[str, Any]:
        """Provider options, with the client-wide settings a provider may read (its own win)."""
        shared = (
            {"webhook_jwks_url": self.settings.webhook_jwks_url} if self.settings.webhook_jwks_url else {}
        )
        return {**shared, **own}

    def _storage_instance(self) -> Storage | None:
        name = self.settings.storage
        if name is None:
            return None
        if self._storage is None:
            cls = self.plugins.storages[name]
            conf = dict(self.settings.storages.get(name, {}))
            self._storage = cls(
                StorageContext(
                    settings=conf,
                    api_key=self._key(cls),
                    transport=self._transport_for(cls.hosts, conf.get("base_url")),
                )
            )
        return self._storage

    def _http_for(self, provider_id: str) -> httpx.AsyncClient:
        """Downloads go through the serving provider's transport, so rebased hosts stay rebased."""
        if provider_id not in self._http:
            cls = self.plugins.providers.get(provider_id)
            conf = self.settings.provider(provider_id)
            transport = self._transport_for(cls.hosts if cls else (), conf.base_url)
            self._http[provider_id] = httpx.AsyncClient(
                transport=transport, timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True
            )
        return self._http[provider_id]

    @property
    def router(self) -> Router:
        return Router(
            self.plugins.providers,
            self.settings,
            has_credentials=self.missing_credentials,
            storage=self.settings.storage,
        )

    def _emit(self, kind: EventKind, job: Job | None, route: Route | None = None, **fields: Any) -> None:
        provider = job.provider if job else (route.provider.id if route else "?")
        model = job.model if job else (route.model.id if route else "?")
        self.plugins.emit(
            JobEvent(kind=kind, job_id=job.id if job else None, provider=provider, model=model, **fields)
        )

    # ------------------------------------------------------------------ routing and estimates

    def resolve(self, request: LipsyncRequest) -> LipsyncRequest:
        """Fill what the request leaves to the config (its model), so scripts swap backends by config only."""
        if request.model is None and self.settings.model is not None:
            return request.model_copy(update={"model": self.settings.model})
        return request

    def route(self, request: LipsyncRequest) -> RoutePlan:
        """The ordered candidates and every excluded route with its reason. No network call."""
        request = self.resolve(request)
        return self._plan(request, _expected_output(request))

    def estimate(
        self,
        request: LipsyncRequest,
        *,
        video_seconds: float | None = None,
        audio_seconds: float | None = None,
    ) -> RoutePlan:
        """The plan with a cost per candidate, from local media durations (or the ones given)."""
        request = self.resolve(request)
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

    # ------------------------------------------------------------------ submit

    async def submit(self, request: LipsyncRequest, *, save_to: str | Path | None = None) -> Job:
        """Send the job to the first candidate that accepts it; the handle is stored before returning.

        Falls back only on failures where the provider certainly did not take the job; a submit whose
        outcome is unknown is stored and never re-sent. ``save_to`` is stored with the job, so whoever
        finishes it (this process or a later ``resume``) saves the video there.
        """
        request = self.resolve(request)
        plan = self.route(request)
        attempts: list[Attempt] = []
        budget = self.settings.max_attempts
        last_error: LipsyncError | None = None
        candidates = list(plan.candidates if self.settings.fallbacks else plan.candidates[:1])
        index = 0
        while candidates and len(attempts) < budget:
            route = candidates[min(index, len(candidates) - 1)]
            provider = self.provider(route.provider.id)
            started = time.monotonic()
            attempt = Attempt(provider=route.provider.id, model=route.model.id, endpoint=route.model.endpoint)
            try:
                video_url = await provider.stage(request.video)
                audio_url = await provider.stage(request.audio)
                submission = await provider.submit(
                    request,
                    route.model,
                    video_url=video_url,
                    audio_url=audio_url,
                    webhook_url=request.webhook_url,
                )
            except SubmitOutcomeUnknownError as exc:
                attempt = attempt.model_copy(update=_failed(exc, started, billed=True))
                attempts.append(attempt)
                job = self._new_job(request, route, None, plan, attempts, state=JobState.UNKNOWN)
                job.error_message = str(exc.message)
                self.store.save(job)
                exc.job = job
                self._emit("attempt_failed", job, attempt=attempt, message=str(exc))
                raise
            except (ProviderError, StorageError) as exc:
                attempt = attempt.model_copy(
                    update=_failed(exc, started, billed=bool(getattr(exc, "accepted", False)))
                )
                attempts.append(attempt)
                last_error = exc
                self._emit("attempt_failed", None, route, attempt=attempt, message=str(exc))
                if not _safe_elsewhere(exc):
                    break
                index += 1
                if index >= len(candidates):  # last candidate: retry it while the budget lasts
                    await anyio.sleep(_retry_delay(exc, len(attempts)))
                continue
            attempts.append(
                attempt.model_copy(
                    update={
                        "remote_id": submission.remote_id,
                        "may_have_been_billed": True,
                        "duration": time.monotonic() - started,
                    }
                )
            )
            job = self._new_job(request, route, submission.remote_id, plan, attempts, state=JobState.QUEUED)
            job.save_to = str(Path(save_to).expanduser().resolve()) if save_to is not None else None
            job.status_url, job.result_url, job.cancel_url = (
                submission.status_url,
                submission.result_url,
                submission.cancel_url,
            )
            job.provider_data.update(submission.provider_data)
            self.store.save(job)
            self._emit("submitted", job)
            if submission.initial_status is not None:
                self._record(job, submission.initial_status)
            return job
        assert last_error is not None
        last_error.attempts = tuple(attempts)
        raise last_error

    def _new_job(
        self,
        request: LipsyncRequest,
        route: Route,
        remote_id: str | None,
        plan: RoutePlan,
        attempts: list[Attempt],
        *,
        state: JobState,
    ) -> Job:
        job = Job(
            id="job_" + uuid.uuid4().hex[:20],
            provider=route.provider.id,
            model=route.model.id,
            endpoint=route.model.endpoint,
            remote_id=remote_id,
            request_fingerprint=request.fingerprint(),
            request=request.summary(),
            state=state,
            webhook_url=request.webhook_url,
            attempts=list(attempts),
        )
        job.provider_data["price_per_second"] = str(route.price_per_second)
        if plan.output_seconds is not None:
            job.provider_data["expected_output_seconds"] = plan.output_seconds
        return job

    # ------------------------------------------------------------------ status and waiting

    def _route_of(self, job: Job) -> tuple[Provider, ModelSpec]:
        provider = self.provider(job.provider)
        spec = provider.model_spec(job.model)
        if spec is None:
            raise ConfigError(f"provider {job.provider!r} no longer serves model {job.model!r}")
        return provider, spec

    def _record(self, job: Job, status: JobStatus) -> bool:
        """Store a look-up; returns True when the state, progress or queue position changed."""
        last = job.last_status
        changed = last is None or (last.state, last.progress, last.queue_position) != (
            status.state,
            status.progress,
            status.queue_position,
        )
        if changed:
            self.store.record_status(job.id, status)
            job.state = status.state
            job.last_status = status
            self.store.save(job)
            self._emit("status", job, status=status)
        return changed

    async def status(self, job: Job | str) -> JobStatus:
        job = self._job(job)
        provider, _ = self._route_of(job)
        if job.remote_id is None:
            return JobStatus(state=JobState.UNKNOWN, raw_status="submit outcome unknown")
        status = await provider.status(job)
        self._record(job, status)
        return status

    def policy(self, job: Job) -> PollingPolicy:
        _, spec = self._route_of(job)
        base = PollingPolicy.for_speed(spec.seconds_per_output_second)
        return base.merged(self.settings.polling).merged(self.settings.provider(job.provider).polling)

    async def wait(self, job: Job | str, *, on_status: StatusCallback | None = None) -> LipsyncResult:
        """Poll with backoff and jitter (or wake on a webhook) until the job finishes; return its result."""
        job = self._job(job)
        if job.result is not None and job.state is JobState.COMPLETED:
            return job.result
        if job.remote_id is None:
            raise SubmitOutcomeUnknownError(
                f"job {job.id} was sent to {job.provider} but its outcome is unknown",
                provider=job.provider,
                job=job,
            )
        provider, _ = self._route_of(job)
        policy = self.policy(job)
        wake = self._wakeups.setdefault(job.id, anyio.Event())
        interval = policy.initial_interval
        failures = 0
        started_running: float | None = None
        try:
            while True:
                try:
                    with anyio.fail_after(policy.call_timeout):
                        status = await provider.status(job)
                    failures = 0
                except (ProviderError, TimeoutError) as exc:
                    retryable = isinstance(exc, TimeoutError) or exc.retryable
                    failures += 1
                    if not retryable or failures >= _TRANSIENT_STATUS_ERRORS:
                        raise
                    log.info("status look-up for %s failed (%s); retrying", job.id, exc)
                    status = None
                if status is not None:
                    if self._record(job, status) and on_status is not None:
                        maybe = on_status(job, status)
                        if maybe is not None:
                            await maybe
                    if status.state is JobState.COMPLETED:
                        break
                    if status.state in (JobState.FAILED, JobState.CANCELLED):
                        raise self._fail(job, status)
                    if status.state is JobState.RUNNING and started_running is None:
                        started_running = time.monotonic()
                elapsed = (utcnow() - job.submitted_at).total_seconds()
                queued = status is None or status.state is JobState.QUEUED
                if (
                    policy.start_deadline is not None
                    and queued
                    and started_running is None
                    and elapsed > policy.start_deadline
                ):
                    raise DeadlineExceededError(
                        f"job {job.id} did not start within {policy.start_deadline:g} s",
                        deadline="start",
                        job=job,
                    )
                if policy.total_deadline is not None and elapsed > policy.total_deadline:
                    raise DeadlineExceededError(
                        f"job {job.id} did not finish within {policy.total_deadline:g} s",
                        deadline="total",
                        job=job,
                    )
                delay = interval * (1 + random.uniform(-policy.jitter, policy.jitter))
                with anyio.move_on_after(delay):
                    await wake.wait()
                if wake.is_set():
                    wake = self._wakeups[job.id] = anyio.Event()
                interval = min(interval * policy.multiplier, policy.max_interval)
        finally:
            self._wakeups.pop(job.id, None)
        return await self._complete(job, provider)

    def _fail(self, job: Job, status: JobStatus) -> JobFailedError:
        job.state = status.state
        job.error_code = status.error_code
        job.error_message = status.error_message
        self.store.save(job)
        self._emit("cancelled" if status.state is JobState.CANCELLED else "failed", job, status=status)
        what = "was cancelled" if status.state is JobState.CANCELLED else "failed"
        reason = status.error_message or status.error_code or "no reason given"
        return JobFailedError(
            f"job {job.id} on {job.provider}:{job.model} {what}: {reason}",
            job=job,
            code=status.error_code,
            reason=status.error_message,
            retryable=bool(status.retryable),
        )

    async def _complete(
        self, job: Job, provider: Provider, output: ProviderOutput | None = None
    ) -> LipsyncResult:
        if output is None:
            with anyio.fail_after(self.policy(job).call_timeout * 2):
                output = await provider.result(job)
        completed = utcnow()
        result = LipsyncResult(
            video=output.video,
            served_by=ServedBy(provider=job.provider, model=job.model, endpoint=job.endpoint),
            remote_id=job.remote_id or "",
            job_id=job.id,
            attempts=job.attempts,
            cost=self._cost(job, output.video.duration),
            timings=Timings(submitted_at=job.submitted_at, completed_at=completed),
            raw=dict(output.raw),
        )
        job.state = JobState.COMPLETED
        job.result = result
        self.store.save(job)
        self._emit("completed", job)
        if job.save_to:
            result = await self.download(result, job.save_to)
        elif self.settings.download_dir:
            result = await self.download(result, Path(self.settings.download_dir) / f"{job.id}.mp4")
        return result

    def _cost(self, job: Job, seconds: float | None) -> Cost | None:
        price = job.provider_data.get("price_per_second")
        if price is None:
            return None
        if seconds is not None:
            return Cost.of(Decimal(str(price)), seconds, "output_duration")
        expected = job.provider_data.get("expected_output_seconds")
        return Cost.of(Decimal(str(price)), float(expected), "estimate") if expected is not None else None

    async def run(
        self,
        request: LipsyncRequest,
        *,
        save_to: str | Path | None = None,
        on_status: StatusCallback | None = None,
    ) -> LipsyncResult:
        """``submit`` then ``wait`` (and save the video to ``save_to`` as soon as it is done)."""
        return await self.wait(await self.submit(request, save_to=save_to), on_status=on_status)

    async def cancel(self, job: Job | str) -> None:
        job = self._job(job)
        provider, _ = self._route_of(job)
        await provider.cancel(job)
        self.store.save(job)

    async def resume(
        self, job_id: str | None = None, *, on_status: StatusCallback | None = None
    ) -> list[LipsyncResult | LipsyncError]:
        """Continue one stored job, or every unfinished one (after a crash or a restart)."""
        if job_id is not None:
            jobs = [self._job(job_id)]
        else:
            unfinished = self.store.list_jobs(states=[JobState.QUEUED, JobState.RUNNING], limit=10_000)
            unsaved = [  # completed, but the process died before the video was saved where it was asked
                j
                for j in self.store.list_jobs(states=[JobState.COMPLETED], limit=10_000)
                if j.save_to and (j.result is None or j.result.saved_to is None)
            ]
            jobs = unfinished + unsaved
        out: list[LipsyncResult | LipsyncError] = []
        for job in jobs:
            try:
                result = await self.wait(job, on_status=on_status)
                if result.saved_to is None and job.save_to:
                    result = await self.download(result, job.save_to)
                out.append(result)
            except LipsyncError as exc:
                out.append(exc)
        return out

    def _job(self, job: Job | str) -> Job:
        if isinstance(job, Job):
            return job
        found = self.store.get(job)
        if found is None:
            raise JobNotFoundError(job, repr(self.store))
        return found

    # ------------------------------------------------------------------ webhooks

    async def handle_webhook(self, provider_id: str, headers: Mapping[str, str], body: bytes) -> Job | None:
        """Verify a delivery, update the stored job (idempotently) and wake whoever waits on it."""
        provider = self.provider(provider_id)
        event = await provider.parse_webhook(headers, body)
        job = self.store.find_remote(provider_id, event.remote_id)
        if job is None:
            log.warning("webhook for unknown %s job %s ignored", provider_id, event.remote_id)
            return None
        if job.state.finished:
            return job  # a retried or duplicated delivery: nothing more to do
        self._record(job, event.status)
        if event.status.state is JobState.COMPLETED:
            await self._complete(job, provider, event.output)  # fetches the output when the body had none
        elif event.status.state in (JobState.FAILED, JobState.CANCELLED):
            self._fail(job, event.status)
        if job.id in self._wakeups:
            self._wakeups[job.id].set()
        return self.store.get(job.id)

    # ------------------------------------------------------------------ downloads

    async def download(self, result: LipsyncResult, path: str | Path) -> LipsyncResult:
        """Stream the video to ``path`` (atomic, resumable); the stored result records where it went."""
        dest = await download_video(self._http_for(result.served_by.provider), result.video, path)
        update: dict[str, Any] = {"saved_to": str(dest)}
        if result.video.duration is None:
            try:
                seconds = probe(dest).duration
            except MediaProbeError:
                seconds = None
            if seconds is not None:
                job = self.store.get(result.job_id)
                if job is not None:
                    update["cost"] = self._cost(job, seconds)
        result = result.model_copy(update=update)
        job = self.store.get(result.job_id)
        if job is not None:
            job.result = result
            self.store.save(job)
            self._emit("downloaded", job, message=str(dest))
        return result


# ---------------------------------------------------------------------------------------- helpers


def _failed(exc: LipsyncError, started: float, *, billed: bool) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "retryable": exc.retryable,
        "duration": time.monotonic() - started,
        "may_have_been_billed": billed,
    }


def _safe_elsewhere(exc: LipsyncError) -> bool:
    """Another route may serve it: the provider certainly did not take the job, and the cause is not the input."""
    if isinstance(exc, StorageError):
        return True
    if not isinstance(exc, ProviderError) or exc.accepted is not False:
        return False
    return exc.retryable or isinstance(exc, (AuthenticationError, QuotaExceededError))


def _retry_delay(exc: LipsyncError, attempt: int) -> float:
    after = getattr(exc, "retry_after", None)
    if isinstance(after, (int, float)) and after > 0:
        return min(float(after), 60.0)
    return min(0.5 * 2.0 ** (attempt - 1), 10.0) * random.uniform(0.5, 1.5)


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


# ---------------------------------------------------------------------------------------- sync facade


class Lipsyncer(AbstractContextManager["Lipsyncer"]):
    """The blocking client: the same methods as :class:`AsyncLipsyncer`, run on a private event loop thread.

    One loop for the client's life keeps connections, webhook wake-ups and in-process sandboxes working
    across calls.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._async = AsyncLipsyncer(*args, **kwargs)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncLipsyncer", "Lipsyncer")

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
        return self._async

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async def call() -> T:
            return await fn(*args, **kwargs)

        future = self._portal.start_task_soon(call)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (or any interruption of the caller) cancels the waiting, never the stored job.
            future.cancel()
            raise

    def route(self, request: LipsyncRequest) -> RoutePlan:
        return self._async.route(request)

    def estimate(self, request: LipsyncRequest, **kw: Any) -> RoutePlan:
        return self._async.estimate(request, **kw)

    def submit(self, request: LipsyncRequest, *, save_to: str | Path | None = None) -> Job:
        return self._call(self._async.submit, request, save_to=save_to)

    def status(self, job: Job | str) -> JobStatus:
        return self._call(self._async.status, job)

    def wait(self, job: Job | str, *, on_status: StatusCallback | None = None) -> LipsyncResult:
        return self._call(self._async.wait, job, on_status=on_status)

    def run(
        self,
        request: LipsyncRequest,
        *,
        save_to: str | Path | None = None,
        on_status: StatusCallback | None = None,
    ) -> LipsyncResult:
        return self._call(self._async.run, request, save_to=save_to, on_status=on_status)

    def cancel(self, job: Job | str) -> None:
        self._call(self._async.cancel, job)

    def resume(self, job_id: str | None = None, **kw: Any) -> list[LipsyncResult | LipsyncError]:
        return self._call(self._async.resume, job_id, **kw)

    def download(self, result: LipsyncResult, path: str | Path) -> LipsyncResult:
        return self._call(self._async.download, result, path)

    def handle_webhook(self, provider_id: str, headers: Mapping[str, str], body: bytes) -> Job | None:
        return self._call(self._async.handle_webhook, provider_id, headers, body)

    def close(self) -> None:
        try:
            self._call(self._async.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
