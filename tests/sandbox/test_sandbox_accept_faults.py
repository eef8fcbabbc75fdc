"""Faults after acceptance (gateway pages, held answers) and result-fetch failures: the job exists, the answer lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import ValidationError

from lipsyncer.contrib.sandbox import Fault, ManualClock, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.core.schema import JobState

pytestmark = pytest.mark.anyio

QUEUE = "https://queue.fal.run"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}
API = "https://api.evolink.ai"
UNIFIED_AUTH = {"Authorization": "Bearer sandbox-unified-key"}


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


def inputs(sandbox: Sandbox, media: Media) -> dict[str, str]:
    return {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}


def assert_gateway_page(response: httpx.Response, status: int) -> None:
    """What nginx in front of an API answers: HTML naming the status, and no request id to follow up."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert f"<title>{status} " in response.text and "nginx" in response.text
    assert "x-fal-request-id" not in response.headers


@pytest.mark.parametrize("status", [502, 504])
async def test_fal_gateway_page_after_the_job_was_queued(
    make_sandbox: Callable[..., Sandbox], media: Media, status: int
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=1, processing_seconds=1)
    sandbox.add_fault(
        Fault(kind="gateway_after_accept", api="fal", operation="submit", status=status, times=1)
    )
    body = inputs(sandbox, media)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        lost = await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=body, headers=FAL_AUTH)
        assert_gateway_page(lost, status)
        (job,) = sandbox.jobs
        (record,) = sandbox.submits()
        assert (record.status, record.job_id, record.faults) == (status, job.id, ("gateway_after_accept",))

        # The queued job runs to completion although its submitter never learned its id.
        assert sandbox.wait_rendered()
        clock.advance(2)
        status_url = f"{QUEUE}/fal-ai/sync-lipsync/requests/{job.id}/status"
        assert (await http.get(status_url, headers=FAL_AUTH)).json()["status"] == "COMPLETED"
        assert sandbox.job(job.id).state is JobState.COMPLETED

        # A client that takes the page for a refusal and sends again is billed twice: the sandbox counts it.
        again = await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=body, headers=FAL_AUTH)
        assert again.status_code == 200
    assert sandbox.accepted_count() == 2
    assert list(sandbox.accepted_twice(by="body").values()) == [2]


async def test_unified_gateway_page_after_the_task_was_created(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=1, processing_seconds=1)
    sandbox.add_fault(Fault(kind="gateway_after_accept", api="unified", operation="create", status=504))
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        lost = await http.post(
            f"{API}/v1/videos/generations", json=inputs(sandbox, media), headers=UNIFIED_AUTH
        )
        assert_gateway_page(lost, 504)
        (job,) = sandbox.jobs
        assert job.id.startswith("task-unified-")
        assert sandbox.wait_rendered()
        clock.advance(2)
        task = (await http.get(f"{API}/v1/tasks/{job.id}", headers=UNIFIED_AUTH)).json()
    assert task["status"] == "completed" and task["results"]


async def test_gateway_page_before_acceptance_creates_nothing(sandbox: Sandbox, media: Media) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="create", status=502, ingress=True))
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        refused = await http.post(
            f"{API}/v1/videos/generations", json=inputs(sandbox, media), headers=UNIFIED_AUTH
        )
    assert_gateway_page(refused, 502)
    assert sandbox.jobs == [] and sandbox.accepted_count() == 0


async def test_hold_after_accept_answers_only_when_the_clock_has_moved(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock)
    sandbox.add_fault(Fault(kind="hold_after_accept", api="fal", operation="submit", seconds=30, times=2))
    body = inputs(sandbox, media)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        # A client whose read timeout fires first sees a timeout, though the job is queued.
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=body, headers=FAL_AUTH, timeout=0.2)
        (first,) = sandbox.jobs
        assert sandbox.submits()[0].job_id == first.id

        # A patient client gets its answer once 30 s have passed on the sandbox's clock, not before.
        answers: list[httpx.Response] = []

        async def patient() -> None:
            answers.append(await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=body, headers=FAL_AUTH))

        async with anyio.create_task_group() as group:
            group.start_soon(patient)
            with anyio.fail_after(20):  # a guard against hangs
                while len(sandbox.jobs) < 2:  # noqa: ASYNC110 - the sandbox's state, not an event we own
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            assert answers == [], "the answer is held while the clock stands still"
            clock.advance(29)
            await anyio.sleep(0.05)
            assert answers == []
            clock.advance(1)
    (answer,) = answers
    assert answer.status_code == 200 and answer.json()["request_id"] == sandbox.jobs[1].id


async def test_result_fetch_failures_hit_only_finished_jobs(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(
        clock=clock,
        queue_seconds=1,
        processing_seconds=1,
        faults=[
            Fault(kind="http_error", api="fal", operation="result", finished=True, status=503, times=1),
            Fault(kind="drop_connection", api="fal", operation="result", finished=True, times=1),
            Fault(kind="http_error", api="unified", operation="query", finished=True, status=429, times=1),
        ],
    )
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        fal = (
            await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=inputs(sandbox, media), headers=FAL_AUTH)
        ).json()
        task = (
            await http.post(f"{API}/v1/videos/generations", json=inputs(sandbox, media), headers=UNIFIED_AUTH)
        ).json()
        task_url = f"{API}/v1/tasks/{task['id']}"
        # Before completion the faults do not match: the result is "still in queue", the task is pending.
        assert (await http.get(fal["response_url"], headers=FAL_AUTH)).status_code == 400
        assert (await http.get(task_url, headers=UNIFIED_AUTH)).json()["status"] == "pending"
        assert [s.matched for s in sandbox.faults] == [0, 0, 0]

        assert sandbox.wait_rendered()
        clock.advance(2)
        assert (await http.get(fal["response_url"], headers=FAL_AUTH)).status_code == 503
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(fal["response_url"], headers=FAL_AUTH)
        output = await http.get(fal["response_url"], headers=FAL_AUTH)
        assert output.status_code == 200 and output.json()["video"]["url"]
        limited = await http.get(task_url, headers=UNIFIED_AUTH)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
        assert (await http.get(task_url, headers=UNIFIED_AUTH)).json()["status"] == "completed"
    assert [(s.matched, s.fired) for s in sandbox.faults] == [(3, 1), (2, 1), (2, 1)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "gateway_after_accept", "status": 500},
        {"kind": "hold_after_accept"},
    ],
)
def test_invalid_accept_faults_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Fault.model_validate(kwargs)


async def test_unfinished_only_faults_spare_submits_and_finished_jobs(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(
        clock=clock,
        queue_seconds=1,
        processing_seconds=1,
        faults=[Fault(kind="http_error", api="fal", finished=False, status=503)],
    )
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        submitted = await http.post(
            f"{QUEUE}/fal-ai/sync-lipsync/v2", json=inputs(sandbox, media), headers=FAL_AUTH
        )
        assert submitted.status_code == 200, "a submit names no known job: not matched"
        status_url = submitted.json()["status_url"]
        assert (await http.get(status_url, headers=FAL_AUTH)).status_code == 503
        assert sandbox.wait_rendered()
        clock.advance(2)
        assert (await http.get(status_url, headers=FAL_AUTH)).json()["status"] == "COMPLETED"
    (stats,) = sandbox.faults
    assert (stats.matched, stats.fired) == (1, 1)
