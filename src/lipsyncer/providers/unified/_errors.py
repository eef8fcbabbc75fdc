"""The HTTP error envelope ``{"error": {code, message, type, param?, fallback_suggestion?}}`` -> the taxonomy.

``accepted`` is the caller's knowledge: False on a create call the API refused (:func:`create_refused`), True
on look-ups of a task that exists. 429 and 5xx are retryable; the rest need a change first. A create answer
that is not a certain refusal is not mapped here at all: the provider raises SubmitOutcomeUnknownError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timezone
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
from lipsyncer.core.schema import utcnow

__all__ = [
    "RATE_LIMIT_WAIT",
    "UNAVAILABLE_WAIT",
    "Envelope",
    "create_refused",
    "error_from_response",
    "retry_after",
]

RATE_LIMIT_WAIT = 60.0
"""The API's suggested wait after a 429 without ``Retry-After``."""
UNAVAILABLE_WAIT = 30.0
"""The API's suggested wait after a 503."""


def create_refused(response: httpx.Response) -> bool:
    """Does this answer to a create call that was sent certainly mean no task was made (and none is billed)?

    - A 4xx but 408/499: the API (or a proxy in front of it) refused the request as sent: bad input, key,
      quota, rate. 408 and 499 are what proxies say when *they* gave up on a request they may have passed on.
    - A 503 in the API's own envelope (``type`` ``service_unavailable_error``): the API sheds load before it
      creates anything and documents this answer as "retry after 30 s". Treating it as unknown would strand
      every job of an overload (this API cannot list tasks, so an unknown create is resolved only by a
      callback or by hand), for a risk the API's own contract rules out.
    - Anything else is unknown: a 500 (``internal_server_error``: the failure may come after the task was
      made), a 502 (``upstream_error``: the API may have created the task and lost its upstream), a 504, a
      503 that is a gateway's page rather than the API's envelope, a 3xx.
    """
    status = response.status_code
    if 400 <= status < 500:
        return status not in (408, 499)
    return status == 503 and Envelope.of(response).type == "service_unavailable_error"


def retry_after(response: httpx.Response, default: float) -> float:
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
    return max(0.0, (when - utcnow()).total_seconds())


@dataclass(frozen=True)
class Envelope:
    """The error envelope, or whatever text came instead (a proxy's HTML page, say)."""

    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    suggestion: str | None = None
    body: Any = None

    @classmethod
    def of(cls, response: httpx.Response) -> Envelope:
        try:
            body: Any = response.json()
        except ValueError:
            raw = response.text.strip()
            return cls(raw[:300] or response.reason_phrase, body=raw[:2000])
        error = body.get("error") if isinstance(body, Mapping) else None
        if not isinstance(error, Mapping):
            return cls(str(body)[:300] or response.reason_phrase, body=body)

        def text(key: str) -> str | None:
            value = error.get(key)
            return None if value is None or value == "" else str(value)

        return cls(
            message=text("message") or response.reason_phrase,
            type=text("type"),
            code=text("code"),
            param=text("param"),
            suggestion=text("fallback_suggestion"),
            body=body,
        )

    @property
    def summary(self) -> str:
        """The message, with the error type when there is one: for errors that keep no envelope."""
        return f"{self.type}: {self.message}" if self.type else self.message

    @property
    def name(self) -> str | None:
        """The most specific symbolic name: a string ``code`` (e.g. ``invalid_task_id``), else ``type``."""
        if self.code is not None and not self.code.isdigit():
            return self.code
        return self.type


def error_from_response(
    response: httpx.Response,
    *,
    provider: str,
    accepted: bool | None,
    task_id: str | None = None,
    scrub: Callable[[Any], Any] = lambda value: value,
) -> ProviderError:
    """Map an error answer; ``task_id`` set means a task look-up, where 404 is an unknown or expired task.

    ``scrub`` redacts secrets from every text and body the error keeps.
    """
    env = Envelope.of(response)
    status = response.status_code
    message = scrub(env.message) + (f" (param: {env.param})" if env.param else "")
    fix = scrub(env.suggestion) if env.suggestion else None
    name = env.name
    common: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "accepted": accepted,
        "details": scrub(env.body),
    }
    if name == "invalid_task_id":
        return ProviderRejectedError(
            f"{task_id or 'the id'} is not a unified task id: {message}",
            code="invalid_task_id",
            fix=fix or "unified task ids start with 'task-unified-'; check the job's remote id",
            **common,
        )
    if status == 401:
        return AuthenticationError(
            message, code=name or "authentication_error", fix=fix or "check the API key", **common
        )
    if status == 402:
        return QuotaExceededError(
            message, code=name or "insufficient_quota_error", fix=fix or "top up the account", **common
        )
    if status == 403:
        return AuthenticationError(
            message,
            code=name or "permission_error",
            fix=fix or "this key may not use this model or endpoint",
            **common,
        )
    if status == 404 and task_id is not None:
        return ProviderRejectedError(
            f"task {task_id} is unknown or expired: {message}",
            code="task_not_found",
            fix="tasks and their links are kept 24 hours; resubmit if the result was not saved",
            **common,
        )
    if status == 429:
        wait = retry_after(response, RATE_LIMIT_WAIT)
        return RateLimitedError(
            message,
            retry_after=wait,
            code=name or "rate_limit_error",
            fix=f"retry after {wait:g} s",
            **common,
        )
    if status == 408 or status >= 500:
        wait = retry_after(response, UNAVAILABLE_WAIT)
        return ProviderUnavailableError(
            message,
            code=name or f"http_{status}",
            retryable=True,
            retry_after=wait,
            fix=fix or f"retry after {wait:g} s, or use another provider",
            **common,
        )
    if status == 413:
        fix = fix or "use smaller or shorter media"
    return ProviderRejectedError(message, code=name or f"http_{status}", fix=fix, **common)
