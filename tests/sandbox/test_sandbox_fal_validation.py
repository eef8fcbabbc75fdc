"""fal's per-endpoint input validation: typed 422 ``detail`` lists, reported at job time as on fal's queue."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fal_client
import httpx
import pytest

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.contrib.sandbox.testing import wait_fal_completed
from lipsyncer.core.schema import JobState
from lipsyncer.providers.fal._client import FalAsyncClient

pytestmark = pytest.mark.anyio

QUEUE = "https://queue.fal.run"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


async def run(http: httpx.AsyncClient, endpoint: str, body: Any) -> tuple[dict[str, Any], httpx.Response]:
    """Submit, wait for COMPLETED, fetch the result: (final status body, result response)."""
    submitted = await http.post(f"{QUEUE}/{endpoint}", json=body, headers=FAL_AUTH)
    assert submitted.status_code == 200, "fal's queue accepts any body; the app validates at run time"
    data = submitted.json()
    status = await wait_fal_completed(http, data["status_url"])
    return status, await http.get(data["response_url"], headers=FAL_AUTH)


def detail(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"detail"}
    items = body["detail"]
    assert isinstance(items, list) and items
    for item in items:
        assert {"loc", "msg", "type"} <= set(item)
        assert item["loc"][0] == "body"
    return list(items)


async def test_missing_media_fields(http: httpx.AsyncClient) -> None:
    status, result = await run(http, "fal-ai/sync-lipsync/v2", {"sync_mode": "loop"})
    items = detail(result)
    assert [(i["loc"], i["type"]) for i in items] == [
        (["body", "video_url"], "missing"),
        (["body", "audio_url"], "missing"),
    ]
    assert status["error_type"] == "missing" and status["error"]
    assert result.headers["x-fal-retryable"] == "false"


@pytest.mark.parametrize(
    ("endpoint", "field", "value"),
    [
        ("fal-ai/sync-lipsync", "model", "lipsync-2"),
        ("fal-ai/sync-lipsync/v2", "model", "lipsync-1.9.0-beta"),
        ("fal-ai/sync-lipsync/v2", "sync_mode", "stretch"),
        ("fal-ai/sync-lipsync/v3", "sync_mode", "LOOP"),
    ],
)
async def test_enums_per_endpoint(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media, endpoint: str, field: str, value: str
) -> None:
    body = {
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        field: value,
    }
    _, result = await run(http, endpoint, body)
    (item,) = detail(result)
    assert item["loc"] == ["body", field] and item["type"] == "enum" and item["input"] == value
    assert "expected" in item["ctx"]


@pytest.mark.parametrize(
    ("endpoint", "model"),
    [
        ("fal-ai/sync-lipsync", "lipsync-1.9.0-beta"),
        ("fal-ai/sync-lipsync", "lipsync-1.8.0"),
        ("fal-ai/sync-lipsync", "lipsync-1.7.1"),
        ("fal-ai/sync-lipsync/v2", "lipsync-2"),
        ("fal-ai/sync-lipsync/v2", "lipsync-2-pro"),
    ],
)
async def test_valid_models_render(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media, endpoint: str, model: str
) -> None:
    body = {
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        "model": model,
    }
    status, result = await run(http, endpoint, body)
    assert "error" not in status and result.status_code == 200
    assert sandbox.jobs[0].model == model


async def test_fields_an_endpoint_lacks_are_recorded_not_rejected(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    body = {
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        "model": "lipsync-2-pro",  # v2/pro has no model field
        "temperature": 0.4,  # no fal endpoint has temperature
        "options": {"sync_mode": "loop"},  # only v3 has options
    }
    _, result = await run(http, "fal-ai/sync-lipsync/v2/pro", body)
    assert result.status_code == 200
    (job,) = sandbox.jobs
    assert sorted(sandbox.ignored_fields[job.id]) == ["model", "options", "temperature"]
    assert sorted(sandbox.submits()[0].ignored_fields) == ["model", "options", "temperature"]
    assert job.sync_mode == "cut_off", "the ignored options.sync_mode must not apply"


async def test_sync3_ignored_options_are_recorded(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    body = {
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        "sync_mode": "cut_off",
        "options": {
            "sync_mode": "loop",
            "temperature": 0.7,
            "occlusion_detection_enabled": True,
            "model_mode": "lips",
            "prompt": "happy",
            "active_speaker_detection": {"auto_detect": True},
        },
    }
    _, result = await run(http, "fal-ai/sync-lipsync/v3", body)
    assert result.status_code == 200
    (job,) = sandbox.jobs
    assert sorted(job.ignored_fields) == [
        "options.model_mode",
        "options.occlusion_detection_enabled",
        "options.prompt",
        "options.temperature",
    ]
    assert job.sync_mode == "loop", "options.sync_mode overrides the top level on v3"
    assert result.json()["video"]["duration"] == pytest.approx(1.4, abs=0.04 + 1e-9)


async def test_strict_mode_rejects_what_would_be_ignored(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    sandbox = make_sandbox(strict=True)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        body = {
            "video_url": hosted(sandbox, media.video),
            "audio_url": hosted(sandbox, media.audio),
            "seed": 3,
            "options": {"temperature": 0.5, "active_speaker_detection": {"auto_detect": True, "mystery": 1}},
        }
        status, result = await run(http, "fal-ai/sync-lipsync/v3", body)
    items = {tuple(i["loc"]): i for i in detail(result)}
    assert items[("body", "seed")]["type"] == "extra_forbidden"
    assert items[("body", "options", "temperature")]["type"] == "feature_not_supported"
    assert "sync-3" in items[("body", "options", "temperature")]["msg"]
    assert items[("body", "options", "active_speaker_detection", "mystery")]["type"] == "extra_forbidden"
    assert status["error_type"] in {"extra_forbidden", "feature_not_supported"}
    assert sandbox.jobs[0].state is JobState.FAILED


@pytest.mark.parametrize(
    ("options", "loc", "error_type"),
    [
        ("fast", ["body", "options"], "dict_type"),
        ({"temperature": 2}, ["body", "options", "temperature"], "less_than_equal"),
        ({"model_mode": "mouth"}, ["body", "options", "model_mode"], "enum"),
        ({"prompt": "bored"}, ["body", "options", "prompt"], "enum"),
        (
            {"occlusion_detection_enabled": "yes"},
            ["body", "options", "occlusion_detection_enabled"],
            "bool_type",
        ),
        ({"active_speaker_detection": []}, ["body", "options", "active_speaker_detection"], "dict_type"),
        (
            {"active_speaker_detection": {"auto_detect": 1}},
            ["body", "options", "active_speaker_detection", "auto_detect"],
            "bool_type",
        ),
        (
            {"active_speaker_detection": {"frame_number": 3}},
            ["body", "options", "active_speaker_detection"],
            "value_error",
        ),
        (
            {"active_speaker_detection": {"frame_number": -1, "coordinates": [1, 2]}},
            ["body", "options", "active_speaker_detection", "frame_number"],
            "greater_than_equal",
        ),
        (
            {"active_speaker_detection": {"frame_number": 0, "coordinates": [1]}},
            ["body", "options", "active_speaker_detection", "coordinates"],
            "too_short",
        ),
        (
            {"active_speaker_detection": {"bounding_boxes": [[1, 2, 3, 4], [1, 2, 3]]}},
            ["body", "options", "active_speaker_detection", "bounding_boxes", 1],
            "too_short",
        ),
        # fal's published types: integers only, and no null frames (sync.so's own API allows them).
        (
            {"active_speaker_detection": {"bounding_boxes": [[1, 2, 3, 4], None]}},
            ["body", "options", "active_speaker_detection", "bounding_boxes", 1],
            "list_type",
        ),
        (
            {"active_speaker_detection": {"frame_number": 0, "coordinates": [1.5, 2]}},
            ["body", "options", "active_speaker_detection", "coordinates", 0],
            "int_from_float",
        ),
        (
            {"active_speaker_detection": {"bounding_boxes_url": 5}},
            ["body", "options", "active_speaker_detection", "bounding_boxes_url"],
            "string_type",
        ),
    ],
)
async def test_v3_options_schema(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media, options: Any, loc: list[Any], error_type: str
) -> None:
    body = {
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        "options": options,
    }
    _, result = await run(http, "fal-ai/sync-lipsync/v3", body)
    items = detail(result)
    assert (items[0]["loc"], items[0]["type"]) == (loc, error_type)


async def test_valid_v3_speaker_hints_pass(sandbox: Sandbox, http: httpx.AsyncClient, media: Media) -> None:
    speaker = {
        "frame_number": 0,
        "coordinates": [80, 60],
        "bounding_boxes": [[10, 10, 50, 50], [12, 10, 52, 50.0]],
        "bounding_boxes_url": "https://example.com/boxes.json",
        "face_image": base64.b64encode(b"png").decode(),
        "v3": True,
        "use_v2": False,
    }
    body = {
        "video_url": hosted(sandbox, media.video),
        "audio_url": hosted(sandbox, media.audio),
        "options": {"active_speaker_detection": speaker},
    }
    status, result = await run(http, "fal-ai/sync-lipsync/v3", body)
    assert result.status_code == 200 and "error" not in status
    assert sandbox.ignored_fields == {}


async def test_unreachable_media_is_file_download_error(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    url = "https://example.com/no-network.mp4"
    status, result = await run(
        http, "fal-ai/sync-lipsync/v2", {"video_url": url, "audio_url": hosted(sandbox, media.audio)}
    )
    (item,) = detail(result)
    assert item["type"] == "file_download_error" and item["loc"] == ["body", "video_url"]
    assert item["input"] == url and item["url"].endswith("#file_download_error")
    assert status["error_type"] == "file_download_error"
    missing = "https://v3.fal.media/files/nothing/here.wav"
    _, again = await run(
        http, "fal-ai/sync-lipsync/v2", {"video_url": hosted(sandbox, media.video), "audio_url": missing}
    )
    assert detail(again)[0]["loc"] == ["body", "audio_url"]


async def test_undecodable_media(sandbox: Sandbox, http: httpx.AsyncClient, media: Media) -> None:
    text = hosted(sandbox, media.text)
    _, bad_video = await run(
        http, "fal-ai/sync-lipsync/v2", {"video_url": text, "audio_url": hosted(sandbox, media.audio)}
    )
    assert detail(bad_video)[0]["type"] == "unsupported_video_format"
    # A WAV has no video stream; a silent MP4 has no audio stream.
    wav = hosted(sandbox, media.audio)
    _, no_frames = await run(http, "fal-ai/sync-lipsync/v2", {"video_url": wav, "audio_url": wav})
    assert detail(no_frames)[0]["type"] == "unsupported_video_format"
    mp4 = hosted(sandbox, media.video)
    _, no_sound = await run(http, "fal-ai/sync-lipsync/v2", {"video_url": mp4, "audio_url": mp4})
    assert detail(no_sound)[0]["type"] == "unsupported_audio_format"


async def test_data_uris_and_video_with_audio_track_are_inputs(
    sandbox: Sandbox, http: httpx.AsyncClient, media: Media
) -> None:
    audio = "data:audio/wav;base64," + base64.b64encode(media.audio.read_bytes()).decode()
    _, result = await run(
        http, "fal-ai/sync-lipsync/v2", {"video_url": hosted(sandbox, media.av), "audio_url": audio}
    )
    assert result.status_code == 200, result.text
    # The audio of a video file is usable as the audio input too.
    _, again = await run(
        http,
        "fal-ai/sync-lipsync/v2",
        {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.av)},
    )
    assert again.status_code == 200


async def test_duration_limits(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    sandbox = make_sandbox(max_video_seconds=0.5)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        _, result = await run(
            http,
            "fal-ai/sync-lipsync/v2",
            {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)},
        )
    (item,) = detail(result)
    assert item["type"] == "video_duration_too_long"
    assert item["ctx"] == {"max_duration": 0.5, "provided_duration": 1.0}

    sandbox = make_sandbox(max_audio_seconds=1.0)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        _, result = await run(
            http,
            "fal-ai/sync-lipsync/v2",
            {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)},
        )
    (item,) = detail(result)
    assert item["type"] == "audio_duration_too_long" and item["loc"] == ["body", "audio_url"]
    assert item["ctx"]["max_duration"] == 1.0 and item["ctx"]["provided_duration"] == pytest.approx(1.4)


async def test_invalid_json_body(http: httpx.AsyncClient) -> None:
    submitted = await http.post(
        f"{QUEUE}/fal-ai/sync-lipsync/v2",
        content=b"{not json",
        headers={**FAL_AUTH, "Content-Type": "application/json"},
    )
    data = submitted.json()
    await wait_fal_completed(http, data["status_url"])
    result = await http.get(data["response_url"], headers=FAL_AUTH)
    assert detail(result)[0]["type"] == "json_invalid"


async def test_fal_client_sees_the_422_list(sandbox: Sandbox, fal: FalAsyncClient) -> None:
    handle = await fal.submit(
        "fal-ai/sync-lipsync/v2", {"video_url": "https://example.com/v.mp4", "audio_url": 3}
    )
    with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
        await handle.get()
    error = caught.value
    assert error.status_code == 422
    assert isinstance(error.message, list) and error.message[0]["type"] == "string_type"
