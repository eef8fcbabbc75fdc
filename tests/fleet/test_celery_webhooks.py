"""Webhook wiring for a fleet: the receiver records a delivery and enqueues the completion on the workers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from fleet_support import SANDBOX_KEYS, FleetSetup

from lipsyncer import LipsyncRequest, load_settings
from lipsyncer.contrib.celery import Fleet, create_app, enqueue, fleet_webhook_app, result
from lipsyncer.contrib.sandbox import LoopbackServer
from lipsyncer.contrib.sandbox.testing import SampleMedia

pytestmark = pytest.mark.slow  # real Celery worker processes

GUARD = 90


class Deliveries(httpx.BaseTransport):
    """Where the sandbox delivers webhooks: kept, for the test to hand to the receiver."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()
        self._arrived = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.requests.append(request)
        self._arrived.set()
        return httpx.Response(200)

    @property
    def arrived(self) -> _ThreadEvent:
        return _ThreadEvent(self._arrived)


class _ThreadEvent:
    """Await a threading.Event from async code without blocking the loop."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    async def wait(self) -> None:
        await anyio.to_thread.run_sync(self._event.wait)


@pytest.fixture
def deliveries() -> Deliveries:
    return Deliveries()


@pytest.fixture
def sandbox_overrides(deliveries: Deliveries) -> dict[str, Any]:
    return {"processing_seconds": 0.3, "queue_seconds": 0.1, "webhook_transport": deliveries}


def test_a_webhook_enqueues_the_completion_on_the_workers(
    fleet_setup: FleetSetup,
    media: SampleMedia,
    served: LoopbackServer,
    deliveries: Deliveries,
    tmp_path: Path,
) -> None:
    """Polling waits ten minutes between look-ups here: only the webhook's enqueued completion can finish
    the job within the test."""
    settings = load_settings(fleet_setup.config, env=SANDBOX_KEYS).with_overrides(
        webhook_url="https://hooks.example/lipsync/fal-v2",
        polling={"initial_interval": 600, "max_interval": 600},
    )
    fleet = Fleet(settings, env=SANDBOX_KEYS)
    app = create_app(fleet)
    receiver = fleet_webhook_app(app)
    out = tmp_path / "hooked.mp4"

    async def deliver() -> int:
        with anyio.fail_after(GUARD):
            await deliveries.arrived.wait()
        delivery = deliveries.requests[0]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver)) as http:
            response = await http.post(
                f"http://receiver{delivery.url.raw_path.decode()}",
                content=delivery.content,
                headers=dict(delivery.headers),
            )
        return response.status_code

    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"):
            request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
            job_id = enqueue(request, idempotency_key="hooked", save_to=out, app=app)
            assert anyio.run(deliver) == 200
            value = result(job_id, app=app).get(timeout=GUARD)
    finally:
        fleet.runtime.close()
    assert value["job_id"] == job_id and value["saved_to"] == str(out.resolve()) and out.stat().st_size > 0
    assert deliveries.requests[0].url.params["lipsyncer_job"] == job_id
    assert len(served.sandbox.submits()) == 1
    statuses = served.sandbox.find_requests(api="fal", operation="status")
    assert len(statuses) <= 1  # the first look-up is ten minutes away: the webhook completed the job
