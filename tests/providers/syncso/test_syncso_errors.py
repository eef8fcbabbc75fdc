"""Refusals, unknown outcomes, idempotent replays and failed generations, against the sandbox over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lipsyncer import (
    AuthenticationError,
    InvalidRequestError,
    JobFailedError,
    JobState,
    ProviderContext,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from lipsyncer.contrib.sandbox import Fault, Sandbox, serve_in_thread
from lipsyncer.core.config import ProviderSettings
from lipsyncer.providers.syncso import SyncsoProvider

pytestmark = pytest.mark.anyio
Fn = Callable[..., Any]


@pytest.mark.parametrize(
    ("status", "code", "error", "retry_after"),
    [
        (400, None, ProviderRejectedError, None),
        (401, None, AuthenticationError, None),
        (402, None, QuotaExceededError, None),
        (403, None, AuthenticationError, None),
        (422, None, ProviderRejectedError, None),
        (429, "rate_limit_exceeded", RateLimitedError, 7.0),
        (429, "concurrency_limit_reached", RateLimitedError, 60.0),
    ],
)
async def test_refusals_before_acceptance(
    status: int,
    code: str | None,
    error: type[Exception],
    retry_after: float | None,
    make_sandbox: Fn,
    make_provider: Fn,
    host: Fn,
    submit: Fn,
) -> None:
    wait = 7 if retry_after == 7.0 else None
    sandbox = make_sandbox(
        faults=[
            Fault(
                kind="http_error",
                api="syncso",
                operation="create",
                status=status,
                error_type=code,
                retry_after=wait,
            )
        ]
    )
    provider = make_provider(sandbox)
    urls = host(sandbox)
    with pytest.raises(error) as caught:
        await submit(provider, urls.request("lipsync-2"))
    exc: Any = caught.value
    assert exc.accepted is False and exc.status_code == status
    if status == 429:
        assert exc.code == code and exc.retryable and exc.retry_after == retry_after
    assert sandbox.jobs == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_server_errors_after_sending_leave_the_outcome_unknown(
    status: int, make_sandbox: Fn, make_provider: Fn, host: Fn, submit: Fn
) -> None:
    sandbox = make_sandbox(
        faults=[Fault(kind="http_error", api="syncso", operation="create", status=status, times=1)]
    )
    provider = make_provider(sandbox)
    urls = host(sandbox)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await submit(provider, urls.request("lipsync-2"), key="job-5")
    assert "job-5" in str(caught.value)  # says which key a re-send must carry


async def test_dropped_create_is_replayed_by_key_into_one_generation(
    sandbox: Sandbox, provider: SyncsoProvider, urls: Any, submit: Fn, job: Fn, finish: Fn
) -> None:
    sandbox.add_fault(Fault(kind="drop_after_accept", api="syncso", operation="create", times=1))
    request = urls.request("lipsync-2")
    with pytest.raises(SubmitOutcomeUnknownError):
        await submit(provider, request, key="job-42")
    assert len(sandbox.jobs) == 1  # the sandbox took it; the answer was lost

    again = await submit(provider, request, key="job-42")
    assert [j.id for j in sandbox.jobs] == [again.remote_id]  # replayed, not made twice
    creates = sandbox.find_requests(api="syncso", operation="create")
    assert [c.headers["idempotency-key"] for c in creates] == ["job-42", "job-42"]
    assert [c.dropped for c in creates] == [True, False]
    handle = job(again)
    await finish(provider, handle)
    assert (await provider.result(handle)).video.url


async def test_another_key_makes_another_generation(
    sandbox: Sandbox, provider: SyncsoProvider, urls: Any, submit: Fn
) -> None:
    first = await submit(provider, urls.request("lipsync-2"), key="a")
    second = await submit(provider, urls.request("lipsync-2"), key="b")
    assert first.remote_id != second.remote_id and len(sandbox.jobs) == 2


async def test_connect_failure_is_certainly_not_accepted(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = make_provider(sandbox, transport=httpx.MockTransport(refuse))
    with pytest.raises(ProviderUnavailableError) as caught:
        await submit(provider, urls.request("lipsync-2"))
    assert caught.value.accepted is False and caught.value.retryable


async def test_gateway_page_is_unknown(sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn) -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, text="<html>Bad Request (proxy)</html>", headers={"Content-Type": "text/html"}
        )

    provider = make_provider(sandbox, transport=httpx.MockTransport(gateway))
    with pytest.raises(SubmitOutcomeUnknownError):  # not sync.so's body: nothing proves it was refused
        await submit(provider, urls.request("lipsync-2"))


@pytest.mark.parametrize("bad", ["", "a" * 129, "has space", "slash/key", "ключ"])
async def test_bad_idempotency_key_refused_before_sending(
    bad: str, sandbox: Sandbox, provider: SyncsoProvider, urls: Any, submit: Fn
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await submit(provider, urls.request("lipsync-2"), key=bad)
    assert caught.value.field == "idempotency_key" and caught.value.fix
    assert sandbox.requests == []


async def test_sandbox_refuses_a_bad_key_itself(sandbox: Sandbox, urls: Any) -> None:
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        response = await http.post(
            "https://api.sync.so/v2/generate",
            headers={"x-api-key": "sandbox-syncso-key", "Idempotency-Key": "no spaces"},
            json={
                "model": "lipsync-2",
                "input": [{"type": "video", "url": urls.video}, {"type": "audio", "url": urls.audio}],
            },
        )
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "message": "Idempotency-Key must be 1-128 characters of [A-Za-z0-9._~-]",
        "errorCode": "INVALID_IDEMPOTENCY_KEY",
    }


@pytest.mark.parametrize(
    ("code", "raw_status", "state", "retryable"),
    [
        ("generation_unprocessable_media", "FAILED", JobState.FAILED, False),
        ("generation_rejected", "REJECTED", JobState.FAILED, False),
        ("generation_timed_out", "TIMED_OUT", JobState.FAILED, True),
        ("generation_internal_error", "FAILED", JobState.FAILED, True),
    ],
)
async def test_failure_codes(
    code: str,
    raw_status: str,
    state: JobState,
    retryable: bool,
    make_sandbox: Fn,
    make_provider: Fn,
    host: Fn,
    submit: Fn,
    job: Fn,
    finish: Fn,
) -> None:
    sandbox = make_sandbox(
        faults=[Fault(kind="job_error", api="syncso", error_type=code, message="no face found")]
    )
    provider = make_provider(sandbox)
    urls = host(sandbox)
    handle = job(await submit(provider, urls.request("lipsync-2")))
    last = (await finish(provider, handle))[-1]
    assert (last.state, last.raw_status, last.error_code, last.retryable) == (
        state,
        raw_status,
        code,
        retryable,
    )
    assert last.error_message == "no face found"
    with pytest.raises(JobFailedError) as caught:
        await provider.result(handle)
    assert caught.value.code == code and caught.value.reason == "no face found"


async def test_unknown_generation_is_a_typed_refusal(provider: SyncsoProvider, job: Fn) -> None:
    with pytest.raises(ProviderRejectedError) as caught:
        await provider.status(job("0b3b3c9a-0000-4000-8000-000000000000"))
    assert caught.value.status_code == 404 and caught.value.code == "generation_not_found"
    assert caught.value.accepted is True


async def test_look_up_outage_is_retryable(
    sandbox: Sandbox, provider: SyncsoProvider, urls: Any, submit: Fn, job: Fn
) -> None:
    handle = job(await submit(provider, urls.request("lipsync-2")))
    sandbox.add_fault(Fault(kind="drop_connection", api="syncso", operation="get", times=1))
    with pytest.raises(ProviderUnavailableError) as caught:
        await provider.status(handle)
    assert caught.value.retryable and caught.value.accepted is True
    assert (await provider.status(handle)).state in (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED)


async def test_over_a_real_socket_via_base_url(sandbox: Sandbox, urls: Any, submit: Fn) -> None:
    """``base_url`` alone (no transport from the context): the SDK's own httpx path over loopback."""

    with serve_in_thread(sandbox) as server:
        provider = SyncsoProvider(
            ProviderContext(
                settings=ProviderSettings(base_url=server.base_url),
                api_key=SecretStr(sandbox.config.syncso_key),
            )
        )
        sandbox.add_fault(Fault(kind="drop_after_accept", api="syncso", operation="create", times=1))
        with pytest.raises(SubmitOutcomeUnknownError):  # the socket closed after the sandbox took it
            await submit(provider, urls.request("lipsync-2"), key="sock-1")
        again = await submit(provider, urls.request("lipsync-2"), key="sock-1")
        assert [j.id for j in sandbox.jobs] == [again.remote_id]
        assert all(r.host == server.base_url.split("://")[1] for r in sandbox.find_requests(api="syncso"))
        await provider.aclose()


async def test_any_refusal_carries_retry_after_when_sent(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        body = {
            "statusCode": 402,
            "message": "Out of credits until the next cycle",
            "errorCode": "insufficient_credits",
        }
        return httpx.Response(402, json=body, headers={"Retry-After": "120"})

    provider = make_provider(sandbox, transport=httpx.MockTransport(busy))
    with pytest.raises(QuotaExceededError) as caught:
        await submit(provider, urls.request("lipsync-2"))
    assert (caught.value.retry_after, caught.value.code, caught.value.accepted) == (
        120.0,
        "insufficient_credits",
        False,
    )
