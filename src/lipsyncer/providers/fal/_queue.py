"""The one place lipsyncer talks to fal's queue: submit, look up, fetch, cancel, upload.

Everything goes through fal-client (:class:`FalAsyncClient`). Look-ups, fetches, cancels and uploads keep its
own retries (transport errors, 408/409/429, ingress 5xx, ten attempts): there is no second retry loop here. A
submit is sent once (see ``_client.py``) and classified here: refused before acceptance (a 4xx but 408/499:
safe to try elsewhere), or an unknown outcome (any 5xx or gateway page, 408, a timeout or dropped connection
after the send, an unreadable 2xx). What comes out is the core's taxonomy, never a fal-client or httpx
exception, and always through the client's redactor.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import httpx
from fal_client.client import AsyncRequestHandle, Completed, FalClientHTTPError, InProgress, Queued
from pydantic import Field, ValidationError

from lipsyncer import (
    Job,
    JobState,
    JobStatus,
    LogEntry,
    MediaKind,
    MediaSource,
    ProviderError,
    ProviderOptions,
    ProviderOutput,
    ProviderUnavailableError,
    Redactor,
    StorageError,
    Submission,
    SubmitOutcomeUnknownError,
    VideoFile,
)

from ._client import FalAsyncClient, SubmitSent
from ._errors import FalFailure, job_failed, provider_error, refused_before_acceptance, retryable_type

__all__ = ["FalQueue", "QueueSettings", "output_from", "status_from"]

Priority = Literal["normal", "low"]


class QueueSettings(ProviderOptions):
    """``[providers.<fal provider>.options]``: what fal's queue takes per submit, and the webhook keys' URL."""

    start_timeout: float | None = Field(
        default=None,
        gt=1,
        strict=True,
        description="seconds; fal drops the job if it has not started by then (X-Fal-Request-Timeout)",
    )
    queue_priority: Priority | None = Field(default=None, description="X-Fal-Queue-Priority: normal or low")
    jwks_url: str | None = Field(
        default=None,
        description="where fal's webhook keys are; default the client's webhook_jwks_url, else fal's",
    )


class FalQueue:
    """A provider instance's line to fal. ``transport`` is borrowed; the key never leaves fal-client."""

    def __init__(
        self,
        *,
        name: str,
        key: str,
        transport: httpx.AsyncBaseTransport | None,
        redactor: Redactor | None = None,
        connections: int = 20,
    ) -> None:
        self.name = name
        self._fal = FalAsyncClient(key=key, transport=transport, connections=connections)
        self._redactor = redactor if redactor is not None else Redactor()
        # fal keys are "<id>:<secret>": either half alone must not show either.
        self._redactor.add(key, *(part for part in key.split(":") if len(part) >= 8))
        self._redactor.attach("fal_client")  # fal-client's retry lines quote error bodies

    def __repr__(self) -> str:
        return f"<FalQueue {self.name}>"

    async def submit(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        webhook_url: str | None = None,
        settings: QueueSettings | None = None,
    ) -> Submission:
        """Queue one job with one POST. After the send, only a 4xx (but 408/499) counts as refused; anything
        else raises SubmitOutcomeUnknownError and the job is never re-sent."""
        settings = settings or QueueSettings()
        with self._redactor.scrubbing():
            try:
                handle = await self._fal.submit(
                    endpoint,
                    arguments,
                    webhook_url=webhook_url,
                    priority=settings.queue_priority,
                    start_timeout=settings.start_timeout,
                )
            except SubmitSent as exc:
                raise SubmitOutcomeUnknownError(
                    f"{self.name}: the submit to {endpoint} was sent but its answer was lost ({exc}); "
                    "the job may be queued and billed",
                    provider=self.name,
                ) from exc
            except (FalClientHTTPError, httpx.HTTPStatusError) as exc:
                if refused_before_acceptance(exc.response.status_code):
                    raise provider_error(exc, provider=self.name, accepted=False) from exc
                failure = FalFailure.of(exc)
                raise SubmitOutcomeUnknownError(
                    f"{self.name}: the submit to {endpoint} was answered HTTP {failure.status_code} "
                    f"({failure.text}) after it was sent; the job may be queued and billed",
                    provider=self.name,
                    status_code=failure.status_code,
                ) from exc
            except httpx.HTTPError as exc:  # SubmitGuard lets through only errors raised before sending
                raise ProviderUnavailableError(
                    f"could not reach fal ({type(exc).__name__}: {exc}); nothing was sent",
                    provider=self.name,
                    code=type(exc).__name__,
                    retryable=True,
                    accepted=False,
                ) from exc
        return Submission(
            remote_id=handle.request_id,
            endpoint=endpoint,
            status_url=handle.status_url,
            result_url=handle.response_url,
            cancel_url=handle.cancel_url,
            provider_data={"endpoint_id": endpoint, "request_id": handle.request_id},
            initial_status=JobStatus(state=JobState.QUEUED, raw_status="IN_QUEUE"),
        )

    async def status(self, job: Job, *, logs: bool = True) -> JobStatus:
        """One look-up with the queue position; ``logs``: with fal's logs, where its progress percent is (a
        list that grows with the job, sent whole on every look-up: a waiter nobody watches leaves it out)."""
        with self._errors(accepted=True):
            return await self._status(await self._handle(job), logs=logs)

    async def result(self, job: Job) -> ProviderOutput:
        """The output of a finished job in one GET; JobFailedError with fal's reason when it failed."""
        with self._errors(accepted=True):
            handle = await self._handle(job)
            try:
                data = await self._fal.response(handle)
            except FalClientHTTPError as exc:
                if exc.status_code in (401, 402, 403, 404, 429):
                    raise
                # A failed job answers with its own error (422 face_detection_error, 500, 499 cancelled...);
                # the status tells a failed job from a queue that is merely unwell.
                failure = FalFailure.of(exc)
                status = await self._status(handle)
                if status.state in (JobState.FAILED, JobState.CANCELLED):
                    raise job_failed(
                        self.name, error=status.error_message, error_type=status.error_code, failure=failure
                    ) from exc
                if not status.state.finished:
                    raise ProviderError(
                        f"job {job.remote_id} has not finished ({status.raw_status})",
                        provider=self.name,
                        code="not_ready",
                        retryable=True,
                        accepted=True,
                    ) from exc
                raise
        return output_from(data, provider=self.name)

    async def cancel(self, job: Job) -> None:
        """Ask fal to cancel; AlreadyCompletedError when it had finished, RequestNotFoundError when unknown."""
        with self._errors(accepted=True):
            handle = await self._handle(job)
            await handle.cancel()

    async def upload(self, media: MediaSource) -> str:
        """A URL on fal's CDN for a local file or bytes (URLs and data URIs are returned as they are).

        Only the v3 CDN is used: fal-client's fallback hands out a third-party signed URL that ``base_url``
        could not rebase.
        """
        try:
            with self._errors(accepted=False):
                if media.kind is MediaKind.PATH:
                    return await self._fal.upload_file(media.path, fallback_repository=[])
                if isinstance(media.value, bytes):
                    return await self._fal.upload(
                        media.value,
                        content_type=_sniff(media.value, media.name),
                        file_name=media.name,
                        fallback_repository=[],
                    )
                return str(media.value)
        except OSError as exc:
            raise StorageError(f"cannot read {media.describe()}: {exc}", fix="check the file") from exc

    async def aclose(self) -> None:
        await self._fal.aclose()

    # ------------------------------------------------------------------ helpers

    async def _handle(self, job: Job) -> AsyncRequestHandle:
        if not job.remote_id:
            raise ProviderError(
                f"job {job.id} has no fal request id (its submit's outcome is unknown)",
                provider=self.name,
                code="no_request_id",
                accepted=None,
                fix="find the request in fal's dashboard; do not resubmit blindly",
            )
        endpoint = str(job.provider_data.get("endpoint_id") or job.endpoint)
        return await self._fal.handle(
            endpoint,
            job.remote_id,
            status_url=job.status_url,
            response_url=job.result_url,
            cancel_url=job.cancel_url,
        )

    async def _status(self, handle: AsyncRequestHandle, *, logs: bool = True) -> JobStatus:
        try:
            state = await handle.status(with_logs=logs)
        except (KeyError, ValueError, TypeError) as exc:
            raise ProviderUnavailableError(
                f"fal answered an unreadable status ({exc!r})",
                provider=self.name,
                code="unexpected_response",
                retryable=True,
                accepted=True,
            ) from exc
        return status_from(state)

    @contextmanager
    def _errors(self, *, accepted: bool | None) -> Iterator[None]:
        """fal-client's and httpx's exceptions (after fal-client's retries) as the core's typed errors.

        ``accepted=True`` marks calls about an existing job (status, result, cancel).
        """
        with self._redactor.scrubbing(), self._translated(accepted=accepted):
            yield

    @contextmanager
    def _translated(self, *, accepted: bool | None) -> Iterator[None]:
        try:
            yield
        except (FalClientHTTPError, httpx.HTTPStatusError) as exc:
            raise provider_error(exc, provider=self.name, accepted=accepted, lookup=accepted is True) from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(
                f"could not reach fal ({type(exc).__name__}: {exc})",
                provider=self.name,
                code=type(exc).__name__,
                retryable=True,
                accepted=accepted,
            ) from exc


def status_from(state: Any) -> JobStatus:
    """fal-client's Queued / InProgress / Completed as a JobStatus (a failed or cancelled job is COMPLETED)."""
    if isinstance(state, Queued):
        return JobStatus(state=JobState.QUEUED, queue_position=state.position, raw_status="IN_QUEUE")
    if isinstance(state, InProgress):
        logs = _logs(state.logs)
        return JobStatus(
            state=JobState.RUNNING, logs=logs, progress=log_percent(logs), raw_status="IN_PROGRESS"
        )
    assert isinstance(state, Completed), state
    logs = _logs(state.logs)
    if state.error_type == "client_cancelled":
        return JobStatus(
            state=JobState.CANCELLED,
            logs=logs,
            raw_status="COMPLETED",
            error_code=state.error_type,
            error_message=state.error or "cancelled",
            retryable=False,
        )
    if state.error or state.error_type:
        return JobStatus(
            state=JobState.FAILED,
            logs=logs,
            raw_status="COMPLETED",
            error_code=state.error_type,
            error_message=state.error,
            retryable=retryable_type(state.error_type),
        )
    return JobStatus(state=JobState.COMPLETED, logs=logs, raw_status="COMPLETED", progress=100)


def output_from(data: Any, *, provider: str) -> ProviderOutput:
    """fal's ``{"video": File}``, v3's optional width/height/fps/duration/num_frames included."""
    video = data.get("video") if isinstance(data, Mapping) else None
    try:
        file = VideoFile.model_validate(video)
    except ValidationError as exc:
        raise ProviderError(
            f"fal returned no readable video file: {str(data)[:200]}",
            provider=provider,
            code="unexpected_output",
            accepted=True,
        ) from exc
    return ProviderOutput(video=file, raw=dict(data) if isinstance(data, Mapping) else {})


_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


def log_percent(logs: list[LogEntry]) -> float | None:
    """fal reports progress only in its logs (``Processing: 40%``): the newest percentage, if any."""
    for entry in reversed(logs):
        found = _PERCENT.findall(entry.message)
        if found and 0 <= float(found[-1]) <= 100:
            return float(found[-1])
    return None


def _logs(entries: Any) -> list[LogEntry]:
    out: list[LogEntry] = []
    for entry in entries or ():
        if isinstance(entry, Mapping) and entry.get("message") is not None:
            out.append(
                LogEntry(
                    message=str(entry["message"]),
                    level=_opt_str(entry.get("level")),
                    source=_opt_str(entry.get("source")),
                    timestamp=_opt_str(entry.get("timestamp")),
                )
            )
    return out


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


_MAGIC = (
    (b"RIFF", 0, "audio/wav"),
    (b"ID3", 0, "audio/mpeg"),
    (b"fLaC", 0, "audio/flac"),
    (b"OggS", 0, "audio/ogg"),
    (b"\x1a\x45\xdf\xa3", 0, "video/webm"),
    (b"ftyp", 4, "video/mp4"),
)


def _sniff(data: bytes, name: str | None) -> str:
    """A content type for raw bytes: from the name if any, else from the first bytes."""
    if name:
        guessed, _ = mimetypes.guess_type(name)
        if guessed:
            return guessed
    for magic, offset, kind in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if kind == "audio/wav" and data[8:12] == b"AVI ":
                return "video/x-msvideo"
            return kind
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    return "application/octet-stream"
