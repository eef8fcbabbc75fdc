"""fal webhooks: documented bodies, Ed25519 signatures checked independently against the published JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.providers.fal._client import FalAsyncClient

pytestmark = pytest.mark.anyio

HOOK = "https://hooks.example.com/fal?tenant=7"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        return httpx.Response(200, json={"ok": True})


def public_keys(jwks: dict[str, Any]) -> list[Ed25519PublicKey]:
    """Decode a JWKS the way a receiver must: unpadded base64url ``x``, padded before decoding."""
    keys = []
    for key in jwks["keys"]:
        assert (key["kty"], key["crv"]) == ("OKP", "Ed25519")
        assert "=" not in key["x"]
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        keys.append(Ed25519PublicKey.from_public_bytes(raw))
    return keys


def verify(keys: list[Ed25519PublicKey], headers: httpx.Headers, body: bytes) -> bool:
    """An independent fal webhook check: rebuild the signed message from headers and raw body."""
    required = (
        "x-fal-webhook-request-id",
        "x-fal-webhook-user-id",
        "x-fal-webhook-timestamp",
        "x-fal-webhook-signature",
    )
    if any(name not in headers for name in required):
        return False
    if abs(time.time() - int(headers["x-fal-webhook-timestamp"])) > 300:
        return False
    message = "\n".join(
        [
            headers["x-fal-webhook-request-id"],
            headers["x-fal-webhook-user-id"],
            headers["x-fal-webhook-timestamp"],
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode("utf-8")
    signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


async def test_success_webhook_is_signed_and_verifiable(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    receiver = Receiver()
    sandbox = make_sandbox(webhook_transport=httpx.MockTransport(receiver), user_id="user-42")
    fal = FalAsyncClient(key="sandbox-fal-key", transport=sandbox.transport())
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    handle = await fal.submit("fal-ai/sync-lipsync/v2", args, webhook_url=HOOK)
    assert sandbox.wait_idle(20)
    result = await handle.get()
    await fal.aclose()

    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        jwks = (await http.get("https://rest.fal.ai/.well-known/jwks.json")).json()
    assert jwks == sandbox.jwks()
    keys = public_keys(jwks)

    (request,) = receiver.requests
    assert str(request.url) == HOOK
    body = json.loads(request.content)
    assert body == {
        "request_id": handle.request_id,
        "gateway_request_id": handle.request_id,
        "status": "OK",
        "payload": result,
    }
    assert request.headers["x-fal-webhook-request-id"] == handle.request_id
    assert request.headers["x-fal-webhook-user-id"] == "user-42"
    assert verify(keys, request.headers, request.content)

    tampered = request.content.replace(b'"OK"', b'"KO"')
    assert tampered != request.content
    assert not verify(keys, request.headers, tampered)
    forged = httpx.Headers({**request.headers, "x-fal-webhook-request-id": "someone-else"})
    assert not verify(keys, forged, request.content)


async def test_key_pair_is_deterministic_from_the_seed(make_sandbox: Callable[..., Sandbox]) -> None:
    assert make_sandbox(seed=1).jwks() == make_sandbox(seed=1).jwks()
    assert make_sandbox(seed=1).jwks() != make_sandbox(seed=2).jwks()


async def test_error_webhook_carries_the_error_body(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    receiver = Receiver()
    sandbox = make_sandbox(webhook_transport=httpx.MockTransport(receiver))
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        submitted = await http.post(
            "https://queue.fal.run/fal-ai/sync-lipsync/v3",
            params={"fal_webhook": HOOK},
            json={"video_url": "https://example.com/missing.mp4", "audio_url": hosted(sandbox, media.audio)},
            headers={"Authorization": "Key sandbox-fal-key"},
        )
        request_id = submitted.json()["request_id"]
        assert sandbox.wait_idle(20)
        result = await http.get(
            submitted.json()["response_url"], headers={"Authorization": "Key sandbox-fal-key"}
        )
    (request,) = receiver.requests
    body = json.loads(request.content)
    assert body["status"] == "ERROR" and body["request_id"] == request_id
    assert isinstance(body["error"], str) and body["error"]
    assert body["payload"] == result.json()
    assert body["payload"]["detail"][0]["type"] == "file_download_error"
    assert verify(public_keys(sandbox.jwks()), request.headers, request.content)


async def test_cancelled_job_webhook(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    receiver = Receiver()
    sandbox = make_sandbox(webhook_transport=httpx.MockTransport(receiver), queue_seconds=30)
    fal = FalAsyncClient(key="sandbox-fal-key", transport=sandbox.transport())
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    handle = await fal.submit("fal-ai/sync-lipsync/v2", args, webhook_url=HOOK)
    await handle.cancel()
    assert sandbox.wait_idle(20)
    await fal.aclose()
    (request,) = receiver.requests
    body = json.loads(request.content)
    assert body["status"] == "ERROR"
    assert body["payload"] == {
        "detail": "Request was cancelled by the client",
        "error_type": "client_cancelled",
    }


async def test_failing_receiver_is_retried(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    statuses = [500, 500]
    calls: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(statuses.pop(0) if statuses else 204)

    sandbox = make_sandbox(webhook_transport=httpx.MockTransport(flaky), fal_webhook_attempts=5)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        await http.post(
            "https://queue.fal.run/fal-ai/sync-lipsync/v2",
            params={"fal_webhook": HOOK},
            json={"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)},
            headers={"Authorization": "Key sandbox-fal-key"},
        )
        assert sandbox.wait_idle(20)
    assert [d.status_code for d in sandbox.webhook_deliveries] == [500, 500, 204]
    assert len({c.content for c in calls}) == 1, "every attempt carries the same body"
    keys = public_keys(sandbox.jwks())
    assert all(verify(keys, c.headers, c.content) for c in calls)


async def test_unreachable_receiver_without_network(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    """Without webhook_transport only loopback receivers are reachable: anything else fails, recorded."""
    await http.post(
        "https://queue.fal.run/fal-ai/sync-lipsync/v2",
        params={"fal_webhook": HOOK},
        json={"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)},
        headers={"Authorization": "Key sandbox-fal-key"},
    )
    assert sandbox.wait_idle(20)
    (delivery,) = sandbox.webhook_deliveries
    assert delivery.status_code is None and delivery.error and "no network" in delivery.error
