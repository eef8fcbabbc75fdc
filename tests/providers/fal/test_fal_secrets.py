"""The API key never shows: not in a repr or str of providers, clients or errors, not in any log line."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import fal_client.client
import pytest
from pydantic import SecretStr

from lipsyncer.contrib.sandbox import Fault
from lipsyncer.core.errors import AuthenticationError, JobFailedError, SubmitOutcomeUnknownError
from lipsyncer.core.provider import StorageContext
from lipsyncer.core.schema import MediaSource
from lipsyncer.providers.fal.legacy import FalLegacyProvider
from lipsyncer.providers.fal.storage import FalCdnStorage
from lipsyncer.providers.fal.v2 import FalV2Provider
from lipsyncer.providers.fal.v2_pro import FalV2ProProvider
from lipsyncer.providers.fal.v3 import FalV3Provider

pytestmark = pytest.mark.anyio


def _texts(obj: Any) -> list[str]:
    out = [repr(obj), str(obj)]
    if isinstance(obj, BaseException):
        out.append("".join(traceback.format_exception(type(obj), obj, obj.__traceback__)))
        cause = obj.__cause__
        while cause is not None:
            out += [repr(cause), str(cause)]
            cause = cause.__cause__
    return out


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
