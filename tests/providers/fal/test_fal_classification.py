"""What a fal submit's answer means once the POST has left: refused (safe to try elsewhere) or unknown.

The rule, written out independently of the code: a 4xx other than 408/499 is a refusal (nothing was queued);
every other answer after the send — any 5xx, fal's JSON or nginx's HTML page alike, a 408, a dropped or
timed-out connection, an unreadable 2xx — is an unknown outcome, raised as SubmitOutcomeUnknownError. Every
row checks that the sandbox saw exactly one POST: fal-client's own retries never re-send a submit.
This is the fal column of the matrix in docs/errors.md.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault
from lipsyncer.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    LipsyncError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from lipsyncer.providers.fal.v3 import FalV3Provider

pytestmark = pytest.mark.anyio

V3 = "fal-ai/sync-lipsync/v3"


def expected_refusal(status: int) -> bool:
    """The documented rule, independent of ``refused_before_acceptance``."""
    return status // 100 == 4 and status not in (408, 499)


REFUSALS: list[tuple[int, type[ProviderError], bool]] = [
    (400, ProviderRejectedError, False),
    (401, AuthenticationError, False),
    (402, QuotaExceededError, False),
    (403, AuthenticationError, False),
    (404, ProviderRejectedError, False),
    (413, ProviderRejectedError, False),
    (422, ProviderRejectedError, False),
    (429, RateLimitedError, True),
]


@pytest.mark.parametrize(("status", "error", "retryable"), REFUSALS)
async def test_refusals_before_acceptance_may_fall_back(
    bed: Any, status: int, error: type[ProviderError], retryable: bool
) -> None:
    assert expected_refusal(status)
    kind = "bad_request" if status in (404, 413, 422) else None
    bed.sandbox.add_fault(
        Fault(kind="http_error", api="fal", operation="submit", status=status, error_type=kind)
    )
    provider = bed.provider(FalV3Provider)
    with pytest.raises(ProviderError) as caught:
        await bed.submit(provider, bed.request("sync-3"))
    err = caught.value
    assert type(err) is error
    assert (err.status_code, err.accepted, err.retryable) == (status, False, retryable)
    assert [r.status for r in bed.sandbox.submits()] == [status]
    assert bed.sandbox.jobs == []


UNKNOWN_ANSWERS: list[tuple[str, dict[str, Any]]] = [
    ("408", {"status": 408}),
    ("499", {"status": 499}),
    ("500 internal_error", {"status": 500, "error_type": "internal_error"}),
    ("502 fal JSON", {"status": 502}),
    ("502 nginx page", {"status": 502, "ingress": True}),
    ("503 runner_scheduling_failure", {"status": 503}),
    ("503 nginx page", {"status": 503, "ingress": True}),
    ("504 request_timeout", {"status": 504}),
    ("504 nginx page", {"status": 504, "ingress": True}),
]


@pytest.mark.parametrize(("label", "fault"), UNKNOWN_ANSWERS, ids=[u[0] for u in UNKNOWN_ANSWERS])
async def test_other_answers_after_the_send_are_unknown_and_never_re_sent(
    bed: Any, label: str, fault: dict[str, Any]
) -> None:
    assert not expected_refusal(fault["status"])
    bed.sandbox.add_fault(Fault(kind="http_error", api="fal", operation="submit", **fault))
    provider = bed.provider(FalV3Provider)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await bed.submit(provider, bed.request("sync-3"))
    assert caught.value.status_code == fault["status"]
    assert caught.value.provider == "fal-v3"
    assert [r.status for r in bed.sandbox.submits()] == [fault["status"]]  # exactly one POST


@pytest.mark.parametrize("kind", ["drop_connection", "drop_after_accept"])
async def test_a_dropped_connection_after_the_send_is_unknown(bed: Any, kind: str) -> None:
    bed.sandbox.add_fault(Fault(kind=kind, api="fal", operation="submit"))
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await bed.submit(bed.provider(FalV3Provider), bed.request("sync-3"))
    assert caught.value.status_code is None
    assert len(bed.sandbox.submits()) == 1


class _TimesOutAfterForwarding(httpx.AsyncBaseTransport):
    """Passes the submit on (fal queues it), then the answer never comes: a read timeout."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST":
            return response
        await response.aclose()
        raise httpx.ReadTimeout("timed out waiting for the answer", request=request)


class _UnreadableAccept(httpx.AsyncBaseTransport):
    """fal queues the job, but the 200 that comes back is a captive portal's page, not fal's JSON."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST":
            return response
        await response.aclose()
        return httpx.Response(200, html="<html>Welcome to the hotel network</html>")


@pytest.mark.parametrize("wrapper", [_TimesOutAfterForwarding, _UnreadableAccept])
async def test_a_timeout_or_an_unreadable_accept_is_unknown(bed: Any, wrapper: type[Any]) -> None:
    provider = bed.provider(FalV3Provider, transport=wrapper(bed.sandbox.transport()), base_url=None)
    with pytest.raises(SubmitOutcomeUnknownError):
        await bed.submit(provider, bed.request("sync-3"))
    assert len(bed.sandbox.submits()) == 1 and len(bed.sandbox.jobs) == 1


async def test_a_body_that_cannot_be_encoded_is_local_and_nothing_is_sent(bed: Any) -> None:
    """httpx would refuse NaN after we decided to send; it is refused first, as bad input."""
    queue = bed.provider(FalV3Provider)._fal()
    with pytest.raises(InvalidRequestError) as caught:
        await queue.submit(
            V3, {"video_url": "https://x.test/v.mp4", "options": {"temperature": float("nan")}}
        )
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)
    assert caught.value.field == "options.temperature"
    assert "nothing was sent" in str(caught.value)
    assert bed.sandbox.requests == []


async def test_the_error_chain_of_an_unknown_submit_keeps_fal_clients_error(bed: Any) -> None:
    """The cause is chained for debugging; nothing in it is a retryable httpx error a loop could act on."""
    bed.sandbox.add_fault(Fault(kind="http_error", api="fal", operation="submit", status=502, ingress=True))
    with pytest.raises(LipsyncError) as caught:
        await bed.submit(bed.provider(FalV3Provider), bed.request("sync-3"))
    assert isinstance(caught.value, SubmitOutcomeUnknownError)
    assert type(caught.value.__cause__).__name__ == "FalClientHTTPError"
    assert "gateway" in caught.value.message  # the nginx page is named, not quoted


async def test_unreachable_fal_sends_nothing(bed: Any) -> None:
    class Refuse(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

    provider = bed.provider(FalV3Provider, transport=Refuse(), base_url=None)
    with pytest.raises(ProviderUnavailableError) as caught:
        await bed.submit(provider, bed.request("sync-3", video=bed.video_url, audio=bed.audio_url))
    assert (caught.value.accepted, caught.value.retryable) == (False, True)
    assert bed.sandbox.requests == []
