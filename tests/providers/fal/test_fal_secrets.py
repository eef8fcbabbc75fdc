"""The API key never shows: not in a repr or str of providers, clients or errors, not in any log line."""

from __future__ import annotations

import logging
import string
import traceback
from typing import Any

import anyio
import fal_client.client
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from lipsyncer.cli.errors import describe, redact_for_traceback
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config
from lipsyncer.core.config import ProviderSettings
from lipsyncer.core.errors import AuthenticationError, JobFailedError, LipsyncError, SubmitOutcomeUnknownError
from lipsyncer.core.provider import ProviderContext, StorageContext
from lipsyncer.core.schema import Job, LipsyncRequest, MediaSource
from lipsyncer.providers.fal.legacy import FalLegacyProvider
from lipsyncer.providers.fal.storage import FalCdnStorage
from lipsyncer.providers.fal.v2 import FalV2Provider
from lipsyncer.providers.fal.v2_pro import FalV2ProProvider
from lipsyncer.providers.fal.v3 import FalV3Provider


def _texts(obj: Any) -> list[str]:
    out = [repr(obj), str(obj)]
    if isinstance(obj, BaseException):
        out.append("".join(traceback.format_exception(type(obj), obj, obj.__traceback__)))
        cause: BaseException | None = obj
        while cause is not None:  # every chained error: its text, its fields, the HTTP exchange it keeps
            out += [repr(cause), str(cause), repr(cause.args), repr(vars(cause))]
            response = getattr(cause, "response", None)
            if isinstance(response, httpx.Response):
                out += [response.text, repr(dict(response.headers)), repr(dict(response.request.headers))]
            cause = cause.__cause__ or cause.__context__
    return out


@pytest.mark.anyio
async def test_key_never_in_reprs_errors_or_logs(
    bed: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fal_client.client, "_get_retry_delay", lambda *args, **kwargs: 0.0)
    caplog.set_level(logging.DEBUG)
    shown: list[Any] = []

    # A whole job with uploads, a retried rate limit and a webhook.
    bed.sandbox.add_fault(Fault(kind="http_error", api="fal", operation="status", status=429, times=1))
    provider = bed.provider(FalV3Provider)
    request = bed.request("sync-3", video=bed.media.video, audio=bed.media.audio, webhook_url=bed.webhook)
    submission = await bed.submit(provider, request)
    job = bed.job(provider, submission, "sync-3")
    await bed.wait(provider, job)
    output = await provider.result(job)
    queue = provider._fal()
    fal = queue._fal
    client = await fal._client
    shown += [provider, provider.context, submission, job, output, queue, fal, client, client.headers]
    assert bed.sandbox.wait_idle(30)
    delivery = bed.sandbox.webhook_deliveries[0]
    event = await provider.parse_webhook(delivery.headers, delivery.body)
    shown += [event, provider._verifier]

    # Errors: refused key, failed job, lost submit.
    with pytest.raises(AuthenticationError) as refused:
        await bed.submit(bed.provider(FalV2Provider, key=bed.key + "-revoked"), bed.request("lipsync-2"))
    bed.sandbox.add_fault(Fault(kind="job_error", api="fal", error_type="face_detection_error", times=1))
    legacy = bed.provider(FalLegacyProvider)
    failed_submission = await bed.submit(legacy, bed.request("lipsync-1.9.0-beta"))
    failed_job = bed.job(legacy, failed_submission, "lipsync-1.9.0-beta")
    await bed.wait(legacy, failed_job)
    with pytest.raises(JobFailedError) as failed:
        await legacy.result(failed_job)
    bed.sandbox.add_fault(Fault(kind="drop_after_accept", api="fal", operation="submit", times=1))
    with pytest.raises(SubmitOutcomeUnknownError) as lost:
        await bed.submit(bed.provider(FalV2ProProvider), bed.request("lipsync-2-pro"))
    shown += [refused.value, failed.value, lost.value]

    storage = FalCdnStorage(StorageContext(settings={"base_url": bed.base_url}, api_key=SecretStr(bed.key)))
    await storage.put(MediaSource.parse(bed.media.audio, field="audio"))
    shown += [storage, storage.context]
    await storage.aclose()

    secrets = (bed.key, bed.key.split(":")[0], bed.key.split(":")[1])
    for obj in shown:
        for text in _texts(obj):
            assert not any(s in text for s in secrets), (type(obj).__name__, text[:300])
    assert caplog.records  # fal-client and httpx did log (retries, requests)
    for record in caplog.records:
        assert not any(s in record.getMessage() for s in secrets), record.getMessage()
    # What the sandbox saw was redacted on its side; the key was sent where it belongs.
    assert all(r.headers.get("authorization") in (None, "<redacted>") for r in bed.sandbox.requests)


# ------------------------------------------------------------------------------- an echoed key, at random

# A generated key that is a word of our reprs ("ProviderSettings") or a piece of a URL the test requests
# cannot be told apart from them in what is shown. Real keys are random and carry digits: so must these.
_WIRE = " ".join(
    [
        "https://queue.fal.run/fal-ai/sync-lipsync/v2/pro https://queue.fal.run/fal-ai/sync-lipsync/v3",
        "https://queue.fal.run/fal-ai/sync-lipsync/requests/ https://v3.fal.media/files/upload",
        "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3",
    ]
)
_KEYS = st.text(alphabet=string.ascii_letters + string.digits + "-_:.+/=", min_size=16, max_size=64).filter(
    lambda key: key not in _WIRE and any(c.isdigit() for c in key)
)


async def _echo_round(sandbox: Sandbox, media: SampleMedia, key: str, status: int, where: str) -> list[Any]:
    """One job against a sandbox that echoes ``key`` in an error body; returns what the caller got to see."""
    provider = FalV3Provider(
        ProviderContext(settings=ProviderSettings(), api_key=SecretStr(key), transport=sandbox.transport())
    )
    echo = f"the gateway saw 'Authorization: Key {key}'"
    video = sandbox.put_file(media.video.read_bytes(), file_name="talk.mp4", content_type="video/mp4")
    audio = sandbox.put_file(media.audio.read_bytes(), file_name="dub.wav", content_type="audio/wav")
    request = LipsyncRequest(video=video, audio=audio, model="sync-3")
    spec = provider.model_spec("sync-3")
    assert spec is not None
    seen: list[Any] = [provider, provider.context]
    try:
        if where == "submit":
            sandbox.add_fault(
                Fault(kind="http_error", api="fal", operation="submit", status=status, message=echo, times=1)
            )
        submission = None
        try:
            submission = await provider.submit(request, spec, video_url=video, audio_url=audio)
        except LipsyncError as exc:
            seen.append(exc)
        if submission is not None:
            sandbox.add_fault(
                Fault(kind="http_error", api="fal", operation="status", status=status, message=echo, times=1)
            )
            job = Job(
                id="job_echo",
                provider=provider.id,
                model="sync-3",
                endpoint=submission.endpoint,
                remote_id=submission.remote_id,
                request_fingerprint="x",
            )
            try:  # a 429 is retried by fal-client (and logged, echo included); the others raise
                seen.append(await provider.status(job))
            except LipsyncError as exc:
                seen.append(exc)
    finally:
        await provider.aclose()
    return seen


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=_KEYS,
    status=st.sampled_from([400, 401, 403, 422, 429, 500, 502, 503, 504]),
    where=st.sampled_from(["submit", "status"]),
)
def test_an_echoed_key_never_shows_anywhere(
    key: str,
    status: int,
    where: str,
    media: SampleMedia,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fal_client.client, "_get_retry_delay", lambda *args, **kwargs: 0.0)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with Sandbox(fast_config(fal_key=key)) as sandbox:
        seen = anyio.run(_echo_round, sandbox, media, key, status, where)
    secrets = [key, *(part for part in key.split(":") if len(part) >= 8)]
    errors = [s for s in seen if isinstance(s, LipsyncError)]
    texts: list[str] = []
    for obj in seen:
        texts += _texts(obj)
    for error in errors:
        texts += [repr(error.args), repr(vars(error)), repr(getattr(error, "details", None))]
        failure = describe(error)  # what the CLI prints
        texts += [failure.message, failure.fix or ""]
        redact_for_traceback(error, {})  # what --debug does before Python prints the traceback
        texts.append(traceback_text(error))
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    leaks = [t for t in texts if any(s in t for s in secrets)]
    assert not leaks, leaks[0][:500]
    if errors and where == "submit":
        assert any("<redacted>" in str(e) or "<redacted>" in repr(vars(e)) for e in errors), "the echo came"


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
