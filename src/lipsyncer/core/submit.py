"""The attempt loop: one write-ahead job row, staging once per input, classification, fallback.

The row exists before any byte of a submit leaves, and the send together with the save of its answer is
shielded from cancellation: a Ctrl-C or a cancelled task can cut the wait, never the record of a paid job.
Only a failure that certainly happened before the provider took the job may fall back or retry; a lost
answer is re-sent only to a provider that honours the job's idempotency key, with the same key.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio

from .errors import (
    AuthenticationError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    LipsyncError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    StorageError,
    SubmitOutcomeUnknownError,
)
from .lifecycle import Lifecycle
from .provider import ModelSpec, Provider, Submission
from .registry import Registry
from .router import Route, RoutePlan
from .schema import Attempt, Job, JobState, LipsyncRequest, MediaKind, MediaSource

__all__ = ["JOB_PARAM", "CheckedRequest", "Submitter", "tag_webhook"]

log = logging.getLogger("lipsyncer.submit")

JOB_PARAM = "lipsyncer_job"
"""The query parameter that carries our job id on every webhook URL we hand a provider."""

_SEND_TIMEOUT = 120.0
"""Seconds a submit call may take inside its cancellation shield before its outcome counts as unknown."""


def tag_webhook(url: str, job_id: str) -> str:
    """``url`` with ``lipsyncer_job=<job id>`` appended, so a delivery names the job even when the submit's
    answer (the provider's id) was lost."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != JOB_PARAM]
    query.append((JOB_PARAM, job_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


class CheckedRequest(NamedTuple):
    """A request resolved against the config, its local media checked, routed and fingerprinted."""

    request: LipsyncRequest
    plan: RoutePlan
    fingerprint: str


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:20]


@dataclass
class _Staged:
    """Staged URLs per input, shared by routes that can fetch each other's uploads: fal plugins upload to
    fal's CDN (upload domain ``fal-cdn``), which is also where the ``fal-cdn`` storage puts files."""

    storage: str | None
    urls: dict[tuple[str, str], str]

    async def url(self, provider: Provider, field: str, media: MediaSource) -> str:
        if media.kind is MediaKind.URL or (media.kind is MediaKind.DATA_URI and provider.accepts_data_uris):
            return str(media.value)
        own = provider.upload_domain or provider.id
        domain = own if provider.uploads_local_files else (self.storage or "storage")
        key = (domain, field)
        if key not in self.urls:
            with provider.context.redactor.scrubbing():
                self.urls[key] = await provider.stage(media)
        return self.urls[key]


class Submitter:
    """Sends one request through a route plan, writing the job ahead and classifying every failure."""

    def __init__(
        self, registry: Registry, lifecycle: Lifecycle, *, sleep: Callable[[float], Any] = anyio.sleep
    ):
        self.registry = registry
        self.lifecycle = lifecycle
        self._sleep = sleep

    def _webhook_for(self, provider: Provider, request: LipsyncRequest, route: Route) -> str | None:
        """The request's webhook, else the client's own receiver when this route can take it (its
        ``{provider}`` placeholder filled, as ``webhook_app`` routes by provider id)."""
        url = request.webhook_url
        receiver = self.registry.settings.webhook_url
        if url is None and receiver and provider.accepts_webhooks:
            receiver = receiver.replace("{provider}", provider.id)
            candidate = request.model_copy(update={"webhook_url": receiver})
            try:
                provider.check(candidate, route.model)
            except LipsyncError:
                return None
            url = receiver
        return url

    def replay(
        self, request: LipsyncRequest, idempotency_key: str, *, fingerprint: str | None = None
    ) -> Job | None:
        """The job stored under ``idempotency_key`` (refusing a different request under it), or None.
        ``fingerprint``: the request's, when the caller already has it (a batch computes it once)."""
        stored = self.lifecycle.store.get_by_key(idempotency_key)
        return None if stored is None else _same_request(stored, fingerprint or request.fingerprint())

    def prepare(
        self,
        request: LipsyncRequest,
        plan: RoutePlan,
        *,
        idempotency_key: str | None,
        save_to: str | Path | None,
        fingerprint: str | None = None,
    ) -> Job:
        """Write the job ahead of any send (state ``submitting``, nothing sent yet). With a key already
        stored, the stored job (after checking it is the same request)."""
        fingerprint = fingerprint or request.fingerprint()
        first = plan.candidates[0]
        job_id = new_job_id()
        job = Job(
            id=job_id,
            provider=first.provider.id,
            model=first.model.id,
            endpoint=first.model.endpoint,
            request_fingerprint=fingerprint,
            request=request.summary(),
            webhook_url=request.webhook_url,
            idempotency_key=idempotency_key or job_id,
            save_to=str(Path(save_to).expanduser().resolve()) if save_to is not None else None,
        )
        job.provider_data["price_per_second"] = str(first.price_per_second)
        if plan.output_seconds is not None:
            job.provider_data["expected_output_seconds"] = plan.output_seconds
        job, created = self.lifecycle.begin(job)
        return job if created else _same_request(job, fingerprint)

    async def send(self, job: Job, request: LipsyncRequest, plan: RoutePlan) -> Job:
        """Send a prepared job through the plan, holding its claim (a live sender: resumers leave it alone).
        A job already sent, by this process or another, is returned as stored: nothing leaves twice."""
        async with self.lifecycle.holding(job.id) as mine:
            job = self.lifecycle.fresh(job)
            if not mine or job.state is not JobState.SUBMITTING or job.sends or job.remote_id is not None:
                return job
            candidates = list(plan.candidates if self.registry.settings.fallbacks else plan.candidates[:1])
            return await self._attempts(job, request, candidates)

    async def _attempts(self, job: Job, request: LipsyncRequest, candidates: list[Route]) -> Job:
        staged = _Staged(storage=self.registry.settings.storage, urls={})
        attempts: list[Attempt] = []
        budget = self.registry.settings.max_attempts
        last_error: LipsyncError | None = None
        index = 0
        while len(attempts) < budget:
            route = candidates[min(index, len(candidates) - 1)]
            provider = self.registry.provider(route.provider.id)
            attempt = Attempt(provider=route.provider.id, model=route.model.id, endpoint=route.model.endpoint)
            started = time.monotonic()
            try:
                video_url = await staged.url(provider, "video", request.video)
                audio_url = await staged.url(provider, "audio", request.audio)
            except (ProviderError, StorageError) as exc:  # nothing paid yet: staging is free
                attempt = attempt.model_copy(update=_failed(exc, started, billed=False))
                attempts.append(attempt)
                job = self.lifecycle.attempt_failed(job, attempt)
                last_error = exc
                if not _safe_elsewhere(exc) or not await self._next(index, candidates, exc, len(attempts)):
                    break
                index += 1
                continue
            webhook = self._webhook_for(provider, request, route)
            limits = self.registry.limits
            async with limits.admission(route.provider.id, job.id):  # a slot, a token, no pause
                job = self.lifecycle.sending(
                    job,
                    provider=route.provider.id,
                    model=route.model.id,
                    endpoint=route.model.endpoint,
                    target=self.registry.target(route.provider.id),
                    data=_resend_data(route, video_url, audio_url, webhook),
                )
            job, error = await self._send(
                job,
                provider,
                request,
                route.model,
                attempt,
                started,
                video_url=video_url,
                audio_url=audio_url,
                webhook_url=tag_webhook(webhook, job.id) if webhook else None,
            )
            if error is None:
                return job
            attempts.append(job.attempts[-1])
            last_error = error
            if isinstance(error, RateLimitedError):
                await limits.back_off(route.provider.id, error.retry_after)
            if not isinstance(error, SubmitOutcomeUnknownError) or not provider.idempotent_submits:
                limits.release(route.provider.id, job.id)  # refused (or settled unknown): not in flight there
            if isinstance(error, SubmitOutcomeUnknownError):
                if provider.idempotent_submits and len(attempts) < budget:
                    log.info("re-sending %s to %s with the same idempotency key", job.id, provider.id)
                    await self._sleep(_retry_delay(error, len(attempts)))
                    continue
                job = self.lifecycle.unknown(job, message=error.message)
                error.job = job
                error.attempts = tuple(job.attempts)
                raise error
            if not _safe_elsewhere(error) or not await self._next(index, candidates, error, len(attempts)):
                break
            index += 1
        assert last_error is not None
        job = self.lifecycle.refused(job, code=type(last_error).__name__, message=str(last_error))
        last_error.attempts = tuple(job.attempts)
        last_error.job = job
        raise last_error

    async def resend(self, job: Job) -> Job:
        """Re-send a job whose submit answer was lost, with its key, to a provider that honours keys (it
        replays the job it already took). Any other job is explained, never re-sent: that could bill twice."""
        provider = self.registry.provider(job.provider)
        staged = job.provider_data.get("staged")
        model = provider.model_spec(job.model)
        if not provider.idempotent_submits or not isinstance(staged, dict) or model is None:
            raise unknown_error(job)
        fields = {k: v for k, v in job.request.items() if k not in ("video", "audio", "webhook_url")}
        request = LipsyncRequest.model_validate(
            {**fields, "video": staged["video"], "audio": staged["audio"]}
        )
        async with self.lifecycle.holding(job.id) as mine:
            if not mine:
                raise unknown_error(job, "another process is re-sending it")
            job = self.lifecycle.sending(
                job,
                provider=job.provider,
                model=job.model,
                endpoint=job.endpoint,
                target=self.registry.target(job.provider),
            )
            attempt = Attempt(provider=job.provider, model=job.model, endpoint=job.endpoint)
            webhook = staged.get("webhook")
            job, error = await self._send(
                job,
                provider,
                request,
                model,
                attempt,
                time.monotonic(),
                video_url=staged["video"],
                audio_url=staged["audio"],
                webhook_url=tag_webhook(webhook, job.id) if webhook else None,
            )
        if error is None:
            return job
        if isinstance(error, SubmitOutcomeUnknownError):
            job = self.lifecycle.unknown(job, message=error.message)
            raise unknown_error(job)
        job = self.lifecycle.refused(job, code=type(error).__name__, message=str(error))
        error.job = job
        raise error

    async def _next(self, index: int, candidates: list[Route], exc: LipsyncError, tries: int) -> bool:
        """Whether to try again: the next candidate now, or the last one again after a delay when the refusal
        is transient (a refused key or an exhausted quota does not change by asking the same provider twice)."""
        if index + 1 < len(candidates):
            return True
        if isinstance(exc, ProviderError) and not exc.retryable:
            return False
        await self._sleep(_retry_delay(exc, tries))
        return True

    async def _send(
        self,
        job: Job,
        provider: Provider,
        request: LipsyncRequest,
        model: ModelSpec,
        attempt: Attempt,
        started: float,
        *,
        video_url: str,
        audio_url: str,
        webhook_url: str | None,
    ) -> tuple[Job, LipsyncError | None]:
        """One send and the save of its answer, shielded from cancellation together."""
        outcome: tuple[Job, LipsyncError | None] | None = None
        with anyio.CancelScope(shield=True):
            outcome = await self._send_shielded(
                job, provider, request, model, attempt, started, video_url, audio_url, webhook_url
            )
        assert outcome is not None
        return outcome

    async def _send_shielded(
        self,
        job: Job,
        provider: Provider,
        request: LipsyncRequest,
        model: ModelSpec,
        attempt: Attempt,
        started: float,
        video_url: str,
        audio_url: str,
        webhook_url: str | None,
    ) -> tuple[Job, LipsyncError | None]:
        """Send, then store the answer (or the attempt that failed). Runs inside the shield."""
        error: LipsyncError
        try:
            async with self.registry.requests(provider.id):  # queue here, not on the pool
                with anyio.fail_after(_SEND_TIMEOUT), self.registry.redactor.scrubbing():
                    submission: Submission = await provider.submit(
                        request,
                        model,
                        video_url=video_url,
                        audio_url=audio_url,
                        webhook_url=webhook_url,
                        idempotency_key=job.idempotency_key,
                    )
        except (SubmitOutcomeUnknownError, InvalidRequestError, ProviderError, StorageError) as exc:
            error = exc  # InvalidRequestError: refused locally (e.g. a body that cannot be encoded)
        except TimeoutError:
            error = SubmitOutcomeUnknownError(
                f"the submit to {provider.id} took over {_SEND_TIMEOUT:g} s; the job may be queued",
                provider=provider.id,
            )
        except Exception as exc:  # a plugin bug: whether the request left is unknown, so never re-send
            log.exception("provider %s raised while submitting %s", provider.id, job.id)
            error = SubmitOutcomeUnknownError(
                f"{provider.id} raised {type(exc).__name__} while submitting; the job may be queued",
                provider=provider.id,
            )
        else:
            done = attempt.model_copy(
                update={
                    "remote_id": submission.remote_id,
                    "may_have_been_billed": True,
                    "duration": time.monotonic() - started,
                }
            )
            return self.lifecycle.accepted(job, submission, done), None  # its initial status with it
        billed = (
            isinstance(error, SubmitOutcomeUnknownError) or getattr(error, "accepted", False) is not False
        )
        failed = attempt.model_copy(update=_failed(error, started, billed=bool(billed)))
        return self.lifecycle.attempt_failed(job, failed), error


def unknown_error(job: Job, why: str | None = None) -> SubmitOutcomeUnknownError:
    """Why a job's submit outcome is unknown, and how it gets resolved."""
    text = (
        f"job {job.id} was sent to {job.provider} ({job.model}) but its answer was lost"
        + (f" ({job.error_message})" if job.error_message else "")
        + (f"; {why}" if why else "")
        + ". It may be queued and billed, so lipsyncer will not send it again"
        + (" (this provider honours no idempotency key)" if why is None else "")
        + ". A webhook tagged lipsyncer_job="
        + job.id
        + " resolves it by itself."
    )
    error = SubmitOutcomeUnknownError(text, provider=job.provider, job=job)
    error.fix = (
        f"find the provider's id for it (dashboard, logs) and run `lipsyncer jobs resolve {job.id} REMOTE_ID`"
    )
    return error


def _same_request(job: Job, fingerprint: str) -> Job:
    if job.request_fingerprint != fingerprint:
        raise IdempotencyKeyReusedError(job.idempotency_key or job.id, job.id)
    return job


def _resend_data(route: Route, video_url: str, audio_url: str, webhook: str | None) -> dict[str, Any]:
    """Stored before the send: the price of this route, and the staged inputs when they are URLs (not inline
    data), so a resumer can re-send the job to a provider that honours its idempotency key."""
    data: dict[str, Any] = {"price_per_second": str(route.price_per_second)}
    if route.provider.idempotent_submits and all(
        u.startswith(("http://", "https://")) for u in (video_url, audio_url)
    ):
        data["staged"] = {"video": video_url, "audio": audio_url, "webhook": webhook}
    return data


def _failed(exc: LipsyncError, started: float, *, billed: bool) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "retryable": getattr(exc, "retryable", None),
        "duration": time.monotonic() - started,
        "may_have_been_billed": billed,
    }


def _safe_elsewhere(exc: LipsyncError) -> bool:
    """Another try may serve it: the provider certainly did not take the job, and the cause is not the input."""
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
