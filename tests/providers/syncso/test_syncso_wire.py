"""What the sync.so provider puts on the wire per model, and what it makes of the answers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from lipsyncer import ActiveSpeaker, JobState
from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.providers.syncso import SyncsoProvider

pytestmark = pytest.mark.anyio

HOOK = "https://hooks.example.com/lipsync/syncso?lipsyncer_job=job-1"
Fn = Callable[..., Any]

# (model, normalized request fields, the expected ``options``; sync_mode is always sent: sync.so defaults to loop)
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("lipsync-2", {}, {"sync_mode": "cut_off"}),
    (
        "lipsync-2",
        {"sync_mode": "loop", "temperature": 0.7, "active_speaker": ActiveSpeaker.automatic()},
        {"sync_mode": "loop", "temperature": 0.7, "active_speaker_detection": {"auto_detect": True}},
    ),
    (
        "lipsync-2-pro",
        {"active_speaker": ActiveSpeaker.at(12, 320.0, 180.0)},
        {"sync_mode": "cut_off", "active_speaker_detection": {"frame_number": 12, "coordinates": [320, 180]}},
    ),
    (
        "lipsync-1.9.0-beta",
        {"sync_mode": "bounce", "temperature": 0.0},
        {"sync_mode": "bounce", "temperature": 0.0},
    ),
    (
        "sync-3",
        {
            "sync_mode": "remap",
            "active_speaker": ActiveSpeaker.boxes([(10, 20, 110, 140), None, (12, 22, 112, 142)]),
        },
        {
            "sync_mode": "remap",
            "active_speaker_detection": {"bounding_boxes": [[10, 20, 110, 140], None, [12, 22, 112, 142]]},
        },
    ),
    (
        "react-1",
        {"model_mode": "head", "emotion": "happy", "temperature": 0.3},
        {"sync_mode": "cut_off", "temperature": 0.3, "model_mode": "head", "prompt": "happy"},
    ),
]


@pytest.mark.frozen_sandbox_clock  # the job is still queued when its create answer is read
@pytest.mark.parametrize(("model", "fields", "options"), CASES)
async def test_create_body_and_headers(
    model: str,
    fields: dict[str, Any],
    options: dict[str, Any],
    sandbox: Sandbox,
    provider: SyncsoProvider,
    urls: Any,
    submit: Fn,
) -> None:
    submission = await submit(provider, urls.request(model, **fields), key="job-7.a~b_c")

    [create] = sandbox.requests
    assert (create.method, create.host, create.path) == ("POST", "api.sync.so", "/v2/generate")
    assert create.headers["x-api-key"] == "<redacted>"  # the sandbox redacts what it records
    assert create.headers["idempotency-key"] == "job-7.a~b_c"
    assert create.body == {
        "model": model,
        "input": [{"type": "video", "url": urls.video}, {"type": "audio", "url": urls.audio}],
        "options": options,
    }
    assert create.ignored_fields == ()  # strict sandbox: nothing the model ignores was sent
    assert submission.remote_id == sandbox.jobs[0].id
    assert submission.initial_status is not None and submission.initial_status.state is JobState.QUEUED
    assert submission.status_url == f"https://api.sync.so/v2/generate/{submission.remote_id}"
    assert submission.provider_data["idempotency_key"] == "job-7.a~b_c"


async def test_webhook_url_argument_is_sent_not_the_requests(
    sandbox: Sandbox, provider: SyncsoProvider, urls: Any
) -> None:
    request = urls.request("lipsync-2", webhook_url="https://hooks.example.com/mine")
    spec = provider.model_spec("lipsync-2")
    assert spec is not None
    await provider.submit(request, spec, video_url=urls.video, audio_url=urls.audio, webhook_url=HOOK)
    [create] = sandbox.requests
    assert create.body["webhookUrl"] == HOOK
    assert "idempotency-key" not in create.headers  # no key given: none sent


async def test_status_result_and_frame_count(
    sandbox: Sandbox, provider: SyncsoProvider, urls: Any, submit: Fn, job: Fn, finish: Fn
) -> None:
    handle = job(await submit(provider, urls.request("lipsync-2", sync_mode="cut_off")))
    seen = await finish(provider, handle)
    assert [s.raw_status for s in seen][-1] == "COMPLETED"
    assert {s.raw_status for s in seen} <= {"PENDING", "PROCESSING", "COMPLETED"}

    output = await provider.result(handle)
    view = sandbox.job(handle.remote_id)
    assert output.video.url == f"https://api.sync.so{view.output_path}"
    assert sandbox.file_bytes(output.video.url)  # the link serves the rendered MP4
    # cut_off of a 1.0 s video and 1.4 s audio: min(V, A) = 1.0 s, billed as 25 frames at 25 fps
    assert output.video.duration == pytest.approx(1.0, abs=0.05)
    assert output.video.num_frames == math.ceil(round(output.video.duration * 25, 6))
    gets = sandbox.find_requests(api="syncso", operation="get")
    assert gets and all(r.path == f"/v2/generate/{handle.remote_id}" for r in gets)


@pytest.mark.parametrize("new_names", [False, True])
async def test_both_output_field_spellings(
    make_sandbox: Fn, make_provider: Fn, host: Fn, new_names: bool, submit: Fn, job: Fn, finish: Fn
) -> None:
    sandbox = make_sandbox(syncso_new_field_names=new_names)
    provider = make_provider(sandbox)
    urls = host(sandbox)
    handle = job(await submit(provider, urls.request("sync-3")), "sync-3")
    await finish(provider, handle)
    body_key = "outputMediaUrl" if new_names else "outputUrl"
    output = await provider.result(handle)
    assert output.raw[body_key] == output.video.url


async def test_cost_estimate_is_syncsos_own(sandbox: Sandbox, provider: SyncsoProvider, urls: Any) -> None:
    spec = provider.model_spec("lipsync-2-pro")
    assert spec is not None
    cost = await provider.estimate_cost(
        urls.request("lipsync-2-pro", sync_mode="loop"), spec, video_url=urls.video, audio_url=urls.audio
    )
    # loop: output = audio length (1.4 s) = 35 frames at 25 fps, at $0.083 per second
    assert float(cost) == pytest.approx(round(35 * 0.083 / 25, 4))
    [call] = sandbox.find_requests(api="syncso", operation="cost")
    assert call.path == "/v2/analyze/cost"
