"""Durable job handles: a paid job is on disk before anything waits on it.

The store is a small protocol so a platform can put jobs in its own database; SQLite in WAL mode is the
default because it survives a SIGKILL mid-write and lets a second process read while the first polls.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .schema import Job, JobState, JobStatus, utcnow

__all__ = ["JobStore", "MemoryJobStore", "SQLiteJobStore", "default_store_path"]


@runtime_checkable
class JobStore(Protocol):
    def save(self, job: Job) -> None:
        """Insert or replace the job (its id is the key)."""

    def get(self, job_id: str) -> Job | None: ...

    def find_remote(self, provider: str, remote_id: str) -> Job | None: ...

    def list_jobs(self, *, states: Iterable[JobState] | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""

    def record_status(self, job_id: str, status: JobStatus) -> None:
        """Append to the job's status history (the job row is updated separately by ``save``)."""

    def history(self, job_id: str) -> list[JobStatus]: ...


def default_store_path(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lipsyncer" / "jobs.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    remote_id TEXT,
    state TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_remote ON jobs (provider, remote_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS job_status (
    job_id TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_status_job ON job_status (job_id);
"""


class SQLiteJobStore:
    """One connection per store, serialised by a lock; WAL lets other processes read and write alongside.

    ``synchronous=NORMAL`` in WAL mode survives a process kill (only an OS crash can lose the last commits),
    which is the failure this store exists for, at a fraction of the cost of an fsync per write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteJobStore({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, query: str, params: Sequence[object] = ()) -> list[tuple[str]]:
        with self._lock:
            return self._db.execute(query, params).fetchall()

    def _write(self, query: str, params: Sequence[object]) -> None:
        with self._lock:
            self._db.execute(query, params)

    def save(self, job: Job) -> None:
        job.updated_at = utcnow()
        row = (
            job.id,
            job.provider,
            job.remote_id,
            job.state.value,
            job.submitted_at.isoformat(),
            job.updated_at.isoformat(),
            job.model_dump_json(),
        )
        self._write("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def get(self, job_id: str) -> Job | None:
        rows = self._rows("SELECT data FROM jobs WHERE id = ?", (job_id,))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def find_remote(self, provider: str, remote_id: str) -> Job | None:
        rows = self._rows("SELECT data FROM jobs WHERE provider = ? AND remote_id = ?", (provider, remote_id))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def list_jobs(self, *, states: Iterable[JobState] | None = None, limit: int = 100) -> list[Job]:
        query = "SELECT data FROM jobs"
        params: list[object] = []
        if states is not None:
            wanted = [s.value for s in states]
            query += f" WHERE state IN ({', '.join('?' for _ in wanted)})"
            params += wanted
        query += " ORDER BY submitted_at DESC LIMIT ?"
        params.append(limit)
        return [Job.model_validate_json(r[0]) for r in self._rows(query, params)]

    def record_status(self, job_id: str, status: JobStatus) -> None:
        row = (job_id, status.observed_at.isoformat(), status.state.value, status.model_dump_json())
        self._write("INSERT INTO job_status VALUES (?, ?, ?, ?)", row)

    def history(self, job_id: str) -> list[JobStatus]:
        rows = self._rows("SELECT data FROM job_status WHERE job_id = ? ORDER BY rowid", (job_id,))
        return [JobStatus.model_validate_json(r[0]) for r in rows]


class MemoryJobStore:
    """For tests and short scripts that accept losing jobs with the process."""

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}
        self._history: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def save(self, job: Job) -> None:
        job.updated_at = utcnow()
        with self._lock:
            self._jobs[job.id] = job.model_dump_json()

    def get(self, job_id: str) -> Job | None:
        data = self._jobs.get(job_id)
        return Job.model_validate_json(data) if data else None

    def find_remote(self, provider: str, remote_id: str) -> Job | None:
        for data in list(self._jobs.values()):
            job = Job.model_validate_json(data)
            if job.provider == provider and job.remote_id == remote_id:
                return job
        return None

    def list_jobs(self, *, states: Iterable[JobState] | None = None, limit: int = 100) -> list[Job]:
        wanted = None if states is None else set(states)
        jobs = [Job.model_validate_json(d) for d in list(self._jobs.values())]
        jobs = [j for j in jobs if wanted is None or j.state in wanted]
        return sorted(jobs, key=lambda j: j.submitted_at, reverse=True)[:limit]

    def record_status(self, job_id: str, status: JobStatus) -> None:
        with self._lock:
            self._history.setdefault(job_id, []).append(status.model_dump_json())

    def history(self, job_id: str) -> list[JobStatus]:
        return [JobStatus.model_validate_json(d) for d in self._history.get(job_id, [])]


def job_summary(job: Job) -> dict[str, object]:
    """A compact, secret-free view for CLIs and logs."""
    fields = {"id", "provider", "model", "endpoint", "remote_id", "state", "submitted_at"}
    summary: dict[str, object] = json.loads(job.model_dump_json(include=fields))
    return summary
