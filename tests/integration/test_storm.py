"""The promise under a fault storm: 500 jobs over fal and the unified API with 20% mixed faults — 429s,
5xx, connections dropped before and after acceptance, gateway pages after acceptance, failed result
fetches — end with no job accepted twice, no accepted job without a row, and every job the sandbox
completed completed and saved by us after the webhooks and at most one resume()."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from lipsyncer import AsyncLipsyncer, BatchItem, JobState, LipsyncRequest, SQLiteJobStore, load_settings
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config
from lipsyncer.contrib.webhooks import webhook_app

pytestmark = pytest.mark.anyio

JOBS = 500
ROUTES = [
    ("fal-v2", "lipsync-2"),
    ("fal-v3", "sync-3"),
    ("unified", "lipsync-2"),
    ("fal-legacy", "lipsync-1.9.0-beta"),
]


class Sink(httpx.BaseTransport):
    """Keeps every webhook delivery for the test to hand to the receiver."""

    def __init__(self) -> None:
        self.deliveries: list[httpx.Request] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.deliveries.append(request)
        return httpx.Response(200)


@pytest.mark.slow
async def test_a_storm_of_500_jobs_bills_nothing_twice_and_loses_nothing(
    media: SampleMedia, tmp_path: Path
) -> None:
    sink = Sink()
    config = fast_config(
        processing_seconds=0.05,
        queue_seconds=0.01,
        faults=Fault.storm(0.2, seed=20261128),
        webhook_transport=sink,
        webhook_retry_scale=0.001,
        callback_retries=0,
        fal_webhook_attempts=1,
    )
    with Sandbox(config) as sandbox:
        video = sandbox.put_file(media.video.read_bytes(), file_name="talk.mp4", content_type="video/mp4")
        audio = sandbox.put_file(media.audio.read_bytes(), file_name="dub.wav", content_type="audio/wav")
        env = {"FAL_KEY": sandbox.config.fal_key, "EVOLINK_API_KEY": sandbox.config.unified_key}
        settings = load_settings(
            env=env,
            cwd=tmp_path,
            fallbacks=False,  # each job stays on its provider: "accepted twice" is then per provider too
            max_attempts=4,
            webhook_url="https://hooks.example/lipsync/{provider}",  # our receiver: every job tagged with its id
            polling={"initial_interval": 0.05, "max_interval": 0.2, "jitter": 0.2, "call_timeout": 10},
            resume_concurrency=64,
        )
        store = SQLiteJobStore(tmp_path / "jobs.sqlite")
        items = []
        for n in range(JOBS):
            provider, model = ROUTES[n % len(ROUTES)]
            request = LipsyncRequest(video=video, audio=audio, model=f"{provider}:{model}")
            items.append(BatchItem(f"job-{n}", request, tmp_path / "out" / f"{n}.mp4"))
        async with AsyncLipsyncer(settings, env=env, transport=sandbox.transport(), store=store) as client:
            first = [o async for o in client.run_many(items, concurrency=100)]
            assert len(first) == JOBS
            sandbox.wait_idle(60)
            # The webhooks the providers sent (a job's only word when its submit answer was lost).
            receiver = httpx.AsyncClient(
                transport=httpx.ASGITransport(webhook_app(client)), base_url="https://hooks.example"
            )
            async with receiver:
                for delivery in list(sink.deliveries):
                    target = f"{delivery.url.path}?{delivery.url.query.decode()}"
                    for _ in range(5):  # a 500 asks the provider to deliver again, as fal and unified do
                        answer = await receiver.post(
                            target, content=delivery.content, headers=dict(delivery.headers)
                        )
                        if answer.status_code < 500:
                            break
            await client.resume()  # at most one resume
            rows = {j.id: j for j in store.list_jobs(limit=10_000)}

    # 0 jobs accepted twice
    assert sandbox.accepted_twice() == {}
    accepted = sandbox.accepted_submits()
    assert None not in accepted  # every accepted job carries our job id
    # 0 accepted jobs without a row
    assert set(accepted) <= set(rows)
    # 0 finished jobs abandoned: every job the sandbox completed is completed and saved here
    completed_there = {j.webhook_param("lipsyncer_job") for j in sandbox.completed_jobs()}
    for job_id in completed_there:
        row = rows[str(job_id)]
        assert row.state is JobState.COMPLETED, (row.id, row.state, row.error_message)
        assert row.result is not None and row.result.saved_to and Path(row.result.saved_to).stat().st_size > 0
    # and nothing finished here that the sandbox did not finish
    assert {j.id for j in rows.values() if j.state is JobState.COMPLETED} <= {str(i) for i in completed_there}
    blown = sum(f.fired for f in sandbox.faults if f.fault.kind == "storm")  # one storm entry per API
    assert blown >= JOBS * 0.2  # the storm really blew
