"""The fleet under loss: real ``celery -A lipsyncer.contrib.celery worker`` processes on a private Redis, a
private PostgreSQL store and the loopback sandbox; one worker machine is SIGKILLed mid-run and replaced."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_support import SANDBOX_KEYS, FleetSetup, WorkerProcess

from lipsyncer import JobState, LipsyncRequest, load_settings
from lipsyncer.contrib.celery import Fleet, create_app, enqueue, result
from lipsyncer.contrib.sandbox import LoopbackServer
from lipsyncer.contrib.sandbox.testing import SampleMedia
from lipsyncer.core.jobs import JobStore, store_from_url

JOBS = 100
GUARD = 300.0  # seconds: a hang guard, not a timing assertion


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    # Long enough that every submit is answered before the first jobs finish: the kill hits look-ups,
    # completions and downloads in flight. (A kill inside a send leaves that job's outcome unknown until its
    # tagged webhook arrives: tests/cli/test_cli_lifecycle.py covers it.)
    return {"processing_seconds": 2.5, "queue_seconds": 0.2}


@pytest.fixture
def producer(fleet_setup: FleetSetup) -> Iterator[Any]:
    fleet = Fleet(load_settings(fleet_setup.config, env=SANDBOX_KEYS), env=SANDBOX_KEYS)
    app = create_app(fleet)
    yield app
    fleet.runtime.close()


def until(
    check: Callable[[], bool], what: str, workers: list[WorkerProcess], describe: Callable[[], str]
) -> None:
    give_up = time.monotonic() + GUARD
    while not check():
        if time.monotonic() > give_up:
            logs = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in workers)
            pytest.fail(f"{what}: not reached ({describe()})\n{logs}")
        time.sleep(0.5)  # each look reads every row: looking less often leaves the CPU to the workers


def count(store: JobStore, state: JobState) -> int:
    return len(store.list_jobs(states=[state], limit=10 * JOBS))


def all_answered(store: JobStore) -> bool:
    """Every submit's answer is stored: no worker is inside a send any more."""
    jobs = store.list_jobs(limit=10 * JOBS)
    return len(jobs) == JOBS and all(j.remote_id is not None for j in jobs)


@pytest.mark.slow
def test_a_hundred_jobs_survive_a_worker_killed_mid_run_each_submitted_once(
    fleet_setup: FleetSetup,
    producer: Any,
    start_workers: Callable[..., WorkerProcess],
    served: LoopbackServer,
    media: SampleMedia,
    tmp_path: Path,
) -> None:
    sandbox = served.sandbox
    # w2 also runs beat, whose default schedule sweeps (every 10 s in these tests): Redis hands a task out
    # before it records it unacknowledged, so a kill between the two loses that task, and the sweep restarts
    # its job. Look-ups it duplicates are free; sends and completions stay single.
    workers = [start_workers("w1"), start_workers("w2", beat=True)]
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    ids = [
        enqueue(request, idempotency_key=f"batch-{i}", save_to=tmp_path / "out" / f"{i}.mp4", app=producer)
        for i in range(JOBS)
    ]
    assert len(set(ids)) == JOBS
    store = store_from_url(fleet_setup.store_url)

    def states() -> str:
        return str(Counter(j.state.value for j in store.list_jobs(limit=10 * JOBS)))

    try:
        until(
            lambda: all_answered(store) and count(store, JobState.COMPLETED) >= 5, "mid-run", workers, states
        )
        finished_at_kill = count(store, JobState.COMPLETED)
        workers[0].kill()  # the machine is gone: its prefetched and running tasks are redelivered
        workers.append(start_workers("w3"))
        until(lambda: count(store, JobState.COMPLETED) == JOBS, "all completed", workers, states)
        outcomes = [result(job_id, app=producer).get(timeout=GUARD) for job_id in ids]
    finally:
        store.close()
    assert finished_at_kill < JOBS  # the kill happened with jobs in flight

    store = store_from_url(fleet_setup.store_url)
    jobs = [store.get(job_id) for job_id in ids]
    store.close()
    assert all(j is not None and j.state is JobState.COMPLETED and j.result is not None for j in jobs)
    remote_ids = [j.remote_id for j in jobs if j is not None]
    submitted = Counter(job.id for job in sandbox.jobs)  # one sandbox job per accepted submit
    assert len(sandbox.submits()) == JOBS and sorted(submitted.values()) == [1] * JOBS
    assert sorted(remote_ids) == sorted(submitted)  # each stored job is exactly one sandbox job: none lost
    for job_id, outcome, job in zip(ids, outcomes, jobs, strict=True):
        assert outcome["job_id"] == job_id
        assert job is not None and job.result is not None and job.result.saved_to is not None
        assert Path(job.result.saved_to).stat().st_size > 0
