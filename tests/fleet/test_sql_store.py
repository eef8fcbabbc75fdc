"""The SQL store beyond the shared semantics: URLs, secrets, schema versions on PostgreSQL and SQLite, the CLI
against PostgreSQL, and two resumer processes sharing one PostgreSQL store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fleet_support import SANDBOX_KEYS, FleetSetup
from typer.testing import CliRunner

from lipsyncer import ConfigError, Job, JobState, JobStatus, Lipsyncer, LipsyncRequest
from lipsyncer.cli import build_app
from lipsyncer.contrib.sandbox import LoopbackServer
from lipsyncer.contrib.sandbox.testing import SampleMedia
from lipsyncer.core.jobs import SCHEMA_VERSION, SQLiteJobStore, SQLJobStore, store_from_url
from servers import PostgresServer, free_port


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    return {"processing_seconds": 1.5, "queue_seconds": 0.1}  # still running when the resumers start


def new_job(job_id: str = "job_1") -> Job:
    return Job(
        id=job_id,
        provider="fal-v3",
        model="sync-3",
        endpoint="fal-ai/sync-lipsync/v3",
        request_fingerprint="f" * 32,
        state=JobState.QUEUED,
        remote_id=f"r-{job_id}",
    )


def run_cli(*args: str) -> tuple[int, str, str]:
    outcome = CliRunner().invoke(build_app(), list(args))
    return outcome.exit_code, outcome.stdout, outcome.stderr


# ---------------------------------------------------------------------------------------- URLs and secrets


def test_store_from_url_reads_paths_sqlite_urls_and_postgresql(tmp_path: Path, postgres_url: str) -> None:
    plain = store_from_url(tmp_path / "a.sqlite")
    url = store_from_url(f"sqlite:///{tmp_path / 'b.sqlite'}")
    server = store_from_url(postgres_url)
    try:
        assert isinstance(plain, SQLiteJobStore) and plain.path == tmp_path / "a.sqlite"
        assert isinstance(url, SQLiteJobStore) and url.path == tmp_path / "b.sqlite"
        assert server.url.drivername == "postgresql+psycopg"  # psycopg 3, whatever the URL named
        assert server.schema_version == SCHEMA_VERSION
    finally:
        for store in (plain, url, server):
            store.close()


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("mysql://user@host/db", "not supported"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_unsupported_stores_are_refused_with_a_fix(target: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said) as info:
        store_from_url(target)
    assert info.value.fix is not None


def test_a_store_password_never_shows_in_reprs_or_errors(postgres: PostgresServer) -> None:
    secret = "s3cret-Pa55"
    closed_port = free_port()  # nothing listens there
    with pytest.raises(ConfigError) as info:
        store_from_url(f"postgresql://postgres:{secret}@127.0.0.1:{closed_port}/nowhere")
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert all(secret not in f"{e!s} {e!r}" for e in chain)
    assert "***" in str(info.value) and info.value.fix is not None
    store = store_from_url(f"postgresql://postgres:{secret}@127.0.0.1:{postgres.port}/postgres")
    try:
        assert secret not in repr(store) and "***" in repr(store)
    finally:
        store.close()


def test_pool_settings_in_the_url_size_the_pool_and_never_reach_the_server(postgres_url: str) -> None:
    store = store_from_url(f"{postgres_url}?pool_size=2&max_overflow=0&pool_timeout=5")
    try:
        store.create(new_job())
        assert store.get("job_1") is not None
        engine = store._engine
        assert not set(engine.url.query) & {"pool_size", "max_overflow", "pool_timeout"}  # the server's URL
        assert engine.pool.size() == 2  # type: ignore[attr-defined]
    finally:
        store.close()


# ---------------------------------------------------------------------------------------- schema versions


def _old_postgres_layout(url: str) -> None:
    """A version-1 store by hand: the 0.1 layout, no version table."""
    import psycopg  # here, not at collection: every xdist worker collects this module (~0.3 s)

    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, provider TEXT NOT NULL, remote_id TEXT, state TEXT NOT NULL,"
            " submitted_at TEXT NOT NULL, updated_at TEXT NOT NULL, data TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE job_status (job_id TEXT NOT NULL, observed_at TEXT NOT NULL, state TEXT NOT NULL,"
            " data TEXT NOT NULL)"
        )
        job = new_job("job_old")
        conn.execute(
            "INSERT INTO jobs VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        for state in ("queued", "running"):
            status = JobStatus(state=JobState(state))
            conn.execute(
                "INSERT INTO job_status VALUES (%s, %s, %s, %s)",
                (job.id, status.observed_at.isoformat(), state, status.model_dump_json()),
            )


def test_an_older_postgresql_store_is_refused_until_jobs_migrate_runs(postgres_url: str) -> None:
    _old_postgres_layout(postgres_url)
    with pytest.raises(ConfigError, match="schema version 1") as info:
        store_from_url(postgres_url)
    assert info.value.fix is not None and "lipsyncer jobs migrate --store" in info.value.fix

    code, out, err = run_cli("jobs", "migrate", "--store", postgres_url)
    assert code == 0, err
    assert f"schema version {SCHEMA_VERSION}" in out
    store = store_from_url(postgres_url)
    try:
        old = store.get("job_old")
        assert old is not None and old.version == 1 and store.get_by_key("job_old") is not None
        assert [s.state for s in store.history("job_old")] == [JobState.QUEUED, JobState.RUNNING]
        old.state = JobState.CANCELLED
        assert store.update(old) is not None
        assert store.claim("job_old", "me", until=10.0, now=1.0)
        assert store.schema_version == SCHEMA_VERSION
    finally:
        store.close()
    code, out, _ = run_cli("jobs", "migrate", "--store", postgres_url)  # again: nothing to do
    assert code == 0 and f"schema version {SCHEMA_VERSION}" in out


def test_a_newer_postgresql_store_is_refused(postgres_url: str) -> None:
    store_from_url(postgres_url).close()
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE lipsyncer_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer") as info:
        store_from_url(postgres_url)
    assert info.value.fix is not None and "upgrade lipsyncer" in info.value.fix


def test_a_version_two_sqlite_store_keeps_its_history_order(tmp_path: Path) -> None:
    """Version 2 (lipsyncer's first CAS store) had no history sequence; rows are renumbered in rowid order."""
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE jobs (id TEXT PRIMARY KEY, provider TEXT NOT NULL, remote_id TEXT, state TEXT NOT NULL,
            submitted_at TEXT NOT NULL, updated_at TEXT NOT NULL, data TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1, idempotency_key TEXT, claim_owner TEXT, claim_until REAL);
        CREATE UNIQUE INDEX jobs_key ON jobs (idempotency_key);
        CREATE TABLE job_status (job_id TEXT NOT NULL, observed_at TEXT NOT NULL, state TEXT NOT NULL,
            data TEXT NOT NULL);
        CREATE INDEX job_status_job ON job_status (job_id);
        PRAGMA user_version = 2;
        """
    )
    job = new_job()
    db.execute(
        "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, 4, 'key-1', NULL, NULL)",
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
    # Observed-at stamps out of order on purpose: the order written is what counts.
    written = [
        ("running", "2026-01-01T00:00:03"),
        ("queued", "2026-01-01T00:00:01"),
        ("completed", "2026-01-01"),
    ]
    for state, at in written:
        status = JobStatus(state=JobState(state))
        db.execute(
            "INSERT INTO job_status VALUES (?, ?, ?, ?)", (job.id, at, state, status.model_dump_json())
        )
    db.commit()
    db.close()
    store = SQLiteJobStore(path)
    try:
        assert [s.state.value for s in store.history(job.id)] == [state for state, _ in written]
        migrated = store.get_by_key("key-1")
        assert migrated is not None and migrated.version == 4
        store.record_status(job.id, JobStatus(state=JobState.FAILED))
        assert store.history(job.id)[-1].state is JobState.FAILED
    finally:
        store.close()
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


# ---------------------------------------------------------------------------------------- processes


RESUMER = """
import json, sys
from lipsyncer import Lipsyncer
with Lipsyncer(config=sys.argv[1]) as client:
    outcomes = client.resume()
print(json.dumps([getattr(o, "job_id", None) or repr(o) for o in outcomes]))
"""


@pytest.mark.slow
def test_two_processes_resuming_one_postgresql_store_complete_and_download_each_job_once(
    fleet_setup: FleetSetup, served: LoopbackServer, media: SampleMedia, tmp_path: Path
) -> None:
    sandbox = served.sandbox
    with Lipsyncer(config=fleet_setup.config, env=SANDBOX_KEYS) as client:
        assert isinstance(client.store, SQLJobStore) and client.store.url.get_backend_name() == "postgresql"
        jobs = [
            client.submit(
                LipsyncRequest(video=media.video, audio=media.audio, model=model),
                save_to=tmp_path / f"{i}.mp4",
            )
            for i, model in enumerate(["lipsync-2", "lipsync-2-pro", "sync-3", "lipsync-1.9.0-beta"] * 2)
        ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RESUMER, str(fleet_setup.config)],
            cwd=tmp_path,
            env=fleet_setup.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    returned = [json.loads(out) for out, _ in outputs]
    ids = {job.id for job in jobs}
    # A resumer returns a result (never an error) for every job it found unfinished, including the jobs the
    # other one completes; one that starts late finds fewer. Together they return every job.
    assert all(set(one) <= ids for one in returned), returned
    assert set().union(*returned) == ids, returned
    store = store_from_url(fleet_setup.store_url)
    try:
        for job in jobs:
            stored = store.get(job.id)
            assert stored is not None and stored.state is JobState.COMPLETED and stored.result is not None
            assert Path(stored.result.saved_to or "").stat().st_size > 0
    finally:
        store.close()
    result_gets = Counter(r.job_id for r in sandbox.find_requests(api="fal", operation="result"))
    file_gets = Counter(
        r.path for r in sandbox.find_requests(api="cdn", operation="file") if r.method == "GET"
    )
    assert sorted(result_gets.values()) == [1] * len(jobs)  # fetched once per job
    assert sorted(file_gets.values()) == [1] * len(jobs)  # downloaded once per job
    assert len(sandbox.submits()) == len(jobs)


def test_jobs_list_and_show_read_a_postgresql_store(
    fleet_setup: FleetSetup, served: LoopbackServer, media: SampleMedia
) -> None:
    with Lipsyncer(config=fleet_setup.config, env=SANDBOX_KEYS) as client:
        job = client.submit(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
    code, out, err = run_cli("jobs", "list", "--store", fleet_setup.store_url, "--json")
    assert code == 0, err
    assert [j["id"] for j in json.loads(out)["jobs"]] == [job.id]
    code, out, err = run_cli("jobs", "show", job.id, "--store", fleet_setup.store_url, "--json")
    assert code == 0, err
    assert json.loads(out)["remote_id"] == job.remote_id
