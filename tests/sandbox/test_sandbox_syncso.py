"""The emulated sync.so API over raw HTTP: auth, validation, idempotent replay, reads, cost, faults, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, eventually
from lipsyncer.core.media import output_duration, probe

pytestmark = pytest.mark.anyio
API = "https://api.sync.so"
KEY = {"x-api-key": "sandbox-syncso-key"}


def body(sandbox: Sandbox, media: SampleMedia, **extra: Any) -> dict[str, Any]:
    video = sandbox.put_file(media.video.read_bytes(), file_name="v.mp4", base_url="https://cdn.example.com")
    audio = sandbox.put_file(media.audio.read_bytes(), file_name="a.wav", base_url="https://cdn.example.com")
    return {
        "model": "lipsync-2",
        "input": [{"type": "video", "url": video}, {"type": "audio", "url": audio}],
        **extra,
    }


async def test_wrong_key_is_401_in_syncsos_shape(
    sandbox: Sandbox, http: httpx.AsyncClient, media: SampleMedia
) -> None:
    response = await http.post(f"{API}/v2/generate", json=body(sandbox, media), headers={"x-api-key": "nope"})
    assert response.status_code == 401
    assert set(response.json()) == {"statusCode", "message"} and response.json()["statusCode"] == 401
    assert sandbox.jobs == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"model": "lipsync-9"}, "model must be one of"),
        ({"input": [{"type": "video", "url": "https://x.example.com/v.mp4"}]}, "one video and one audio"),
        ({"options": {"sync_mode": "stretch"}}, "sync_mode"),
        ({"options": {"temperature": 1.5}}, "temperature"),
        ({"options": {"active_speaker_detection": {"coordinates": [1.5, 2]}}}, "coordinates"),
        ({"options": {"active_speaker_detection": {"bounding_boxes": [[1, 2, 3]]}}}, "bounding_boxes"),
        ({"model": "react-1", "options": {"model_mode": "torso"}}, "model_mode"),
        ({"model": "react-1", "options": {"prompt": "bored"}}, "prompt"),
        ({"webhookUrl": "http://hooks.example.com/x"}, "https"),
        ({"outputFileName": "bad name.mp4"}, "outputFileName"),
    ],
)
async def test_validation_at_create(
    change: dict[str, Any], says: str, sandbox: Sandbox, http: httpx.AsyncClient, media: SampleMedia
) -> None:
    payload = {**body(sandbox, media), **change}
    response = await http.post(f"{API}/v2/generate", json=payload, headers=KEY)
    assert response.status_code == 400 and response.json()["statusCode"] == 400
    assert says in response.json()["message"]
    assert sandbox.jobs == []


async def test_null_frames_are_fine_and_react_options_elsewhere_are_recorded(
    sandbox: Sandbox, http: httpx.AsyncClient, media: SampleMedia
) -> None:
    options = {"active_speaker_detection": {"bounding_boxes": [[1, 2, 30, 40], None]}, "prompt": "happy"}
    response = await http.post(f"{API}/v2/generate", json=body(sandbox, media, options=options), headers=KEY)
    assert response.status_code == 201
    assert sandbox.ignored_fields == {response.json()["id"]: ("options.prompt",)}


async def test_a_key_replays_its_generation(
    sandbox: Sandbox, http: httpx.AsyncClient, media: SampleMedia
) -> None:
    payload = body(sandbox, media)
    first = await http.post(f"{API}/v2/generate", json=payload, headers={**KEY, "Idempotency-Key": "k-1"})
    again = await http.post(f"{API}/v2/generate", json=payload, headers={**KEY, "Idempotency-Key": "k-1"})
    other = await http.post(f"{API}/v2/generate", json=payload, headers={**KEY, "Idempotency-Key": "k-2"})
    assert first.status_code == again.status_code == other.status_code == 201
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert len(sandbox.jobs) == 2


async def test_reads_list_and_the_generation_life(
    sandbox: Sandbox, http: httpx.AsyncClient, media: SampleMedia
) -> None:
    created = (await http.post(f"{API}/v2/generate", json=body(sandbox, media), headers=KEY)).json()
    assert created["status"] == "PENDING" and created["outputUrl"] is None
    assert created["options"] == {} and created["model"] == "lipsync-2"
    final: dict[str, Any] = {}

    async def completed() -> bool:
        nonlocal final
        final = (await http.get(f"{API}/v2/generate/{created['id']}", headers=KEY)).json()
        return bool(final["status"] == "COMPLETED")

    await eventually(completed)
    # sync.so's default sync mode is loop: the output lasts as long as the audio
    expected = output_duration("loop", probe(media.video).duration, probe(media.audio).duration)
    assert final["outputDuration"] == pytest.approx(expected, abs=1 / 25 + 0.01)
    assert final["outputUrl"].startswith("https://api.sync.so/files/") and sandbox.file_bytes(
        final["outputUrl"]
    )
    listed = (await http.get(f"{API}/v2/generations", params={"status": "COMPLETED"}, headers=KEY)).json()
    assert [g["id"] for g in listed] == [created["id"]]
    assert (await http.get(f"{API}/v2/generations", params={"status": "FAILED"}, headers=KEY)).json() == []
    missing = await http.get(f"{API}/v2/generate/not-a-generation", headers=KEY)
    assert missing.status_code == 404 and missing.json()["statusCode"] == 404


async def test_cost_estimate_counts_output_frames(
    sandbox: Sandbox, http: httpx.AsyncClient, media: SampleMedia
) -> None:
    payload = body(sandbox, media, model="sync-3", options={"sync_mode": "cut_off"})
    [estimate] = (await http.post(f"{API}/v2/analyze/cost", json=payload, headers=KEY)).json()
    frames = math.ceil(round(min(probe(media.video).duration, probe(media.audio).duration) * 25, 6))
    assert estimate == {
        "estimatedFrameCount": frames,
        "estimatedGenerationCost": round(frames * 0.133 / 25, 4),
    }
    assert sandbox.jobs == []


async def test_rate_limit_fault_carries_its_code_and_retry_after(
    sandbox: Sandbox, http: httpx.AsyncClient, media: SampleMedia
) -> None:
    sandbox.add_fault(
        Fault(
            kind="http_error",
            api="syncso",
            operation="create",
            status=429,
            error_type="concurrency_limit_reached",
            retry_after=9,
        )
    )
    response = await http.post(f"{API}/v2/generate", json=body(sandbox, media), headers=KEY)
    assert response.status_code == 429 and response.headers["retry-after"] == "9"
    assert response.json()["errorCode"] == "concurrency_limit_reached"


def test_job_errors_for_syncso_take_generation_codes() -> None:
    with pytest.raises(ValueError, match="generation_"):
        Fault(kind="job_error", api="syncso", error_type="file_download_error")


async def test_webhook_is_signed_with_the_secret(make_sandbox: Any, media: SampleMedia) -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    sandbox = make_sandbox(webhook_transport=httpx.MockTransport(receive), syncso_webhook_secret="whsec_abc")
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        payload = body(sandbox, media, webhookUrl="https://hooks.example.com/s")
        created = (await http.post(f"{API}/v2/generate", json=payload, headers=KEY)).json()

    async def arrived() -> bool:
        return bool(seen)

    await eventually(arrived)
    raw = seen[0].content
    stamp, _, mac = seen[0].headers["sync-signature"].partition(",v1=")
    assert stamp.startswith("t=")
    expected = hmac.new(b"whsec_abc", stamp[2:].encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)
    delivered = json.loads(raw)
    assert delivered["id"] == created["id"] and delivered["status"] == "COMPLETED"
