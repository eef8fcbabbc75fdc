"""Job store semantics every implementation must have: compare-and-swap, unique keys, claims, migration.

The SQL store runs on SQLite and on a private PostgreSQL (real server, see tests/servers.py)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lipsyncer import Job, JobState, JobStatus, LogEntry, MemoryJobStore, SQLiteJobStore
from lipsyncer.core.errors import ConfigError
from lipsyncer.core.jobs import SCHEMA_VERSION, JobStore, store_from_url

StoreFactory = Callable[[], JobStore]


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Several handles on one store (SQL: separate engines on one database, like processes)."""
    made: list[JobStore] = []
    shared = MemoryJobStore()
    target = {
        "sqlite": lambda: str(tmp_path / "jobs.sqlite"),
        "postgresql": lambda: request.getfixturevalue("postgres_url"),
        "memory": lambda: "",
    }[request.param]()

    def make() -> JobStore:
        store: JobStore = store_from_url(target) if target else shared
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def new_job(job_id: str = "job_1", *, key: str | None = None) -> Job:
    return Job(
        id=job_id,
        provider="fal-v3",
        model="sync-3",
        endpoint="fal-ai/sync-lipsync/v3",
        request_fingerprint="f" * 32,
        state=JobState.SUBMITTING,
        idempotency_key=key,
    )


def test_create_stores_version_one_and_a_key_replays(make_store: StoreFactory) -> None:
    store = make_store()
    first = store.create(new_job("job_a", key="ep1"))
    assert first.version == 1 and first.id == "job_a"
    again = make_store().create(new_job("job_b", key="ep1"))
    assert again.id == "job_a"  # the stored job, not a second one
    assert make_store().get("job_b") is None
    assert [j.id for j in store.list_jobs()] == ["job_a"]
    assert store.get_by_key("ep1") is not None
    unkeyed = store.create(new_job("job_c"))
    assert store.get_by_key("job_c") is not None and unkeyed.version == 1  # no key: the id is the key


def test_update_is_a_compare_and_swap(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    created = store.create(new_job())
    mine = created.model_copy(deep=True)
    theirs = created.model_copy(deep=True)
    theirs.state = JobState.QUEUED
    theirs.remote_id = "r-1"
    stored = other.update(theirs)
    assert stored is not None and stored.version == 2
    mine.state = JobState.UNKNOWN  # written from a stale copy (version 1)
    assert store.update(mine) is None
    fresh = store.get(created.id)
    assert fresh is not None and fresh.state is JobState.QUEUED and fresh.version == 2
    assert store.find_remote("fal-v3", "r-1") is not None


def test_a_swap_with_a_status_writes_its_history_only_when_it_wins(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    created = store.create(new_job())
    stale = created.model_copy(deep=True)
    running = JobStatus(state=JobState.RUNNING, progress=40.0, logs=[LogEntry(message="Processing: 40%")])
    won = other.update(created.model_copy(update={"state": JobState.RUNNING}), status=running)
    assert won is not None and won.version == 2
    lost = JobStatus(state=JobState.FAILED, error_message="from a stale copy")
    assert store.update(stale.model_copy(update={"state": JobState.FAILED}), status=lost) is None
    # The losing swap left neither its row nor its history entry; the winner's entry is whole (logs kept).
    assert [(h.state, h.progress, [e.message for e in h.logs]) for h in store.history(created.id)] == [
        (JobState.RUNNING, 40.0, ["Processing: 40%"])
    ]
    fresh = store.get(created.id)
    assert fresh is not None and fresh.state is JobState.RUNNING and fresh.version == 2


def test_concurrent_swaps_lose_no_update(make_store: StoreFactory) -> None:
    """Each writer re-reads on conflict; N increments from N threads end at version N + 1."""
    store = make_store()
    store.create(new_job())
    handles = [make_store() for _ in range(8)]

    def bump(handle: JobStore) -> None:
        for _ in range(10):
            while True:
                job = handle.get("job_1")
                assert job is not None
                job.provider_data["n"] = job.provider_data.get("n", 0) + 1
                if handle.update(job) is not None:
                    break

    threads = [threading.Thread(target=bump, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.get("job_1")
    assert final is not None
    assert final.provider_data["n"] == 80 and final.version == 81


def test_claims_exclude_others_until_released_or_expired(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    store.create(new_job())
    assert store.claim("job_1", "a", until=100.0, now=0.0)
    assert not other.claim("job_1", "b", until=150.0, now=50.0)  # held by a, not expired
    assert store.claim("job_1", "a", until=200.0, now=60.0)  # the owner renews
    claim = other.claim_of("job_1")
    assert claim is not None and (claim.owner, claim.until) == ("a", 200.0)
    other.release("job_1", "b")  # not b's to release
    assert other.claim_of("job_1") is not None
    assert other.claim("job_1", "b", until=400.0, now=200.0)  # a's lease ran out at 200
    store.release("job_1", "b")
    assert store.claim_of("job_1") is None
    assert not store.claim("job_missing", "a", until=1.0, now=0.0)


def test_delete_forgets_the_job_its_key_and_history(make_store: StoreFactory) -> None:
    store = make_store()
    store.create(new_job(key="k"))
    from lipsyncer import JobStatus

    store.record_status("job_1", JobStatus(state=JobState.QUEUED))
    assert store.delete("job_1")
    assert store.get("job_1") is None and store.get_by_key("k") is None and store.history("job_1") == []
    assert not store.delete("job_1")
    assert store.create(new_job("job_2", key="k")).id == "job_2"  # the key is free again


def test_a_version_one_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE jobs (id TEXT PRIMARY KEY, provider TEXT NOT NULL, remote_id TEXT, state TEXT NOT NULL,
            submitted_at TEXT NOT NULL, updated_at TEXT NOT NULL, data TEXT NOT NULL);
        CREATE TABLE job_status (job_id TEXT NOT NULL, observed_at TEXT NOT NULL, state TEXT NOT NULL,
            data TEXT NOT NULL);
        """
    )
    job = new_job("job_old")
    job.state, job.remote_id = JobState.QUEUED, "r-old"
    old.execute(
        "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            job.id,
            job.provider,
            job.remote_id,
            job.state.value,
            "2026-01-01",
            "2026-01-01",
            job.model_dump_json(),
        ),
    )
    old.commit()
    old.close()
    store = SQLiteJobStore(path)
    migrated = store.get("job_old")
    assert migrated is not None and migrated.version == 1 and migrated.remote_id == "r-old"
    assert store.get_by_key("job_old") is not None  # old jobs are keyed by their id
    migrated.state = JobState.RUNNING
    assert store.update(migrated) is not None
    store.close()
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    SQLiteJobStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="newer") as info:
        SQLiteJobStore(path)
    assert info.value.fix is not None and "upgrade lipsyncer" in info.value.fix


def _claim_in_process(target: str, owner: str, barrier: object, results: object) -> None:
    store = store_from_url(target)
    barrier.wait()  # type: ignore[attr-defined]
    results.put((owner, store.claim("job_1", owner, until=1e12, now=1.0)))  # type: ignore[attr-defined]
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_exactly_one_process_wins_a_claim(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    target = str(tmp_path / "jobs.sqlite") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = store_from_url(target)
    store.create(new_job())
    store.close()  # nothing of the parent's connections may reach the children
    # fork: four real processes racing on one store, without each re-importing the world as spawn would
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(target, f"p{i}", barrier, results)) for i in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    winners = [owner for owner, won in outcomes.items() if won]
    assert len(winners) == 1
    claim = store_from_url(target).claim_of("job_1")
    assert claim is not None and claim.owner == winners[0]
