"""Jobs and their wall-clock life: queued for ``queue_seconds``, in progress, then finished once rendered.

A job's phase is a pure function of the time since submit, its outcome (set by a render worker) and what the
client did (cancel). Any client on any thread or event loop therefore sees the same, consistent state, and
nothing has to "tick" for a job to advance.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lipsyncer.core.schema import JobState

from .faults import Fault
from .wire import WireError

__all__ = ["Failure", "Job", "JobView", "Outcome", "Phase", "RenderFacts"]


class Phase(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (Phase.QUEUED, Phase.RUNNING)

    @property
    def state(self) -> JobState:
        return {
            Phase.QUEUED: JobState.QUEUED,
            Phase.RUNNING: JobState.RUNNING,
            Phase.SUCCEEDED: JobState.COMPLETED,
            Phase.CANCELLED: JobState.CANCELLED,
        }.get(self, JobState.FAILED)


@dataclass(frozen=True)
class Failure:
    """Why a job failed, neutral enough for both APIs to render in their own shape.

    ``error_type`` is a fal error type (``file_download_error``...) or, for a forced unified failure, the task
    error code; ``wire`` is the exact fal response when one was prepared (schema errors, forced fal errors).
    """

    error_type: str
    message: str
    field: str | None = None
    ctx: dict[str, Any] | None = None
    input: Any = None
    wire: WireError | None = None
    forced: bool = False


@dataclass(frozen=True)
class RenderFacts:
    path: str
    file_name: str
    content_type: str
    file_size: int
    width: int
    height: int
    fps: float
    duration: float
    num_frames: int
    audio_seconds: float


@dataclass(frozen=True)
class Outcome:
    output: RenderFacts | None = None
    failure: Failure | None = None
    skipped: bool = False  # cancelled or timed out before the worker got to it


@dataclass(eq=False)
class Job:
    """Mutable job record; every access goes through the engine's lock."""

    id: str
    seq: int
    api: str  # "fal" | "unified"
    endpoint: str  # fal endpoint id, or the unified model id
    model: str
    arguments: Any
    origin: str
    submitted: float  # the sandbox clock's monotonic reading
    submitted_wall: float  # the sandbox clock's unix time
    queue_seconds: float
    processing_seconds: float
    video_url: str | None = None
    audio_url: str | None = None
    sync_mode: str = "cut_off"
    start_timeout: float | None = None
    priority: str | None = None
    webhook_url: str | None = None
    schema_failure: Failure | None = None
    forced_error: Fault | None = None
    webhook_fail: bool = False
    webhook_duplicate: bool = False
    early_lead: float = 0.0
    ignored_fields: tuple[str, ...] = ()
    outcome: Outcome | None = None
    work_done: float | None = None
    cancelled_at: float | None = None
    expires_at: float | None = None
    webhook_started: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def start_at(self) -> float:
        return self.submitted + self.queue_seconds

    @property
    def timeout_at(self) -> float | None:
        """When fal gives up on a job that has not started (``X-Fal-Request-Timeout``)."""
        if self.start_timeout is None or self.start_timeout >= self.queue_seconds:
            return None
        return self.submitted + self.start_timeout

    def natural_end(self) -> float | None:
        """When the outcome is final (webhooks fire then); None while the worker is still busy."""
        if self.cancelled_at is not None:
            return self.cancelled_at
        if self.timeout_at is not None:
            return self.timeout_at
        if self.outcome is None or self.work_done is None:
            return None
        failure = self.outcome.failure
        if failure is not None and not failure.forced:
            return max(self.start_at, self.work_done)
        return max(self.start_at + self.processing_seconds, self.work_done)

    def visible_end(self) -> float | None:
        """When status starts to show the job finished (later than ``natural_end`` under ``webhook_early``)."""
        end = self.natural_end()
        if end is None or self.cancelled_at is not None or self.timeout_at is not None:
            return end
        return end + self.early_lead

    def final_phase(self) -> Phase | None:
        if self.cancelled_at is not None:
            return Phase.CANCELLED
        if self.timeout_at is not None:
            return Phase.TIMED_OUT
        if self.outcome is None or self.natural_end() is None:
            return None
        return Phase.SUCCEEDED if self.outcome.output is not None else Phase.FAILED

    def phase(self, now: float) -> Phase:
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return Phase.CANCELLED
        timeout_at = self.timeout_at
        if timeout_at is not None and now >= timeout_at:
            return Phase.TIMED_OUT
        if now < self.start_at:
            return Phase.QUEUED
        end = self.visible_end()
        if end is None or now < end:
            return Phase.RUNNING
        final = self.final_phase()
        return final if final is not None else Phase.RUNNING

    def progress(self, now: float) -> float:
        """Fraction of the nominal processing time elapsed (0..1), for logs and progress figures."""
        if now <= self.start_at:
            return 0.0
        if self.processing_seconds <= 0:
            return 1.0
        return min(1.0, (now - self.start_at) / self.processing_seconds)

    def wall(self, monotonic: float) -> float:
        return self.submitted_wall + (monotonic - self.submitted)

    def view(self, now: float) -> JobView:
        phase = self.phase(now)
        failure = self.outcome.failure if self.outcome is not None else None
        error_type: str | None = None
        if phase is Phase.CANCELLED:
            error_type = "client_cancelled"
        elif phase is Phase.TIMED_OUT:
            error_type = "request_timeout"
        elif phase is Phase.FAILED and failure is not None:
            error_type = failure.error_type
        output = self.outcome.output if self.outcome is not None else None
        return JobView(
            id=self.id,
            api=self.api,
            endpoint=self.endpoint,
            model=self.model,
            state=phase.state,
            phase=phase.value,
            arguments=self.arguments,
            submitted_at=datetime.fromtimestamp(self.submitted_wall, timezone.utc),
            sync_mode=self.sync_mode,
            webhook_url=self.webhook_url,
            start_timeout=self.start_timeout,
            priority=self.priority,
            ignored_fields=self.ignored_fields,
            error_type=error_type,
            output_path=output.path if output is not None and phase is Phase.SUCCEEDED else None,
            output_duration=output.duration if output is not None else None,
            rendered=self.work_done is not None,
            forced_error=self.forced_error.error_type if self.forced_error is not None else None,
            temperature=self.extra.get("temperature"),
            idempotency_key=self.extra.get("idempotency_key"),
            body_digest=body_digest(self.arguments),
        )

    def in_flight_until(self) -> float | None:
        """When the job stopped being in flight (its visible end); None while it still is."""
        return self.visible_end()


@dataclass(frozen=True)
class JobView:
    """A read-only snapshot of a job, for tests and the ``/_sandbox/jobs`` admin endpoint."""

    id: str
    api: str
    endpoint: str
    model: str
    state: JobState
    phase: str
    arguments: Any
    submitted_at: datetime
    sync_mode: str
    webhook_url: str | None
    start_timeout: float | None
    priority: str | None
    ignored_fields: tuple[str, ...]
    error_type: str | None
    output_path: str | None
    output_duration: float | None
    rendered: bool
    forced_error: str | None
    temperature: float | None = None  # effective value (the unified API defaults it to 0.5 on lipsync-2/-pro)
    idempotency_key: str | None = None  # the accepting request's Idempotency-Key header
    body_digest: str | None = None  # sha256 of the submitted body, callback URLs left out (see body_digest)

    def webhook_param(self, name: str) -> str | None:
        """A query parameter of the job's webhook/callback URL (``lipsyncer_job``), or None."""
        if not self.webhook_url:
            return None
        values = parse_qs(urlsplit(self.webhook_url).query).get(name)
        return values[-1] if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "api": self.api,
            "endpoint": self.endpoint,
            "model": self.model,
            "state": self.state.value,
            "phase": self.phase,
            "arguments": self.arguments,
            "submitted_at": self.submitted_at.isoformat(),
            "sync_mode": self.sync_mode,
            "webhook_url": self.webhook_url,
            "start_timeout": self.start_timeout,
            "priority": self.priority,
            "ignored_fields": list(self.ignored_fields),
            "error_type": self.error_type,
            "output_path": self.output_path,
            "output_duration": self.output_duration,
            "rendered": self.rendered,
            "forced_error": self.forced_error,
            "temperature": self.temperature,
            "idempotency_key": self.idempotency_key,
            "body_digest": self.body_digest,
        }


_CALLBACK_FIELDS = frozenset({"callback_url", "webhookUrl", "webhook_url"})


def body_digest(arguments: Any) -> str | None:
    """A stable digest of a submitted body with callback URLs left out, so re-sends of one request match."""
    if arguments is None:
        return None
    if isinstance(arguments, dict):
        arguments = {k: v for k, v in arguments.items() if k not in _CALLBACK_FIELDS}
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
