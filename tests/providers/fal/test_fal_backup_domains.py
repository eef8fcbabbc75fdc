"""fal's backup domains: tried once per request when the primary cannot be reached, and said once per client.

The transport under test is the production one (``BackupDomains``), given an inner transport that refuses
connections to fal's primary hosts and passes the rest on to the sandbox (which routes by path).
"""

from __future__ import annotations

import logging
from typing import Any

import fal_client.client
import httpx
import pytest

from lipsyncer.core.errors import ProviderUnavailableError
from lipsyncer.core.schema import Job
from lipsyncer.providers.fal._client import BACKUP_DOMAINS, BackupDomains
from lipsyncer.providers.fal._queue import FalQueue

pytestmark = pytest.mark.anyio

V3 = "fal-ai/sync-lipsync/v3"


class _Down(httpx.AsyncBaseTransport):
    """Refuses connections to ``down`` hosts; every host tried is recorded, in order."""

    def __init__(self, inner: httpx.AsyncBaseTransport, down: set[str]) -> None:
        self.inner, self.down, self.tried = inner, down, []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.tried.append(request.url.host)
        if request.url.host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fal_client.client, "_get_retry_delay", lambda *args, **kwargs: 0.0)


def _job(submission: Any) -> Job:
    """A stored job without fal's URLs (they name the host that answered): look-ups go to the primary."""
    return Job(
        id="job_backup",
        provider="fal-v3",
        model="sync-3",
        endpoint=V3,
        remote_id=submission.remote_id,
        request_fingerprint="x",
    )


async def test_the_backup_domain_serves_when_the_primary_is_down_and_is_said_once(
    bed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lipsyncer.providers.fal")
    down = _Down(bed.sandbox.transport(), {"queue.fal.run"})
    queue = FalQueue(name="fal-v3", key=bed.key, transport=BackupDomains(down))
    try:
        submission = await queue.submit(V3, {"video_url": bed.video_url, "audio_url": bed.audio_url})
        for _ in range(3):
            await queue.status(_job(submission))
    finally:
        await queue.aclose()
    # Every request: the primary once, then its backup once.
    assert down.tried == ["queue.fal.run", BACKUP_DOMAINS["queue.fal.run"]] * 4
    assert [r.method for r in bed.sandbox.submits()] == ["POST"]
    switches = [r for r in caplog.records if "backup domain" in r.getMessage()]
    assert [r.levelno for r in switches] == [logging.WARNING] + [logging.DEBUG] * 3


async def test_both_domains_down_is_bounded_and_unavailable(
    bed: Any, no_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lipsyncer.providers.fal")
    down = _Down(bed.sandbox.transport(), {"queue.fal.run", "queue.falrun.com"})
    queue = FalQueue(name="fal-v3", key=bed.key, transport=BackupDomains(down))
    try:
        with pytest.raises(ProviderUnavailableError) as on_submit:
            await queue.submit(V3, {"video_url": bed.video_url, "audio_url": bed.audio_url})
        assert on_submit.value.accepted is False  # nothing left this process
        assert down.tried == ["queue.fal.run", "queue.falrun.com"]  # a submit: one request, two connects
        down.tried.clear()
        with pytest.raises(ProviderUnavailableError):
            await queue.status(
                Job(
                    id="j",
                    provider="fal-v3",
                    model="sync-3",
                    endpoint=V3,
                    remote_id="r1",
                    request_fingerprint="x",
                )
            )
    finally:
        await queue.aclose()
    # A look-up: fal-client's ten attempts, each the primary then the backup, and no more.
    assert down.tried == ["queue.fal.run", "queue.falrun.com"] * fal_client.client.MAX_ATTEMPTS
    warnings = [
        r for r in caplog.records if "backup domain" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1
    assert bed.sandbox.requests == []


async def test_hosts_without_a_backup_are_not_retried(bed: Any) -> None:
    down = _Down(bed.sandbox.transport(), {"rest.fal.ai"})
    async with httpx.AsyncClient(transport=BackupDomains(down)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("https://rest.fal.ai/storage/auth/token")
    assert down.tried == ["rest.fal.ai"]
