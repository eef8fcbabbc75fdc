"""The unified task API's wire shapes: the create body, task bodies and states, and the callback URL rules.

Pure functions and constants only, so the provider module is left with I/O. Contract: section 4 of the
providers' reference.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from lipsyncer import JobState, JobStatus, LipsyncRequest, ModelSpec, Option

__all__ = [
    "DEFAULT_BASE_URL",
    "ENDPOINT",
    "FINAL_TASK_CODES",
    "MAX_CALLBACK_URL",
    "MEDIA_FIELDS",
    "RETRYABLE_TASK_CODES",
    "TASKS",
    "Task",
    "callback_refusal",
    "create_body",
    "is_task_id",
    "job_status",
    "parse_task",
    "task_retryable",
]

ENDPOINT = "/v1/videos/generations"
TASKS = "/v1/tasks/"
DEFAULT_BASE_URL = "https://api.evolink.ai"
MAX_CALLBACK_URL = 2048

MEDIA_FIELDS: Mapping[str, tuple[str, str]] = {
    "current": ("video_url", "audio_url"),
    "legacy": ("video", "audio"),
}
"""The create call's (video, audio) field names, by ``options.media_fields``; an older revision used legacy."""

RETRYABLE_TASK_CODES = frozenset(
    {
        "generation_timeout",
        "quota_exceeded",
        "resource_exhausted",
        "generation_failed_no_content",
        "service_error",
        "service_unavailable",
        "unknown_error",
    }
)
FINAL_TASK_CODES = frozenset(
    {
        "content_policy_violation",
        "invalid_parameters",
        "image_processing_error",
        "request_cancelled",
        "resource_not_found",
    }
)

_STATES: Mapping[str, JobState] = {
    "pending": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,  # some copies: failed by cancel
    "canceled": JobState.CANCELLED,
}

_TASK_ID = re.compile(r"^task-unified-[A-Za-z0-9_-]{1,100}$")


def is_task_id(value: Any) -> TypeGuard[str]:
    """A well-formed ``task-unified-...`` id, safe to put in a URL path."""
    return isinstance(value, str) and _TASK_ID.match(value) is not None


def task_retryable(code: str | None) -> bool:
    """The reference's split; no code counts as ``unknown_error`` (retryable), an unlisted code as final."""
    return code is None or code in RETRYABLE_TASK_CODES


# --------------------------------------------------------------------------------------------- create


def create_body(
    request: LipsyncRequest,
    model: ModelSpec,
    *,
    video_url: str,
    audio_url: str,
    webhook_url: str | None = None,
    media_fields: tuple[str, str],
) -> dict[str, Any]:
    """The create call's JSON: only fields the model honours; ``sync_mode`` always (the API defaults to loop)."""
    video_field, audio_field = media_fields
    body: dict[str, Any] = {
        "model": model.wire_name or model.id,
        video_field: video_url,
        audio_field: audio_url,
        "sync_mode": request.sync_mode.value,
    }
    if request.temperature is not None and model.honours(Option.TEMPERATURE):
        body["temperature"] = request.temperature
    if request.active_speaker is not None and model.honours(request.active_speaker.option):
        body["active_speaker"] = True
    if webhook_url is not None:
        body["callback_url"] = webhook_url
    return body


def callback_refusal(url: str, *, allow_insecure_loopback: bool) -> tuple[str, str] | None:
    """Why the API would refuse ``url`` as ``callback_url`` (message, fix), or None when it is acceptable.

    The API takes HTTPS, at most 2048 characters, no private or loopback address. Host names are not resolved.
    """
    if len(url) > MAX_CALLBACK_URL:
        return (
            f"callback URLs are at most {MAX_CALLBACK_URL} characters (got {len(url)})",
            "shorten webhook_url",
        )
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    loopback = host == "localhost" or host.endswith(".localhost")
    private = loopback
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        loopback = address.is_loopback
        private = not address.is_global
    if allow_insecure_loopback and loopback:
        return None
    if parts.scheme.lower() != "https":
        return f"callbacks go to https URLs only (got {parts.scheme}://)", "use an https webhook_url"
    if private or not host:
        return (
            f"callbacks may not go to private or loopback addresses ({host or 'no host'})",
            "use a publicly reachable https webhook_url",
        )
    return None


# --------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """The fields of a task body (create answer, query answer, callback body) that lipsyncer acts on."""

    id: str
    status: str
    progress: float | None
    results: tuple[str, ...]
    error_code: str | None
    error_message: str | None
    created: datetime | None
    finished: datetime | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def state(self) -> JobState:
        return _STATES.get(self.status, JobState.UNKNOWN)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _result_urls(value: Any) -> tuple[str, ...]:
    """``results`` is a list of URL strings, or of ``{url}`` objects in some copies of the API."""
    if not isinstance(value, list):
        return ()
    urls: list[str] = []
    for item in value:
        if isinstance(item, str) and item:
            urls.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("url"), str) and item["url"]:
            urls.append(item["url"])
    return tuple(urls)


def parse_task(data: Any) -> Task:
    """Read a task body leniently; ValueError when it has no id or status (nothing to act on)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("the task body has no id")
    status = data.get("status")
    if not isinstance(status, str):
        raise ValueError("the task body has no status")
    progress = data.get("progress")
    pct = None
    if isinstance(progress, (int, float)) and not isinstance(progress, bool):
        pct = min(100.0, max(0.0, float(progress)))
    error = data.get("error")
    code: str | None = None
    message: str | None = None
    if isinstance(error, Mapping):
        code = None if error.get("code") is None else str(error["code"])
        message = None if error.get("message") is None else str(error["message"])
    elif isinstance(error, str) and error:
        message = error
    finished = next(
        (t for key in ("completed_at", "finished_at") if (t := _timestamp(data.get(key))) is not None), None
    )
    return Task(
        id=data["id"],
        status=status.strip().lower(),
        progress=pct,
        results=_result_urls(data.get("results")),
        error_code=code,
        error_message=message,
        created=_timestamp(data.get("created")),
        finished=finished,
        raw=dict(data),
    )


def job_status(task: Task) -> JobStatus:
    state = task.state
    if state not in (JobState.FAILED, JobState.CANCELLED):
        return JobStatus(state=state, progress=task.progress, raw_status=task.status)
    code = task.error_code
    if state is JobState.CANCELLED and code is None:
        code = "request_cancelled"
    return JobStatus(
        state=state,
        progress=task.progress,
        raw_status=task.status,
        error_code=code,
        error_message=task.error_message,
        retryable=state is JobState.FAILED and task_retryable(code),
    )
