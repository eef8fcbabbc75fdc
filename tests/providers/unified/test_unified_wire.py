"""What the unified provider puts on the wire, and what it makes of the answers: bodies, headers, statuses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import eventually
from lipsyncer.core.errors import ProviderRejectedError
from lipsyncer.core.schema import ActiveSpeaker, JobState, utcnow
from lipsyncer.providers.unified import UnifiedProvider

pytestmark = pytest.mark.anyio

API = "https://api.evolink.ai"
HOOK = "https://hooks.example.com/lipsync/unified"
Fn = Callable[..., Any]

# (model, normalized request fields, the body's fields besides model / video_url / audio_url)
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("lipsync-2", {}, {"sync_mode": "cut_off"}),
    (
        "lipsync-2",
        {"sync_mode": "loop", "temperature": 0.7, "active_speaker": ActiveSpeaker.automatic()},
        {"sync_mode": "loop", "temperature": 0.7, "active_speaker": True},
    ),
    ("lipsync-2", {"active_speaker": True}, {"sync_mode": "cut_off", "active_speaker": True}),
    ("lipsync-2", {"active_speaker": False}, {"sync_mode": "cut_off"}),
    (
        "lipsync-2-pro",
        {"sync_mode": "bounce", "temperature": 0.0},
        {"sync_mode": "bounce", "temperature": 0.0},
    ),
    (
        "lipsync-2-pro",
        {"sync_mode": "silence", "webhook_url": HOOK},
        {"sync_mode": "silence", "callback_url": HOOK},
    ),
    ("sync-3", {"sync_mode": "remap"}, {"sync_mode": "remap"}),
    ("sync-3", {"webhook_url": HOOK}, {"sync_mode": "cut_off", "callback_url": HOOK}),
]


@pytest.mark.parametrize(("model", "fields", "expected"), CASES)
async def test_create_body_and_headers(
    model: str,
    fields: dict[str, Any],
    expected: dict[str, Any],
    sandbox: Sandbox,
    provider: UnifiedProvider,
    urls: Any,
    submit: Fn,
) -> None:
    submission = await submit(provider, urls.request(model, **fields))

    [create] = sandbox.requests
    assert (create.method, create.host, create.path) == ("POST", "api.evolink.ai", "/v1/videos/generations")
    assert create.status == 200 and create.ignored_fields == ()
    assert create.body == {"model": model, "video_url": urls.video, "audio_url": urls.audio, **expected}
    assert create.headers["authorization"] == "<redacted>"  # sent (the sandbox accepted it), never logged
    assert create.headers["content-type"] == "application/json"
    assert create.headers["user-agent"].startswith("lipsyncer/")
    assert submission.remote_id.startswith("task-unified-")
    assert submission.endpoint == "/v1/videos/generations"
    assert submission.status_url == f"{API}/v1/tasks/{submission.remote_id}"
    assert submission.initial_status is not None and submission.initial_status.state is JobState.QUEUED
    assert {"created", "task_info", "usage"} <= set(submission.provider_data)


async def test_legacy_media_field_names(
    make_sandbox: Fn, make_provider: Fn, host: Fn, submit: Fn, job: Fn, finish: Fn
) -> None:
    sandbox = make_sandbox(unified_legacy_media_fields=True)
    urls = host(sandbox)
    provider = make_provider(sandbox, media_fields="legacy")

    submission = await submit(provider, urls.request("lipsync-2"))

    [create] = sandbox.requests
    assert create.body == {
        "model": "lipsync-2",
        "video": urls.video,
        "audio": urls.audio,
        "sync_mode": "cut_off",
    }
    statuses = await finish(provider, job(submission))
    assert statuses[-1].state is JobState.COMPLETED


async def test_base_url_points_at_a_white_label_copy(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    provider = make_provider(sandbox, base_url="https://lipsync.reseller.example/")

    submission = await submit(provider, urls.request("lipsync-2"))

    [create] = sandbox.requests
    assert create.host == "lipsync.reseller.example"
    assert submission.status_url == f"https://lipsync.reseller.example/v1/tasks/{submission.remote_id}"


@pytest.mark.parametrize("model", ["lipsync-2", "lipsync-2-pro", "sync-3"])
@pytest.mark.parametrize("as_objects", [False, True], ids=["results-as-strings", "results-as-objects"])
async def test_status_progression_and_result(
    model: str,
    as_objects: bool,
    make_sandbox: Fn,
    make_provider: Fn,
    host: Fn,
    submit: Fn,
    job: Fn,
    finish: Fn,
) -> None:
    sandbox = make_sandbox(queue_seconds=0.15, processing_seconds=0.4, results_as_objects=as_objects)
    provider = make_provider(sandbox)
    submission = await submit(provider, host(sandbox).request(model))
    handle = job(submission, model)

    statuses = await finish(provider, handle)

    states = [s.state for s in statuses]
    order = [JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED]
    assert states == sorted(states, key=order.index), "states only move forward"
    assert JobState.RUNNING in states and states[-1] is JobState.COMPLETED
    assert {s.raw_status for s in statuses} <= {"pending", "processing", "completed"}
    progress = [s.progress for s in statuses]
    assert all(p is not None and 0 <= p <= 100 for p in progress)
    assert progress == sorted(progress) and progress[-1] == 100

    output = await provider.result(handle)
    assert output.video.url.startswith(f"{API}/files/")
    assert sandbox.file_bytes(output.video.url), "the link serves the rendered video"
    created = datetime.fromtimestamp(submission.provider_data["created"], tz=timezone.utc)
    assert output.video.expires_at == created + timedelta(hours=24)
    assert output.raw["status"] == "completed"
    assert sandbox.job(submission.remote_id).model == model


async def test_result_ttl_is_configurable_and_expired_tasks_are_typed(
    make_sandbox: Fn, make_provider: Fn, host: Fn, submit: Fn, job: Fn, finish: Fn
) -> None:
    sandbox = make_sandbox(result_ttl_seconds=0.3)
    provider = make_provider(sandbox, result_ttl_seconds=0.3)
    submission = await submit(provider, host(sandbox).request("lipsync-2"))
    handle = job(submission)
    await finish(provider, handle)
    output = await provider.result(handle)
    created = datetime.fromtimestamp(submission.provider_data["created"], tz=timezone.utc)
    assert output.video.expires_at == created + timedelta(seconds=0.3)

    gone: list[ProviderRejectedError] = []

    async def expired() -> bool:
        try:
            await provider.status(handle)
        except ProviderRejectedError as exc:
            gone.append(exc)
            return True
        return False

    await eventually(expired)
    assert gone[0].code == "task_not_found" and gone[0].status_code == 404
    assert gone[0].retryable is False and gone[0].accepted is True
    assert output.video.expires_at is not None and output.video.expires_at <= utcnow(), (
        "never later than the API"
    )
