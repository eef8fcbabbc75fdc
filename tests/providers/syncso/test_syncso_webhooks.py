"""Signed webhooks: the sandbox's genuine deliveries are accepted (and confirmed by a look-up); forged, stale,
unsigned or unconfirmable ones are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lipsyncer import JobState, ProviderContext, UnsupportedOptionError, WebhookVerificationError
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import eventually
from lipsyncer.core.config import ProviderSettings
from lipsyncer.providers.syncso import SyncsoProvider

pytestmark = pytest.mark.anyio
Fn = Callable[..., Any]
HOOK = "https://hooks.example.com/syncso?lipsyncer_job=job-1"
SECRET = "whsec_sandbox"


def signature(secret: str, stamp: int, body: bytes) -> str:
    """The rule, written out: v1 = hex HMAC-SHA256(secret as UTF-8, "<t>.<raw body>")."""
    mac = hmac.new(secret.encode(), str(stamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


@pytest.fixture
def received() -> list[httpx.Request]:
    return []


@pytest.fixture
def sandbox_overrides(received: list[httpx.Request]) -> dict[str, Any]:
    def receive(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    return {"strict": True, "webhook_transport": httpx.MockTransport(receive)}


async def delivered(
    sandbox: Sandbox,
    provider: Any,
    urls: Any,
    submit: Fn,
    received: list[httpx.Request],
    model: str = "lipsync-2",
) -> tuple[dict[str, str], bytes]:
    spec = provider.model_spec(model)
    await provider.submit(
        urls.request(model),
        spec,
        video_url=urls.video,
        audio_url=urls.audio,
        webhook_url=HOOK,
        idempotency_key="job-1",
    )

    async def arrived() -> bool:
        return bool(received)

    await eventually(arrived)
    request = received[0]
    return dict(request.headers), request.content


async def test_genuine_delivery_is_accepted_after_a_look_up(
    sandbox: Sandbox, provider: Any, urls: Any, submit: Fn, received: list[httpx.Request]
) -> None:
    headers, body = await delivered(sandbox, provider, urls, submit, received)
    assert str(received[0].url) == HOOK
    stamp = int(headers["sync-signature"].split(",")[0][2:])
    assert headers["sync-signature"] == signature(SECRET, stamp, body)

    gets_before = len(sandbox.find_requests(api="syncso", operation="get"))
    event = await provider.parse_webhook(headers, body)
    assert event.remote_id == json.loads(body)["id"] == sandbox.jobs[0].id
    assert event.status.state is JobState.COMPLETED
    assert event.output is not None and event.output.video.url == json.loads(body)["outputUrl"]
    assert len(sandbox.find_requests(api="syncso", operation="get")) == gets_before + 1  # confirmed by GET


async def test_failed_generation_delivery(
    make_sandbox: Fn,
    sandbox_overrides: dict[str, Any],
    make_provider: Fn,
    host: Fn,
    received: list[httpx.Request],
) -> None:
    sandbox = make_sandbox(faults=[Fault(kind="job_error", api="syncso", error_type="generation_rejected")])
    provider = make_provider(sandbox)
    urls = host(sandbox)
    spec = provider.model_spec("lipsync-2")
    request = urls.request("lipsync-2")
    await provider.submit(request, spec, video_url=urls.video, audio_url=urls.audio, webhook_url=HOOK)

    async def arrived() -> bool:
        return bool(received)

    await eventually(arrived)
    event = await provider.parse_webhook(dict(received[0].headers), received[0].content)
    assert (event.status.state, event.status.raw_status, event.status.error_code) == (
        JobState.FAILED,
        "REJECTED",
        "generation_rejected",
    )
    assert event.output is None


def _forge(headers: dict[str, str], body: bytes, how: str) -> tuple[dict[str, str], bytes]:
    stamp = int(time.time())
    forged = dict(headers)
    if how == "tampered body":
        data = json.loads(body)
        data["outputUrl"] = "https://evil.example.com/x.mp4"
        return forged, json.dumps(data).encode()
    if how == "wrong secret":
        forged["sync-signature"] = signature("whsec_guess", stamp, body)
    elif how == "stale":
        forged["sync-signature"] = signature(SECRET, stamp - 3600, body)
    elif how == "missing":
        forged.pop("sync-signature")
    elif how == "garbled":
        forged["sync-signature"] = "v1=deadbeef"
    return forged, body


@pytest.mark.parametrize("how", ["tampered body", "wrong secret", "stale", "missing", "garbled"])
async def test_forged_deliveries_are_refused(
    how: str, sandbox: Sandbox, provider: Any, urls: Any, submit: Fn, received: list[httpx.Request]
) -> None:
    headers, body = await delivered(sandbox, provider, urls, submit, received)
    forged_headers, forged_body = _forge(headers, body, how)
    gets_before = len(sandbox.find_requests(api="syncso", operation="get"))
    with pytest.raises(WebhookVerificationError):
        await provider.parse_webhook(forged_headers, forged_body)
    assert len(sandbox.find_requests(api="syncso", operation="get")) == gets_before  # refused before any call


async def test_signed_but_unknown_generation_is_refused(sandbox: Sandbox, provider: Any) -> None:
    body = json.dumps({"id": "5f0c6b1e-0000-4000-8000-000000000000", "status": "COMPLETED"}).encode()
    headers = {"Sync-Signature": signature(SECRET, int(time.time()), body)}
    with pytest.raises(WebhookVerificationError, match=r"unknown to sync\.so"):
        await provider.parse_webhook(headers, body)


async def test_no_secret_configured(
    sandbox: Sandbox, make_provider: Fn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNC_WEBHOOK_SECRET", raising=False)
    provider = make_provider(sandbox, secret=None)
    with pytest.raises(WebhookVerificationError) as caught:
        await provider.parse_webhook({"Sync-Signature": "t=1,v1=00"}, b"{}")
    assert "SYNC_WEBHOOK_SECRET" in str(caught.value)


async def test_secret_from_the_configured_env_var(
    sandbox: Sandbox,
    make_provider: Fn,
    urls: Any,
    submit: Fn,
    received: list[httpx.Request],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_SYNC_SECRET", SECRET)

    provider = SyncsoProvider(
        ProviderContext(
            settings=ProviderSettings(webhook_secret_env="MY_SYNC_SECRET"),
            api_key=SecretStr("sandbox-syncso-key"),
            transport=sandbox.transport(),
        )
    )
    try:
        headers, body = await delivered(sandbox, provider, urls, submit, received)
        assert (await provider.parse_webhook(headers, body)).status.state is JobState.COMPLETED
    finally:
        await provider.aclose()


async def test_plain_http_webhook_refused_unless_allowed_for_loopback(
    sandbox: Sandbox, make_provider: Fn, urls: Any
) -> None:

    strict = make_provider(sandbox)
    spec = strict.model_spec("lipsync-2")
    with pytest.raises(UnsupportedOptionError):
        strict.check(urls.request("lipsync-2", webhook_url="http://127.0.0.1:9/hook"), spec)
    relaxed = make_provider(sandbox, allow_insecure_webhooks=True)
    relaxed.check(urls.request("lipsync-2", webhook_url="http://127.0.0.1:9/hook"), spec)
    with pytest.raises(UnsupportedOptionError):
        relaxed.check(urls.request("lipsync-2", webhook_url="http://hooks.example.com/hook"), spec)
