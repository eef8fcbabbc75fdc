"""fal's error shapes, as the sandbox puts them on the wire, mapped onto the core taxonomy.

fal-client retries look-ups by itself (429, ingress 5xx, transport errors) but never a submit; the tests count
the requests the sandbox received to show there is no second retry loop, and that a submit is sent once.
The submit classification matrix (refused / unknown) has its own file, ``test_fal_classification.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fal_client.client
import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault
from lipsyncer.core.errors import (
    AuthenticationError,
    JobFailedError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from lipsyncer.core.schema import JobState
from lipsyncer.providers.fal import AlreadyCompletedError, RequestNotFoundError
from lipsyncer.providers.fal._errors import provider_error
from lipsyncer.providers.fal.legacy import FalLegacyProvider
from lipsyncer.providers.fal.v2_pro import FalV2ProProvider
from lipsyncer.providers.fal.v3 import FalV3Provider

pytestmark = pytest.mark.anyio

V3_ENDPOINT = "fal-ai/sync-lipsync/v3"


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """fal-client's backoff (0.1 s doubling to 10 s) made instant; its attempt count is untouched."""
    monkeypatch.setattr(fal_client.client, "_get_retry_delay", lambda *args, **kwargs: 0.0)


async def _submit_v3(bed: Any, **fields: Any) -> Any:
    provider = bed.provider(FalV3Provider)
    return provider, await bed.submit(provider, bed.request("sync-3", **fields))


# ------------------------------------------------------------------------------------------------- submit


async def test_wrong_key_is_an_authentication_error(bed: Any) -> None:
    provider = bed.provider(FalV3Provider, key="not-the-key")
    with pytest.raises(AuthenticationError) as caught:
        await bed.submit(provider, bed.request("sync-3"))
    err = caught.value
    assert (err.status_code, err.retryable, err.accepted) == (401, False, False)
    assert "FAL_KEY" in (err.fix or "")
    assert len(bed.sandbox.submits()) == 1  # 401 is not retried


async def test_submit_rejected_with_flat_422(bed: Any) -> None:
    bed.sandbox.add_fault(
        Fault(
            kind="http_error",
            api="fal",
            operation="submit",
            status=422,
            error_type="bad_request",
            message="no",
        )
    )
    with pytest.raises(ProviderRejectedError) as caught:
        await _submit_v3(bed)
    assert (caught.value.status_code, caught.value.retryable, caught.value.accepted) == (422, False, False)


async def test_a_rate_limited_submit_is_not_re_sent_by_fal_client(bed: Any, no_backoff: None) -> None:
    """429 is a refusal (safe to retry), but the retry is the core's, which honours Retry-After."""
    bed.sandbox.add_fault(Fault(kind="http_error", api="fal", operation="submit", status=429, retry_after=7))
    with pytest.raises(RateLimitedError) as caught:
        await _submit_v3(bed)
    err = caught.value
    assert (err.status_code, err.retryable, err.accepted, err.retry_after) == (429, True, False, 7.0)
    assert [r.status for r in bed.sandbox.submits()] == [429]
    assert bed.sandbox.jobs == []


async def test_status_lookups_keep_fal_client_retries(bed: Any, no_backoff: None) -> None:
    """A GET costs nothing twice: fal-client still retries look-ups on 429 and ingress pages."""
    provider, submission = await _submit_v3(bed)
    bed.sandbox.add_fault(Fault(kind="http_error", api="fal", operation="status", status=429, times=2))
    bed.sandbox.add_fault(
        Fault(kind="http_error", api="fal", operation="status", status=502, ingress=True, times=1)
    )
    status = await provider.status(bed.job(provider, submission, "sync-3"))
    answers = [r.status for r in bed.sandbox.find_requests(operation="status")]
    assert answers[:3] == [429, 429, 502] and len(answers) == 4 and answers[3] in (200, 202)
    assert status.state in (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED)


# ------------------------------------------------------------------------------------ submit outcome unknown


@pytest.mark.parametrize("kind", ["drop_after_accept", "drop_connection"])
async def test_a_submit_whose_answer_is_lost_is_never_sent_again(bed: Any, kind: str) -> None:
    bed.sandbox.add_fault(Fault(kind=kind, api="fal", operation="submit", times=1))
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await _submit_v3(bed)
    assert caught.value.provider == "fal-v3"
    assert "do not resubmit" in (caught.value.fix or "")
    [sent] = bed.sandbox.submits()  # exactly one submit reached the sandbox
    assert sent.dropped
    # drop_after_accept: the job exists (and would be billed) although the client never learnt its id.
    assert len(bed.sandbox.jobs) == (1 if kind == "drop_after_accept" else 0)


async def test_outcome_unknown_in_process_too(bed: Any) -> None:
    """The guard sits under every transport, the sandbox's in-process one included."""
    bed.sandbox.add_fault(Fault(kind="drop_after_accept", api="fal", operation="submit"))
    provider = bed.provider(FalLegacyProvider, transport=bed.sandbox.transport(), base_url=None)
    with pytest.raises(SubmitOutcomeUnknownError):
        await bed.submit(provider, bed.request("lipsync-1.9.0-beta"))
    assert len(bed.sandbox.submits()) == 1


class _RefuseConnections(httpx.AsyncBaseTransport):
    """Fails the first ``n`` connection attempts before anything is sent, like a host that is down."""

    def __init__(self, inner: httpx.AsyncBaseTransport, n: int) -> None:
        self.inner, self.left = inner, n

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.left:
            self.left -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


class _DropMidBody(httpx.AsyncBaseTransport):
    """Sends the request on, then loses the connection while the submit's answer is being read."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST":
            return response
        await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Broken(response.content[:9])
        )


class _Broken(httpx.AsyncByteStream):
    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset by peer")


async def test_an_answer_lost_mid_body_is_outcome_unknown_too(bed: Any) -> None:
    provider = bed.provider(FalV3Provider, transport=_DropMidBody(bed.sandbox.transport()), base_url=None)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await bed.submit(provider, bed.request("sync-3"))
    assert "ReadError" in str(caught.value)
    [sent] = bed.sandbox.submits()
    assert sent.status == 200 and len(bed.sandbox.jobs) == 1


async def test_a_refused_connection_is_not_sent_and_may_go_elsewhere(bed: Any, no_backoff: None) -> None:
    """Nothing was sent, so the error says so (accepted=False); the core decides whether to try again."""
    transport = _RefuseConnections(bed.sandbox.transport(), 1)
    provider = bed.provider(FalV3Provider, transport=transport, base_url=None)
    with pytest.raises(ProviderUnavailableError) as caught:
        await bed.submit(provider, bed.request("sync-3"))
    assert (caught.value.retryable, caught.value.accepted) == (True, False)
    assert "nothing was sent" in caught.value.message
    assert bed.sandbox.submits() == []
    submission = await bed.submit(provider, bed.request("sync-3"))  # the next attempt goes through
    assert [r.job_id for r in bed.sandbox.submits()] == [submission.remote_id]


async def test_unreachable_fal_is_unavailable_and_not_accepted(bed: Any, no_backoff: None) -> None:
    transport = _RefuseConnections(bed.sandbox.transport(), 100)
    provider = bed.provider(FalV3Provider, transport=transport, base_url=None)
    with pytest.raises(ProviderUnavailableError) as caught:
        await bed.submit(provider, bed.request("sync-3"))
    assert (caught.value.retryable, caught.value.accepted) == (True, False)
    assert bed.sandbox.submits() == []


async def test_status_lookups_survive_dropped_connections(bed: Any, no_backoff: None) -> None:
    provider, submission = await _submit_v3(bed)
    bed.sandbox.add_fault(Fault(kind="drop_connection", api="fal", operation="status", times=2))
    status = await provider.status(bed.job(provider, submission, "sync-3"))
    assert status.state in (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED)
    assert len(bed.sandbox.find_requests(operation="status")) == 3


# ------------------------------------------------------------------------------------------- job failures


async def test_job_failing_with_face_detection_error(bed: Any) -> None:
    bed.sandbox.add_fault(Fault(kind="job_error", api="fal", error_type="face_detection_error"))
    provider, submission = await _submit_v3(bed)
    job = bed.job(provider, submission, "sync-3")

    final = (await bed.wait(provider, job))[-1]
    assert final.state is JobState.FAILED
    assert (final.error_code, final.retryable) == ("face_detection_error", False)
    assert final.error_message

    with pytest.raises(JobFailedError) as caught:
        await provider.result(job)
    err = caught.value
    assert (err.code, err.retryable) == ("face_detection_error", False)
    assert err.reason == "video_url: Could not detect a face in the video. [face_detection_error]"
    assert "active_speaker" in (err.fix or "")
    assert "face_detection_error" in str(err) and "fix:" in str(err)


async def test_media_too_long_names_the_limit(make_bed: Any) -> None:
    bed = await make_bed(max_audio_seconds=1.0)
    provider = bed.provider(FalV2ProProvider)
    submission = await bed.submit(provider, bed.request("lipsync-2-pro"))
    job = bed.job(provider, submission, "lipsync-2-pro")
    await bed.wait(provider, job)
    with pytest.raises(JobFailedError) as caught:
        await provider.result(job)
    assert caught.value.code == "audio_duration_too_long"
    assert caught.value.reason is not None and caught.value.reason.startswith("audio_url: ")
    assert caught.value.fix == "trim the audio to at most 1.0 s (it is 1.4 s)"


async def test_retryable_job_failure(bed: Any) -> None:
    bed.sandbox.add_fault(Fault(kind="job_error", api="fal", error_type="generation_timeout"))
    provider, submission = await _submit_v3(bed)
    job = bed.job(provider, submission, "sync-3")
    assert (await bed.wait(provider, job))[-1].retryable is True
    with pytest.raises(JobFailedError) as caught:
        await provider.result(job)
    assert (caught.value.code, caught.value.retryable) == ("generation_timeout", True)


async def test_result_before_the_job_finished(make_bed: Any) -> None:
    bed = await make_bed(queue_seconds=30)
    provider = bed.provider(FalV3Provider)
    submission = await bed.submit(provider, bed.request("sync-3"))
    with pytest.raises(ProviderError) as caught:
        await provider.result(bed.job(provider, submission, "sync-3"))
    assert (caught.value.code, caught.value.retryable, caught.value.accepted) == ("not_ready", True, True)


# ------------------------------------------------------------------------------------------------- cancel


async def test_cancel_then_status_and_result_say_cancelled(make_bed: Any) -> None:
    bed = await make_bed(queue_seconds=30)
    provider = bed.provider(FalV3Provider)
    submission = await bed.submit(provider, bed.request("sync-3"))
    job = bed.job(provider, submission, "sync-3")

    await provider.cancel(job)

    [cancel] = bed.sandbox.find_requests(operation="cancel")
    assert (cancel.method, cancel.status) == ("PUT", 202)
    status = await provider.status(job)
    assert (status.state, status.error_code) == (JobState.CANCELLED, "client_cancelled")
    with pytest.raises(JobFailedError) as caught:
        await provider.result(job)
    assert (caught.value.code, caught.value.retryable) == ("client_cancelled", False)
    assert "was cancelled" in str(caught.value)


async def test_cancel_after_completion_is_a_clear_error(bed: Any) -> None:
    provider, submission = await _submit_v3(bed)
    job = bed.job(provider, submission, "sync-3")
    await bed.wait(provider, job)
    with pytest.raises(AlreadyCompletedError) as caught:
        await provider.cancel(job)
    assert (caught.value.status_code, caught.value.code, caught.value.accepted) == (
        400,
        "ALREADY_COMPLETED",
        True,
    )
    assert isinstance(caught.value, ProviderRejectedError)


async def test_unknown_request_ids(bed: Any) -> None:
    provider, submission = await _submit_v3(bed)
    job = bed.job(provider, submission, "sync-3").model_copy(
        update={"remote_id": "00000000-0000-0000-0000-000000000000", "status_url": None, "cancel_url": None}
    )
    with pytest.raises(RequestNotFoundError) as on_status:
        await provider.status(job)
    assert (on_status.value.status_code, on_status.value.code) == (404, "NOT_FOUND")
    with pytest.raises(RequestNotFoundError):
        await provider.cancel(job)
    with pytest.raises(RequestNotFoundError) as on_result:  # the result route answers 404 with a text detail
        await provider.result(job)
    assert (on_result.value.code, on_result.value.accepted) == ("NOT_FOUND", None)


async def test_a_job_without_request_id_cannot_be_looked_up(bed: Any) -> None:
    provider, submission = await _submit_v3(bed)
    job = bed.job(provider, submission, "sync-3").model_copy(update={"remote_id": None})
    with pytest.raises(ProviderError) as caught:
        await provider.status(job)
    assert (caught.value.code, caught.value.accepted) == ("no_request_id", None)


# ------------------------------------------------------------------------------- the 422 list, on its own


def _fal_error(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    request = httpx.Request("POST", "https://queue.fal.run/fal-ai/sync-lipsync/v3")
    response = httpx.Response(status, json=body, headers=headers, request=request)
    try:
        fal_client.client._raise_for_status(response)
    except fal_client.client.FalClientHTTPError as exc:
        return exc
    raise AssertionError("no error raised")


@pytest.mark.parametrize(("header", "retryable"), [(None, False), ("false", False), ("true", True)])
def test_validation_list_maps_to_rejected_with_location_and_fix(header: str | None, retryable: bool) -> None:
    """fal-client's own FalClientHTTPError for a 422 ``detail`` list (built by fal-client from a response)."""
    detail = [
        {
            "loc": ["body", "video_url"],
            "msg": "Failed to download the file.",
            "type": "file_download_error",
            "url": "https://docs.fal.ai/errors#file_download_error",
        },
        {"loc": ["body", "audio_url"], "msg": "Field required", "type": "missing"},
    ]
    exc = _fal_error(422, {"detail": detail}, {"X-Fal-Retryable": header} if header else None)
    assert isinstance(exc.message, list)  # fal-client hands the list through as the "message"
    err = provider_error(exc, provider="fal-v3", accepted=False)
    assert isinstance(err, ProviderRejectedError)
    assert (err.code, err.retryable, err.accepted, err.status_code) == (
        "file_download_error",
        retryable,
        False,
        422,
    )
    assert err.message == (
        "video_url: Failed to download the file. [file_download_error]; audio_url: Field required [missing]"
    )
    assert err.fix is not None and "publicly reachable" in err.fix
    assert err.details == {"detail": detail}


async def test_the_guard_is_also_under_the_production_transport() -> None:
    """No transport and no base_url: the backup-domain transport, wrapped by the guard."""
    from lipsyncer.providers.fal._client import BackupDomains, FalAsyncClient, SubmitGuard

    fal = FalAsyncClient(key="k")
    client = await fal._client
    guard = client._transport
    assert isinstance(guard, SubmitGuard) and isinstance(guard._inner, BackupDomains)
    await fal.aclose()
