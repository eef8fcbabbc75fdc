"""What the four fal plugins share: the queue protocol, uploads, webhooks and the common input fields.

A fal plugin module declares data (id, models, prices) and, at most, the endpoint-specific part of the input
(:meth:`FalProvider.extra_input`). Everything that talks to fal lives in ``_queue.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from lipsyncer import (
    Job,
    JobStatus,
    LipsyncRequest,
    MediaSource,
    ModelSpec,
    Option,
    Provider,
    ProviderContext,
    ProviderOutput,
    Submission,
    WebhookEvent,
)

from ._client import FAL_HOSTS, fal_transport
from ._queue import FalQueue, QueueSettings
from ._webhooks import DEFAULT_JWKS_URL, FalWebhookVerifier

__all__ = ["FAL_OPTIONS", "FalProvider"]

FAL_OPTIONS = frozenset({Option.SYNC_MODE, Option.WEBHOOK})
"""What every fal lipsync endpoint honours (reference §6): no temperature, no speaker choice before v3."""


class FalProvider(Provider):
    """Base of the fal plugins. Network resources are made on first use and released by :meth:`aclose`."""

    credential_env = "FAL_KEY"
    options_model = QueueSettings
    can_cancel = True
    accepts_webhooks = True
    uploads_local_files = True
    upload_domain = "fal-cdn"
    hosts = FAL_HOSTS
    sends_model: ClassVar[bool] = False
    """True when the endpoint takes a ``model`` input field (legacy, v2): the model's wire name goes there."""

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self._transport: httpx.AsyncBaseTransport | None = None
        self._transport_made = False
        self._queue: FalQueue | None = None
        self._verifier: FalWebhookVerifier | None = None

    # ------------------------------------------------------------------ the request body

    def arguments(
        self, request: LipsyncRequest, model: ModelSpec, *, video_url: str, audio_url: str
    ) -> dict[str, Any]:
        """The JSON input fal receives. ``sync_mode`` is always sent: defaults differ between APIs."""
        body: dict[str, Any] = {
            "video_url": video_url,
            "audio_url": audio_url,
            "sync_mode": request.sync_mode.value,
        }
        if self.sends_model:
            body["model"] = model.wire_name or model.id
        body.update(self.extra_input(request, model))
        return body

    def extra_input(self, request: LipsyncRequest, model: ModelSpec) -> dict[str, Any]:
        """Endpoint-specific fields; only options the model honours reach here (see :meth:`check`)."""
        return {}

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
        self.check(request, model)  # cheap, and nothing the route ignores is ever sent
        return await self._fal().submit(
            model.endpoint,
            self.arguments(request, model, video_url=video_url, audio_url=audio_url),
            webhook_url=webhook_url,
            settings=self.settings,
        )

    async def status(self, job: Job) -> JobStatus:
        return await self._fal().status(job)

    async def brief_status(self, job: Job) -> JobStatus:
        return await self._fal().status(job, logs=False)

    async def result(self, job: Job) -> ProviderOutput:
        return await self._fal().result(job)

    async def cancel(self, job: Job) -> None:
        await self._fal().cancel(job)

    async def upload(self, media: MediaSource) -> str:
        return await self._fal().upload(media)

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        if self._verifier is None:
            url = self.settings.jwks_url or self.context.options.get("webhook_jwks_url")
            self._verifier = FalWebhookVerifier(
                provider=self.id, jwks_url=str(url or DEFAULT_JWKS_URL), transport=self._http()
            )
        with self.context.redactor.scrubbing():
            return await self._verifier.parse(headers, body)

    async def aclose(self) -> None:
        if self._queue is not None:
            await self._queue.aclose()
            self._queue = None
        if self._transport is not None:
            await self._transport.aclose()
        self._transport, self._transport_made, self._verifier = None, False, None

    # ------------------------------------------------------------------ plumbing

    @property
    def settings(self) -> QueueSettings:
        assert isinstance(self.options, QueueSettings)
        return self.options

    def _http(self) -> httpx.AsyncBaseTransport | None:
        """The context's transport, rebased onto ``base_url`` when one is configured (every fal host)."""
        if not self._transport_made:
            self._transport = fal_transport(self.context.transport, self.context.base_url)
            self._transport_made = True
        return self._transport

    def _fal(self) -> FalQueue:
        if self._queue is None:
            self._queue = FalQueue(
                name=self.id,
                key=self.context.key(),
                transport=self._http(),
                redactor=self.context.redactor,
                connections=self.context.settings.max_requests,  # the core's request slots never exceed it
            )
        return self._queue
