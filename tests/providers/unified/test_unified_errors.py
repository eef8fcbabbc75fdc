"""Every documented error shape maps to the right typed error, with the right ``retryable`` and ``accepted``."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.wire import UNIFIED_TASK_ERRORS
from lipsyncer.core.errors import (
    AuthenticationError,
    CancelNotSupportedError,
    JobFailedError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from lipsyncer.core.schema import JobState, LipsyncRequest
from lipsyncer.providers.unified import UnifiedProvider

pytestmark = pytest.mark.anyio

Fn = Callable[..., Any]

# HTTP status -> (error class, code, retryable)
ENVELOPES: list[tuple[int, type[ProviderError], str, bool]] = [
    (400, ProviderRejectedError, "invalid_request_error", False),
    (401, AuthenticationError, "authentication_error", False),
    (402, QuotaExceededError, "insufficient_quota_error", False),
    (403, AuthenticationError, "permission_error", False),
    (404, ProviderRejectedError, "not_found_error", False),
    (413, ProviderRejectedError, "request_too_large_error", False),
    (429, RateLimitedError, "rate_limit_error", True),
    (500, ProviderUnavailableError, "internal_server_error", True),
    (502, ProviderUnavailableError, "upstream_error", True),
    (503, ProviderUnavailableError, "service_unavailable_error", True),
]


CREATE_REFUSALS = [e for e in ENVELOPES if e[0] not in (500, 502)]
"""A 500 or 502 on create may come after the task was made: unknown (test_submit_classification.py)."""


@pytest.mark.parametrize(("status", "error", "code", "retryable"), CREATE_REFUSALS)
async def test_create_error_envelope(
    status: int,
    error: type[ProviderError],
    code: str,
    retryable: bool,
    sandbox: Sandbox,
    provider: UnifiedProvider,
    urls: Any,
    submit: Fn,
) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="create", status=status, times=1))

    with pytest.raises(ProviderError) as caught:
        await submit(provider, urls.request("lipsync-2"))

    exc = caught.value
    assert type(exc) is error
    assert (exc.status_code, exc.code, exc.retryable, exc.accepted) == (status, code, retryable, False)
    assert exc.details["error"]["type"] == code
    assert len(sandbox.submits()) == 1 and sandbox.jobs == []


@pytest.mark.parametrize(("status", "error", "code", "retryable"), [e for e in ENVELOPES if e[0] != 404])
async def test_status_error_envelope(
    status: int,
    error: type[ProviderError],
    code: str,
    retryable: bool,
    sandbox: Sandbox,
    provider: UnifiedProvider,
    urls: Any,
    submit: Fn,
    job: Fn,
) -> None:
    handle = job(await submit(provider, urls.request("lipsync-2")))
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="query", status=status, times=1))

    with pytest.raises(ProviderError) as caught:
        await provider.status(handle)

    exc = caught.value
    assert type(exc) is error
    assert (exc.status_code, exc.code, exc.retryable, exc.accepted) == (status, code, retryable, True)
    assert (await provider.status(handle)).state in (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED)


@pytest.mark.parametrize(("header", "expected"), [(None, 60.0), (7, 7.0), (0, 0.0)])
async def test_rate_limit_carries_retry_after(
    header: int | None, expected: float, sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="unified", status=429, retry_after=header, times=1))

    with pytest.raises(RateLimitedError) as caught:
        await submit(provider, urls.request("sync-3"))

    assert caught.value.retry_after == expected


async def test_suggestion_and_param_reach_the_error(
    make_sandbox: Fn, make_provider: Fn, host: Fn, submit: Fn
) -> None:
    """A real 400: the provider sends current field names to a copy that takes the legacy ones."""
    sandbox = make_sandbox(unified_legacy_media_fields=True)
    provider = make_provider(sandbox)

    with pytest.raises(ProviderRejectedError) as caught:
        await submit(provider, host(sandbox).request("lipsync-2"))

    exc = caught.value
    assert (exc.status_code, exc.code, exc.retryable, exc.accepted) == (
        400,
        "invalid_request_error",
        False,
        False,
    )
    assert "param: video_url" in exc.message and exc.fix == "remove it"


async def test_wrong_key_is_an_authentication_error(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    provider = make_provider(sandbox, key="not-the-key")

    with pytest.raises(AuthenticationError) as caught:
        await submit(provider, urls.request("lipsync-2"))

    assert (caught.value.status_code, caught.value.retryable, caught.value.accepted) == (401, False, False)


async def test_invalid_task_id(provider: UnifiedProvider, sandbox: Sandbox, job: Fn) -> None:
    with pytest.raises(ProviderRejectedError) as caught:
        await provider.status(job("job-from-another-provider"))

    exc = caught.value
    assert (exc.status_code, exc.code, exc.retryable) == (400, "invalid_task_id", False)
    assert "task-unified-" in str(exc)
    assert [r.path for r in sandbox.requests] == ["/v1/tasks/job-from-another-provider"]


async def test_unknown_task_is_not_found(provider: UnifiedProvider, job: Fn) -> None:
    with pytest.raises(ProviderRejectedError) as caught:
        await provider.result(job("task-unified-1700000000-zzzzzzzz"))

    exc = caught.value
    assert (exc.status_code, exc.code, exc.retryable, exc.accepted) == (404, "task_not_found", False, True)
    assert "unknown or expired" in str(exc)


@pytest.mark.parametrize("code", sorted(UNIFIED_TASK_ERRORS))
async def test_task_error_codes(
    code: str, sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn, job: Fn, finish: Fn
) -> None:
    retryable = UNIFIED_TASK_ERRORS[code][0]
    sandbox.add_fault(Fault(kind="job_error", api="unified", error_type=code, times=1))
    handle = job(await submit(provider, urls.request("lipsync-2-pro")), "lipsync-2-pro")

    final = (await finish(provider, handle))[-1]

    assert (final.state, final.raw_status, final.error_code, final.retryable) == (
        JobState.FAILED,
        "failed",
        code,
        retryable,
    )
    assert final.error_message
    with pytest.raises(JobFailedError) as caught:
        await provider.result(handle)
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert caught.value.reason == final.error_message


async def test_a_broken_input_fails_the_task_as_not_retryable(
    sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn, job: Fn, finish: Fn
) -> None:
    """Media problems surface after acceptance, as a failed task (not as a 400)."""
    request = LipsyncRequest(video=urls.video, audio=urls.video, model="lipsync-2")  # a video with no sound
    handle = job(await submit(provider, request))

    final = (await finish(provider, handle))[-1]

    assert (final.state, final.error_code, final.retryable) == (JobState.FAILED, "invalid_parameters", False)


# ------------------------------------------------------------------------------------------- transport


async def test_drop_after_accept_is_outcome_unknown_and_never_resent(
    sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    sandbox.add_fault(Fault(kind="drop_after_accept", api="unified", operation="create"))

    with pytest.raises(SubmitOutcomeUnknownError):
        await submit(provider, urls.request("lipsync-2"))

    [create] = sandbox.submits()
    assert create.dropped and len(sandbox.jobs) == 1, "the task exists and may be billed"


async def test_dropped_connection_on_create_is_outcome_unknown(
    sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    """The client cannot tell a drop before the work from one after it: both are unknown, neither re-sent."""
    sandbox.add_fault(Fault(kind="drop_connection", api="unified", operation="create"))

    with pytest.raises(SubmitOutcomeUnknownError):
        await submit(provider, urls.request("lipsync-2"))

    assert len(sandbox.submits()) == 1


async def test_read_timeout_on_create_is_outcome_unknown(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    provider = make_provider(sandbox, call_timeout=0.2)
    sandbox.add_fault(Fault(kind="slow", api="unified", operation="create", seconds=5, after=True))

    with pytest.raises(SubmitOutcomeUnknownError):
        await submit(provider, urls.request("lipsync-2"))

    assert len(sandbox.submits()) == 1


async def test_gateway_timeout_on_create_is_outcome_unknown(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    inner = sandbox.transport()

    class Gateway(httpx.AsyncBaseTransport):
        """A gateway in front of the API that forwards the create call and times out waiting."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await inner.handle_async_request(request)
            return httpx.Response(504, text="<html>504 Gateway Time-out</html>")

    provider = make_provider(sandbox, transport=Gateway())

    with pytest.raises(SubmitOutcomeUnknownError):
        await submit(provider, urls.request("lipsync-2"))

    assert len(sandbox.submits()) == 1 and len(sandbox.jobs) == 1


async def test_connect_error_is_retryable_and_not_accepted(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = make_provider(
        sandbox, base_url=f"http://127.0.0.1:{port}", transport=httpx.AsyncHTTPTransport()
    )

    with pytest.raises(ProviderUnavailableError) as caught:
        await submit(provider, urls.request("lipsync-2"))

    assert (caught.value.code, caught.value.retryable, caught.value.accepted) == (
        "connect_error",
        True,
        False,
    )


@pytest.mark.parametrize("kind", ["drop_connection", "slow"])
async def test_transport_failures_on_status_are_retryable(
    kind: str, sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn, job: Fn
) -> None:
    provider = make_provider(sandbox, call_timeout=0.2)
    handle = job(await submit(provider, urls.request("lipsync-2")))
    sandbox.add_fault(
        Fault(kind=kind, api="unified", operation="query", seconds=5 if kind == "slow" else None, times=1)
    )

    with pytest.raises(ProviderUnavailableError) as caught:
        await provider.status(handle)

    assert (caught.value.retryable, caught.value.accepted) == (True, True)
    assert (await provider.status(handle)).state is not JobState.UNKNOWN


async def test_cancel_is_not_supported(provider: UnifiedProvider, job: Fn, sandbox: Sandbox) -> None:
    with pytest.raises(CancelNotSupportedError):
        await provider.cancel(job("task-unified-1700000000-abcdefgh"))
    assert sandbox.requests == []


async def test_a_job_without_task_id_cannot_be_looked_up(
    provider: UnifiedProvider, job: Fn, sandbox: Sandbox
) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.status(job("").model_copy(update={"remote_id": None}))
    assert caught.value.code == "no_remote_id" and caught.value.accepted is None
    assert sandbox.requests == []
