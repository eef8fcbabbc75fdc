"""Callbacks are unsigned: their body is only a hint, and the event always comes from a fresh look-up."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import eventually
from lipsyncer.core.errors import ProviderUnavailableError, WebhookVerificationError
from lipsyncer.core.schema import JobState
from lipsyncer.providers.unified import UnifiedProvider

pytestmark = pytest.mark.anyio

Fn = Callable[..., Any]
HEADERS = {"content-type": "application/json"}


def forged(task_id: str, **fields: Any) -> bytes:
    return json.dumps({"id": task_id, "object": "video.generation.task", **fields}).encode()


async def test_a_forged_completed_callback_yields_the_queried_state(
    make_sandbox: Fn, make_provider: Fn, host: Fn, submit: Fn
) -> None:
    sandbox = make_sandbox(queue_seconds=0, processing_seconds=300)
    provider = make_provider(sandbox)
    submission = await submit(provider, host(sandbox).request("lipsync-2"))
    body = forged(
        submission.remote_id, status="completed", progress=100, results=["https://evil.example/x.mp4"]
    )

    event = await provider.parse_webhook(HEADERS, body)

    assert event.remote_id == submission.remote_id
    assert event.status.state is JobState.RUNNING and event.status.raw_status == "processing"
    assert event.output is None
    assert event.raw["status"] == "processing" and "results" not in event.raw
    assert sandbox.requests[-1].operation == "query" and sandbox.requests[-1].path.endswith(
        submission.remote_id
    )


async def test_a_forged_failed_callback_cannot_fail_a_completed_task(
    sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn, job: Fn, finish: Fn
) -> None:
    submission = await submit(provider, urls.request("lipsync-2-pro"))
    await finish(provider, job(submission, "lipsync-2-pro"))
    body = forged(
        submission.remote_id, status="failed", error={"code": "content_policy_violation", "message": "x"}
    )

    event = await provider.parse_webhook(HEADERS, body)

    assert event.status.state is JobState.COMPLETED and event.status.error_code is None
    assert event.output is not None and sandbox.file_bytes(event.output.video.url)


async def test_a_real_callback_round_trip(make_sandbox: Fn, make_provider: Fn, host: Fn, submit: Fn) -> None:
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        request.read()
        received.append(request)
        return httpx.Response(200)

    sandbox = make_sandbox(allow_insecure_callbacks=True, webhook_transport=httpx.MockTransport(receiver))
    provider = make_provider(sandbox, allow_insecure_callbacks=True)
    submission = await submit(
        provider, host(sandbox).request("sync-3", webhook_url="http://127.0.0.1:9/hooks/unified")
    )

    async def delivered() -> bool:
        return bool(received)

    await eventually(delivered)
    [delivery] = received
    assert str(delivery.url) == "http://127.0.0.1:9/hooks/unified"

    event = await provider.parse_webhook(dict(delivery.headers), delivery.content)

    assert event.remote_id == submission.remote_id
    assert event.status.state is JobState.COMPLETED and event.output is not None
    assert event.output.video.url.startswith("https://api.evolink.ai/files/")
    assert event.delivery_id == f"{submission.remote_id}:completed"
    assert sandbox.requests[-1].operation == "query"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        forged(""),
        forged("abc"),
        forged("task-unified-../../v1/videos/generations"),
        forged("task-unified-1700000000-abc?x=1"),
        json.dumps({"id": 12345, "status": "completed"}).encode(),
    ],
)
async def test_bodies_without_a_valid_task_id_are_rejected_without_a_request(
    body: bytes, sandbox: Sandbox, provider: UnifiedProvider
) -> None:
    with pytest.raises(WebhookVerificationError):
        await provider.parse_webhook(HEADERS, body)
    assert sandbox.requests == []


async def test_a_callback_for_an_unknown_task_is_rejected(
    sandbox: Sandbox, provider: UnifiedProvider
) -> None:
    with pytest.raises(WebhookVerificationError):
        await provider.parse_webhook(HEADERS, forged("task-unified-1700000000-unknown1", status="completed"))
    assert [r.operation for r in sandbox.requests] == ["query"]


async def test_a_failed_look_up_is_retryable_so_the_receiver_asks_for_redelivery(
    sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    submission = await submit(provider, urls.request("lipsync-2"))
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="query", status=503, times=1))

    with pytest.raises(ProviderUnavailableError) as caught:
        await provider.parse_webhook(HEADERS, forged(submission.remote_id, status="completed"))

    assert caught.value.retryable
