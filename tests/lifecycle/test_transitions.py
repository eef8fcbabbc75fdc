"""The lifecycle's rules, as properties: states move forward only, a finished job never changes, every
transition fires its event once, and a stale writer never overwrites a newer row."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipsyncer import Job, JobEvent, JobState, JobStatus, LipsyncResult, MemoryJobStore, Submission, hookimpl
from lipsyncer.core.lifecycle import Lifecycle
from lipsyncer.core.plugins import PluginHost
from lipsyncer.core.schema import Attempt, LogEntry, ServedBy, Timings, VideoFile, utcnow

RANK = {
    JobState.SUBMITTING: 0,
    JobState.UNKNOWN: 0,
    JobState.QUEUED: 1,
    JobState.RUNNING: 2,
    JobState.COMPLETED: 3,
    JobState.FAILED: 3,
    JobState.CANCELLED: 3,
}
FINISHED = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}


def new_job() -> Job:
    return Job(id="job_x", provider="p", model="m", endpoint="e", request_fingerprint="f")


def result() -> LipsyncResult:
    return LipsyncResult(
        video=VideoFile(url="https://cdn.example/out.mp4"),
        served_by=ServedBy(provider="p", model="m", endpoint="e"),
        remote_id="r",
        job_id="job_x",
        timings=Timings(submitted_at=utcnow()),
    )


statuses = st.builds(
    JobStatus,
    state=st.sampled_from(
        [JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED]
    ),
    progress=st.one_of(st.none(), st.integers(0, 100).map(float)),
    queue_position=st.one_of(st.none(), st.integers(0, 5)),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("observe"), statuses),
        st.tuples(st.just("complete"), st.none()),
        st.tuples(st.just("stale"), statuses),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_states_only_move_forward_and_events_fire_once(plan: list[tuple[str, Any]]) -> None:
    events: list[JobEvent] = []
    store = MemoryJobStore()
    lifecycle = Lifecycle(store, events.append, owner="me")
    job, created = lifecycle.begin(new_job())
    assert created and job.state is JobState.SUBMITTING
    job = lifecycle.accepted(job, Submission(remote_id="r", endpoint="e"), Attempt(provider="p", model="m"))
    stale = job.model_copy(deep=True)
    seen = [job.state]
    for kind, status in plan:
        before = lifecycle.fresh(job)
        if kind == "observe":
            job = lifecycle.observe(job, status)
        elif kind == "complete":
            job = lifecycle.completed(job, result())
        else:  # a writer holding an old copy: the swap must re-read, never overwrite
            job = lifecycle.observe(stale, status)
        after = lifecycle.fresh(job)
        assert after.version >= before.version
        assert RANK[after.state] >= RANK[before.state]
        if before.state in FINISHED:
            assert after.model_dump(exclude={"updated_at"}) == before.model_dump(exclude={"updated_at"})
        if after.state is JobState.COMPLETED:
            assert after.result is not None  # completed only with its result stored
        seen.append(after.state)
    kinds = Counter(e.kind for e in events)
    assert kinds["submitted"] == 1
    assert kinds["completed"] + kinds["failed"] + kinds["cancelled"] <= 1
    assert kinds["completed"] == (JobState.COMPLETED in seen)
    # one "status" event per stored change of (state, progress, queue position), none for repeats
    assert kinds["status"] == len(store.history("job_x"))


def test_a_provider_completion_is_not_a_completed_job() -> None:
    lifecycle = Lifecycle(MemoryJobStore(), lambda e: None, owner="me")
    job, _ = lifecycle.begin(new_job())
    job = lifecycle.accepted(job, Submission(remote_id="r", endpoint="e"), Attempt(provider="p", model="m"))
    job = lifecycle.observe(job, JobStatus(state=JobState.COMPLETED))
    assert job.state is JobState.RUNNING and job.last_status is not None
    assert job.last_status.state is JobState.COMPLETED and job.result is None


def test_unknown_jobs_resolve_once_and_late_answers_change_nothing() -> None:
    events: list[JobEvent] = []
    lifecycle = Lifecycle(MemoryJobStore(), events.append, owner="me")
    job, _ = lifecycle.begin(new_job())
    job = lifecycle.unknown(job, message="answer lost")
    assert job.state is JobState.UNKNOWN
    job = lifecycle.resolved(job, "r-1", how="webhook")
    assert (job.state, job.remote_id) == (JobState.QUEUED, "r-1")
    again = lifecycle.resolved(job, "r-2", how="hand")  # already resolved: nothing changes
    late = lifecycle.accepted(
        job, Submission(remote_id="r-3", endpoint="e"), Attempt(provider="p", model="m")
    )
    assert again.remote_id == late.remote_id == "r-1"
    assert [e.kind for e in events] == ["unknown", "submitted"]


class Recorded:
    def __init__(self) -> None:
        self.calls: list[str] = []


def plugins(record: Recorded) -> Iterator[object]:
    class First:
        @hookimpl(tryfirst=True)
        def job_event(self, event: JobEvent) -> None:
            record.calls.append(f"first:{event.kind}")

    class NoArgs:
        @hookimpl
        def job_event(self) -> None:  # pluggy passes only the arguments an impl asks for
            record.calls.append("noargs")

    class Wrapper:
        @hookimpl(wrapper=True)
        def job_event(self, event: JobEvent) -> Iterator[None]:
            record.calls.append("wrapper:before")
            yield
            record.calls.append("wrapper:after")

    class Broken:
        @hookimpl(trylast=True)
        def job_event(self, event: JobEvent) -> None:
            raise RuntimeError("an observer's bug")

    yield from (NoArgs(), First(), Wrapper(), Broken())


def test_job_events_go_through_pluggy(caplog: pytest.LogCaptureFixture) -> None:
    record = Recorded()
    host = PluginHost(entry_points=False, plugins=list(plugins(record)))
    lifecycle = Lifecycle(MemoryJobStore(), host.emit, owner="me")
    job, _ = lifecycle.begin(new_job())
    stored = lifecycle.unknown(job, message="lost")  # the observer that raises is logged; the job moves on
    assert stored.state is JobState.UNKNOWN
    # pluggy's order: tryfirst, then the others newest first, trylast last; the raising (trylast) impl ends
    # the call as pluggy documents, so the wrapper's yield raises and its "after" part does not run.
    assert record.calls == ["wrapper:before", "first:unknown", "noargs"]
    assert "observer failed" in caplog.text
    record.calls.clear()
    healthy = PluginHost(entry_points=False, plugins=list(plugins(record))[:3])
    Lifecycle(MemoryJobStore(), healthy.emit, owner="me").begin(new_job())  # begin fires no event
    healthy.emit(JobEvent(kind="status", job_id="job_x", provider="p", model="m"))
    assert record.calls == ["wrapper:before", "first:status", "noargs", "wrapper:after"]


def test_the_row_keeps_the_latest_look_up_without_its_logs_and_the_history_keeps_them() -> None:
    store = MemoryJobStore()
    lifecycle = Lifecycle(store, lambda e: None, owner="me")
    job, _ = lifecycle.begin(new_job())
    job = lifecycle.accepted(job, Submission(remote_id="r", endpoint="e"), Attempt(provider="p", model="m"))
    logs = [LogEntry(message=f"Processing: {n}%") for n in (10, 20)]
    status = JobStatus(state=JobState.RUNNING, progress=20.0, logs=logs)
    job = lifecycle.observe(job, status)
    assert job.last_status is not None and job.last_status.logs == []
    assert (job.last_status.state, job.last_status.progress) == (JobState.RUNNING, 20.0)
    assert store.history(job.id) == [status], "the history keeps the look-up whole"
    stored = store.get(job.id)
    assert stored is not None and stored.last_status == job.last_status


@settings(max_examples=60, deadline=None)
@given(
    sends=st.integers(1, 4),
    target=st.sampled_from([None, "http://127.0.0.1:9"]),
    data=st.sampled_from([None, {}, {"price_per_second": "0.05"}]),
)
def test_every_send_is_counted_even_on_the_route_already_stored(
    sends: int, target: str | None, data: dict[str, str] | None
) -> None:
    """A prepared job is stored with its first route; sending it there (to the provider's real hosts: no
    target, no new data) must still count, or a resumer would take it for never sent and send it again."""
    store = MemoryJobStore()
    lifecycle = Lifecycle(store, lambda event: None, owner="me")
    prepared = new_job()
    prepared.provider_data["price_per_second"] = "0.05"
    job, _ = lifecycle.begin(prepared)
    assert job.sends == 0
    for n in range(1, sends + 1):
        job = lifecycle.sending(job, provider="p", model="m", endpoint="e", target=target, data=data)
        assert (job.sends, lifecycle.fresh(job).sends) == (n, n)  # the rule: one more per send, stored
    assert job.state is JobState.SUBMITTING
