"""Every fault kind produces exactly the documented wire shape, deterministically for a seed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fal_client
import httpx
import pytest
from pydantic import ValidationError

from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.contrib.sandbox.testing import eventually, wait_fal_completed, wait_task_finished
from lipsyncer.core.schema import JobState
from lipsyncer.providers.fal._client import FalAsyncClient

pytestmark = pytest.mark.anyio

QUEUE = "https://queue.fal.run"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}
API = "https://api.evolink.ai"
UNIFIED_AUTH = {"Authorization": "Bearer sandbox-unified-key"}
HOOK = "https://hooks.example.com/fal"


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


def fal_args(sandbox: Sandbox, media: Media) -> dict[str, str]:
    return {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}


async def submit(
    http: httpx.AsyncClient, body: dict[str, Any], endpoint: str = "fal-ai/sync-lipsync/v2"
) -> httpx.Response:
    return await http.post(f"{QUEUE}/{endpoint}", json=body, headers=FAL_AUTH)


# --------------------------------------------------------------------------------------------- http_error


async def test_fal_429_shape_and_fal_client_retries_it(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    sandbox.add_fault(
        Fault(kind="http_error", api="fal", operation="submit", status=429, retry_after=7, times=1)
    )
    refused = await submit(http, fal_args(sandbox, media))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert isinstance(refused.json()["detail"], str)
    assert sandbox.jobs == []
    sandbox.add_fault(Fault(kind="http_error", api="fal", operation="submit", status=429, times=1))
    plain = await submit(http, fal_args(sandbox, media))
    assert plain.status_code == 429 and "retry-after" not in plain.headers, "fal documents no Retry-After"

    sandbox.add_fault(Fault(kind="http_error", api="fal", operation="submit", status=429, times=2))
    client = FalAsyncClient(key="sandbox-fal-key", transport=sandbox.transport())
    # fal-client's own submit (lipsyncer's sends once; the shape is what fal-client's retry recognises).
    handle = await fal_client.AsyncClient.submit(client, "fal-ai/sync-lipsync/v2", fal_args(sandbox, media))
    await client.aclose()
    # fal-client retried the two 429s by itself: three submits reached the sandbox, one job exists.
    assert [r.status for r in sandbox.submits()] == [429, 429, 429, 429, 200]
    assert [j.id for j in sandbox.jobs] == [handle.request_id]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (500, "internal_error"),
        (502, "runner_incomplete_response"),
        (503, "runner_scheduling_failure"),
        (504, "request_timeout"),
    ],
)
async def test_fal_5xx_request_error_shape(
    http: httpx.AsyncClient, sandbox: Sandbox, status: int, error_type: str
) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="fal", operation="status", status=status))
    response = await http.get(f"{QUEUE}/fal-ai/sync-lipsync/requests/abc/status", headers=FAL_AUTH)
    assert response.status_code == status
    assert response.json() == {"detail": response.json()["detail"], "error_type": error_type}
    assert response.headers["x-fal-error-type"] == error_type


async def test_fal_custom_error_type_and_message(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    sandbox.add_fault(
        Fault(
            kind="http_error",
            api="fal",
            status=503,
            error_type="runner_disconnected",
            message="runner went away",
        )
    )
    response = await http.get(f"{QUEUE}/fal-ai/sync-lipsync/requests/abc", headers=FAL_AUTH)
    assert response.json() == {"detail": "runner went away", "error_type": "runner_disconnected"}


async def test_fal_ingress_error_is_html_and_retried_by_fal_client(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    sandbox.add_fault(
        Fault(kind="http_error", api="fal", operation="status", status=502, ingress=True, times=1)
    )
    response = await http.get(f"{QUEUE}/fal-ai/sync-lipsync/requests/abc/status", headers=FAL_AUTH)
    assert response.status_code == 502 and "nginx" in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "x-fal-request-id" not in response.headers

    sandbox.add_fault(
        Fault(kind="http_error", api="fal", operation="status", status=503, ingress=True, times=2)
    )
    client = FalAsyncClient(key="sandbox-fal-key", transport=sandbox.transport())
    handle = await client.submit("fal-ai/sync-lipsync/v2", fal_args(sandbox, media))
    status = await handle.status()
    await client.aclose()
    assert isinstance(status, (fal_client.Queued, fal_client.InProgress, fal_client.Completed))
    polls = sandbox.find_requests(api="fal", operation="status")
    assert [r.status for r in polls][-3:] == [503, 503, polls[-1].status] and polls[-1].status in (200, 202)


@pytest.mark.parametrize(
    ("status", "error_type", "retry_after"),
    [
        (429, "rate_limit_error", "60"),
        (500, "internal_server_error", None),
        (502, "upstream_error", None),
        (503, "service_unavailable_error", None),
        (402, "insufficient_quota_error", None),
        (403, "permission_error", None),
        (413, "request_too_large_error", None),
    ],
)
async def test_unified_http_error_envelopes(
    sandbox: Sandbox, http: httpx.AsyncClient, status: int, error_type: str, retry_after: str | None
) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="create", status=status))
    response = await http.post(f"{API}/v1/videos/generations", json={}, headers=UNIFIED_AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (status, error_type)
    assert isinstance(error["message"], str)
    assert response.headers.get("retry-after") == retry_after
    if status == 429:
        assert "60" in error["fallback_suggestion"]
    assert sandbox.jobs == []


async def test_unified_429_custom_retry_after(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="unified", status=429, retry_after=5))
    response = await http.get(f"{API}/v1/tasks/task-unified-1-abcdefgh", headers=UNIFIED_AUTH)
    assert response.headers["retry-after"] == "5"


async def test_cdn_http_error_uses_fal_shape(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="cdn", operation="token", status=503))
    response = await http.post(
        "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3", headers=FAL_AUTH
    )
    assert response.status_code == 503 and response.json()["error_type"] == "runner_scheduling_failure"


# ------------------------------------------------------------------------------------------ connections


async def test_drop_connection_in_process(sandbox: Sandbox, http: httpx.AsyncClient, media: Media) -> None:
    sandbox.add_fault(Fault(kind="drop_connection", api="fal", operation="submit", times=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await submit(http, fal_args(sandbox, media))
    assert sandbox.jobs == [], "a connection dropped before handling creates nothing"
    (record,) = sandbox.submits()
    assert record.dropped and record.status is None and record.faults == ("drop_connection",)
    assert (await submit(http, fal_args(sandbox, media))).status_code == 200


async def test_fal_client_retries_a_dropped_status_poll(
    sandbox: Sandbox, fal: FalAsyncClient, media: Media
) -> None:
    handle = await fal.submit("fal-ai/sync-lipsync/v2", fal_args(sandbox, media))
    sandbox.add_fault(Fault(kind="drop_connection", api="fal", operation="status", times=2))
    await handle.status()
    polls = sandbox.find_requests(operation="status")
    assert [r.dropped for r in polls] == [True, True, False]


async def test_drop_after_accept_creates_the_job(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    sandbox.add_fault(Fault(kind="drop_after_accept", api="fal", operation="submit", times=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await submit(http, fal_args(sandbox, media))
    (job,) = sandbox.jobs
    (record,) = sandbox.submits()
    assert record.dropped and record.status is None and record.job_id == job.id
    # The job runs to completion although its submitter never learned its id.
    assert sandbox.wait_idle(20)
    await wait_fal_completed(http, f"{QUEUE}/fal-ai/sync-lipsync/requests/{job.id}/status")
    assert sandbox.job(job.id).state is JobState.COMPLETED


async def test_drop_after_accept_on_unified_create(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    sandbox.add_fault(Fault(kind="drop_after_accept", api="unified", times=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(f"{API}/v1/videos/generations", json=fal_args(sandbox, media), headers=UNIFIED_AUTH)
    (job,) = sandbox.jobs
    assert job.id.startswith("task-unified-")
    final = await wait_task_finished(http, f"{API}/v1/tasks/{job.id}")
    assert final["status"] == "completed"


async def test_slow_before_and_after(sandbox: Sandbox, media: Media) -> None:
    async with (
        httpx.AsyncClient(transport=sandbox.transport(), timeout=0.2) as http,
        httpx.AsyncClient(transport=sandbox.transport()) as patient,
    ):
        sandbox.add_fault(Fault(kind="slow", api="fal", operation="submit", seconds=2.0, times=1))
        with pytest.raises(httpx.ReadTimeout):
            await submit(http, fal_args(sandbox, media))
        assert sandbox.jobs == [], "the request timed out before the sandbox handled it"

        sandbox.add_fault(Fault(kind="slow", api="fal", operation="submit", seconds=2.0, after=True, times=1))
        with pytest.raises(httpx.ReadTimeout):
            await submit(http, fal_args(sandbox, media))
        assert len(sandbox.jobs) == 1, "handled, then the answer came too late: outcome unknown to the client"
        assert sandbox.submits()[1].job_id == sandbox.jobs[0].id

        sandbox.add_fault(Fault(kind="slow", api="fal", operation="submit", seconds=0.05, times=1))
        assert (await submit(patient, fal_args(sandbox, media))).status_code == 200


# ------------------------------------------------------------------------------------------- job errors


@pytest.mark.parametrize(
    ("error_type", "status", "loc", "retryable"),
    [
        ("face_detection_error", 422, ["body", "video_url"], "false"),
        ("content_policy_violation", 422, ["body"], "false"),
        ("generation_timeout", 504, ["body"], "true"),
        ("internal_server_error", 500, ["body"], "true"),
        ("downstream_service_unavailable", 500, ["body"], "true"),
    ],
)
async def test_fal_job_error_model_shapes(
    sandbox: Sandbox,
    http: httpx.AsyncClient,
    media: Media,
    error_type: str,
    status: int,
    loc: list[str],
    retryable: str,
) -> None:
    sandbox.add_fault(Fault(kind="job_error", api="fal", error_type=error_type))
    body = (await submit(http, fal_args(sandbox, media))).json()
    final = await wait_fal_completed(http, body["status_url"])
    assert final["error_type"] == error_type and final["error"]
    result = await http.get(body["response_url"], headers=FAL_AUTH)
    assert result.status_code == status
    (item,) = result.json()["detail"]
    assert (item["type"], item["loc"]) == (error_type, loc)
    assert result.headers["x-fal-retryable"] == retryable
    assert sandbox.jobs[0].forced_error == error_type


async def test_fal_job_error_request_shape(sandbox: Sandbox, http: httpx.AsyncClient, media: Media) -> None:
    sandbox.add_fault(
        Fault(
            kind="job_error", api="fal", error_type="runner_disconnected", endpoint="fal-ai/sync-lipsync/v3"
        )
    )
    ok = (await submit(http, fal_args(sandbox, media), "fal-ai/sync-lipsync/v2")).json()
    failed = (await submit(http, fal_args(sandbox, media), "fal-ai/sync-lipsync/v3")).json()
    for body in (ok, failed):
        await wait_fal_completed(http, body["status_url"])
    assert (await http.get(ok["response_url"], headers=FAL_AUTH)).status_code == 200
    result = await http.get(failed["response_url"], headers=FAL_AUTH)
    assert result.status_code == 503
    assert result.json()["error_type"] == "runner_disconnected" and isinstance(result.json()["detail"], str)
    assert result.headers["x-fal-error-type"] == "runner_disconnected"


@pytest.mark.parametrize("code", ["content_policy_violation", "generation_timeout", "service_error"])
async def test_unified_job_error(sandbox: Sandbox, http: httpx.AsyncClient, media: Media, code: str) -> None:
    sandbox.add_fault(Fault(kind="job_error", api="unified", error_type=code))
    task = (
        await http.post(f"{API}/v1/videos/generations", json=fal_args(sandbox, media), headers=UNIFIED_AUTH)
    ).json()
    final = await wait_task_finished(http, f"{API}/v1/tasks/{task['id']}")
    assert (final["status"], final["progress"]) == ("failed", 0)
    assert final["error"]["code"] == code and final["error"]["message"]
    assert "results" not in final


# ---------------------------------------------------------------------------------------------- webhooks


class Receiver:
    def __init__(self, on_request: Callable[[httpx.Request], None] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()
        self.on_request = on_request

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.on_request is not None:
            self.on_request(request)
        with self.lock:
            self.requests.append(request)
        return httpx.Response(200)


async def webhook_job(sandbox: Sandbox, media: Media) -> str:
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        response = await http.post(
            f"{QUEUE}/fal-ai/sync-lipsync/v2",
            params={"fal_webhook": HOOK},
            json=fal_args(sandbox, media),
            headers=FAL_AUTH,
        )
    return str(response.json()["request_id"])


async def test_webhook_fail(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    receiver = Receiver()
    sandbox = make_sandbox(
        webhook_transport=httpx.MockTransport(receiver), faults=[Fault(kind="webhook_fail", times=1)]
    )
    first = await webhook_job(sandbox, media)
    second = await webhook_job(sandbox, media)
    assert sandbox.wait_idle(20)
    by_job = {d.job_id: d for d in sandbox.webhook_deliveries}
    assert by_job[first].dropped and by_job[first].status_code is None
    assert by_job[second].ok
    assert [json.loads(r.content)["request_id"] for r in receiver.requests] == [second]


async def test_webhook_duplicate(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    receiver = Receiver()
    sandbox = make_sandbox(
        webhook_transport=httpx.MockTransport(receiver), faults=[Fault(kind="webhook_duplicate")]
    )
    job_id = await webhook_job(sandbox, media)
    assert sandbox.wait_idle(20)
    assert len(receiver.requests) == 2
    assert receiver.requests[0].content == receiver.requests[1].content
    assert json.loads(receiver.requests[0].content)["request_id"] == job_id
    assert [d.duplicate for d in sandbox.webhook_deliveries] == [False, True]


async def test_webhook_early(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    seen_states: list[JobState] = []
    holder: dict[str, Sandbox] = {}

    def at_delivery(request: httpx.Request) -> None:
        job_id = json.loads(request.content)["request_id"]
        seen_states.append(holder["sandbox"].job(job_id).state)

    receiver = Receiver(at_delivery)
    sandbox = make_sandbox(
        webhook_transport=httpx.MockTransport(receiver), faults=[Fault(kind="webhook_early", seconds=30)]
    )
    holder["sandbox"] = sandbox
    job_id = await webhook_job(sandbox, media)
    assert sandbox.wait_idle(20)
    (request,) = receiver.requests
    assert json.loads(request.content)["status"] == "OK"
    assert seen_states == [JobState.RUNNING], "the webhook arrived while status still said IN_PROGRESS"
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        status = await http.get(f"{QUEUE}/fal-ai/sync-lipsync/requests/{job_id}/status", headers=FAL_AUTH)
        result = await http.get(f"{QUEUE}/fal-ai/sync-lipsync/requests/{job_id}", headers=FAL_AUTH)
    assert status.json()["status"] == "IN_PROGRESS"
    assert result.status_code == 400
    assert sandbox.webhook_deliveries[0].early


async def test_unified_callback_faults(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    receiver = Receiver()
    sandbox = make_sandbox(
        webhook_transport=httpx.MockTransport(receiver),
        faults=[Fault(kind="webhook_duplicate", api="unified", endpoint="lipsync-2-pro")],
    )
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        for model in ("lipsync-2", "lipsync-2-pro"):
            body = {
                **fal_args(sandbox, media),
                "model": model,
                "callback_url": "https://hooks.example.com/cb",
            }
            assert (
                await http.post(f"{API}/v1/videos/generations", json=body, headers=UNIFIED_AUTH)
            ).status_code == 200
        assert sandbox.wait_idle(20)
    models = sorted(json.loads(r.content)["model"] for r in receiver.requests)
    assert models == ["lipsync-2", "lipsync-2-pro", "lipsync-2-pro"]


# ------------------------------------------------------------------------------------------ determinism


async def _file_statuses(sandbox: Sandbox, count: int) -> list[int]:
    url = sandbox.put_file(b"x", file_name="x.bin")
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        return [(await http.get(url)).status_code for _ in range(count)]


async def test_probability_is_deterministic_for_a_seed(make_sandbox: Callable[..., Sandbox]) -> None:
    fault = Fault(kind="http_error", api="cdn", operation="file", status=503, probability=0.5)
    a = await _file_statuses(make_sandbox(seed=11, faults=[fault]), 40)
    b = await _file_statuses(make_sandbox(seed=11, faults=[fault]), 40)
    c = await _file_statuses(make_sandbox(seed=12, faults=[fault]), 40)
    assert a == b
    assert a != c
    assert 5 < a.count(503) < 35


async def test_every_and_times(make_sandbox: Callable[..., Sandbox]) -> None:
    every = await _file_statuses(
        make_sandbox(faults=[Fault(kind="http_error", api="cdn", status=500, every=3)]), 7
    )
    assert every == [200, 200, 500, 200, 200, 500, 200]
    times = await _file_statuses(
        make_sandbox(faults=[Fault(kind="http_error", api="cdn", status=500, times=2)]), 4
    )
    assert times == [500, 500, 200, 200]


async def test_fault_stats_and_runtime_changes(sandbox: Sandbox) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="cdn", status=500, times=1))
    await _file_statuses(sandbox, 3)
    (stats,) = sandbox.faults
    assert (stats.matched, stats.fired) == (3, 1)
    sandbox.clear_faults()
    assert sandbox.faults == []


async def test_faults_over_the_admin_endpoint(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    added = await http.post(
        "http://127.0.0.1/_sandbox/faults", json={"kind": "http_error", "api": "cdn", "status": 502}
    )
    assert added.status_code == 201
    assert await _file_statuses(sandbox, 1) == [502]
    listed = (await http.get("http://127.0.0.1/_sandbox/faults")).json()["faults"]
    assert listed[0]["fault"]["status"] == 502 and listed[0]["fired"] == 1
    bad = await http.post("http://127.0.0.1/_sandbox/faults", json={"kind": "job_error"})
    assert bad.status_code == 422
    assert (await http.delete("http://127.0.0.1/_sandbox/faults")).json() == {"faults": []}
    assert await _file_statuses(sandbox, 1) == [200]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "job_error"},
        {"kind": "job_error", "error_type": "nope"},
        {"kind": "job_error", "api": "unified", "error_type": "face_detection_error"},
        {"kind": "http_error", "api": "unified", "status": 418},
        {"kind": "http_error", "status": 500, "ingress": True},
        {"kind": "slow"},
        {"kind": "expired_links", "status": 500},
        {"kind": "http_error", "times": 1, "every": 2},
        {"kind": "explode"},
    ],
)
def test_invalid_faults_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Fault(**kwargs)


async def test_faults_never_touch_admin(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sandbox.add_fault(Fault(kind="drop_connection"))
    response = await http.get("http://127.0.0.1/_sandbox/jobs")
    assert response.status_code == 200

    async def dropped() -> bool:
        try:
            await http.get(f"{QUEUE}/fal-ai/sync-lipsync/requests/x/status", headers=FAL_AUTH)
        except httpx.RemoteProtocolError:
            return True
        return False

    await eventually(dropped)
