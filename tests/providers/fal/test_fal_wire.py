"""What each fal provider puts on the wire, and what it makes of the answers.

Every provider x model: the exact JSON body, query and headers the sandbox received for a normalized request,
the status progression, and the normalized result. Then, with Hypothesis: any valid request routed to any fal
route is accepted by the strict sandbox (no unknown field, no ignored option, no 422).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipsyncer.core.errors import ConfigError, InvalidRequestError, UnsupportedOptionError
from lipsyncer.core.schema import ActiveSpeaker, JobState, SyncMode
from lipsyncer.providers.fal._base import FalProvider
from lipsyncer.providers.fal.legacy import FalLegacyProvider
from lipsyncer.providers.fal.v2 import FalV2Provider
from lipsyncer.providers.fal.v2_pro import FalV2ProProvider
from lipsyncer.providers.fal.v3 import FalV3Provider

pytestmark = pytest.mark.anyio

V3, V2, V2PRO, LEGACY = FalV3Provider, FalV2Provider, FalV2ProProvider, FalLegacyProvider
PROVIDERS: tuple[type[FalProvider], ...] = (V3, V2, V2PRO, LEGACY)


@dataclass(frozen=True)
class Case:
    name: str
    provider: type[FalProvider]
    model: str
    fields: dict[str, Any]
    extra: dict[str, Any]  # expected body beyond video_url / audio_url
    options: dict[str, Any] | None = None  # provider settings options
    query: dict[str, str] | None = None
    headers: dict[str, str] | None = None


FACE = "iVBORw0KGgo="  # any base64 text: the sandbox checks the type, fal decodes it

CASES = [
    Case("v3-default", V3, "sync-3", {}, {"sync_mode": "cut_off"}),
    Case(
        "v3-auto-speaker-webhook",
        V3,
        "sync-3",
        {
            "sync_mode": "loop",
            "active_speaker": ActiveSpeaker.automatic(),
            "webhook_url": "https://h.test/w?t=1",
        },
        {"sync_mode": "loop", "options": {"active_speaker_detection": {"auto_detect": True}}},
        query={"fal_webhook": "https://h.test/w?t=1"},
    ),
    Case(
        "v3-point",
        V3,
        "sync-3",
        {"sync_mode": "bounce", "active_speaker": ActiveSpeaker.at(12, 80, 60.0)},
        {
            "sync_mode": "bounce",
            "options": {"active_speaker_detection": {"frame_number": 12, "coordinates": [80, 60]}},
        },
    ),
    Case(
        "v3-boxes",
        V3,
        "sync-3",
        {"active_speaker": ActiveSpeaker.boxes([(10, 20, 110, 100.0), (12, 20, 112, 100)])},
        {
            "sync_mode": "cut_off",
            "options": {
                "active_speaker_detection": {"bounding_boxes": [[10, 20, 110, 100], [12, 20, 112, 100]]}
            },
        },
    ),
    Case(
        "v3-boxes-url",
        V3,
        "sync-3",
        {
            "sync_mode": "silence",
            "active_speaker": ActiveSpeaker.boxes_from("https://example.test/boxes.json"),
        },
        {
            "sync_mode": "silence",
            "options": {
                "active_speaker_detection": {"bounding_boxes_url": "https://example.test/boxes.json"}
            },
        },
    ),
    Case(
        "v3-face-image-data-uri",
        V3,
        "sync-3",
        {"active_speaker": ActiveSpeaker.face(f"data:image/png;base64,{FACE}")},
        {"sync_mode": "cut_off", "options": {"active_speaker_detection": {"face_image": FACE}}},
    ),
    Case(
        "v3-queue-settings",
        V3,
        "sync-3",
        {"sync_mode": "remap"},
        {"sync_mode": "remap"},
        options={"start_timeout": 600, "queue_priority": "low"},
        headers={"x-fal-request-timeout": "600.0", "x-fal-queue-priority": "low"},
    ),
    Case(
        "v2-lipsync-2",
        V2,
        "lipsync-2",
        {"sync_mode": "bounce"},
        {"sync_mode": "bounce", "model": "lipsync-2"},
    ),
    Case(
        "v2-lipsync-2-pro",
        V2,
        "lipsync-2-pro",
        {"sync_mode": "silence", "webhook_url": "http://127.0.0.1:9/hook"},
        {"sync_mode": "silence", "model": "lipsync-2-pro"},
        query={"fal_webhook": "http://127.0.0.1:9/hook"},
    ),
    Case("v2-pro", V2PRO, "lipsync-2-pro", {"sync_mode": "remap"}, {"sync_mode": "remap"}),
    Case(
        "v2-pro-normal-priority",
        V2PRO,
        "lipsync-2-pro",
        {},
        {"sync_mode": "cut_off"},
        options={"queue_priority": "normal"},
        headers={"x-fal-queue-priority": "normal"},
    ),
    Case(
        "legacy-1.9",
        LEGACY,
        "lipsync-1.9.0-beta",
        {},
        {"sync_mode": "cut_off", "model": "lipsync-1.9.0-beta"},
    ),
    Case(
        "legacy-1.8",
        LEGACY,
        "lipsync-1.8.0",
        {"sync_mode": "loop"},
        {"sync_mode": "loop", "model": "lipsync-1.8.0"},
    ),
    Case(
        "legacy-1.7.1",
        LEGACY,
        "lipsync-1.7.1",
        {"sync_mode": "remap"},
        {"sync_mode": "remap", "model": "lipsync-1.7.1"},
    ),
]


def test_every_model_of_every_provider_has_a_case() -> None:
    covered = {(c.provider.id, c.model) for c in CASES}
    assert covered == {(p.id, m.id) for p in PROVIDERS for m in p.models}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_wire_status_and_result(bed: Any, case: Case) -> None:
    provider = bed.provider(case.provider, **(case.options or {}))
    request = bed.request(case.model, **case.fields)

    submission = await bed.submit(provider, request)

    [sent] = bed.sandbox.submits()
    spec = provider.model_spec(case.model)
    assert spec is not None
    assert sent.endpoint == spec.endpoint
    assert sent.host == "queue.fal.run"  # fal's real host name, rebased onto loopback
    assert sent.body == {"video_url": bed.video_url, "audio_url": bed.audio_url, **case.extra}
    assert sent.query == (case.query or {})
    assert sent.headers["authorization"] == "<redacted>"
    for name in ("x-fal-request-timeout", "x-fal-queue-priority"):
        assert sent.headers.get(name) == (case.headers or {}).get(name)
    assert sent.ignored_fields == ()
    assert sent.status == 200

    assert submission.remote_id == sent.job_id
    assert submission.endpoint == spec.endpoint
    assert submission.provider_data == {"endpoint_id": spec.endpoint, "request_id": submission.remote_id}
    assert submission.initial_status is not None and submission.initial_status.state is JobState.QUEUED
    # fal's queue URLs keep only owner/app: the endpoint's sub-path (/v2/pro, /v3) is dropped.
    app = "/".join(spec.endpoint.split("/")[:2])
    assert submission.status_url == f"https://queue.fal.run/{app}/requests/{submission.remote_id}/status"

    job = bed.job(provider, submission, case.model)
    seen = await bed.wait(provider, job)
    states = [s.state for s in seen]
    assert states[-1] is JobState.COMPLETED
    order = [JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED]
    assert states == sorted(states, key=order.index)  # never goes backwards

    output = await provider.result(job)
    video = output.video
    assert video.url.startswith("https://v3.fal.media/files/")
    assert video.content_type == "video/mp4"
    assert video.file_size and video.file_size > 0
    if case.provider is V3:
        assert video.width and video.height and video.fps and video.duration and video.num_frames
    else:
        assert (video.width, video.height, video.fps, video.duration, video.num_frames) == (None,) * 5
    assert bed.sandbox.file_bytes(video.url)  # the link really serves the rendered output


async def test_v3_output_in_the_plain_file_shape_is_parsed(make_bed: Any) -> None:
    """fal types v3's output as ``{video: File}``; the richer VideoFile fields may not come."""
    bed = await make_bed(fal_v3_plain_file=True)
    provider = bed.provider(V3)
    submission = await bed.submit(provider, bed.request("sync-3"))
    job = bed.job(provider, submission, "sync-3")
    await bed.wait(provider, job)
    output = await provider.result(job)
    assert set(output.raw["video"]) == {"url", "content_type", "file_name", "file_size"}
    video = output.video
    assert (video.url, video.content_type, video.file_name, video.file_size) == (
        output.raw["video"]["url"],
        "video/mp4",
        output.raw["video"]["file_name"],
        output.raw["video"]["file_size"],
    )
    assert (video.width, video.height, video.fps, video.duration, video.num_frames) == (None,) * 5
    assert bed.sandbox.file_bytes(video.url)


async def test_status_progression_queue_position_and_logs(make_bed: Any) -> None:
    bed = await make_bed(queue_seconds=1.0, processing_seconds=1.0)
    provider = bed.provider(V3)
    submission = await bed.submit(provider, bed.request("sync-3"))
    job = bed.job(provider, submission, "sync-3")

    seen = await bed.wait(provider, job)

    distinct = [s.state for i, s in enumerate(seen) if i == 0 or s.state is not seen[i - 1].state]
    assert distinct == [JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED]
    queued = next(s for s in seen if s.state is JobState.QUEUED)
    assert queued.queue_position == 0 and queued.raw_status == "IN_QUEUE"
    running = [s for s in seen if s.state is JobState.RUNNING]
    assert running[-1].logs and running[-1].logs[0].message.startswith("Starting sync-3")
    assert {entry.level for s in running for entry in s.logs} <= {"INFO"}
    final = seen[-1]
    assert final.raw_status == "COMPLETED" and final.error_code is None and final.progress == 100
    assert final.logs[-1].message == "Done" and final.logs[-1].timestamp
    # Every look-up asked for logs, in fal-client's spelling.
    assert {r.query.get("logs") for r in bed.sandbox.find_requests(operation="status")} == {"true"}


async def test_a_job_resumes_from_its_stored_handle_alone(bed: Any) -> None:
    """Another process (another provider instance) finishes the job from the stored Job."""
    first = bed.provider(V2PRO)
    submission = await bed.submit(first, bed.request("lipsync-2-pro"))
    stored = bed.job(first, submission, "lipsync-2-pro").model_dump_json()
    await first.aclose()

    second = bed.provider(V2PRO)
    from lipsyncer.core.schema import Job

    job = Job.model_validate_json(stored)
    assert (await bed.wait(second, job))[-1].state is JobState.COMPLETED
    assert (await second.result(job)).video.url

    # Without the URLs (ids only), the handle is rebuilt from the endpoint id and the request id.
    bare = job.model_copy(update={"status_url": None, "result_url": None, "cancel_url": None})
    assert (await second.status(bare)).state is JobState.COMPLETED
    # URLs naming a foreign host are ignored: the key is only ever sent to fal's hosts.
    forged = job.model_copy(update={"status_url": "https://evil.test/x", "result_url": "https://evil.test/y"})
    assert (await second.result(forged)).video.url
    assert all(
        r.host == "queue.fal.run" for r in bed.sandbox.find_requests(api="fal") if r.operation != "jwks"
    )


# ----------------------------------------------------------------------------------- refusals before network


@pytest.mark.parametrize(
    ("provider", "model", "fields", "option"),
    [
        (V3, "sync-3", {"temperature": 0.5}, "temperature"),
        (V3, "sync-3", {"model_mode": "lips"}, "model_mode"),
        (V3, "sync-3", {"emotion": "happy"}, "emotion"),
        (V2, "lipsync-2", {"active_speaker": ActiveSpeaker.automatic()}, "active_speaker.auto"),
        (V2, "lipsync-2-pro", {"temperature": 0.1}, "temperature"),
        (V2PRO, "lipsync-2-pro", {"active_speaker": ActiveSpeaker.at(0, 1, 1)}, "active_speaker.point"),
        (
            LEGACY,
            "lipsync-1.9.0-beta",
            {"active_speaker": ActiveSpeaker.face(FACE)},
            "active_speaker.face_image",
        ),
        (LEGACY, "lipsync-1.7.1", {"temperature": 1.0}, "temperature"),
    ],
)
async def test_unhonoured_options_are_refused_before_any_request(
    bed: Any, provider: type[FalProvider], model: str, fields: dict[str, Any], option: str
) -> None:
    fal = bed.provider(provider)
    request = bed.request(model, **fields)
    spec = fal.model_spec(model)
    assert spec is not None
    with pytest.raises(UnsupportedOptionError) as caught:
        fal.check(request, spec)
    assert caught.value.option == option and caught.value.provider == provider.id
    with pytest.raises(UnsupportedOptionError):  # submit checks again: nothing ignored is ever sent
        await fal.submit(request, spec, video_url=bed.video_url, audio_url=bed.audio_url)
    assert bed.sandbox.requests == []


@pytest.mark.parametrize(
    "options",
    [{"start_timeout": 1}, {"start_timeout": "soon"}, {"start_timeout": True}, {"queue_priority": "high"}],
)
async def test_bad_queue_settings_are_refused_before_any_request(bed: Any, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:  # typed options: refused when the provider is built
        bed.provider(V2PRO, **options)
    [key] = options
    assert f"providers.{V2PRO.id}.options" in str(caught.value) and repr(key) in str(caught.value)
    assert bed.sandbox.requests == []


@pytest.mark.parametrize(
    "speaker",
    [lambda: ActiveSpeaker.at(3, 10.5, 20.0), lambda: ActiveSpeaker.boxes([(0.0, 0.0, 10.25, 10.0)])],
    ids=["point", "boxes"],
)
async def test_v3_refuses_fractional_pixels_before_any_request(
    bed: Any, speaker: Callable[[], ActiveSpeaker]
) -> None:
    """fal's types take integers: a fraction is refused (by the schema, else by the provider), never rounded."""
    fal = bed.provider(V3)
    with pytest.raises(InvalidRequestError) as caught:
        request = bed.request("sync-3", active_speaker=speaker())
        fal.check(request, fal.models[0])
    assert caught.value.field == "active_speaker" and caught.value.fix
    assert bed.sandbox.requests == []


async def test_v3_refuses_null_frames_before_any_request(bed: Any) -> None:
    """fal's bounding_boxes have no null frames (sync.so's do): the fal-v3 route is excluded, not sent."""
    fal = bed.provider(V3)
    request = bed.request("sync-3", active_speaker=ActiveSpeaker.boxes([(0, 0, 10, 10), None]))
    with pytest.raises(UnsupportedOptionError) as caught:
        fal.check(request, fal.models[0])
    assert caught.value.option == "active_speaker.boxes" and "syncso" in (caught.value.fix or "")
    with pytest.raises(UnsupportedOptionError):
        await fal.submit(request, fal.models[0], video_url=bed.video_url, audio_url=bed.audio_url)
    assert bed.sandbox.requests == []


async def test_unknown_queue_setting_is_a_config_error(bed: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        bed.provider(V2PRO, start_timout=600)
    assert "unknown key 'start_timout'" in str(caught.value)
    assert "start_timeout" in (caught.value.fix or "")


# ----------------------------------------------------------------------------------------------- Hypothesis

ROUTES = [(p, m.id) for p in PROVIDERS for m in p.models]
coord = st.integers(min_value=0, max_value=150)


@st.composite
def boxes(draw: st.DrawFn) -> list[tuple[float, float, float, float] | None]:
    count = draw(st.integers(min_value=1, max_value=4))
    out: list[tuple[float, float, float, float] | None] = []
    for _ in range(count):  # every frame has a box: fal's types have no null frames
        x1, y1 = draw(coord), draw(coord)
        out.append((x1, y1, x1 + draw(st.integers(1, 40)), y1 + draw(st.integers(1, 40))))
    return out


speakers = st.one_of(
    st.just(ActiveSpeaker.automatic()),
    st.builds(ActiveSpeaker.at, st.integers(0, 24), coord, coord),
    boxes().map(ActiveSpeaker.boxes),
    st.just(ActiveSpeaker.boxes_from("https://example.test/boxes.json")),
    st.just(ActiveSpeaker.face(FACE)),
)


@st.composite
def routed_requests(draw: st.DrawFn) -> tuple[type[FalProvider], str, dict[str, Any]]:
    provider, model = draw(st.sampled_from(ROUTES))
    spec = provider.model_spec(model)
    assert spec is not None
    fields: dict[str, Any] = {"sync_mode": draw(st.sampled_from(list(SyncMode)))}
    if draw(st.booleans()):
        fields["webhook_url"] = "https://hooks.example.test/fal"
    speaker = draw(st.none() | speakers)
    if speaker is not None and spec.honours(speaker.option):
        fields["active_speaker"] = speaker
    return provider, model, fields


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(routed=routed_requests())
async def test_the_strict_sandbox_accepts_every_valid_routed_request(bed: Any, routed: Any) -> None:
    provider_cls, model, fields = routed
    provider = bed.provider(provider_cls)
    submission = await bed.submit(provider, bed.request(model, **fields))
    sent = next(r for r in bed.sandbox.submits() if r.job_id == submission.remote_id)
    assert sent.status == 200 and sent.ignored_fields == ()
    final = (await bed.wait(provider, bed.job(provider, submission, model)))[-1]
    assert final.state is JobState.COMPLETED, (final.error_code, final.error_message)
