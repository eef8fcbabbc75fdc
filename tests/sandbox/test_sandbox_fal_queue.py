"""fal's queue protocol as the sandbox serves it, driven by the real fal-client and by raw httpx."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import fal_client
import httpx
import pytest

from lipsyncer.contrib.sandbox import SANDBOX_TAG, ManualClock, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.contrib.sandbox.testing import eventually, wait_fal_completed
from lipsyncer.core.media import probe
from lipsyncer.core.schema import JobState
from lipsyncer.providers.fal._client import FalAsyncClient

pytestmark = pytest.mark.anyio

QUEUE = "https://queue.fal.run"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


async def poll_fal(http: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    return await wait_fal_completed(http, f"{QUEUE}/fal-ai/sync-lipsync/requests/{request_id}/status")


ENDPOINTS = [
    "fal-ai/sync-lipsync",
    "fal-ai/sync-lipsync/v2",
    "fal-ai/sync-lipsync/v2/pro",
    "fal-ai/sync-lipsync/v3",
]


async def _completed(handle: fal_client.AsyncRequestHandle, *, logs: bool = False) -> fal_client.Completed:
    final: list[fal_client.Status] = []

    async def done() -> bool:
        status = await handle.status(with_logs=logs)
        final.append(status)
        return isinstance(status, fal_client.Completed)

    await eventually(done)
    result = final[-1]
    assert isinstance(result, fal_client.Completed)
    return result


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_full_flow_with_fal_client(
    endpoint: str, sandbox: Sandbox, fal: FalAsyncClient, media: Media
) -> None:
    video_url = await fal.upload_file(media.video)
    audio_url = await fal.upload_file(media.audio)
    assert video_url.startswith("https://v3.fal.media/files/")

    handle = await fal.submit(endpoint, {"video_url": video_url, "audio_url": audio_url, "sync_mode": "loop"})
    # Queue URLs keep only owner/app: the endpoint's sub-path is dropped.
    assert handle.status_url == f"{QUEUE}/fal-ai/sync-lipsync/requests/{handle.request_id}/status"
    assert handle.response_url == f"{QUEUE}/fal-ai/sync-lipsync/requests/{handle.request_id}"
    assert handle.cancel_url == handle.response_url + "/cancel"

    completed = await _completed(handle, logs=True)
    assert completed.error is None and completed.error_type is None
    assert completed.metrics["inference_time"] >= 0
    assert completed.logs and completed.logs[-1]["message"] == "Done"
    assert {"message", "level", "source", "timestamp"} <= set(completed.logs[0])

    output = await handle.get()
    video = output["video"]
    assert video["url"].startswith("https://v3.fal.media/files/")
    assert video["content_type"] == "video/mp4"
    has_extras = endpoint.endswith("/v3")
    assert ("num_frames" in video) is has_extras and ("width" in video) is has_extras

    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        download = await http.get(video["url"])
    assert download.status_code == 200
    assert int(download.headers["content-length"]) == video["file_size"] == len(download.content)
    with av.open(io.BytesIO(download.content)) as container:
        assert container.metadata.get("comment") == SANDBOX_TAG
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    # The sandbox renders the sync mode it was asked for: loop -> audio length.
    # The rule (reference section 1): a loop output lasts as long as the audio.
    expected = probe(media.audio).duration
    if has_extras:
        assert abs(video["duration"] - expected) <= 1 / video["fps"]
    view = sandbox.job(handle.request_id)
    assert view.state is JobState.COMPLETED and view.endpoint == endpoint


async def test_models_per_endpoint_are_recorded(sandbox: Sandbox, fal: FalAsyncClient, media: Media) -> None:
    url_v, url_a = hosted(sandbox, media.video), hosted(sandbox, media.audio)
    legacy = await fal.submit("fal-ai/sync-lipsync", {"video_url": url_v, "audio_url": url_a})
    v2pro = await fal.submit(
        "fal-ai/sync-lipsync/v2", {"video_url": url_v, "audio_url": url_a, "model": "lipsync-2-pro"}
    )
    pro = await fal.submit("fal-ai/sync-lipsync/v2/pro", {"video_url": url_v, "audio_url": url_a})
    v3 = await fal.submit("fal-ai/sync-lipsync/v3", {"video_url": url_v, "audio_url": url_a})
    assert sandbox.job(legacy.request_id).model == "lipsync-1.9.0-beta"
    assert sandbox.job(v2pro.request_id).model == "lipsync-2-pro"
    assert sandbox.job(pro.request_id).model == "lipsync-2-pro"
    assert sandbox.job(v3.request_id).model == "sync-3"
    assert [r.endpoint for r in sandbox.submits()] == ENDPOINTS
    assert sandbox.submits("fal-ai/sync-lipsync/v3")[0].job_id == v3.request_id


async def test_submit_records_webhook_timeout_and_priority(
    sandbox: Sandbox, fal: FalAsyncClient, media: Media
) -> None:
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    handle = await fal.submit(
        "fal-ai/sync-lipsync/v2",
        args,
        webhook_url="https://hooks.example/fal?job=1",
        start_timeout=30,
        priority="low",
    )
    record = sandbox.submits()[0]
    assert record.query == {"fal_webhook": "https://hooks.example/fal?job=1"}
    assert record.headers["x-fal-request-timeout"] == "30.0"
    assert record.headers["x-fal-queue-priority"] == "low"
    assert record.headers["authorization"] == "<redacted>"
    assert record.body == args
    view = sandbox.job(handle.request_id)
    assert (view.webhook_url, view.start_timeout, view.priority) == (
        "https://hooks.example/fal?job=1",
        30.0,
        "low",
    )


async def test_status_shapes_raw(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    # Each phase is pinned by a long queue or a long processing time, so no poll has to be lucky.
    queued = make_sandbox(queue_seconds=30)
    running = make_sandbox(queue_seconds=0, processing_seconds=30)
    fast = make_sandbox()
    for sandbox, expected in ((queued, "IN_QUEUE"), (running, "IN_PROGRESS"), (fast, "COMPLETED")):
        async with httpx.AsyncClient(transport=sandbox.transport()) as http:
            args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
            first = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=args, headers=FAL_AUTH)).json()
            submitted = await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=args, headers=FAL_AUTH)
            assert submitted.status_code == 200
            body = submitted.json()
            assert body["status"] == "IN_QUEUE" and body["request_id"] != first["request_id"]
            assert submitted.headers["x-fal-request-id"] == body["request_id"]
            if expected == "COMPLETED":
                await poll_fal(http, body["request_id"])
            for logs in ("true", "false", "1", "0"):
                response = await http.get(body["status_url"], params={"logs": logs}, headers=FAL_AUTH)
                data = response.json()
                assert data["status"] == expected
                assert "logs" in data, "fal-client requires the key"
                wants_logs = logs in ("true", "1")
                if expected == "IN_QUEUE":
                    assert response.status_code == 202
                    assert data["queue_position"] == 1 == body["queue_position"], "one request ahead"
                elif expected == "IN_PROGRESS":
                    assert response.status_code == 202
                    assert isinstance(data["logs"], list) if wants_logs else data["logs"] is None
                else:
                    assert response.status_code == 200
                    assert data["metrics"]["inference_time"] >= 0 and "error" not in data
                    assert isinstance(data["logs"], list) if wants_logs else data["logs"] is None
                    if wants_logs:
                        assert data["logs"][-1]["message"] == "Done"


async def test_result_is_400_until_finished_then_output(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    for overrides, detail in (
        ({"queue_seconds": 30}, "Request is still in queue"),
        ({"queue_seconds": 0, "processing_seconds": 30}, "Request is still in progress"),
    ):
        sandbox = make_sandbox(**overrides)
        async with httpx.AsyncClient(transport=sandbox.transport()) as http:
            args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
            body = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync", json=args, headers=FAL_AUTH)).json()
            early = await http.get(body["response_url"], headers=FAL_AUTH)
            assert (early.status_code, early.json()) == (400, {"detail": detail})
    sandbox = make_sandbox()
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
        body = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync", json=args, headers=FAL_AUTH)).json()
        await poll_fal(http, body["request_id"])
        final = await http.get(body["response_url"], headers=FAL_AUTH)
    assert final.status_code == 200 and set(final.json()) == {"video"}


async def test_unknown_ids_and_bad_paths(http: httpx.AsyncClient) -> None:
    base = f"{QUEUE}/fal-ai/sync-lipsync/requests/00000000-0000-4000-8000-000000000000"
    status = await http.get(base + "/status", headers=FAL_AUTH)
    assert (status.status_code, status.json()) == (404, {"status": "NOT_FOUND"})
    result = await http.get(base, headers=FAL_AUTH)
    assert result.status_code == 404 and "detail" in result.json()
    cancel = await http.put(base + "/cancel", headers=FAL_AUTH)
    assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
    # A status URL that kept the sub-path is not a queue URL.
    kept = await http.get(f"{QUEUE}/fal-ai/sync-lipsync/v2/requests/abc/status", headers=FAL_AUTH)
    assert kept.status_code == 404 and "sub-path" in kept.json()["detail"]
    other = await http.post(f"{QUEUE}/fal-ai/flux/dev", json={}, headers=FAL_AUTH)
    assert other.status_code == 404


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Key wrong"}, {"Authorization": "Bearer sandbox-fal-key"}],
    ids=["missing", "wrong-key", "wrong-scheme"],
)
async def test_bad_credentials_are_401_detail(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for method, url in [
        ("POST", f"{QUEUE}/fal-ai/sync-lipsync/v2"),
        ("GET", f"{QUEUE}/fal-ai/sync-lipsync/requests/x/status"),
        ("GET", f"{QUEUE}/fal-ai/sync-lipsync/requests/x"),
        ("PUT", f"{QUEUE}/fal-ai/sync-lipsync/requests/x/cancel"),
        ("POST", "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3"),
    ]:
        response = await http.request(method, url, json={}, headers=headers)
        assert response.status_code == 401, url
        assert isinstance(response.json()["detail"], str)


async def test_fal_client_surfaces_401(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox()
    client = FalAsyncClient(key="not-the-key", transport=sandbox.transport())
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await client.submit("fal-ai/sync-lipsync/v2", {"video_url": "x", "audio_url": "y"})
    await client.aclose()
    assert caught.value.status_code == 401
    assert sandbox.jobs == []


async def test_cancel_while_queued_then_already_completed(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    sandbox = make_sandbox(queue_seconds=30)
    client = FalAsyncClient(key="sandbox-fal-key", transport=sandbox.transport())
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    handle = await client.submit("fal-ai/sync-lipsync/v3", args)
    assert isinstance(await handle.status(), fal_client.Queued)
    await handle.cancel()
    status = await handle.status()
    assert isinstance(status, fal_client.Completed)
    assert status.error_type == "client_cancelled" and status.error
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await client.result("fal-ai/sync-lipsync/v3", handle.request_id)
    assert caught.value.status_code == 499
    assert caught.value.error_type == "client_cancelled"
    assert caught.value.response_headers["x-fal-error-type"] == "client_cancelled"
    with pytest.raises(fal_client.client.FalClientHTTPError) as again:
        await handle.cancel()
    assert again.value.status_code == 400
    assert again.value.response.json() == {"status": "ALREADY_COMPLETED"}
    assert sandbox.job(handle.request_id).state is JobState.CANCELLED
    await client.aclose()


async def test_cancel_in_progress_is_accepted(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    sandbox = make_sandbox(queue_seconds=0.0, processing_seconds=30)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
        body = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=args, headers=FAL_AUTH)).json()
        status = (await http.get(body["status_url"], headers=FAL_AUTH)).json()
        assert status["status"] == "IN_PROGRESS"
        cancel = await http.put(body["cancel_url"], headers=FAL_AUTH)
        assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        result = await http.get(body["response_url"], headers=FAL_AUTH)
        assert result.status_code == 499
        assert result.json() == {
            "detail": "Request was cancelled by the client",
            "error_type": "client_cancelled",
        }


async def test_cancel_after_completion_is_already_completed(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    body = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2/pro", json=args, headers=FAL_AUTH)).json()
    await poll_fal(http, body["request_id"])
    cancel = await http.put(body["cancel_url"], headers=FAL_AUTH)
    assert (cancel.status_code, cancel.json()) == (400, {"status": "ALREADY_COMPLETED"})
    assert (await http.get(body["response_url"], headers=FAL_AUTH)).status_code == 200


async def test_start_timeout_fails_a_job_that_never_started(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=30)
    client = FalAsyncClient(key="sandbox-fal-key", transport=sandbox.transport())
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    handle = await client.submit("fal-ai/sync-lipsync/v2", args, start_timeout=1.5)
    clock.advance(1.25)
    assert isinstance(await handle.status(), fal_client.Queued)
    clock.advance(0.25)  # 1.5 s queued: the start deadline has passed
    status = await handle.status()
    assert isinstance(status, fal_client.Completed) and status.error_type == "request_timeout"
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await client.result("fal-ai/sync-lipsync/v2", handle.request_id)
    error = caught.value
    assert error.status_code == 504 and error.error_type == "request_timeout"
    assert error.response_headers["x-fal-request-timeout-type"] == "user"
    assert error.response.json() == {"detail": "Request timed out", "error_type": "request_timeout"}
    await client.aclose()


async def test_start_timeout_longer_than_the_queue_is_harmless(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    headers = {**FAL_AUTH, "X-Fal-Request-Timeout": "5"}
    body = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=args, headers=headers)).json()
    status = await poll_fal(http, body["request_id"])
    assert "error" not in status


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
async def test_bad_request_timeout_header_is_bad_request(http: httpx.AsyncClient, value: str) -> None:
    headers = {**FAL_AUTH, "X-Fal-Request-Timeout": value}
    response = await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json={}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error_type"] == "bad_request"
    assert response.headers["x-fal-error-type"] == "bad_request"


async def test_queue_positions_count_only_the_requests_still_waiting_ahead(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=10)
    args = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:

        async def submit() -> dict[str, Any]:
            reply = await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=args, headers=FAL_AUTH)
            return dict(reply.json())

        async def positions(jobs: list[dict[str, Any]]) -> list[int | str]:
            out: list[int | str] = []
            for job in jobs:
                data = (await http.get(job["status_url"], headers=FAL_AUTH)).json()
                out.append(data["queue_position"] if data["status"] == "IN_QUEUE" else data["status"])
            return out

        early = [await submit(), await submit()]  # queued until t=10
        clock.advance(2)
        late = [await submit(), await submit(), await submit()]  # queued until t=12
        assert [job["queue_position"] for job in early + late] == [0, 1, 2, 3, 4]
        cancelled = await http.put(late[0]["cancel_url"], headers=FAL_AUTH)
        assert cancelled.json() == {"status": "CANCELLATION_REQUESTED"}
        assert await positions(early + late[1:]) == [0, 1, 2, 3], "a cancelled request no longer waits"
        clock.advance(8)  # t=10: the early two started
        assert await positions(early + late[1:]) == ["IN_PROGRESS", "IN_PROGRESS", 0, 1]
        clock.advance(2)  # t=12: the rest started too
        assert await positions(late[1:]) == ["IN_PROGRESS", "IN_PROGRESS"]
        assert (await submit())["queue_position"] == 0, "nothing waits ahead of a new request"
