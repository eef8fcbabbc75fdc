"""Counting for exactly-once checks: accepted submits per marker, completed jobs, jobs in flight."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault, ManualClock, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media

pytestmark = pytest.mark.anyio

QUEUE = "https://queue.fal.run"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}
API = "https://api.evolink.ai"
UNIFIED_AUTH = {"Authorization": "Bearer sandbox-unified-key"}


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


async def fal_submit(
    http: httpx.AsyncClient,
    sandbox: Sandbox,
    media: Media,
    *,
    marker: str | None = None,
    key: str | None = None,
    endpoint: str = "fal-ai/sync-lipsync/v2",
) -> str:
    params = {"fal_webhook": f"https://hooks.invalid/fal?lipsyncer_job={marker}"} if marker else {}
    headers = {**FAL_AUTH, **({"Idempotency-Key": key} if key else {})}
    body = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    response = await http.post(f"{QUEUE}/{endpoint}", params=params, json=body, headers=headers)
    return str(response.json()["request_id"])


async def unified_create(http: httpx.AsyncClient, sandbox: Sandbox, media: Media, *, marker: str) -> str:
    body = {
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        "callback_url": f"https://hooks.invalid/cb?tenant=a&lipsyncer_job={marker}",
    }
    return str(
        (await http.post(f"{API}/v1/videos/generations", json=body, headers=UNIFIED_AUTH)).json()["id"]
    )


async def test_accepted_submits_group_by_marker_key_and_body(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    sandbox = make_sandbox(clock=ManualClock())
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        await fal_submit(http, sandbox, media, marker="a", key="k-1")
        await fal_submit(http, sandbox, media, marker="b", key="k-2")
        await unified_create(http, sandbox, media, marker="b")
        # The answer to this one is lost after the job was created: it still counts as accepted.
        sandbox.add_fault(Fault(kind="drop_after_accept", api="fal", operation="submit", times=1))
        with pytest.raises(httpx.RemoteProtocolError):
            await fal_submit(http, sandbox, media, marker="c", key="k-1")
        await fal_submit(http, sandbox, media)  # no marker at all
        # Refused before acceptance: never counted.
        sandbox.add_fault(Fault(kind="http_error", api="fal", operation="submit", status=429, times=1))
        await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json={}, headers=FAL_AUTH)

    assert sandbox.accepted_count() == 5
    assert sandbox.accepted_count("unified") == 1
    assert sandbox.accepted_submits() == {"a": 1, "b": 2, "c": 1, None: 1}
    assert sandbox.accepted_submits(api="fal") == {"a": 1, "b": 1, "c": 1, None: 1}
    assert sandbox.accepted_twice() == {"b": 2}
    assert sandbox.accepted_twice(api="fal") == {}
    assert sandbox.accepted_submits("idempotency_key") == {"k-1": 2, "k-2": 1, None: 2}
    assert sandbox.accepted_submits("tenant") == {None: 4, "a": 1}
    assert sandbox.accepted_submits(lambda job: job.endpoint) == {"fal-ai/sync-lipsync/v2": 4, "lipsync-2": 1}
    # Every body was different (each upload is a new URL), so grouping by body finds no repeat.
    assert sandbox.accepted_twice(by="body") == {}


async def test_completed_jobs_are_those_finished_with_an_output(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=1, processing_seconds=1)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        done = await fal_submit(http, sandbox, media)
        sandbox.add_fault(Fault(kind="job_error", api="fal", error_type="face_detection_error", times=1))
        failed = await fal_submit(http, sandbox, media)
        assert sandbox.wait_rendered()
        assert sandbox.completed_jobs() == []
        clock.advance(2)
        later = await fal_submit(http, sandbox, media)
    assert [job.id for job in sandbox.completed_jobs()] == [done]
    assert {job.id for job in sandbox.accepted_jobs()} == {done, failed, later}
    assert sandbox.completed_jobs("unified") == []


async def test_in_flight_now_and_at_most(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    clock = ManualClock()
    # Every job is in flight for exactly queue + processing = 2 s of sandbox time (rendered before that).
    sandbox = make_sandbox(clock=clock, queue_seconds=1, processing_seconds=1)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        for _ in range(3):  # t=0: three fal v2 jobs, in flight on [0, 2)
            await fal_submit(http, sandbox, media)
        clock.advance(1)  # t=1: one v3 job and one unified task, in flight on [1, 3)
        await fal_submit(http, sandbox, media, endpoint="fal-ai/sync-lipsync/v3")
        await unified_create(http, sandbox, media, marker="x")
        assert sandbox.wait_rendered()
        assert sandbox.in_flight() == 5 and sandbox.in_flight("fal") == 4
        clock.advance(1)  # t=2: the first three end as two new v2 jobs start
        await fal_submit(http, sandbox, media)
        await fal_submit(http, sandbox, media)
        assert sandbox.wait_rendered()
        assert sandbox.in_flight("fal", "fal-ai/sync-lipsync/v2") == 2
        clock.advance(5)
    assert sandbox.in_flight() == 0
    assert sandbox.max_in_flight() == 5  # [1, 2): three v2 + one v3 + one unified
    assert sandbox.max_in_flight("fal") == 4
    assert sandbox.max_in_flight("fal", "fal-ai/sync-lipsync/v2") == 3, (
        "an end and a start at t=2 do not overlap"
    )
    assert sandbox.max_in_flight("unified") == 1
