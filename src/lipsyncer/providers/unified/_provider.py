"""``UnifiedProvider``: the I/O against the unified task API; wire shapes live in ``_wire`` and ``_errors``.

After a create call has left, only an answer that certainly means "not created" is a refusal (see
:func:`~._errors.create_refused`); any other failure is an unknown outcome and the call is never sent again.
Every error raised here, and every body kept, goes through the client's redactor (``context.redactor``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from importlib import metadata
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field

from lipsyncer import (
    Job,
    JobFailedError,
    JobState,
    JobStatus,
    LipsyncRequest,
    MissingCredentialsError,
    ModelSpec,
    Option,
    Provider,
    ProviderContext,
    ProviderError,
    ProviderOptions,
    ProviderOutput,
    ProviderRejectedError,
    ProviderUnavailableError,
    StorageError,
    Submission,
    SubmitOutcomeUnknownError,
    UnsupportedOptionError,
    VideoFile,
    WebhookEvent,
    WebhookVerificationError,
)
from lipsyncer.core.http import json_body, pool_limits
from lipsyncer.core.pool import PooledTransport
from lipsyncer.core.schema import utcnow

from ._errors import Envelope, create_refused, error_from_response
from ._wire import (
    DEFAULT_BASE_URL,
    ENDPOINT,
    MEDIA_FIELDS,
    TASKS,
    Task,
    callback_refusal,
    create_body,
    is_task_id,
    job_status,
    parse_task,
)

__all__ = ["UnifiedProvider"]

log = logging.getLogger("lipsyncer.providers.unified")

DEFAULT_CALL_TIMEOUT = 30.0
DEFAULT_RESULT_TTL = 24 * 3600.0

# Transport failures that prove the request never left: safe to send again, here or elsewhere.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

_LIPSYNC_2_OPTIONS = frozenset({Option.SYNC_MODE, Option.TEMPERATURE, Option.SPEAKER_AUTO, Option.WEBHOOK})
_SYNC_3_OPTIONS = frozenset({Option.SYNC_MODE, Option.WEBHOOK})


def _user_agent() -> str:
    try:
        return f"lipsyncer/{metadata.version('lipsyncer')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "lipsyncer"


class UnifiedSettings(ProviderOptions):
    """``[providers.unified.options]``."""

    media_fields: Literal["current", "legacy"] = Field(
        default="current", description="'legacy' sends `video` / `audio` instead of `video_url` / `audio_url`"
    )
    result_ttl_seconds: float = Field(
        default=DEFAULT_RESULT_TTL, gt=0, description="how long result links live"
    )
    allow_insecure_callbacks: bool = Field(
        default=False, description="accept http:// callbacks to loopback hosts (sandbox, tests)"
    )


class UnifiedProvider(Provider):
    """lipsync-2, lipsync-2-pro and sync-3 through the unified task API; one httpx client per instance."""

    id = "unified"
    description = "Unified task API (api.evolink.ai and white-label copies): lipsync-2, lipsync-2-pro, sync-3"
    # The API publishes no price for these models: sync.so's upper per-second list prices are the declared
    # default (config `prices` overrides them). Speeds: the reference's upper bounds for a 30 s clip.
    models = (
        ModelSpec(
            id="lipsync-2",
            endpoint=ENDPOINT,
            options=_LIPSYNC_2_OPTIONS,
            price_per_second=Decimal("0.05"),
            seconds_per_output_second=6.0,
        ),
        ModelSpec(
            id="lipsync-2-pro",
            endpoint=ENDPOINT,
            options=_LIPSYNC_2_OPTIONS,
            price_per_second=Decimal("0.083"),
            seconds_per_output_second=10.0,
        ),
        ModelSpec(
            id="sync-3",
            endpoint=ENDPOINT,
            options=_SYNC_3_OPTIONS,
            price_per_second=Decimal("0.133"),
            seconds_per_output_second=30.0,
        ),
    )
    credential_env = "EVOLINK_API_KEY"
    options_model = UnifiedSettings
    can_cancel = False
    accepts_webhooks = True
    webhook_schemes: ClassVar[frozenset[str]] = frozenset({"https"})
    accepts_data_uris: ClassVar[bool] = False
    uploads_local_files = False
    hosts = ("api.evolink.ai",)
    docs_url = "https://docs.evolink.ai"
    default_priority = 70  # behind fal: no cancel, and local files need a storage

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self._client: httpx.AsyncClient | None = None
        context.redactor.attach()  # log lines of the lipsyncer tree, while this provider's redactor lives

    # ------------------------------------------------------------------ settings

    @property
    def base_url(self) -> str:
        return (self.context.base_url or DEFAULT_BASE_URL).rstrip("/")

    @property
    def settings(self) -> UnifiedSettings:
        assert isinstance(self.options, UnifiedSettings)
        return self.options

    @property
    def media_fields(self) -> tuple[str, str]:
        """The create call's (video, audio) field names: ``options.media_fields`` = "current" or "legacy"."""
        return MEDIA_FIELDS[self.settings.media_fields]

    @property
    def result_ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.result_ttl_seconds)

    @property
    def call_timeout(self) -> float:
        polling = getattr(self.context.settings, "polling", None)
        return float(getattr(polling, "call_timeout", None) or DEFAULT_CALL_TIMEOUT)

    # ------------------------------------------------------------------ before any request

    def check(self, request: LipsyncRequest, model: ModelSpec) -> None:
        """The base option check, plus the callback rules: HTTPS, at most 2048 chars, no private address."""
        if request.webhook_url is None:
            super().check(request, model)
            return
        # The base check refuses every http URL; the insecure-loopback allowance is decided here instead.
        super().check(request.model_copy(update={"webhook_url": None}), model)
        refusal = (
            (f"{model.id} takes no callbacks", "drop webhook_url")
            if not model.honours(Option.WEBHOOK)
            else callback_refusal(
                request.webhook_url, allow_insecure_loopback=self.settings.allow_insecure_callbacks
            )
        )
        if refusal is not None:
            message, fix = refusal
            raise UnsupportedOptionError(
                f"{self.id}: {message}", option=Option.WEBHOOK.value, provider=self.id, fix=fix
            )

    def body(
        self,
        request: LipsyncRequest,
        model: ModelSpec,
        *,
        video_url: str,
        audio_url: str,
        webhook_url: str | None = None,
    ) -> dict[str, Any]:
        """The exact JSON the create call sends; StorageError when a medium is not an http(s) URL."""
        for field, url in (("video", video_url), ("audio", audio_url)):
            parts = urlsplit(url)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise StorageError(
                    f"{self.id} fetches {field} by public http(s) URL only, got {url[:40]!r}",
                    fix="pass a public URL, or set `storage` in the config (e.g. 'fal-cdn') to host the file",
                )
        return create_body(
            request,
            model,
            video_url=video_url,
            audio_url=audio_url,
            webhook_url=webhook_url,
            media_fields=self.media_fields,
        )

    # ------------------------------------------------------------------ HTTP

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.context.transport
                or PooledTransport(limits=pool_limits(self.context.settings.max_requests)),
                base_url=self.base_url,
                timeout=httpx.Timeout(self.call_timeout),
                headers={"User-Agent": _user_agent(), "Accept": "application/json"},
            )
        return self._client

    def _auth(self) -> dict[str, str]:
        if self.context.api_key is None:
            env = (
                getattr(self.context.settings, "api_key_env", None)
                or self.credential_env
                or "EVOLINK_API_KEY"
            )
            raise MissingCredentialsError(self.id, env)
        return {"Authorization": f"Bearer {self.context.key()}"}

    def _scrub(self, value: Any) -> Any:
        """Keep the client's secrets out of messages, details and raw bodies, even if a proxy echoes them."""
        return self.context.redactor.value(value)

    async def _get_task(self, task_id: str) -> Task:
        """One look-up of an accepted task; transient failures are retryable (the poller retries them)."""
        with self.context.redactor.scrubbing():
            return await self._look_up(task_id)

    async def _look_up(self, task_id: str) -> Task:
        path = TASKS + quote(task_id, safe="")
        try:
            response = await self._http().get(path, headers=self._auth())
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"task look-up failed: {type(exc).__name__}: {self._scrub(str(exc))}",
                provider=self.id,
                code="transport_error",
                retryable=True,
                accepted=True,
            ) from None
        log.debug("GET %s -> %s", path, response.status_code)
        if response.status_code != 200:
            raise error_from_response(
                response, provider=self.id, accepted=True, task_id=task_id, scrub=self._scrub
            )
        try:
            return parse_task(self._scrub(response.json()))
        except ValueError as exc:
            raise ProviderUnavailableError(
                f"unexpected task body: {exc}",
                provider=self.id,
                status_code=response.status_code,
                code="bad_response",
                retryable=True,
                accepted=True,
            ) from None

    # ------------------------------------------------------------------ the work

    async def submit(
        self,
        request: LipsyncRequest,
        model: ModelSpec,
        *,
        video_url: str,
        audio_url: str,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submission:
        with self.context.redactor.scrubbing():
            return await self._create(request, model, video_url, audio_url, webhook_url)

    async def _create(
        self,
        request: LipsyncRequest,
        model: ModelSpec,
        video_url: str,
        audio_url: str,
        webhook_url: str | None,
    ) -> Submission:
        self.check(request, model)
        body = self.body(request, model, video_url=video_url, audio_url=audio_url, webhook_url=webhook_url)
        content = json_body(body, what=f"{self.id} create call")  # before anything leaves
        headers = {**self._auth(), "Content-Type": "application/json"}
        try:
            response = await self._http().post(ENDPOINT, content=content, headers=headers)
        except _NOT_SENT as exc:
            raise ProviderUnavailableError(
                f"could not reach {self.base_url}: {type(exc).__name__}: {self._scrub(str(exc))}; "
                "nothing was sent",
                provider=self.id,
                code="connect_error",
                retryable=True,
                accepted=False,
            ) from None
        except httpx.TransportError as exc:
            # The create call left: the task may exist and be billed. It is never sent again.
            raise SubmitOutcomeUnknownError(
                f"the create call to {self.id} was sent but no answer came back ({type(exc).__name__}); "
                "the task may exist",
                provider=self.id,
            ) from None
        log.debug("POST %s model=%s -> %s", ENDPOINT, body["model"], response.status_code)
        if not response.is_success:
            if create_refused(response):
                raise error_from_response(response, provider=self.id, accepted=False, scrub=self._scrub)
            envelope = Envelope.of(response)
            raise SubmitOutcomeUnknownError(
                f"{self.id} answered HTTP {response.status_code} ({self._scrub(envelope.summary)}) to the "
                "create call after it was sent; the task may exist",
                provider=self.id,
                status_code=response.status_code,
            )
        try:
            task = parse_task(self._scrub(response.json()))
        except ValueError:
            raise SubmitOutcomeUnknownError(
                f"{self.id} answered the create call without a task id; the task may exist",
                provider=self.id,
                status_code=response.status_code,
            ) from None
        log.info("unified task %s created (model %s)", task.id, body["model"])
        return Submission(
            remote_id=task.id,
            endpoint=model.endpoint,
            status_url=self.base_url + TASKS + quote(task.id, safe=""),
            provider_data={k: task.raw[k] for k in ("created", "task_info", "usage") if k in task.raw},
            initial_status=job_status(task),
        )

    def _task_id(self, job: Job) -> str:
        if not job.remote_id:
            raise ProviderError(
                "the job has no task id (its submit's outcome is unknown) and the unified API cannot list tasks",
                provider=self.id,
                code="no_remote_id",
                accepted=None,
                fix="look the task up in the provider's dashboard",
            )
        return job.remote_id

    async def status(self, job: Job) -> JobStatus:
        with self.context.redactor.scrubbing():
            return job_status(await self._get_task(self._task_id(job)))

    def _output(self, task: Task) -> ProviderOutput:
        url = task.results[0]
        # The body has no completion time: count the TTL from creation, so expires_at is never late.
        start = task.finished or task.created or utcnow()
        name = urlsplit(url).path.rsplit("/", 1)[-1] or None
        video = VideoFile(url=url, file_name=name, expires_at=start + self.result_ttl)
        return ProviderOutput(video=video, raw=task.raw)

    async def result(self, job: Job) -> ProviderOutput:
        with self.context.redactor.scrubbing():
            return await self._result(job)

    async def _result(self, job: Job) -> ProviderOutput:
        task = await self._get_task(self._task_id(job))
        if task.state is JobState.COMPLETED:
            if not task.results:
                raise JobFailedError(
                    f"task {task.id} completed without a result link",
                    job=job,
                    code="generation_failed_no_content",
                    reason="completed without results",
                    retryable=True,
                )
            return self._output(task)
        raise self.result_unavailable(job, f"task {task.id}", job_status(task))

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Callbacks are unsigned, so only a hint: take the task id from the body, trust only a fresh look-up."""
        with self.context.redactor.scrubbing():
            return await self._parse_webhook(body)

    async def _parse_webhook(self, body: bytes) -> WebhookEvent:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookVerificationError("unified callback body is not JSON") from None
        task_id = data.get("id") if isinstance(data, dict) else None
        if not is_task_id(task_id):
            raise WebhookVerificationError("unified callback body has no valid task-unified- id")
        try:
            task = await self._get_task(task_id)
        except ProviderRejectedError as exc:
            if exc.code in ("task_not_found", "invalid_task_id"):
                raise WebhookVerificationError(f"callback names task {task_id}, unknown to the API") from None
            raise
        if task.id != task_id:
            raise WebhookVerificationError(f"the look-up of {task_id} returned task {task.id}")
        output = self._output(task) if task.state is JobState.COMPLETED and task.results else None
        return WebhookEvent(
            remote_id=task.id,
            status=job_status(task),
            output=output,
            delivery_id=f"{task.id}:{task.status}",
            raw=task.raw,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
