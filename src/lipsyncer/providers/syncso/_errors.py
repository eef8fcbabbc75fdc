"""sync.so's error answers ``{statusCode, message, errorCode?}`` -> lipsyncer's taxonomy.

Only an answer carrying sync.so's own JSON error body proves the API itself refused a create call; a proxy's
page or a 5xx leaves the outcome unknown (the provider decides that, this module only reads bodies).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from lipsyncer import (
    AuthenticationError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitedError,
)

__all__ = ["RATE_LIMIT_WAIT", "ErrorBody", "error_from", "retry_after"]

RATE_LIMIT_WAIT = 60.0
"""Seconds to wait after a 429 that names no ``Retry-After`` (sync.so's generate limit is per minute)."""
UNAVAILABLE_WAIT = 30.0


def retry_after(response: httpx.Response, default: float | None) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), else ``default``."""
    value = response.headers.get("retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass(frozen=True)
class ErrorBody:
    """sync.so's error body, or None fields when the answer was something else (a proxy's HTML page)."""

    is_syncso: bool
    message: str
    code: str | None = None
    generation_id: str | None = None
    body: Any = None

    @classmethod
    def of(cls, response: httpx.Response) -> ErrorBody:
        try:
            data: Any = response.json()
        except ValueError:
            text = response.text.strip()
            return cls(False, text[:300] or response.reason_phrase, body=text[:2000])
        if not isinstance(data, Mapping) or not isinstance(data.get("message"), (str, list)):
            return cls(False, str(data)[:300] or response.reason_phrase, body=data)
        message = data["message"]
        text = "; ".join(str(m) for m in message) if isinstance(message, list) else message
        code = data.get("errorCode") or data.get("error_code")
        generation = data.get("generationId")
        return cls(
            True,
            text or response.reason_phrase,
            str(code) if code else None,
            str(generation) if isinstance(generation, str) and generation else None,
            data,
        )


def error_from(
    response: httpx.Response,
    body: ErrorBody,
    *,
    provider: str,
    accepted: bool | None,
    generation_id: str | None = None,
    scrub: Callable[[Any], Any] = lambda value: value,
) -> ProviderError:
    """The error for an answer of status >= 400; ``generation_id`` set means a look-up (404: unknown id)."""
    status = response.status_code
    message = scrub(body.message)
    code = body.code
    common: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "accepted": accepted,
        "details": scrub(body.body),
    }
    said = retry_after(response, None)  # any refusal may say when to come back
    if status not in (429, 408) and status < 500:
        common["retry_after"] = said
    if status == 401:
        return AuthenticationError(
            message, code=code or "unauthorized", fix="check SYNC_API_KEY (sent as x-api-key)", **common
        )
    if status == 403:
        return AuthenticationError(
            message, code=code or "forbidden", fix="this key or plan may not use this model", **common
        )
    if status == 402:
        return QuotaExceededError(
            message, code=code or "payment_required", fix="add credits or upgrade the sync.so plan", **common
        )
    if status == 429:
        wait = said if said is not None else RATE_LIMIT_WAIT
        what = "generations running at once" if code == "concurrency_limit_reached" else "requests"
        return RateLimitedError(
            message,
            retry_after=wait,
            code=code or "rate_limit_exceeded",
            fix=f"too many {what} for the plan: retry after {wait:g} s",
            **common,
        )
    if status == 404 and generation_id is not None:
        return ProviderRejectedError(
            f"generation {generation_id} is unknown: {message}",
            code=code or "generation_not_found",
            fix="check the job's remote id and that the same API key (organisation) made it",
            **common,
        )
    if status == 408 or status >= 500:
        wait = said if said is not None else UNAVAILABLE_WAIT
        return ProviderUnavailableError(
            message,
            code=code or f"http_{status}",
            retryable=True,
            retry_after=wait,
            fix=f"retry after {wait:g} s",
            **common,
        )
    fix = None
    if code == "INVALID_IDEMPOTENCY_KEY":
        fix = "idempotency keys are 1-128 characters of letters, digits and . _ ~ -"
    elif status == 413:
        fix = "use smaller media (or host it and pass a URL)"
    return ProviderRejectedError(message, code=code or f"http_{status}", fix=fix, **common)
