"""Sandbox settings: keys it accepts, how long jobs take, which faults to inject, how webhooks travel."""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from .clock import Clock
from .faults import Fault

__all__ = ["SandboxConfig"]


class SandboxConfig(BaseModel):
    """Everything a sandbox instance needs; two sandboxes with different configs can share a process."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    fal_key: str = Field(default="sandbox-fal-key", description="the only key fal endpoints accept")
    unified_key: str = Field(
        default="sandbox-unified-key", description="the only key the unified API accepts"
    )
    syncso_key: str = Field(default="sandbox-syncso-key", description="the only x-api-key sync.so accepts")
    syncso_webhook_secret: str = Field(
        default="whsec_sandbox", description="signs sync.so webhooks (Sync-Signature)"
    )
    syncso_new_field_names: bool = Field(
        default=False, description="sync.so generations say outputMediaUrl/errorCode (newer docs)"
    )
    fal_v3_plain_file: bool = Field(
        default=False, description="fal v3 output as the plain File (url, content_type, file_name, file_size)"
    )
    queue_seconds: float = Field(default=0.2, ge=0, description="time a job waits IN_QUEUE / pending")
    processing_seconds: float = Field(default=1.0, ge=0, description="least time a job is IN_PROGRESS")
    strict: bool = Field(default=False, description="reject fields an endpoint lacks or a model ignores")
    allow_insecure_callbacks: bool = Field(
        default=False, description="accept http:// and loopback callback_url hosts (loopback only)"
    )
    result_ttl_seconds: float = Field(
        default=86400, gt=0, description="unified result links expire after this"
    )
    cdn_ttl_seconds: float | None = Field(default=None, gt=0, description="fal CDN files expire after this")
    cdn_token_ttl_seconds: float = Field(default=3600, gt=0)
    max_video_seconds: float | None = Field(default=None, gt=0, description="longer videos fail, typed")
    max_audio_seconds: float | None = Field(default=None, gt=0, description="longer audio fails, typed")
    seed: int | None = Field(
        default=None,
        description="ids, fault coin flips and the webhook key pair derive from it; None: a fresh seed per "
        "instance (``sandbox.config.seed`` then says which, to repeat a run)",
    )
    faults: list[Fault] = Field(default_factory=list)
    render_workers: int = Field(default=2, ge=1, description="threads that fetch inputs and render outputs")
    webhook_transport: httpx.BaseTransport | None = Field(
        default=None, description="deliver webhooks through this (sync) transport instead of over loopback"
    )
    user_id: str = Field(
        default="sandbox-user", description="X-Fal-Webhook-User-Id, part of the signed message"
    )
    webhook_retry_scale: float = Field(
        default=1.0, ge=0, description="multiplies webhook retry delays (1, 2, 4 s...); tests use ~0.01"
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    fal_webhook_attempts: int = Field(default=10, ge=1, description="fal retries a failed delivery")
    callback_retries: int = Field(
        default=3, ge=0, description="unified retries a failed callback (1, 2, 4 s)"
    )
    results_as_objects: bool = Field(default=False, description="unified results as [{url}] instead of [url]")
    unified_legacy_media_fields: bool = Field(
        default=False, description="unified API takes the older 'video'/'audio' names instead of *_url"
    )
    audio_sample_rate: int = Field(default=44100, gt=0, description="output audio is resampled to this")
    audio_channels: Literal[1, 2] = 1
    clock: Clock | None = Field(
        default=None, description="where the sandbox reads time (None: the real monotonic clock)"
    )
