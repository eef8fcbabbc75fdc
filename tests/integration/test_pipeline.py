"""The whole pipeline through the client: router -> provider plugin -> fal-client/httpx -> sandbox -> download."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lipsyncer import (
    AsyncLipsyncer,
    JobFailedError,
    JobState,
    LipsyncError,
    LipsyncRequest,
    MemoryJobStore,
    NoRouteError,
    SubmitOutcomeUnknownError,
    SyncMode,
    load_settings,
)
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia
from lipsyncer.core.media import probe

pytestmark = pytest.mark.anyio


def sync_rule(mode: str, v: float, a: float) -> float:
    """The output length each sync mode gives (reference §1), written out here rather than imported."""
    return {"cut_off": min(v, a), "loop": a, "bounce": a, "silence": v, "remap": a}[
        str(getattr(mode, "value", mode))
    ]


SCRIPT_CONFIGS = {  # the only thing that changes between backends
    "unified": 'model = "lipsync-2-pro"\nonly = ["unified"]\nstorage = "fal-cdn"\n',
    "fal-v2": 'model = "lipsync-2-pro"\nonly = ["fal-v2"]\n',
    "fal-v2-pro": 'model = "lipsync-2-pro"\nonly = ["fal-v2-pro"]\n',
    "fal-v3": 'model = "sync-3"\nonly = ["fal-v3"]\n',
    "fal-legacy": 'model = "lipsync-1.9.0-beta"\nonly = ["fal-legacy"]\n',
    "syncso": 'model = "lipsync-2-pro"\nonly = ["syncso"]\nstorage = "fal-cdn"\n',
}


async def script(client: AsyncLipsyncer, media: SampleMedia, out: Path) -> tuple[str, float]:
    """One user script, unchanged across backends."""
    request = LipsyncRequest(video=media.video, audio=media.audio, sync_mode="loop")
    result = await client.run(request, save_to=out)
    return result.served_by.provider, probe(out).duration


@pytest.mark.parametrize("backend", sorted(SCRIPT_CONFIGS))
async def test_same_script_runs_on_each_backend_by_config_only(
    backend: str,
    make_client: Callable[..., AsyncLipsyncer],
    media: SampleMedia,
    tmp_path: Path,
    sandbox: Sandbox,
) -> None:
    config = tmp_path / "lipsyncer.toml"
    config.write_text(SCRIPT_CONFIGS[backend])
    async with make_client(config=config) as client:
        served, seconds = await script(client, media, tmp_path / f"{backend}.mp4")
    assert served == backend
    expected = sync_rule(SyncMode.LOOP, probe(media.video).duration, probe(media.audio).duration)
    assert abs(seconds - expected) <= 1 / 25 + 0.03
    assert not sandbox.ignored_fields or all(not v for v in sandbox.ignored_fields.values())


async def test_local_files_go_through_fal_v3_uploads(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, tmp_path: Path, sandbox: Sandbox
) -> None:
    async with make_client() as client:
        request = LipsyncRequest(
            video=media.video, audio=media.long_audio, model="sync-3", sync_mode="bounce", active_speaker=True
        )
        result = await client.run(request, save_to=tmp_path / "v3.mp4")
    assert result.served_by.provider == "fal-v3"
    uploads = sandbox.find_requests(api="cdn", operation="upload")
    assert len(uploads) == 2
    submit = sandbox.submits()[0]
    assert submit.body["video_url"].startswith("https://v3.fal.media/files/")
    assert submit.body["options"]["active_speaker_detection"] == {"auto_detect": True}
    assert result.cost is not None and result.cost.basis == "output_duration"
    assert result.cost.seconds == pytest.approx(probe(tmp_path / "v3.mp4").duration, abs=0.05)
    assert result.video.duration is not None


async def test_a_request_without_model_needs_one_in_the_config(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    from lipsyncer import InvalidRequestError

    async with make_client() as client:
        with pytest.raises(InvalidRequestError, match="names no model"):
            await client.submit(LipsyncRequest(video=media.video, audio=media.audio))
    assert sandbox.requests == []


async def test_unified_with_local_file_and_no_storage_fails_before_any_request(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    async with make_client(only=["unified"]) as client:
        request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
        with pytest.raises(NoRouteError, match="cannot take local files and no storage is configured"):
            await client.submit(request)
    assert sandbox.requests == []


async def test_fallback_on_a_refusal_before_acceptance_lists_both_attempts(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    sandbox.add_fault(
        Fault(
            kind="http_error",
            api="fal",
            operation="submit",
            endpoint="fal-ai/sync-lipsync/v2/pro",
            status=429,  # a refusal; a 5xx after the send would be an unknown outcome (docs/errors.md)
        )
    )
    async with make_client() as client:
        request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2-pro")
        plan = client.route(request)
        assert [r.id for r in plan.candidates][:2] == ["fal-v2-pro:lipsync-2-pro", "fal-v2:lipsync-2-pro"]
        result = await client.run(request)
    assert result.served_by.provider == "fal-v2"
    assert [(a.provider, a.error) for a in result.attempts] == [
        ("fal-v2-pro", "RateLimitedError"),
        ("fal-v2", None),
    ]
    assert result.attempts[0].may_have_been_billed is False
    assert result.attempts[1].may_have_been_billed is True
    assert [s.endpoint for s in sandbox.submits()] == ["fal-ai/sync-lipsync/v2/pro", "fal-ai/sync-lipsync/v2"]


@pytest.mark.parametrize(
    ("status", "retried"),
    [(401, False), (429, True)],  # a refused key stays refused; a rate limit passes
)
async def test_the_last_candidate_is_retried_only_for_a_passing_refusal(
    status: int,
    retried: bool,
    make_client: Callable[..., AsyncLipsyncer],
    media: SampleMedia,
    sandbox: Sandbox,
) -> None:
    sandbox.add_fault(
        Fault(kind="http_error", api="fal", operation="submit", status=status, retry_after=1, times=1)
    )
    async with make_client(only=["fal-v2"], max_attempts=3) as client:
        request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
        if retried:
            result = await client.run(request)
            attempts = [a.error for a in result.attempts]
        else:
            with pytest.raises(LipsyncError) as info:
                await client.run(request)
            attempts = [a.error for a in info.value.attempts]
    # the rule: one try, then one more only when the refusal passes (and the fault fires once)
    expected_submits = 2 if retried else 1
    assert len(sandbox.submits()) == expected_submits
    assert attempts == (["RateLimitedError", None] if retried else ["AuthenticationError"])


async def test_unknown_submit_outcome_is_never_resent_nor_fallen_back(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    sandbox.add_fault(Fault(kind="drop_after_accept", api="fal", operation="submit"))
    async with make_client() as client:
        request = LipsyncRequest(
            video="https://v3.fal.media/files/x/v.mp4", audio=media.audio, model="lipsync-2-pro"
        )
        with pytest.raises(SubmitOutcomeUnknownError) as info:
            await client.submit(request)
        job = info.value.job
        assert job is not None and job.state is JobState.UNKNOWN and job.remote_id is None
        stored = client.store.get(job.id)
        assert stored is not None and stored.attempts[-1].may_have_been_billed
        with pytest.raises(SubmitOutcomeUnknownError):
            await client.wait(job.id)
    assert len(sandbox.submits()) == 1, "an unknown outcome must never be sent again, anywhere"


async def test_a_failed_job_does_not_fall_back(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    sandbox.add_fault(Fault(kind="job_error", api="fal", error_type="face_detection_error"))
    async with make_client() as client:
        request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2-pro")
        job = await client.submit(request)
        with pytest.raises(JobFailedError) as info:
            await client.wait(job)
    assert info.value.code == "face_detection_error"
    assert len(sandbox.submits()) == 1
    stored = client.store.get(job.id)
    assert stored is not None and stored.state is JobState.FAILED
    assert stored.error_code == "face_detection_error"


async def test_status_history_is_recorded_and_resume_finishes_a_stored_job(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, tmp_path: Path, sandbox: Sandbox
) -> None:
    async with make_client() as first:
        job = await first.submit(
            LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-1.9.0-beta"),
            save_to=tmp_path / "resumed.mp4",
        )
    async with make_client() as second:  # a new client, as after a restart
        (outcome,) = await second.resume()
        assert not isinstance(outcome, Exception)
        assert outcome.saved_to == str((tmp_path / "resumed.mp4").resolve())
        states = [s.state for s in second.store.history(job.id)]
    assert states[-1] is JobState.COMPLETED
    assert JobState.RUNNING in states or JobState.QUEUED in states
    assert len(sandbox.submits()) == 1


async def test_deadline_exceeded_keeps_the_job_resumable(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    from lipsyncer import DeadlineExceededError

    sandbox.add_fault(Fault(kind="slow", api="fal", operation="status", seconds=0.05))
    async with make_client(
        polling={
            "initial_interval": 0.02,
            "max_interval": 0.05,
            "start_deadline": 0.01,
            "total_deadline": 0.02,
        }
    ) as client:
        job = await client.submit(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
        with pytest.raises(DeadlineExceededError) as info:
            await client.wait(job)
        assert info.value.job is not None and info.value.job.id == job.id
        stored = client.store.get(job.id)
        assert stored is not None and not stored.state.finished


class Lent(httpx.AsyncBaseTransport):
    """The user's transport: counts how often anyone closes it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("backend", sorted(SCRIPT_CONFIGS))
async def test_closing_a_client_leaves_the_transport_it_was_lent_open(
    backend: str, keys: dict[str, str], media: SampleMedia, tmp_path: Path, sandbox: Sandbox
) -> None:
    config = tmp_path / "lipsyncer.toml"
    config.write_text(SCRIPT_CONFIGS[backend])
    lent = Lent(sandbox.transport())
    for run in range(2):  # the second client runs on what the first one was lent
        settings = load_settings(config, env=keys, cwd=tmp_path, polling={"initial_interval": 0.05})
        async with AsyncLipsyncer(settings, env=keys, transport=lent, store=MemoryJobStore()) as client:
            await script(client, media, tmp_path / f"{run}.mp4")  # providers, storage and a download built
    assert lent.closed == 0
