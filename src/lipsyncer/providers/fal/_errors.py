"""fal's error shapes mapped onto the core taxonomy, with the location and a fix in every message.

fal answers in two shapes: validation and model errors as ``{"detail": [{loc, msg, type, ctx?}]}`` (FastAPI
style), infrastructure errors as ``{"detail": "<text>", "error_type": "<type>"}`` plus ``X-Fal-Error-Type``.
``X-Fal-Retryable`` overrides our default for the status code when present.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
from fal_client.client import FalClientHTTPError

from lipsyncer import (
    AuthenticationError,
    JobFailedError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitedError,
)

__all__ = [
    "AlreadyCompletedError",
    "FalFailure",
    "RequestNotFoundError",
    "job_failed",
    "provider_error",
    "refused_before_acceptance",
    "retryable_type",
]


class RequestNotFoundError(ProviderRejectedError):
    """fal does not know the request id (404 ``NOT_FOUND``): wrong endpoint, wrong key, or expired."""


class AlreadyCompletedError(ProviderRejectedError):
    """Cancel came too late: the request had already finished (400 ``ALREADY_COMPLETED``) and is billed."""


_RETRYABLE_TYPES = frozenset(
    {
        "internal_server_error",
        "internal_error",
        "downstream_service_unavailable",
        "generation_timeout",
        "request_timeout",
        "startup_timeout",
    }
)

_FIXES: Mapping[str, str] = {
    "file_download_error": "make the URL publicly reachable (no auth, not expired) or pass a local file, "
    "which is uploaded to fal's CDN",
    "face_detection_error": "use footage where the speaker's face is visible and frontal; on fal-v3 pick the "
    "face with active_speaker",
    "video_duration_too_long": "trim the video to at most {max_duration} s (it is {provided_duration} s)",
    "audio_duration_too_long": "trim the audio to at most {max_duration} s (it is {provided_duration} s)",
    "unsupported_video_format": "re-encode the video as MP4 (H.264)",
    "unsupported_audio_format": "convert the audio to WAV or MP3",
    "file_too_large": "compress or trim the file",
    "content_policy_violation": "the input was refused by the content policy; change the input",
    "generation_timeout": "retry, or use shorter media",
    "request_timeout": "the job did not start in time; raise start_timeout or retry later",
    "client_cancelled": "the request was cancelled; submit it again if you still need it",
}


def refused_before_acceptance(status_code: int) -> bool:
    """Does this answer to a submit that was sent certainly mean fal did not queue the job?

    A 4xx is a refusal of the request as sent (bad key, no balance, invalid input, rate limit): nothing was
    queued, so another route may be tried. Except 408 and 499, which proxies send when *they* gave up on a
    request they may already have passed on. Every 5xx (fal's JSON or a gateway's HTML page alike), a 3xx and
    a lost answer are unknown outcomes: the job may be queued and billed, so it is never sent again.
    """
    return 400 <= status_code < 500 and status_code not in (408, 499)


def retryable_type(error_type: str | None) -> bool:
    """May a request that failed with this fal error type succeed if sent again (here or elsewhere)?"""
    return error_type is not None and (error_type in _RETRYABLE_TYPES or error_type.startswith("runner_"))


class FalFailure:
    """One fal error response, read once: the detail list or text, its type, the retryable header."""

    def __init__(self, status_code: int, headers: Mapping[str, str], body: Any, text: str) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        self.status_code = status_code
        self.body = body
        detail = body.get("detail") if isinstance(body, Mapping) else None
        self.entries: list[Mapping[str, Any]] = (
            [e for e in detail if isinstance(e, Mapping)] if isinstance(detail, list) else []
        )
        first_type = next((str(e["type"]) for e in self.entries if e.get("type")), None)
        self.error_type: str | None = (
            first_type
            or (str(body["error_type"]) if isinstance(body, Mapping) and body.get("error_type") else None)
            or lowered.get("x-fal-error-type")
        )
        self.queue_status: str | None = (
            str(body["status"]) if isinstance(body, Mapping) and isinstance(body.get("status"), str) else None
        )
        flag = lowered.get("x-fal-retryable", "").strip().lower()
        self.retryable_header: bool | None = {"true": True, "false": False}.get(flag)
        self.retry_after = _seconds(lowered.get("retry-after"))
        if self.entries:
            self.text = "; ".join(_describe(e) for e in self.entries)
        elif isinstance(detail, str) and detail:
            self.text = detail
        else:
            self.text = text.strip()[:500] or f"HTTP {status_code}"

    @classmethod
    def of(cls, exc: FalClientHTTPError | httpx.HTTPStatusError) -> FalFailure:
        response = exc.response
        try:
            body, text = response.json(), ""
        except (ValueError, httpx.ResponseNotRead):
            body, text = None, _text_of(response)
        return cls(response.status_code, response.headers, body, text or json.dumps(body)[:500])

    @property
    def code(self) -> str | None:
        return self.error_type or self.queue_status

    @property
    def fix(self) -> str | None:
        for entry in self.entries:
            hint = _fix_for(entry.get("type"), entry.get("ctx"))
            if hint:
                return hint
        return _fix_for(self.error_type, None)


def provider_error(
    exc: FalClientHTTPError | httpx.HTTPStatusError,
    *,
    provider: str,
    accepted: bool | None,
    lookup: bool = False,
) -> ProviderError:
    """The typed error for an HTTP error fal returned (after fal-client's own retries).

    ``lookup``: the call named a request id (status, result, cancel), so a 404 means fal does not know it.
    """
    failure = FalFailure.of(exc)
    status = failure.status_code
    kw: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "code": failure.code,
        "accepted": accepted,
        "details": failure.body,
        "fix": failure.fix,
    }
    if status in (401, 403):
        if status == 403 and "balance" in failure.text.lower():
            kw["fix"] = "top up the fal account's balance"
            return QuotaExceededError(failure.text, **kw)
        kw["fix"] = "check FAL_KEY (or this provider's api_key_env): fal refused the key"
        return AuthenticationError(failure.text, **kw)
    if status == 402:
        return QuotaExceededError(failure.text, **kw)
    if status == 429:
        return RateLimitedError(failure.text, retry_after=failure.retry_after, **kw)
    if status == 404 and (lookup or failure.queue_status == "NOT_FOUND"):
        # A look-up: fal does not know the request. A submit: nothing was queued (accepted stays False).
        kw.update(code=failure.code or "NOT_FOUND", accepted=None if lookup else accepted)
        return RequestNotFoundError(failure.text, **kw)
    if status == 400 and failure.queue_status == "ALREADY_COMPLETED":
        return AlreadyCompletedError(failure.text, **kw)
    if status >= 500 or status in (408, 409):
        retryable = True if failure.retryable_header is None else failure.retryable_header
        return ProviderUnavailableError(failure.text, retryable=retryable, **kw)
    retryable = bool(failure.retryable_header) or (
        failure.retryable_header is None and retryable_type(failure.error_type)
    )
    return ProviderRejectedError(failure.text, retryable=retryable, **kw)


def job_failed(
    provider: str,
    *,
    error: str | None,
    error_type: str | None,
    failure: FalFailure | None = None,
) -> JobFailedError:
    """The error for a job fal accepted and then failed or cancelled, with fal's reason and a fix."""
    code = (failure.error_type if failure else None) or error_type
    if failure is not None and failure.entries:
        reason = failure.text  # the detail list, with locations
    else:
        reason = error or (failure.text if failure is not None else None) or "no reason given"
    if failure is not None and failure.retryable_header is not None:
        retryable = failure.retryable_header
    else:
        retryable = retryable_type(code)
    verb = "was cancelled" if code == "client_cancelled" else "failed"
    exc = JobFailedError(
        f"{provider} job {verb}: {reason}" + (f" [{code}]" if code and code not in reason else ""),
        code=code,
        reason=reason,
        retryable=retryable,
    )
    hint = failure.fix if failure is not None else None
    exc.fix = hint or _fix_for(code, None)
    return exc


def _describe(entry: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in entry.get("loc") or () if p != "body")
    msg = str(entry.get("msg") or "invalid")
    kind = entry.get("type")
    text = f"{loc}: {msg}" if loc else msg
    return f"{text} [{kind}]" if kind else text


def _fix_for(error_type: Any, ctx: Any) -> str | None:
    template = _FIXES.get(str(error_type)) if error_type else None
    if template is None:
        return None
    values = {"max_duration": "?", "provided_duration": "?"}
    if isinstance(ctx, Mapping):
        values.update({k: str(v) for k, v in ctx.items()})
    return template.format(**values)


def _text_of(response: httpx.Response) -> str:
    """A non-JSON error body as one line: an nginx page from fal's ingress is named, not quoted."""
    try:
        text = response.text
    except httpx.ResponseNotRead:
        return ""
    if "<html" in text[:200].lower():
        return f"HTTP {response.status_code} from fal's gateway (an HTML error page)"
    return " ".join(text.split())


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: rare from fal, and fal-client ignores Retry-After anyway
