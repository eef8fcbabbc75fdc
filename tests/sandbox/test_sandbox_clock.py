"""The injectable clock: with ``ManualClock`` nothing in the sandbox moves until the test advances time."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lipsyncer.contrib.sandbox import ManualClock, MonotonicClock, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media

pytestmark = pytest.mark.anyio

QUEUE = "https://queue.fal.run"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}
API = "https://api.evolink.ai"
UNIFIED_AUTH = {"Authorization": "Bearer sandbox-unified-key"}
HOOK = "https://hooks.example.com/fal"


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


def test_manual_clock_moves_only_forward_and_only_when_told() -> None:
    clock = ManualClock(10.0, wall=1_800_000_000.0)
    woken: list[float] = []
    clock.on_advance(lambda: woken.append(clock.monotonic()))
    assert (clock.monotonic(), clock.time()) == (10.0, 1_800_000_000.0)
    assert clock.advance(2.5) == 12.5
    assert (clock.monotonic(), clock.time()) == (12.5, 1_800_000_002.5)
    assert woken == [12.5]
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


async def test_a_sandbox_uses_the_real_clock_by_default(sandbox: Sandbox) -> None:
    assert isinstance(sandbox.clock, MonotonicClock)


async def test_job_phases_follow_the_manual_clock(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=3, processing_seconds=10)
    assert sandbox.clock is clock
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
        job = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v3", json=body, headers=FAL_AUTH)).json()
        assert sandbox.wait_rendered()

        async def status() -> dict[str, object]:
            response = await http.get(job["status_url"], params={"logs": "1"}, headers=FAL_AUTH)
            return dict(response.json())

        # Rendered already, but the clock says the job waits in the queue for 3 s, then works for 10 s.
        assert (await status())["status"] == "IN_QUEUE"
        clock.advance(2.75)
        assert (await status())["status"] == "IN_QUEUE"
        clock.advance(0.25 + 4.0)  # 4 s into processing: the logs report 40 % (a line per tenth)
        running = await status()
        assert running["status"] == "IN_PROGRESS"
        assert [line["message"] for line in running["logs"]][-1] == "Processing: 40%"  # type: ignore[index]
        clock.advance(6.0)
        done = await status()
        assert done["status"] == "COMPLETED"
        assert done["metrics"] == {"inference_time": 10.0}


async def test_webhook_is_sent_when_the_clock_reaches_the_end_and_retried_on_its_schedule(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock(wall=1_800_000_000.0)
    attempts: list[httpx.Request] = []
    lock = threading.Lock()

    def receiver(request: httpx.Request) -> httpx.Response:
        with lock:
            attempts.append(request)
            return httpx.Response(500 if len(attempts) < 3 else 200)

    sandbox = make_sandbox(
        clock=clock,
        queue_seconds=1,
        processing_seconds=1,
        webhook_retry_scale=1.0,
        webhook_transport=httpx.MockTransport(receiver),
    )
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
        await http.post(
            f"{QUEUE}/fal-ai/sync-lipsync/v2", params={"fal_webhook": HOOK}, json=body, headers=FAL_AUTH
        )
    assert sandbox.wait_rendered()
    assert not sandbox.wait_idle(0.2), "nothing is sent before the job's end on the sandbox's clock"
    assert attempts == []

    # fal retries a failed delivery 1 s, then 2 s later (times webhook_retry_scale = 1).
    clock.advance(2)
    assert_settles(lambda: len(attempts) == 1)
    clock.advance(0.75)
    assert not sandbox.wait_idle(0.2) and len(attempts) == 1
    clock.advance(0.25)
    assert_settles(lambda: len(attempts) == 2)
    clock.advance(2)
    assert sandbox.wait_idle(10)
    assert len(attempts) == 3
    stamps = [int(r.headers["x-fal-webhook-timestamp"]) for r in attempts]
    assert stamps == [1_800_000_002, 1_800_000_003, 1_800_000_005], "signed at the clock's unix time"
    assert [d.attempt for d in sandbox.webhook_deliveries] == [1, 2, 3]
    assert json.loads(attempts[-1].content)["status"] == "OK"


def assert_settles(check: Callable[[], bool], within: float = 10.0) -> None:
    """Wait (real time, a hang guard) for the sandbox's threads to act on a clock move."""
    event = threading.Event()
    while not check():
        if event.wait(0.01) or within <= 0:
            raise AssertionError("the sandbox did not act on the clock move")
        within -= 0.01
