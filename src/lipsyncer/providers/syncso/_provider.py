"""``SyncsoProvider``: sync.so's own API through its SDK (``syncsdk``), over a transport lipsyncer controls.

The SDK does the HTTP (``AsyncSync(httpx_client=...)`` takes our httpx client, hence our transport) and
serialises the generate body from its typed objects; its ``request_options`` carry the ``Idempotency-Key``
header and turn its retries off. What it cannot do is said where it happens: its ``ApiError`` keeps no
response headers (``Retry-After``), so an httpx response hook keeps the last response of each call, and
it has no webhook verifier (``_webhooks``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field

from lipsyncer import (
    InvalidRequestError,
    Job,
    JobFailedError,
    JobState,
    JobStatus,
    LipsyncRequest,
    MediaKind,
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
    Submission,
    SubmitOutcomeUnknownError,
    UnsupportedOptionError,
    VideoFile,
    WebhookEvent,
    WebhookVerificationError,
)
from lipsyncer.core.http import BorrowedTransport, pool_limits
from lipsyncer.core.media import MediaProbeError, probe
from lipsyncer.core.pool import PooledTransport

from ._errors import ErrorBody, error_from
from ._webhooks import verify_signature
from ._wire import (
    DEFAULT_BASE_URL,
    EMOTIONS,
    FPS,
    GENERATE,
    MODEL_MODES,
    Generation,
    check_idempotency_key,
    generation_options,
    job_status,
    media_inputs,
    parse_generation,
    speaker_detection,
)

if TYPE_CHECKING:  # the SDK loads with the first request (~100 ms), not when the plugin is registered
    from sync import AsyncSync
    from sync.core.request_options import RequestOptions

__all__ = ["SyncsoProvider", "SyncsoSettings"]

log = logging.getLogger("lipsyncer.providers.syncso")
T = TypeVar("T")

DEFAULT_CALL_TIMEOUT = 30.0
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Transport failures that prove the request never left: safe to send again, here or elsewhere."""

_SPEAKER = frozenset({Option.SPEAKER_AUTO, Option.SPEAKER_POINT, Option.SPEAKER_BOXES})
_LIPSYNC = frozenset({Option.SYNC_MODE, Option.TEMPERATURE, Option.WEBHOOK}) | _SPEAKER
_SYNC_3 = frozenset({Option.SYNC_MODE, Option.WEBHOOK}) | _SPEAKER  # temperature: ignored by sync-3
_REACT_1 = _LIPSYNC | {Option.MODEL_MODE, Option.EMOTION}
_NOTES = ((Option.SPEAKER_BOXES, "integers, null frames allowed"), (Option.SPEAKER_POINT, "integers"))
REACT_MAX_SECONDS = 15.0


class SyncsoSettings(ProviderOptions):
    """``[providers.syncso.options]``."""

    occlusion_detection_enabled: bool | None = Field(
        default=None, description="sent as options.occlusion_detection_enabled (slower); never to sync-3"
    )
    allow_insecure_webhooks: bool = Field(
        default=False, description="let http:// loopback webhook URLs through (local receivers, the sandbox)"
    )
    webhook_tolerance_seconds: float = Field(
        default=300.0, gt=0, description="how far a webhook's signed timestamp may be from now"
    )


def _model(
    model_id: str, options: frozenset[Option], price: str, speed: float, limit: float | None = None
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        endpoint=GENERATE,
        options=options,
        price_per_second=Decimal(price),
        seconds_per_output_second=speed,
        max_video_seconds=limit,
        max_audio_seconds=limit,
        option_notes=_NOTES,
    )


class SyncsoProvider(Provider):
    """sync.so direct: idempotent submits, signed webhooks, and react-1 (emotion and edit region)."""

    id = "syncso"
    description = "sync.so direct (api.sync.so): lipsync-1.9, lipsync-2, lipsync-2-pro, sync-3, react-1"
    # Published per-second list prices, top of each range (billed per output frame at 25 fps);
    # lipsync-1.9.0-beta's and react-1's are unverified. Config `prices` overrides them.
    models = (
        _model("lipsync-2", _LIPSYNC, "0.05", 6.0),
        _model("lipsync-2-pro", _LIPSYNC, "0.083", 10.0),
        _model("lipsync-1.9.0-beta", _LIPSYNC, "0.02", 2.0),
        _model("sync-3", _SYNC_3, "0.133", 30.0),
        _model("react-1", _REACT_1, "0.133", 30.0, REACT_MAX_SECONDS),
    )
    credential_env = "SYNC_API_KEY"
    webhook_secret_env = "SYNC_WEBHOOK_SECRET"
    options_model = SyncsoSettings
    can_cancel = False  # syncsdk 0.3.0 and the API reference have no cancel call
    idempotent_submits = True
    accepts_webhooks = True
    webhook_schemes: ClassVar[frozenset[str]] = frozenset({"https"})
    accepts_data_uris: ClassVar[bool] = False
    uploads_local_files = False
    hosts = ("api.sync.so",)
    docs_url = "https://docs.sync.so"
    default_priority = 80  # behind fal and the unified API unless configured: they need no sync.so account

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self._sdk: AsyncSync | None = None
        self._http: httpx.AsyncClient | None = None
        # The responses seen by the call running in this task (see ``_call``); one per instance, no globals.
        self._seen: contextvars.ContextVar[list[httpx.Response] | None] = contextvars.ContextVar(
            f"syncso-responses-{id(self)}", default=None
        )

    @property
    def settings(self) -> SyncsoSettings:
        assert isinstance(self.options, SyncsoSettings)
        return self.options

    @property
    def base_url(self) -> str:
        return (self.context.base_url or DEFAULT_BASE_URL).rstrip("/")

    @property
    def call_timeout(self) -> float:
        polling = getattr(self.context.settings, "polling", None)
        return float(getattr(polling, "call_timeout", None) or DEFAULT_CALL_TIMEOUT)

    # ------------------------------------------------------------------ before any request

    def check(self, request: LipsyncRequest, model: ModelSpec) -> None:
        """The base option check, plus sync.so's own rules: react-1's modes, emotions and 15 s limit, whole
        pixel speaker hints, https webhooks."""
        super().check(request.model_copy(update={"webhook_url": None}), model)
        if request.webhook_url is not None:
            self._check_webhook(request.webhook_url, model)
        if request.model_mode is not None and request.model_mode not in MODEL_MODES:
            raise UnsupportedOptionError(
                f"{model.id} takes model_mode {', '.join(MODEL_MODES)}, not {request.model_mode!r}",
                option=Option.MODEL_MODE.value,
                provider=self.id,
                fix=f"use one of: {', '.join(MODEL_MODES)}",
            )
        if request.emotion is not None and request.emotion not in EMOTIONS:
            raise UnsupportedOptionError(
                f"{model.id} takes the emotions {', '.join(EMOTIONS)}, not {request.emotion!r}",
                option=Option.EMOTION.value,
                provider=self.id,
                fix=f"use one of: {', '.join(EMOTIONS)}",
            )
        if request.active_speaker is not None:
            speaker_detection(request.active_speaker)  # refuses fractional pixels now, not at sync.so
        for field, limit in (("video", model.max_video_seconds), ("audio", model.max_audio_seconds)):
            media = getattr(request, field)
            if limit is None or media.kind is not MediaKind.PATH:
                continue
            try:
                seconds = probe(media.path).duration
            except MediaProbeError:
                continue  # unreadable here: sync.so will say so itself
            if seconds > limit:
                raise InvalidRequestError(
                    f"{model.id} takes at most {limit:g} s of {field}; {media.path.name} is {seconds:.2f} s",
                    field=field,
                    fix=f"trim the {field} to {limit:g} s, or use another model",
                )

    def _check_webhook(self, url: str, model: ModelSpec) -> None:
        if not model.honours(Option.WEBHOOK):
            raise UnsupportedOptionError(
                f"{self.id}:{model.id} takes no webhooks", option=Option.WEBHOOK.value, provider=self.id
            )
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        loopback = host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")
        if parts.scheme.lower() == "https" or (self.settings.allow_insecure_webhooks and loopback):
            return
        raise UnsupportedOptionError(
            f"{self.id} delivers webhooks to https URLs only (got {parts.scheme}://)",
            option=Option.WEBHOOK.value,
            provider=self.id,
            fix="use an https webhook_url (or options.allow_insecure_webhooks for a loopback receiver)",
        )

    # ------------------------------------------------------------------ HTTP

    def _client(self) -> AsyncSync:
        if self._sdk is None:
            if self.context.api_key is None:
                env = getattr(self.context.settings, "api_key_env", None) or self.credential_env
                raise MissingCredentialsError(self.id, env or "SYNC_API_KEY")
            transport = self.context.transport
            self._http = httpx.AsyncClient(
                transport=(  # the client's, lent; or a pool of our own
                    PooledTransport(limits=pool_limits(self.context.settings.max_requests))
                    if transport is None
                    else BorrowedTransport(transport)
                ),
                timeout=httpx.Timeout(self.call_timeout),
                event_hooks={"response": [self._remember]},
            )
            from sync import AsyncSync

            self._sdk = AsyncSync(base_url=self.base_url, api_key=self.context.key(), httpx_client=self._http)
        return self._sdk

    async def _remember(self, response: httpx.Response) -> None:
        seen = self._seen.get()
        if seen is not None:
            seen.append(response)

    def _request_options(self, idempotency_key: str | None = None) -> RequestOptions:
        options: RequestOptions = {"max_retries": 0}  # retries are the client's call, never the SDK's
        if idempotency_key is not None:
            options["additional_headers"] = {"Idempotency-Key": idempotency_key}
        return options

    async def _call(self, op: Callable[[], Awaitable[T]]) -> tuple[T | None, httpx.Response | None]:
        """Run one SDK call; (its result, or None on an HTTP error answer) and the last response seen.

        The SDK's ApiError has no headers, so the answer itself is taken from the response hook."""
        from sync.core.api_error import ApiError  # loaded with the client that raises it

        seen: list[httpx.Response] = []
        token = self._seen.set(seen)
        try:
            try:
                result = await op()
            except ApiError:
                return None, seen[-1] if seen else None
            return result, seen[-1] if seen else None
        finally:
            self._seen.reset(token)

    def _scrub(self, value: Any) -> Any:
        """What sync.so sent back, with every key the client knows taken out (some gateways echo them)."""
        return self.context.redactor.value(value)

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
        self.check(request, model)
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        for name, url in (("video", video_url), ("audio", audio_url)):
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                raise InvalidRequestError(
                    f"{self.id} fetches {name} by http(s) URL only, got {url[:40]!r}",
                    field=name,
                    fix="pass a public URL, or set `storage` in the config to host the file",
                )
        options = generation_options(
            request, model, occlusion_detection=self.settings.occlusion_detection_enabled
        )
        extra: dict[str, Any] = {} if webhook_url is None else {"webhook_url": webhook_url}
        sdk = self._client()
        try:
            _, response = await self._call(
                lambda: sdk.generations.with_raw_response.create(
                    model=model.wire_name or model.id,
                    input=media_inputs(video_url, audio_url),
                    options=options,
                    request_options=self._request_options(key),
                    **extra,
                )
            )
        except _NOT_SENT as exc:
            raise ProviderUnavailableError(
                f"could not reach {self.base_url}: {type(exc).__name__}",
                provider=self.id,
                code="connect_error",
                retryable=True,
                accepted=False,
            ) from None
        except httpx.TransportError as exc:
            raise self._unknown(f"no answer came back ({type(exc).__name__})", key) from None
        if response is None:  # pragma: no cover - every SDK call goes through the hook
            raise self._unknown("the SDK returned no response", key)
        log.debug("POST %s model=%s -> %s", GENERATE, model.id, response.status_code)
        return self._accepted(response, model, key)

    def _unknown(self, why: str, key: str | None) -> SubmitOutcomeUnknownError:
        again = f"; it may be re-sent with the same Idempotency-Key {key}" if key else ""
        return SubmitOutcomeUnknownError(
            f"the create call to {self.id} was sent but {why}: the generation may exist{again}",
            provider=self.id,
        )

    def _accepted(self, response: httpx.Response, model: ModelSpec, key: str | None) -> Submission:
        status = response.status_code
        if 200 <= status < 300:
            try:
                generation = parse_generation(self._scrub(response.json()))
            except ValueError:
                raise self._unknown(f"answered {status} without a generation id", key) from None
            return self._submission(generation, model, key)
        body = ErrorBody.of(response)
        if body.code == "IDEMPOTENCY_OUTCOME_UNKNOWN":
            if body.generation_id:  # sync.so names the generation the key already made
                generation = Generation(
                    body.generation_id, "PENDING", model.id, None, None, None, None, None, {}
                )
                return self._submission(generation, model, key, initial=False)
            raise self._unknown("sync.so answered IDEMPOTENCY_OUTCOME_UNKNOWN", key)
        if status == 408 or status >= 500 or not body.is_syncso:
            # A gateway page or a server error after the request arrived: it may have been taken.
            raise self._unknown(f"answered {status} ({self._scrub(body.message)[:80]})", key)
        raise error_from(response, body, provider=self.id, accepted=False, scrub=self._scrub)

    def _submission(
        self, generation: Generation, model: ModelSpec, key: str | None, *, initial: bool = True
    ) -> Submission:
        log.info("sync.so generation %s created (model %s)", generation.id, model.id)
        data: dict[str, Any] = {"model": generation.model or model.id}
        if key is not None:
            data["idempotency_key"] = key
        return Submission(
            remote_id=generation.id,
            endpoint=model.endpoint,
            status_url=f"{self.base_url}{GENERATE}/{quote(generation.id, safe='')}",
            provider_data=data,
            initial_status=job_status(generation) if initial else None,
        )

    async def _generation(self, generation_id: str) -> Generation:
        sdk = self._client()
        try:
            _, response = await self._call(
                lambda: sdk.generations.with_raw_response.get(
                    generation_id, request_options=self._request_options()
                )
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"looking up generation {generation_id} failed: {type(exc).__name__}",
                provider=self.id,
                code="transport_error",
                retryable=True,
                accepted=True,
            ) from None
        if response is None:  # pragma: no cover
            raise ProviderUnavailableError("no answer", provider=self.id, retryable=True, accepted=True)
        if response.status_code >= 300:
            raise error_from(
                response,
                ErrorBody.of(response),
                provider=self.id,
                accepted=True,
                generation_id=generation_id,
                scrub=self._scrub,
            )
        try:
            return parse_generation(self._scrub(response.json()))
        except ValueError as exc:
            raise ProviderUnavailableError(
                f"unexpected generation body: {exc}",
                provider=self.id,
                status_code=response.status_code,
                code="bad_response",
                retryable=True,
                accepted=True,
            ) from None

    def _remote_id(self, job: Job) -> str:
        if not job.remote_id:
            raise ProviderError(
                "the job has no generation id (its submit's outcome is unknown); re-send it with its "
                "idempotency key to learn the id",
                provider=self.id,
                code="no_remote_id",
                accepted=None,
            )
        return job.remote_id

    async def status(self, job: Job) -> JobStatus:
        return job_status(await self._generation(self._remote_id(job)))

    def _output(self, generation: Generation) -> ProviderOutput:
        assert generation.output_url is not None
        name = urlsplit(generation.output_url).path.rsplit("/", 1)[-1] or None
        seconds = generation.output_duration
        video = VideoFile(
            url=generation.output_url,
            file_name=name,
            duration=seconds,
            # Billed per output frame at 25 fps: the frame count the invoice is made of.
            num_frames=None if seconds is None else math.ceil(round(seconds * FPS, 6)),
        )
        return ProviderOutput(video=video, raw=generation.raw)

    async def result(self, job: Job) -> ProviderOutput:
        generation = await self._generation(self._remote_id(job))
        if generation.state is JobState.COMPLETED:
            if generation.output_url is None:
                raise JobFailedError(
                    f"generation {generation.id} completed without an output URL",
                    job=job,
                    code="no_output",
                    reason="completed without outputUrl",
                    retryable=True,
                )
            return self._output(generation)
        raise self.result_unavailable(job, f"generation {generation.id}", job_status(generation))

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify ``Sync-Signature``, then confirm the generation with a look-up before trusting its state."""
        secret = self.webhook_secret()
        if not secret:
            var = getattr(self.context.settings, "webhook_secret_env", None) or self.webhook_secret_env
            raise WebhookVerificationError(
                f"no sync.so webhook secret is configured ({var} is not set)",
                fix=f"export {var}=whsec_... (the secret from sync.so's webhook settings)",
            )
        verify_signature(
            headers, body, secret=secret, tolerance=self.settings.webhook_tolerance_seconds, clock=time.time
        )
        try:
            delivered = parse_generation(json.loads(body))
        except (ValueError, UnicodeDecodeError):
            raise WebhookVerificationError("sync.so webhook body is not a generation") from None
        try:
            generation = await self._generation(delivered.id)
        except ProviderRejectedError as exc:
            if exc.status_code == 404:
                raise WebhookVerificationError(
                    f"webhook names generation {delivered.id}, unknown to sync.so"
                ) from None
            raise
        output = (
            self._output(generation)
            if generation.state is JobState.COMPLETED and generation.output_url
            else None
        )
        return WebhookEvent(
            remote_id=generation.id,
            status=job_status(generation),
            output=output,
            delivery_id=f"{generation.id}:{delivered.status}",
            raw=generation.raw,
        )

    async def estimate_cost(
        self, request: LipsyncRequest, model: ModelSpec, *, video_url: str, audio_url: str
    ) -> Decimal:
        """sync.so's own estimate (``POST /v2/analyze/cost``) in USD, for inputs it can fetch."""
        self.check(request, model)
        options = generation_options(
            request, model, occlusion_detection=self.settings.occlusion_detection_enabled
        )
        sdk = self._client()
        try:
            _, response = await self._call(
                lambda: sdk.generations.with_raw_response.estimate_cost(
                    model=model.wire_name or model.id,
                    input=media_inputs(video_url, audio_url),
                    options=options,
                    request_options=self._request_options(),
                )
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"cost estimate failed: {type(exc).__name__}",
                provider=self.id,
                retryable=True,
                accepted=False,
            ) from None
        if response is None:  # pragma: no cover - every SDK call goes through the hook
            raise ProviderUnavailableError("no answer", provider=self.id, retryable=True, accepted=False)
        if response.status_code >= 300:
            raise error_from(
                response, ErrorBody.of(response), provider=self.id, accepted=False, scrub=self._scrub
            )
        data = response.json()
        entries = data if isinstance(data, list) else [data]
        try:
            return sum((Decimal(str(e["estimatedGenerationCost"])) for e in entries), Decimal(0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderUnavailableError(
                f"unexpected cost estimate body ({exc!r})", provider=self.id, retryable=True, accepted=False
            ) from None

    async def aclose(self) -> None:
        http, self._http, self._sdk = self._http, None, None
        if http is not None:
            await http.aclose()
