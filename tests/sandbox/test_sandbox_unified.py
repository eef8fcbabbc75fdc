"""The unified task API: create, query, model rules, error envelopes, expiry and callbacks."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import ManualClock, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.contrib.sandbox.testing import wait_task_finished
from lipsyncer.core.media import probe

pytestmark = pytest.mark.anyio

API = "https://api.evolink.ai"
CREATE = f"{API}/v1/videos/generations"
AUTH = {"Authorization": "Bearer sandbox-unified-key"}


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name, base_url="https://files.example.com")


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message", "type"} <= set(error)
    return dict(error)


async def test_create_and_query_until_completed(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=1, processing_seconds=10)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        created = await http.post(
            CREATE,
            json={"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)},
            headers=AUTH,
        )
        assert created.status_code == 200
        task = created.json()
        assert re.fullmatch(r"task-unified-(\d+)-[a-z0-9]{8}", task["id"])
        assert task["id"].split("-")[2] == str(task["created"]) == str(int(clock.time()))
        assert task["object"] == "video.generation.task" and task["type"] == "video"
        assert (task["model"], task["status"], task["progress"]) == ("lipsync-2", "pending", 0)
        assert task["task_info"]["can_cancel"] is False
        assert {"estimated_time", "video_duration"} <= set(task["task_info"])
        assert {"billing_rule", "credits_reserved", "user_group"} <= set(task["usage"])
        assert "results" not in task and "error" not in task
        assert sandbox.wait_rendered()

        async def query() -> tuple[str, int]:
            body = (await http.get(f"{API}/v1/tasks/{task['id']}", headers=AUTH)).json()
            return body["status"], body["progress"]

        # pending for queue_seconds (1 s), processing for processing_seconds (10 s), then completed.
        statuses = [await query()]
        for step in (0.5, 0.5, 2.5, 5.0, 1.5, 1.0):  # t = 0.5, 1, 3.5, 8.5, 10, 11
            clock.advance(step)
            statuses.append(await query())
        assert [s for s, _ in statuses] == ["pending", "pending"] + ["processing"] * 4 + ["completed"]
        progress = [p for s, p in statuses if s == "processing"]
        assert progress == sorted(progress) and 10 <= progress[0] < progress[-1] <= 80
        assert statuses[-1] == ("completed", 100)

        final = (await http.get(f"{API}/v1/tasks/{task['id']}", headers=AUTH)).json()
        (url,) = final["results"]
        assert isinstance(url, str) and url.startswith(f"{API}/files/")
        assert (await http.get(url)).status_code == 200
        # Unified defaults: sync_mode loop (output as long as the audio), temperature 0.5.
        view = sandbox.job(task["id"])
        assert (view.sync_mode, view.temperature) == ("loop", 0.5)
        # The rule (reference section 1): a loop output lasts as long as the audio.
        expected = probe(media.audio).duration
        assert final["task_info"]["video_duration"] == pytest.approx(expected, abs=0.04)


async def test_results_as_objects(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    sandbox = make_sandbox(results_as_objects=True)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
        task = (await http.post(CREATE, json=body, headers=AUTH)).json()
        final = await wait_task_finished(http, f"{API}/v1/tasks/{task['id']}")
    (item,) = final["results"]
    assert set(item) == {"url"}


async def test_legacy_media_field_names(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    sandbox = make_sandbox(unified_legacy_media_fields=True)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        new_names = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
        refused = await http.post(CREATE, json=new_names, headers=AUTH)
        assert envelope(refused, 400)["param"] == "video"
        old_names = {"video": new_names["video_url"], "audio": new_names["audio_url"]}
        task = (await http.post(CREATE, json=old_names, headers=AUTH)).json()
        final = await wait_task_finished(http, f"{API}/v1/tasks/{task['id']}")
    assert final["status"] == "completed"


@pytest.mark.parametrize("model", ["lipsync-2", "lipsync-2-pro", "sync-3"])
async def test_each_model_completes(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media, model: str
) -> None:
    body = {
        "model": model,
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.long_audio),
        "sync_mode": "bounce",
    }
    task = (await http.post(CREATE, json=body, headers=AUTH)).json()
    assert task["model"] == model
    final = await wait_task_finished(http, f"{API}/v1/tasks/{task['id']}")
    assert final["status"] == "completed"
    assert sandbox.job(task["id"]).sync_mode == "bounce"


async def test_temperature_is_honoured_where_it_exists(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    media_urls = {
        "video_url": "https://files.example.com/v.mp4",
        "audio_url": "https://files.example.com/a.wav",
    }
    chosen = (await http.post(CREATE, json={**media_urls, "temperature": 0.2}, headers=AUTH)).json()
    sync3 = (await http.post(CREATE, json={**media_urls, "model": "sync-3"}, headers=AUTH)).json()
    assert sandbox.job(chosen["id"]).temperature == 0.2
    assert sandbox.job(sync3["id"]).temperature is None


@pytest.mark.parametrize("field", ["temperature", "active_speaker"])
async def test_sync3_refuses_lipsync2_options(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media, field: str
) -> None:
    value: Any = 0.5 if field == "temperature" else True
    body = {
        "model": "sync-3",
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        field: value,
    }
    error = envelope(await http.post(CREATE, json=body, headers=AUTH), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == field and error["code"] == 400
    assert sandbox.jobs == []
    # The same options are fine on lipsync-2.
    ok = await http.post(CREATE, json={**body, "model": "lipsync-2"}, headers=AUTH)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": "lipsync-9"}, "model"),
        ({"video_url": None}, "video_url"),
        ({"audio_url": "ftp://x/a.wav"}, "audio_url"),
        ({"audio_url": "data:audio/wav;base64,AAAA"}, "audio_url"),
        ({"sync_mode": "stretch"}, "sync_mode"),
        ({"temperature": 1.5}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"active_speaker": "yes"}, "active_speaker"),
        ({"callback_url": "http://hooks.example.com/cb"}, "callback_url"),
        ({"callback_url": "https://127.0.0.1/cb"}, "callback_url"),
        ({"callback_url": "https://10.1.2.3/cb"}, "callback_url"),
        ({"callback_url": "https://hooks.example.com/" + "x" * 2048}, "callback_url"),
    ],
)
async def test_invalid_parameters_name_the_param(
    sandbox: Sandbox, http: httpx.AsyncClient, change: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {
        "video_url": "https://files.example.com/v.mp4",
        "audio_url": "https://files.example.com/a.wav",
    }
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    error = envelope(await http.post(CREATE, json=body, headers=AUTH), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert sandbox.jobs == []


async def test_insecure_callbacks_allowed_only_for_loopback(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(allow_insecure_callbacks=True, queue_seconds=30)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {
            "video_url": "https://files.example.com/v.mp4",
            "audio_url": "https://files.example.com/a.wav",
        }
        ok = await http.post(CREATE, json={**body, "callback_url": "http://127.0.0.1:9/cb"}, headers=AUTH)
        assert ok.status_code == 200
        refused = await http.post(
            CREATE, json={**body, "callback_url": "http://hooks.example.com/cb"}, headers=AUTH
        )
        assert envelope(refused, 400)["param"] == "callback_url"


async def test_unknown_fields_recorded_or_rejected(make_sandbox: Callable[..., Sandbox]) -> None:
    body = {
        "video_url": "https://files.example.com/v.mp4",
        "audio_url": "https://files.example.com/a.wav",
        "seed": 7,
    }
    lenient = make_sandbox(queue_seconds=30)
    async with httpx.AsyncClient(transport=lenient.transport()) as http:
        task = (await http.post(CREATE, json=body, headers=AUTH)).json()
    assert lenient.ignored_fields == {task["id"]: ("seed",)}
    assert lenient.submits()[0].ignored_fields == ("seed",)
    strict = make_sandbox(strict=True)
    async with httpx.AsyncClient(transport=strict.transport()) as http:
        error = envelope(await http.post(CREATE, json=body, headers=AUTH), 400)
    assert error["param"] == "seed"


async def test_auth_and_task_ids(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Key sandbox-unified-key"}):
        error = envelope(await http.post(CREATE, json={}, headers=headers), 401)
        assert error["type"] == "authentication_error"
        envelope(await http.get(f"{API}/v1/tasks/task-unified-1-abcdefgh", headers=headers), 401)
    bad = envelope(await http.get(f"{API}/v1/tasks/12345", headers=AUTH), 400)
    assert bad["code"] == "invalid_task_id" and bad["type"] == "invalid_request_error"
    unknown = envelope(await http.get(f"{API}/v1/tasks/task-unified-1-abcdefgh", headers=AUTH), 404)
    assert unknown["type"] == "not_found_error"
    not_json = await http.post(CREATE, content=b"[", headers={**AUTH, "Content-Type": "application/json"})
    envelope(not_json, 400)


async def test_media_failure_is_a_failed_task(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    body = {"video_url": "https://files.example.com/missing.mp4", "audio_url": hosted(sandbox, media.audio)}
    task = (await http.post(CREATE, json=body, headers=AUTH)).json()
    final = await wait_task_finished(http, f"{API}/v1/tasks/{task['id']}")
    assert final["status"] == "failed" and final["progress"] == 0
    assert final["error"]["code"] == "invalid_parameters" and final["error"]["message"]
    assert "results" not in final


async def test_results_and_task_expire(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, queue_seconds=0, processing_seconds=1, result_ttl_seconds=60)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
        task = (await http.post(CREATE, json=body, headers=AUTH)).json()
        task_url = f"{API}/v1/tasks/{task['id']}"
        assert sandbox.wait_rendered()
        clock.advance(1)  # completed at t=1: the result and the task live until t=61
        (url,) = (await http.get(task_url, headers=AUTH)).json()["results"]
        clock.advance(59.5)
        assert (await http.get(url)).status_code == 200
        assert (await http.get(task_url, headers=AUTH)).status_code == 200
        clock.advance(0.5)
        assert (await http.get(url)).status_code == 404
        gone = await http.get(task_url, headers=AUTH)
        assert envelope(gone, 404)["type"] == "not_found_error"


class Receiver:
    """An in-process webhook receiver (for ``webhook_transport``) answering with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


async def test_callback_delivered_with_the_query_body(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    receiver = Receiver()
    sandbox = make_sandbox(webhook_transport=receiver.transport())
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {
            "video_url": hosted(sandbox, media.video),
            "audio_url": hosted(sandbox, media.audio),
            "callback_url": "https://hooks.example.com/lipsync?task=1",
        }
        task = (await http.post(CREATE, json=body, headers=AUTH)).json()
        assert sandbox.wait_idle(20)
        query = (await http.get(f"{API}/v1/tasks/{task['id']}", headers=AUTH)).json()
    (request,) = receiver.requests
    assert str(request.url) == "https://hooks.example.com/lipsync?task=1"
    assert request.method == "POST" and request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == query
    assert not any(h.lower().startswith("x-fal-webhook") for h in request.headers)
    (delivery,) = sandbox.webhook_deliveries
    assert delivery.ok and delivery.api == "unified" and delivery.job_id == task["id"]


async def test_callback_retried_three_times(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    receiver = Receiver([500, 502, 503, 500])
    clock = ManualClock()
    sandbox = make_sandbox(
        clock=clock,
        queue_seconds=0,
        processing_seconds=1,
        webhook_retry_scale=1.0,
        webhook_transport=receiver.transport(),
    )
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {
            "video_url": "https://files.example.com/missing.mp4",
            "audio_url": hosted(sandbox, media.audio),
            "callback_url": "https://hooks.example.com/cb",
        }
        await http.post(CREATE, json=body, headers=AUTH)
    assert sandbox.wait_rendered()

    def attempts() -> int:
        return len(sandbox.webhook_deliveries)

    # The first attempt when the task fails (t=0, a media failure ends it at once), then retries 1, 2 and 4 s
    # after each failure (webhook_retry_scale 1), then the API gives up.
    clock.advance(0)
    settle(lambda: attempts() == 1)
    for step, total in ((1, 2), (2, 3), (4, 4)):
        clock.advance(step - 0.5)
        assert not sandbox.wait_idle(0.1) and attempts() == total - 1, "not before its time"
        clock.advance(0.5)
        settle(lambda total=total: attempts() == total)  # type: ignore[misc]
    assert sandbox.wait_idle(10)
    clock.advance(3600)
    assert sandbox.wait_idle(10) and attempts() == 4, "no fifth attempt"
    assert [d.attempt for d in sandbox.webhook_deliveries] == [1, 2, 3, 4]
    assert [d.status_code for d in sandbox.webhook_deliveries] == [500, 502, 503, 500]
    assert len(receiver.requests) == 4
    assert json.loads(receiver.requests[0].content)["status"] == "failed"


def settle(check: Callable[[], bool], within: float = 10.0) -> None:
    """Wait (real time: a hang guard) for the sandbox's delivery threads to act on a clock move."""
    pause = threading.Event()
    while not check():
        assert within > 0, "the sandbox did not act on the clock move"
        pause.wait(0.01)
        within -= 0.01


async def test_callback_stops_retrying_once_delivered(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    receiver = Receiver([503])
    sandbox = make_sandbox(webhook_transport=receiver.transport())
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {
            "video_url": hosted(sandbox, media.video),
            "audio_url": hosted(sandbox, media.audio),
            "callback_url": "https://hooks.example.com/cb",
        }
        await http.post(CREATE, json=body, headers=AUTH)
        assert sandbox.wait_idle(20)
    assert [d.status_code for d in sandbox.webhook_deliveries] == [503, 200]
