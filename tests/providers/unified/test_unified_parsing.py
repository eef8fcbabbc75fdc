"""Task and error bodies the sandbox does not produce (other copies of the API): parsed without a server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from lipsyncer.core.errors import ProviderRejectedError, ProviderUnavailableError, RateLimitedError
from lipsyncer.core.schema import JobState
from lipsyncer.providers.unified._errors import error_from_response
from lipsyncer.providers.unified._wire import callback_refusal, job_status, parse_task

TASK = "task-unified-1756817821-4x3rx6ny"


def task(**fields: Any) -> dict[str, Any]:
    return {"id": TASK, "created": 1756817821, "object": "video.generation.task", **fields}


def test_cancelled_is_failed_by_cancel() -> None:
    status = job_status(parse_task(task(status="cancelled", progress=0)))
    assert (status.state, status.error_code, status.retryable) == (
        JobState.CANCELLED,
        "request_cancelled",
        False,
    )


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (None, None, True),  # no reason given: treated as unknown_error
        ({"code": "content_policy_violation", "message": "no"}, "content_policy_violation", False),
        ({"code": "service_unavailable", "message": "later"}, "service_unavailable", True),
        (
            {"code": "brand_new_code", "message": "?"},
            "brand_new_code",
            False,
        ),  # unlisted: not retried blindly
    ],
)
def test_failed_tasks(error: dict[str, str] | None, code: str | None, retryable: bool) -> None:
    status = job_status(parse_task(task(status="failed", progress=0, error=error)))
    assert (status.state, status.error_code, status.retryable) == (JobState.FAILED, code, retryable)


def test_unknown_status_and_odd_progress() -> None:
    status = job_status(parse_task(task(status="Throttled", progress=250)))
    assert (status.state, status.raw_status, status.progress) == (JobState.UNKNOWN, "throttled", 100)
    assert job_status(parse_task(task(status="pending", progress="12"))).progress is None


def test_results_as_strings_objects_or_junk() -> None:
    parsed = parse_task(
        task(status="completed", results=[{"url": "https://a/1.mp4"}, "https://a/2.mp4", 3, {}])
    )
    assert parsed.results == ("https://a/1.mp4", "https://a/2.mp4")
    assert parse_task(task(status="completed", results="https://a/1.mp4")).results == ()


def test_a_completion_time_wins_over_creation() -> None:
    parsed = parse_task(task(status="completed", completed_at="2025-09-02T13:00:00Z"))
    assert parsed.finished == datetime(2025, 9, 2, 13, tzinfo=timezone.utc)
    assert parsed.created == datetime.fromtimestamp(1756817821, tz=timezone.utc)


@pytest.mark.parametrize("body", [None, [], {"status": "completed"}, {"id": TASK}, {"id": "", "status": "x"}])
def test_bodies_without_id_or_status_are_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_task(body)


def response(
    status: int, body: Any = None, *, text: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("GET", f"https://api.evolink.ai/v1/tasks/{TASK}")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_string_codes_and_missing_fields() -> None:
    exc = error_from_response(
        response(
            400, {"error": {"code": "invalid_task_id", "message": "bad", "type": "invalid_request_error"}}
        ),
        provider="unified",
        accepted=True,
        task_id="nope",
    )
    assert isinstance(exc, ProviderRejectedError) and exc.code == "invalid_task_id"


def test_a_proxy_page_instead_of_the_envelope() -> None:
    exc = error_from_response(
        response(502, text="<html>Bad Gateway</html>"), provider="unified", accepted=False
    )
    assert isinstance(exc, ProviderUnavailableError) and exc.retryable and exc.code == "http_502"
    assert "Bad Gateway" in exc.message


def test_retry_after_as_an_http_date() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    exc = error_from_response(
        response(
            429,
            {"error": {"code": 429, "message": "slow down", "type": "rate_limit_error"}},
            headers={"Retry-After": format_datetime(when, usegmt=True)},
        ),
        provider="unified",
        accepted=False,
    )
    assert isinstance(exc, RateLimitedError) and exc.retry_after is not None and 60 < exc.retry_after <= 120


@pytest.mark.parametrize(
    ("url", "insecure", "ok"),
    [
        ("https://hooks.example.com/cb", False, True),
        ("https://203.0.113.9/cb", False, False),  # documentation range: not global
        ("https://8.8.8.8/cb", False, True),
        ("https://169.254.169.254/latest", False, False),
        ("https://app.localhost/cb", False, False),
        ("https://[::1]:8443/cb", True, True),
        ("http://localhost:8000/cb", True, True),
        ("http://hooks.example.com/cb", True, False),
    ],
)
def test_callback_rules(url: str, insecure: bool, ok: bool) -> None:
    assert (callback_refusal(url, allow_insecure_loopback=insecure) is None) is ok
