"""fal webhook deliveries, signed by the sandbox, verified against its JWKS (fetched through ``base_url``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lipsyncer.contrib.sandbox import Fault, signed_message
from lipsyncer.core.errors import ProviderUnavailableError, WebhookVerificationError
from lipsyncer.core.schema import JobState
from lipsyncer.providers.fal.v2 import FalV2Provider
from lipsyncer.providers.fal.v3 import FalV3Provider

pytestmark = pytest.mark.anyio


async def _delivered(
    bed: Any, provider_cls: type = FalV3Provider, model: str = "sync-3"
) -> tuple[Any, Any, Any]:
    provider = bed.provider(provider_cls)
    submission = await bed.submit(provider, bed.request(model, webhook_url=bed.webhook))
    assert bed.sandbox.wait_idle(30)
    deliveries = [d for d in bed.sandbox.webhook_deliveries if d.job_id == submission.remote_id]
    assert deliveries and deliveries[0].ok
    return provider, submission, deliveries


async def test_a_signed_delivery_verifies_and_carries_the_output(bed: Any) -> None:
    provider, submission, [delivery] = await _delivered(bed)
    assert delivery.url == bed.webhook

    event = await provider.parse_webhook(delivery.headers, delivery.body)

    assert event.remote_id == submission.remote_id
    assert event.status.state is JobState.COMPLETED
    assert event.output is not None and event.output.video.url.startswith("https://v3.fal.media/files/")
    assert event.output.video.num_frames  # v3's extra File fields
    assert event.delivery_id and event.raw["status"] == "OK"
    # The keys came from the default JWKS URL on fal-client's REST host, rebased onto the sandbox.
    [jwks] = bed.sandbox.find_requests(operation="jwks")
    assert (jwks.host, jwks.path) == ("rest.fal.ai", "/.well-known/jwks.json")


async def test_parsing_is_repeatable_and_keys_are_cached(bed: Any) -> None:
    provider, _, [delivery] = await _delivered(bed)
    lowered = {k.lower(): v for k, v in delivery.headers.items()}
    first = await provider.parse_webhook(delivery.headers, delivery.body)
    again = await provider.parse_webhook(lowered, delivery.body)
    assert first == again
    assert len(bed.sandbox.find_requests(operation="jwks")) == 1


async def test_duplicate_deliveries_parse_to_the_same_event(bed: Any) -> None:
    bed.sandbox.add_fault(Fault(kind="webhook_duplicate", api="fal"))
    provider, submission, deliveries = await _delivered(bed, FalV2Provider, "lipsync-2")
    assert len(deliveries) == 2
    events = [await provider.parse_webhook(d.headers, d.body) for d in deliveries]
    assert {e.remote_id for e in events} == {submission.remote_id}
    assert events[0].status.state is events[1].status.state is JobState.COMPLETED


async def test_a_failed_job_is_delivered_as_failed_with_the_reason(bed: Any) -> None:
    bed.sandbox.add_fault(Fault(kind="job_error", api="fal", error_type="face_detection_error"))
    provider, submission, [delivery] = await _delivered(bed)
    event = await provider.parse_webhook(delivery.headers, delivery.body)
    assert event.remote_id == submission.remote_id and event.output is None
    status = event.status
    assert (status.state, status.error_code, status.retryable) == (
        JobState.FAILED,
        "face_detection_error",
        False,
    )
    assert status.error_message is not None and "video_url: Could not detect a face" in status.error_message


async def test_an_output_fal_could_not_serialise(bed: Any) -> None:
    """``status: OK, payload: null, payload_error``: completed, output to be fetched with result()."""
    provider, submission, [delivery] = await _delivered(bed)
    body = json.dumps(
        {"request_id": submission.remote_id, "status": "OK", "payload": None, "payload_error": "too large"}
    ).encode()
    event = await provider.parse_webhook(_resign(bed, delivery.headers, body), body)
    assert event.status.state is JobState.COMPLETED and event.output is None
    assert "too large" in event.status.logs[0].message


def _resign(bed: Any, headers: dict[str, str], body: bytes) -> dict[str, str]:
    """Headers for ``body`` signed with the sandbox's own key (the sandbox signs deterministically)."""
    from lipsyncer.contrib.sandbox.webhooks import WebhookSigner

    signer = WebhookSigner(bed.sandbox.config.seed, bed.sandbox.config.user_id)
    return signer.headers(headers["X-Fal-Webhook-Request-Id"], body)


# ------------------------------------------------------------------------------------------------- refusals


async def test_a_tampered_body_is_rejected(bed: Any) -> None:
    provider, _, [delivery] = await _delivered(bed)
    body = delivery.body.replace(b'"OK"', b'"ERROR"')
    with pytest.raises(WebhookVerificationError, match="signature"):
        await provider.parse_webhook(delivery.headers, body)


async def test_a_stale_timestamp_is_rejected(bed: Any) -> None:
    provider, _, [delivery] = await _delivered(bed)
    stale = {**delivery.headers, "X-Fal-Webhook-Timestamp": str(int(time.time()) - 301 - 5)}
    with pytest.raises(WebhookVerificationError, match="away from now"):
        await provider.parse_webhook(stale, delivery.body)
    # A fresh but altered timestamp breaks the signature instead.
    moved = {
        **delivery.headers,
        "X-Fal-Webhook-Timestamp": str(int(delivery.headers["X-Fal-Webhook-Timestamp"]) + 1),
    }
    with pytest.raises(WebhookVerificationError, match="signature"):
        await provider.parse_webhook(moved, delivery.body)


@pytest.mark.parametrize(
    "header",
    [
        "X-Fal-Webhook-Request-Id",
        "X-Fal-Webhook-User-Id",
        "X-Fal-Webhook-Timestamp",
        "X-Fal-Webhook-Signature",
    ],
)
async def test_a_missing_header_is_rejected(bed: Any, header: str) -> None:
    provider, _, [delivery] = await _delivered(bed)
    headers = {k: v for k, v in delivery.headers.items() if k != header}
    with pytest.raises(WebhookVerificationError, match=header.lower()):
        await provider.parse_webhook(headers, delivery.body)


async def test_a_signature_by_an_unknown_key_is_rejected(bed: Any) -> None:
    provider, _, [delivery] = await _delivered(bed)
    h = delivery.headers
    message = signed_message(
        h["X-Fal-Webhook-Request-Id"], h["X-Fal-Webhook-User-Id"], h["X-Fal-Webhook-Timestamp"], delivery.body
    )
    forged = {**h, "X-Fal-Webhook-Signature": Ed25519PrivateKey.generate().sign(message).hex()}
    with pytest.raises(WebhookVerificationError, match="matches no key"):
        await provider.parse_webhook(forged, delivery.body)
    with pytest.raises(WebhookVerificationError, match="not hex"):
        await provider.parse_webhook({**h, "X-Fal-Webhook-Signature": "zz"}, delivery.body)


async def test_a_body_naming_another_request_is_rejected(bed: Any) -> None:
    provider, _, [delivery] = await _delivered(bed)
    body = json.dumps({"request_id": "someone-else", "status": "OK", "payload": None}).encode()
    headers = _resign(bed, delivery.headers, body)
    with pytest.raises(WebhookVerificationError, match="another request"):
        await provider.parse_webhook(headers, body)


async def test_an_unreachable_jwks_is_not_a_verdict(bed: Any) -> None:
    """A JWKS that cannot be fetched means "try again later", not "forged"."""
    _, _, [delivery] = await _delivered(bed)
    other = bed.provider(FalV3Provider, jwks_url="https://rest.fal.ai/.well-known/missing.json")
    with pytest.raises(ProviderUnavailableError):
        await other.parse_webhook(delivery.headers, delivery.body)
    configured = bed.provider(FalV3Provider, jwks_url="https://rest.fal.ai/.well-known/jwks.json")
    assert (await configured.parse_webhook(delivery.headers, delivery.body)).remote_id
