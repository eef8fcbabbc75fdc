"""The Celery tasks against real components: a worker in this process (so the test sees its job_event hooks),
a private redis-server as broker and result backend, a private PostgreSQL job store, the loopback sandbox."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from fleet_support import SANDBOX_KEYS, FleetSetup

from lipsyncer import (
    JobFailedError,
    JobState,
    LipsyncError,
    LipsyncRequest,
    PollingPolicy,
    SubmitOutcomeUnknownError,
    hookimpl,
    load_settings,
)
from lipsyncer.contrib.celery import Fleet, create_app, enqueue, result
from lipsyncer.contrib.celery.fleet import backoff
from lipsyncer.contrib.sandbox import Fault, LoopbackServer
from lipsyncer.contrib.sandbox.testing import SampleMedia
from lipsyncer.core.jobs import store_from_url
from lipsyncer.core.schema import JobEvent

pytestmark = pytest.mark.slow  # real Celery worker processes

GUARD = 90  # seconds: a hang guard, not a timing assertion


class Events:
    """A job_event plugin: what the worker's client emitted."""

    def __init__(self) -> None:
        self.seen: list[JobEvent] = []

    @hookimpl
    def job_event(self, event: JobEvent) -> None:
        self.seen.append(event)

    def kinds(self, job_id: str) -> Counter[str]:
        return Counter(e.kind for e in self.seen if e.job_id == job_id)


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def fleet_app(fleet_setup: FleetSetup, events: Events) -> Iterator[Any]:
    settings = load_settings(fleet_setup.config, env=SANDBOX_KEYS)
    fleet = Fleet(settings, env=SANDBOX_KEYS, plugins=[events])
    app = create_app(fleet)
    yield app
    fleet.runtime.close()


@pytest.fixture
def worker(fleet_app: Any) -> Iterator[Any]:
    with start_worker(
        fleet_app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING"
    ) as w:
        yield w


def request_for(media: SampleMedia, model: str = "lipsync-2") -> LipsyncRequest:
    return LipsyncRequest(video=media.video, audio=media.audio, model=model)


def test_an_enqueued_job_is_submitted_polled_completed_and_saved_by_a_worker(
    fleet_app: Any, worker: Any, media: SampleMedia, served: LoopbackServer, events: Events, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    job_id = enqueue(request_for(media), idempotency_key="order-1", save_to=out, app=fleet_app)
    value = result(job_id, app=fleet_app).get(timeout=GUARD)
    assert value["job_id"] == job_id and value["saved_to"] == str(out.resolve())
    assert out.stat().st_size > 0
    stored = store_from_url(fleet_app.lipsyncer_fleet.settings.job_store).get(job_id)
    assert stored is not None and stored.state is JobState.COMPLETED and stored.result is not None
    assert stored.result.remote_id == served.sandbox.jobs[0].id
    kinds = events.kinds(job_id)  # fired by the worker's client, once per stored transition
    assert (kinds["submitted"], kinds["completed"], kinds["downloaded"]) == (1, 1, 1)
    assert len(served.sandbox.submits()) == 1
    # The same key again: the stored job, nothing new sent.
    assert enqueue(request_for(media), idempotency_key="order-1", save_to=out, app=fleet_app) == job_id
    # Look-ups ran, and none left a Celery result behind (the job's row has their outcome).
    assert served.sandbox.find_requests(api="fal", operation="status")
    redis = fleet_app.backend.client
    names = {json.loads(redis.get(key))["name"] for key in redis.scan_iter("celery-task-meta-*")}
    assert names == {"lipsyncer.submit", "lipsyncer.complete"}


def test_tasks_delivered_twice_send_once_and_complete_once(
    fleet_app: Any, worker: Any, media: SampleMedia, served: LoopbackServer, events: Events, tmp_path: Path
) -> None:
    fleet = fleet_app.lipsyncer_fleet
    job_id = enqueue(
        request_for(media), idempotency_key="twice", save_to=tmp_path / "twice.mp4", app=fleet_app
    )
    duplicates = [fleet.send_submit(job_id), fleet.send_submit(job_id)]  # at-least-once: redeliveries
    first = result(job_id, app=fleet_app).get(timeout=GUARD)
    for duplicate in duplicates:
        duplicate.get(timeout=GUARD)
    for _ in range(2):
        assert fleet.send_complete(job_id).get(timeout=GUARD) == first
    sandbox = served.sandbox
    assert len(sandbox.submits()) == 1
    assert len(sandbox.find_requests(api="fal", operation="result")) == 1  # fetched once
    file_gets = [r for r in sandbox.find_requests(api="cdn", operation="file") if r.method == "GET"]
    assert len(file_gets) == 1  # downloaded once
    kinds = events.kinds(job_id)
    assert (kinds["submitted"], kinds["completed"], kinds["downloaded"]) == (1, 1, 1)


def test_a_failed_job_reports_its_error_through_the_celery_result_and_the_store(
    fleet_app: Any, worker: Any, media: SampleMedia, served: LoopbackServer
) -> None:
    served.sandbox.add_fault(Fault(kind="job_error", api="fal", error_type="face_detection_error"))
    job_id = enqueue(request_for(media), idempotency_key="faceless", app=fleet_app)
    outcome = result(job_id, app=fleet_app)
    with pytest.raises(Exception) as info:
        outcome.get(timeout=GUARD)
    assert isinstance(info.value, JobFailedError) and job_id in str(info.value)
    assert outcome.state == "FAILURE"
    stored = store_from_url(fleet_app.lipsyncer_fleet.settings.job_store).get(job_id)
    assert stored is not None and stored.state is JobState.FAILED and stored.error_code is not None
    assert info.value.code == stored.error_code  # the provider's code, from the store: Celery keeps only text


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    return {"processing_seconds": 1.0, "queue_seconds": 0.1}


def test_a_single_slot_worker_never_blocks_while_providers_work(
    fleet_setup: FleetSetup, media: SampleMedia, served: LoopbackServer
) -> None:
    """One worker thread, three jobs: every submit reaches the sandbox before the first result is fetched,
    so the worker went on while the first job was processing (its look-ups are re-scheduled tasks)."""
    settings = load_settings(fleet_setup.config, env=SANDBOX_KEYS)
    fleet = Fleet(settings, env=SANDBOX_KEYS)
    app = create_app(fleet)
    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING"):
            ids = [enqueue(request_for(media), idempotency_key=f"slot-{i}", app=app) for i in range(3)]
            for job_id in ids:
                result(job_id, app=app).get(timeout=GUARD)
    finally:
        fleet.runtime.close()
    requests = served.sandbox.requests
    submits = [r.seq for r in requests if (r.api, r.operation) == ("fal", "submit")]
    fetches = [r.seq for r in requests if (r.api, r.operation) == ("fal", "result")]
    assert len(submits) == 3 and len(fetches) == 3
    assert max(submits) < min(fetches)


def test_a_sweep_restarts_jobs_whose_messages_were_lost(
    fleet_app: Any, worker: Any, media: SampleMedia, served: LoopbackServer, tmp_path: Path
) -> None:
    """Jobs with no task in the broker (one sent outside the fleet, one prepared whose submit message was
    lost, one whose sender died inside its send): the sweep sends the prepared one, looks up the sent one,
    and marks the third unknown without sending it again; the first two complete, each sent once."""
    fleet = fleet_app.lipsyncer_fleet

    async def outside(client: Any) -> tuple[str, str, str]:
        sent = await client.submit(request_for(media), idempotency_key="outside")
        prepared = client.prepare(request_for(media), idempotency_key="lost-message")
        dying = client.prepare(request_for(media), idempotency_key="died-mid-send")
        # What a sender leaves when it dies after its request left: the send counted, no answer, no claim.
        target = client.registry.target(dying.provider)
        client.lifecycle.sending(
            dying, provider=dying.provider, model=dying.model, endpoint=dying.endpoint, target=target
        )
        return sent.id, prepared.id, dying.id

    sent_id, prepared_id, dying_id = fleet.runtime.call(outside)
    counts = fleet_app.send_task("lipsyncer.sweep").get(timeout=GUARD)
    assert counts == {"submitted": 1, "polled": 1, "unknown": 1}
    for job_id in (sent_id, prepared_id):
        assert result(job_id, app=fleet_app).get(timeout=GUARD)["job_id"] == job_id
    # Celery alone would rebuild it as a plain LipsyncError (class and message only); the job's result raises
    # the error the stored job stands for, attributes and all.
    with pytest.raises(SubmitOutcomeUnknownError, match="answer was lost") as unknown:
        result(dying_id, app=fleet_app).get(timeout=GUARD)
    assert unknown.value.job is not None and unknown.value.job.id == dying_id
    assert isinstance(unknown.value.__cause__, LipsyncError)
    assert len(served.sandbox.submits()) == 2  # the dying job's one send is its own: nothing re-sent
    store = store_from_url(fleet.settings.job_store)
    try:
        dead = store.get(dying_id)
        assert dead is not None and dead.state is JobState.UNKNOWN and dead.sends == 1
    finally:
        store.close()
    again = fleet_app.send_task("lipsyncer.sweep").get(timeout=GUARD)
    assert again["unknown"] == 0  # an unknown job is marked once; its webhook, resume or resolve settles it


@pytest.mark.parametrize("sandbox_overrides", [{"processing_seconds": 120.0, "queue_seconds": 0.1}])
def test_each_sweep_hands_a_jobs_polls_to_one_new_chain_and_older_chains_stop(
    fleet_app: Any, worker: Any, media: SampleMedia, served: LoopbackServer
) -> None:
    """Sweeps restart the look-ups of every unfinished job; without an owner per job, each sweep would add a
    chain that polls until the job ends (a job queued for an hour: twelve chains at the default interval)."""
    job_id = enqueue(request_for(media), idempotency_key="long-running", app=fleet_app)
    store = store_from_url(fleet_app.lipsyncer_fleet.settings.job_store)
    try:
        give_up = time.monotonic() + GUARD
        while (stored := store.get(job_id)) is None or stored.remote_id is None:
            assert time.monotonic() < give_up, "the job was never submitted"
            time.sleep(0.05)
        owners = []
        for _ in range(2):
            assert fleet_app.send_task("lipsyncer.sweep").get(timeout=GUARD)["polled"] == 1
            stored = store.get(job_id)
            assert stored is not None and stored.poller is not None
            owners.append(stored.poller)
    finally:
        store.close()
    assert owners[0] != owners[1]

    def poll(chain: str | None) -> str:
        """One link of a chain, run here as a worker runs it: look-ups store no Celery result to wait on."""
        kwargs = {} if chain is None else {"chain": chain}
        return str(fleet_app.tasks["lipsyncer.poll"].apply(args=[job_id], kwargs=kwargs).get()["next"])

    # The chain its submit began and the first sweep's stop at their next link; the newest one looks again.
    assert (poll(None), poll(owners[0]), poll(owners[1])) == ("stop", "stop", "again")
    assert len(served.sandbox.submits()) == 1


def test_beat_runs_the_sweep_every_sweep_interval(fleet_setup: FleetSetup) -> None:
    settings = load_settings(fleet_setup.config, env=SANDBOX_KEYS)
    interval = settings.celery.sweep_interval
    app = create_app(Fleet(settings, env=SANDBOX_KEYS))
    assert app.conf.beat_schedule == {"lipsyncer-sweep": {"task": "lipsyncer.sweep", "schedule": interval}}
    mine = {"nightly": {"task": "lipsyncer.sweep", "schedule": 86400.0}}
    own = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"options": {"beat_schedule": mine}})}
    )
    assert create_app(Fleet(own, env=SANDBOX_KEYS)).conf.beat_schedule == mine  # the user's own replaces it


@pytest.mark.parametrize("step", [0, 1, 3, 20])
def test_poll_countdowns_follow_the_policy_backoff(step: int) -> None:
    policy = PollingPolicy(initial_interval=2.0, multiplier=1.5, max_interval=20.0, jitter=0.25)
    base = min(2.0 * 1.5**step, 20.0)  # the rule: exponential from the initial interval, capped
    for _ in range(50):
        assert base * 0.75 <= backoff(policy, step) <= base * 1.25
