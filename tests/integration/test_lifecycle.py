"""Exactly-once paid jobs through the client, against the sandbox over HTTP: keys, races, the submit window,
lost answers resolved by webhook, result fetches that fail, jobs that remember where they were sent."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from lipsyncer import (
    AsyncLipsyncer,
    ConfigError,
    IdempotencyKeyReusedError,
    JobEvent,
    JobFailedError,
    JobState,
    JobTargetMismatchError,
    LipsyncRequest,
    SQLiteJobStore,
    SubmitOutcomeUnknownError,
    SyncMode,
    hookimpl,
    load_settings,
)
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, eventually, fast_config
from lipsyncer.contrib.webhooks import webhook_app

pytestmark = pytest.mark.anyio

FAST = {"initial_interval": 0.02, "max_interval": 0.1, "jitter": 0.1, "call_timeout": 10}


class Events:
    """A job_event plugin that keeps every event."""

    def __init__(self) -> None:
        self.seen: list[JobEvent] = []

    @hookimpl
    def job_event(self, event: JobEvent) -> None:
        self.seen.append(event)

    def kinds(self, job_id: str) -> Counter[str]:
        return Counter(e.kind for e in self.seen if e.job_id == job_id)


class Recorder(httpx.BaseTransport):
    """Where the sandbox delivers webhooks: kept for the test to hand to the receiver when it wants."""

    def __init__(self) -> None:
        self.deliveries: list[httpx.Request] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.deliveries.append(request)
        return httpx.Response(200)


def client_for(
    sandbox: Sandbox, store: Path, tmp_path: Path, *, plugins: tuple[object, ...] = (), **settings: Any
) -> AsyncLipsyncer:
    env = {"FAL_KEY": sandbox.config.fal_key, "EVOLINK_API_KEY": sandbox.config.unified_key}
    settings.setdefault("polling", FAST)
    return AsyncLipsyncer(
        load_settings(env=env, cwd=tmp_path, **settings),
        env=env,
        transport=sandbox.transport(),
        store=SQLiteJobStore(store),
        plugins=plugins,
    )


async def deliver(client: AsyncLipsyncer, delivery: httpx.Request, provider: str) -> httpx.Response:
    """Replay one recorded delivery into the ASGI receiver, at the URL the provider was given."""
    headers = {k: v for k, v in delivery.headers.items() if k.lower().startswith("x-fal-webhook")}
    path = f"/lipsync/{provider}?{delivery.url.query.decode()}"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(webhook_app(client)), base_url="https://hooks.example"
    ) as http:
        return await http.post(path, content=delivery.content, headers=headers)


def file_gets(sandbox: Sandbox, url: str) -> int:
    path = httpx.URL(url).path
    return sum(
        1 for r in sandbox.find_requests(api="cdn", operation="file") if r.path == path and r.method == "GET"
    )


# ------------------------------------------------------------------------------------------ keys


async def test_an_idempotency_key_replays_the_stored_job_and_sends_nothing(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    async with make_client() as client:
        job = await client.submit(request, idempotency_key="season-1/ep-12/es")
        sent = len(sandbox.requests)
        assert (await client.submit(request, idempotency_key="season-1/ep-12/es")).id == job.id
    async with make_client() as other:  # another connection to the store, as another process has
        assert (await other.submit(request, idempotency_key="season-1/ep-12/es")).id == job.id
        with pytest.raises(IdempotencyKeyReusedError) as info:
            await other.submit(
                request.model_copy(update={"sync_mode": SyncMode.LOOP}), idempotency_key="season-1/ep-12/es"
            )
        assert info.value.job_id == job.id and info.value.fix
    assert len(sandbox.requests) == sent  # no upload, no submit, no look-up for a replay
    assert len(sandbox.submits()) == 1


# ------------------------------------------------------------------------------------------ races


@pytest.mark.parametrize("webhook_side", ["same client", "another client"])
async def test_a_waiter_and_a_webhook_complete_and_download_a_job_once(
    webhook_side: str, media: SampleMedia, tmp_path: Path
) -> None:
    recorder = Recorder()
    events = Events()
    with Sandbox(fast_config(strict=True, webhook_transport=recorder)) as sandbox:
        store = tmp_path / "jobs.sqlite"
        async with client_for(sandbox, store, tmp_path, plugins=(events,)) as waiter:
            other = client_for(sandbox, store, tmp_path, plugins=(events,))
            receiver = waiter if webhook_side == "same client" else other
            request = LipsyncRequest(
                video=media.video,
                audio=media.audio,
                model="lipsync-2-pro",
                webhook_url="https://hooks.example/lipsync/fal-v2-pro",
            )
            job = await waiter.submit(request, save_to=tmp_path / "out.mp4")
            results: list[Any] = []

            async def wait() -> None:
                results.append(await waiter.wait(job))

            async def hook() -> None:
                async def delivered() -> bool:
                    return bool(recorder.deliveries)

                await eventually(delivered)
                results.append(await deliver(receiver, recorder.deliveries[0], "fal-v2-pro"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                tg.start_soon(hook)
            await other.aclose()
        stored = SQLiteJobStore(store).get(job.id)
    assert stored is not None and stored.state is JobState.COMPLETED
    assert stored.result is not None and stored.result.saved_to == str((tmp_path / "out.mp4").resolve())
    kinds = events.kinds(job.id)
    assert kinds["completed"] == 1 and kinds["downloaded"] == 1 and kinds["submitted"] == 1
    assert file_gets(sandbox, stored.result.video.url) == 1
    assert len(sandbox.submits()) == 1


async def test_a_waiter_stops_at_a_job_another_process_settled_without_asking_the_provider(
    media: SampleMedia, tmp_path: Path
) -> None:
    with Sandbox(fast_config(strict=True, processing_seconds=3600)) as sandbox:
        store = tmp_path / "jobs.sqlite"
        every_second = {"initial_interval": 1.0, "max_interval": 1.0, "jitter": 0.0, "call_timeout": 10}
        waiting = client_for(sandbox, store, tmp_path, polling=every_second)
        async with waiting as waiter, client_for(sandbox, store, tmp_path) as other:
            job = await waiter.submit(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))

            def look_ups() -> int:
                return sum(1 for r in sandbox.requests if r.operation == "status")

            failed: list[JobFailedError] = []

            async def wait() -> None:
                with pytest.raises(JobFailedError) as raised:
                    await waiter.wait(job)
                failed.append(raised.value)

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)

                async def looked_once() -> bool:
                    return look_ups() >= 1

                await eventually(looked_once)  # the waiter's first look-up; its next is a second away
                await other.cancel(job.id)  # another process: the waiter is not woken
                after_cancel = look_ups()
        # The rule: each round the waiter reads the stored row before it asks the provider, so a row settled
        # meanwhile ends the wait with no look-up of its own.
        assert look_ups() == after_cancel
        assert failed and failed[0].job is not None and failed[0].job.state is JobState.CANCELLED


async def test_a_batch_job_is_settled_when_its_webhook_arrives_not_at_its_next_look_up(
    media: SampleMedia, tmp_path: Path
) -> None:
    recorder = Recorder()
    with Sandbox(fast_config(strict=True, webhook_transport=recorder)) as sandbox:
        hourly = {"initial_interval": 3600.0, "max_interval": 3600.0, "jitter": 0.0, "call_timeout": 10}
        async with client_for(sandbox, tmp_path / "jobs.sqlite", tmp_path, polling=hourly) as client:
            request = LipsyncRequest(
                video=media.video,
                audio=media.audio,
                model="lipsync-2-pro",
                webhook_url="https://hooks.example/lipsync/fal-v2-pro",
            )
            outcomes = []

            async def run() -> None:
                async for outcome in client.run_many([("only", request)]):
                    outcomes.append(outcome)

            async def hook() -> None:
                async def delivered() -> bool:
                    return bool(recorder.deliveries)

                await eventually(delivered)
                await deliver(client, recorder.deliveries[0], "fal-v2-pro")

            with anyio.fail_after(60):  # a guard against a hang: the job's next look-up is an hour away
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run)
                    tg.start_soon(hook)
    # The rule: the submit's answer is the first look-up and the next is an hour away, so only the webhook's
    # wake-up can have settled the job; the webhook carried the output, so nothing was looked up or fetched.
    assert [o.ok for o in outcomes] == [True]
    looked = [r for r in sandbox.requests if r.api == "fal" and r.operation in ("status", "result")]
    assert looked == [] and len(sandbox.submits()) == 1


async def test_an_abandoned_batch_leaves_its_jobs_to_their_webhooks(
    media: SampleMedia, tmp_path: Path
) -> None:
    recorder = Recorder()
    with Sandbox(fast_config(strict=True, webhook_transport=recorder)) as sandbox:
        store = tmp_path / "jobs.sqlite"
        hourly = {"initial_interval": 3600.0, "max_interval": 3600.0, "jitter": 0.0, "call_timeout": 10}
        async with client_for(sandbox, store, tmp_path, polling=hourly) as client:
            request = LipsyncRequest(
                video=media.video,
                audio=media.audio,
                model="lipsync-2-pro",
                webhook_url="https://hooks.example/lipsync/fal-v2-pro",
            )

            async def run() -> None:
                async for _ in client.run_many([("a", request), ("b", request)]):
                    pass

            async def both_delivered() -> bool:
                return len(recorder.deliveries) == 2

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await eventually(
                    both_delivered
                )  # both submitted, finished and reported; next look-up in an hour
                tg.cancel_scope.cancel()  # the caller stops iterating: the batch is abandoned
            for delivery in list(recorder.deliveries):
                assert (await deliver(client, delivery, "fal-v2-pro")).status_code == 200
        rows = SQLiteJobStore(store).list_jobs()
    # The rule: a webhook for a job nobody in this process waits on is completed by its handler; the abandoned
    # batch must not still count its jobs as waited on, or their results would never be stored.
    assert sorted(r.state for r in rows) == [JobState.COMPLETED, JobState.COMPLETED]


# ------------------------------------------------------------------------------------------ the submit window


async def test_cancelling_inside_the_submit_window_still_stores_the_accepted_job(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    # The sandbox accepts the job, then holds its answer for 0.5 s: the caller gives up inside that window.
    sandbox.add_fault(Fault(kind="slow", api="fal", operation="submit", seconds=0.5, after=True, times=1))
    request = LipsyncRequest(video=media.video, audio=media.audio, model="sync-3")
    async with make_client() as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.submit, request)

            async def sent() -> bool:
                return bool(sandbox.submits())

            await eventually(sent)  # the sandbox has the job; its answer is held back
            tg.cancel_scope.cancel()  # the caller gives up inside the window
        [job] = client.store.list_jobs()
        assert job.state is JobState.QUEUED and job.remote_id == sandbox.jobs[0].id  # the answer was saved
        result = await client.wait(job)
    assert result.remote_id == job.remote_id
    assert len(sandbox.submits()) == 1


async def test_a_lost_answer_is_stored_unknown_then_a_tagged_webhook_completes_it(
    media: SampleMedia, tmp_path: Path
) -> None:
    recorder = Recorder()
    events = Events()
    with Sandbox(fast_config(strict=True, webhook_transport=recorder)) as sandbox:
        sandbox.add_fault(Fault(kind="drop_after_accept", api="fal", operation="submit", times=1))
        async with client_for(sandbox, tmp_path / "jobs.sqlite", tmp_path, plugins=(events,)) as client:
            request = LipsyncRequest(
                video=media.video,
                audio=media.audio,
                model="lipsync-2",
                webhook_url="https://hooks.example/lipsync/fal-v2?tenant=acme",
            )
            with pytest.raises(SubmitOutcomeUnknownError) as info:
                await client.submit(request, save_to=tmp_path / "out.mp4")
            job = info.value.job
            assert job is not None and job.state is JobState.UNKNOWN and job.remote_id is None
            assert "lipsyncer jobs resolve" in (info.value.fix or "")
            # Nothing can be looked up, and nothing is re-sent: fal honours no idempotency key.
            with pytest.raises(SubmitOutcomeUnknownError):
                await client.wait(job)
            [outcome] = await client.resume()
            assert isinstance(outcome, SubmitOutcomeUnknownError) and "will not send it again" in str(outcome)

            async def delivered() -> bool:
                return bool(recorder.deliveries)

            await eventually(delivered)
            delivery = recorder.deliveries[0]
            assert delivery.url.params["lipsyncer_job"] == job.id and delivery.url.params["tenant"] == "acme"
            answer = await deliver(client, delivery, "fal-v2")
            assert answer.status_code == 200 and answer.json() == {"job": job.id, "state": "completed"}
            stored = client.store.get(job.id)
            assert stored is not None and stored.remote_id == sandbox.jobs[0].id
            assert stored.result is not None and stored.result.saved_to is not None
    assert len(sandbox.submits()) == 1
    assert events.kinds(job.id)["completed"] == 1


async def test_result_fetches_retry_transient_errors(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="fal", operation="result", status=503, times=3))
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    async with make_client() as client:
        result = await client.run(request, save_to=tmp_path / "out.mp4")
    assert (tmp_path / "out.mp4").stat().st_size > 0 and result.saved_to
    results = sandbox.find_requests(api="fal", operation="result")
    assert [r.status for r in results][:3] == [503, 503, 503] and results[-1].status == 200


# ------------------------------------------------------------------------------------------ where jobs went


async def test_a_job_is_never_resumed_against_another_target(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox, tmp_path: Path
) -> None:
    request = LipsyncRequest(
        video="https://media.example/v.mp4", audio="https://media.example/a.wav", model="sync-3"
    )
    async with make_client() as client:
        job = await client.submit(request)
    assert job.target == "transport"
    env = {"FAL_KEY": "a-real-key"}
    production = AsyncLipsyncer(
        load_settings(env=env, cwd=tmp_path), env=env, store=SQLiteJobStore(tmp_path / "jobs.sqlite")
    )
    async with production:
        with pytest.raises(JobTargetMismatchError) as info:
            await production.wait(job.id)
        assert "sandbox" in str(info.value) and info.value.fix
    gateway = load_settings(env=env, cwd=tmp_path, providers={"fal-v3": {"base_url": "http://127.0.0.1:9"}})
    async with AsyncLipsyncer(gateway, env=env, store=SQLiteJobStore(tmp_path / "jobs.sqlite")) as elsewhere:
        with pytest.raises(JobTargetMismatchError):
            await elsewhere.status(job.id)


def test_config_naming_a_provider_that_is_not_installed_is_an_error(tmp_path: Path) -> None:
    settings = load_settings(env={}, cwd=tmp_path, providers={"fal-v9": {"base_url": "http://127.0.0.1:1"}})
    with pytest.raises(ConfigError, match="fal-v9") as info:
        AsyncLipsyncer(settings, env={}, store=SQLiteJobStore(tmp_path / "j.sqlite"))
    assert "fal-v3" in str(info.value) and "strict_config" in (info.value.fix or "")
    relaxed = settings.with_overrides(strict_config=False)
    AsyncLipsyncer(relaxed, env={}, store=SQLiteJobStore(tmp_path / "j.sqlite"))


async def test_a_fallback_stages_each_local_file_once(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    # The unified API refuses (rate limit: safe to fall back); fal-v2 serves with the files the fal-cdn
    # storage already put on fal's CDN, where fal uploads land too: no second upload.
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="create", status=429, times=5))
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    async with make_client(only=["unified", "fal-v2"], storage="fal-cdn", max_attempts=2) as client:
        job = await client.submit(request)
    assert job.provider == "fal-v2" and [a.provider for a in job.attempts] == ["unified", "fal-v2"]
    uploads = [r for r in sandbox.find_requests(api="cdn") if r.operation in ("upload", "upload_initiate")]
    assert len(uploads) == 2  # one video, one audio, across both routes
    assert [r.api for r in sandbox.submits()] == ["unified", "fal"]


async def test_the_clients_own_receiver_is_tagged_on_every_job(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    request = LipsyncRequest(video=media.video, audio=media.audio, model="sync-3")
    async with make_client(webhook_url="https://hooks.example/lipsync/{provider}") as client:
        job = await client.submit(request)
    [submit] = sandbox.submits()
    assert submit.query["fal_webhook"] == f"https://hooks.example/lipsync/fal-v3?lipsyncer_job={job.id}"


async def test_a_prepared_job_is_sent_once_however_often_it_is_sent(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox, tmp_path: Path
) -> None:
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    async with make_client() as client, make_client() as other:
        job = client.prepare(request, idempotency_key="ep-7", save_to=tmp_path / "ep7.mp4")
        assert (job.state, job.sends, job.remote_id) == (JobState.SUBMITTING, 0, None)
        assert sandbox.requests == []  # stored, nothing sent
        async with anyio.create_task_group() as tg:  # an at-least-once queue delivering the task twice
            tg.start_soon(client.send, job.id)
            tg.start_soon(other.send, job.id)
        sent = client.store.get(job.id)
        assert sent is not None and sent.remote_id is not None and sent.sends == 1
        assert (await client.send(job.id)).remote_id == sent.remote_id
        with pytest.raises(ValueError, match="URLs or file paths"):
            client.prepare(
                LipsyncRequest(video=media.video.read_bytes(), audio=media.audio, model="lipsync-2")
            )
        unsent = client.prepare(request.model_copy(update={"sync_mode": SyncMode.LOOP}))
        outcomes = await other.resume()  # a prepared job nobody sent is sent by resume, once
        assert {o.job_id for o in outcomes if not isinstance(o, Exception)} == {job.id, unsent.id}
    assert len(sandbox.submits()) == 2
