"""Durable job handles: a paid job is on disk before a byte of its submit leaves.

The store is a small protocol so a platform can put jobs in its own database. Its semantics are what make
"never billed twice, nothing paid lost" hold across processes:

- every row carries a ``version``; :meth:`JobStore.update` is a compare-and-swap on it, so a stale writer
  (a waiter holding an old copy, a second resumer) can never overwrite a newer state;
- an idempotency key is unique per store: :meth:`JobStore.create` returns the job already stored under the
  key instead of writing a second one;
- a claim (owner + lease expiry) lets exactly one waiter, webhook handler or process complete and download
  a job; an expired lease is free to take, so a crashed owner blocks no one for long.

Only :mod:`lipsyncer.core.lifecycle` writes job state through these methods. SQLite in WAL mode is the
default because it survives a SIGKILL mid-write and lets several processes share one file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import ConfigError
from .schema import Job, JobState, JobStatus, utcnow

__all__ = [
    "SCHEMA_VERSION",
    "Claim",
    "JobStore",
    "MemoryJobStore",
    "SQLiteJobStore",
    "default_store_path",
    "job_summary",
]

SCHEMA_VERSION = 2
"""Version 1 (lipsyncer 0.1) had no versions, keys or claims; it is migrated in place on open."""


@dataclass(frozen=True)
class Claim:
    """Who holds a job's claim, and until when (unix seconds)."""

    owner: str
    until: float


@runtime_checkable
class JobStore(Protocol):
    """Where jobs live. Implementations must make ``update`` and ``claim`` atomic across processes."""

    def create(self, job: Job) -> Job:
        """Insert ``job`` (version 1). When its ``idempotency_key`` is already stored, write nothing and
        return the stored job: the caller compares ids to tell which happened."""

    def update(self, job: Job) -> Job | None:
        """Compare-and-swap: store ``job`` as version ``job.version + 1`` if the stored version is still
        ``job.version``; return the stored job, or None when another writer got there first."""

    def get(self, job_id: str) -> Job | None: ...

    def get_by_key(self, idempotency_key: str) -> Job | None: ...

    def find_remote(self, provider: str, remote_id: str) -> Job | None: ...

    def list_jobs(self, *, states: Iterable[JobState] | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""

    def delete(self, job_id: str) -> bool:
        """Forget a job and its history (pruning); True when it existed."""

    def claim(self, job_id: str, owner: str, *, until: float, now: float) -> bool:
        """Take (or renew) the job's claim when it is free, expired (``until <= now``) or already ``owner``'s."""

    def release(self, job_id: str, owner: str) -> None:
        """Give the claim up, if ``owner`` holds it."""

    def claim_of(self, job_id: str) -> Claim | None: ...

    def record_status(self, job_id: str, status: JobStatus) -> None:
        """Append to the job's status history."""

    def history(self, job_id: str) -> list[JobStatus]: ...

    def close(self) -> None: ...


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
    data TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    idempotency_key TEXT,
    claim_owner TEXT,
    claim_until REAL
);
CREATE INDEX IF NOT EXISTS jobs_remote ON jobs (provider, remote_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (idempotency_key);
CREATE TABLE IF NOT EXISTS job_status (
    job_id TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_status_job ON job_status (job_id);
"""

_MIGRATE_1_TO_2 = """
ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN claim_owner TEXT;
ALTER TABLE jobs ADD COLUMN claim_until REAL;
UPDATE jobs SET idempotency_key = id;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (idempotency_key);
"""


def _row(job: Job) -> dict[str, object]:
    job.updated_at = utcnow()
    return {
        "id": job.id,
        "provider": job.provider,
        "remote_id": job.remote_id,
        "state": job.state.value,
        "submitted_at": job.submitted_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "data": job.model_dump_json(),
        "version": job.version,
        "idempotency_key": job.idempotency_key or job.id,
    }


class SQLiteJobStore:
    """One connection per store, serialised by a lock; WAL lets other processes read and write alongside.

    ``synchronous=NORMAL`` in WAL mode survives a process kill (only an OS crash can lose the last commits),
    which is the failure this store exists for, at a fraction of the cost of an fsync per write. Compare-and-
    swap and claims are single ``UPDATE ... WHERE`` statements, atomic across processes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._open_schema()

    def _open_schema(self) -> None:
        """Create or migrate the schema; BEGIN IMMEDIATE makes concurrent openers take turns."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"job store {self.path} has schema version {version}, newer than this lipsyncer "
                    f"understands ({SCHEMA_VERSION})",
                    fix="upgrade lipsyncer, or point job_store at another file",
                )
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            script = (_MIGRATE_1_TO_2 if "jobs" in tables and version < 2 else "") + _SCHEMA
            for statement in filter(None, (s.strip() for s in script.split(";"))):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        return f"SQLiteJobStore({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, query: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._db.execute(query, params).fetchall()

    def _write(self, query: str, params: Sequence[object] | dict[str, object]) -> int:
        with self._lock:
            return self._db.execute(query, params).rowcount

    @staticmethod
    def _job(data: object, version: object) -> Job:
        job = Job.model_validate_json(str(data))
        job.version = int(str(version))
        return job

    def _one(self, where: str, params: Sequence[object]) -> Job | None:
        rows = self._rows(f"SELECT data, version FROM jobs WHERE {where} LIMIT 1", params)
        return self._job(*rows[0]) if rows else None

    def create(self, job: Job) -> Job:
        job.version = 1
        row = _row(job)
        inserted = self._write(
            "INSERT INTO jobs (id, provider, remote_id, state, submitted_at, updated_at, data, version, "
            "idempotency_key) VALUES (:id, :provider, :remote_id, :state, :submitted_at, :updated_at, :data, "
            ":version, :idempotency_key) ON CONFLICT (idempotency_key) DO NOTHING",
            row,
        )
        if inserted:
            return job
        stored = self.get_by_key(str(row["idempotency_key"]))
        if stored is None:  # the id itself collided: not a key replay, a bug
            raise ConfigError(f"job id {job.id} is already stored")
        return stored

    def update(self, job: Job) -> Job | None:
        expected = job.version
        new = job.model_copy(update={"version": expected + 1})  # the caller's draft is already private
        row = _row(new)
        row["expected"] = expected
        changed = self._write(
            "UPDATE jobs SET provider = :provider, remote_id = :remote_id, state = :state, "
            "updated_at = :updated_at, data = :data, version = :version "
            "WHERE id = :id AND version = :expected",
            row,
        )
        return new if changed else None

    def get(self, job_id: str) -> Job | None:
        return self._one("id = ?", (job_id,))

    def get_by_key(self, idempotency_key: str) -> Job | None:
        return self._one("idempotency_key = ?", (idempotency_key,))

    def find_remote(self, provider: str, remote_id: str) -> Job | None:
        return self._one("provider = ? AND remote_id = ?", (provider, remote_id))

    def list_jobs(self, *, states: Iterable[JobState] | None = None, limit: int = 100) -> list[Job]:
        query = "SELECT data, version FROM jobs"
        params: list[object] = []
        if states is not None:
            wanted = [s.value for s in states]
            query += f" WHERE state IN ({', '.join('?' for _ in wanted)})"
            params += wanted
        query += " ORDER BY submitted_at DESC LIMIT ?"
        params.append(limit)
        return [self._job(*r) for r in self._rows(query, params)]

    def delete(self, job_id: str) -> bool:
        with self._lock:
            self._db.execute("DELETE FROM job_status WHERE job_id = ?", (job_id,))
            return bool(self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount)

    def claim(self, job_id: str, owner: str, *, until: float, now: float) -> bool:
        return bool(
            self._write(
                "UPDATE jobs SET claim_owner = ?, claim_until = ? WHERE id = ? AND "
                "(claim_owner IS NULL OR claim_owner = ? OR claim_until <= ?)",
                (owner, until, job_id, owner, now),
            )
        )

    def release(self, job_id: str, owner: str) -> None:
        self._write(
            "UPDATE jobs SET claim_owner = NULL, claim_until = NULL WHERE id = ? AND claim_owner = ?",
            (job_id, owner),
        )

    def claim_of(self, job_id: str) -> Claim | None:
        rows = self._rows("SELECT claim_owner, claim_until FROM jobs WHERE id = ?", (job_id,))
        if not rows or rows[0][0] is None:
            return None
        return Claim(owner=str(rows[0][0]), until=float(str(rows[0][1])))

    def record_status(self, job_id: str, status: JobStatus) -> None:
        row = (job_id, status.observed_at.isoformat(), status.state.value, status.model_dump_json())
        self._write("INSERT INTO job_status VALUES (?, ?, ?, ?)", row)

    def history(self, job_id: str) -> list[JobStatus]:
        rows = self._rows("SELECT data FROM job_status WHERE job_id = ? ORDER BY rowid", (job_id,))
        return [JobStatus.model_validate_json(str(r[0])) for r in rows]


class MemoryJobStore:
    """For tests and short scripts that accept losing jobs with the process. Same semantics as SQLite."""

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._claims: dict[str, Claim] = {}
        self._history: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "MemoryJobStore()"

    def close(self) -> None:
        """Nothing to release."""

    def _load(self, job_id: str | None) -> Job | None:
        data = self._jobs.get(job_id) if job_id is not None else None
        return Job.model_validate_json(data) if data else None

    def create(self, job: Job) -> Job:
        key = job.idempotency_key or job.id
        with self._lock:
            if key in self._keys:
                stored = self._load(self._keys[key])
                assert stored is not None
                return stored
            if job.id in self._jobs:
                raise ConfigError(f"job id {job.id} is already stored")
            job.version = 1
            job.updated_at = utcnow()
            self._jobs[job.id] = job.model_dump_json()
            self._keys[key] = job.id
        return job

    def update(self, job: Job) -> Job | None:
        with self._lock:
            stored = self._load(job.id)
            if stored is None or stored.version != job.version:
                return None
            new = job.model_copy(update={"version": job.version + 1})
            new.updated_at = utcnow()
            self._jobs[job.id] = new.model_dump_json()
        return new

    def get(self, job_id: str) -> Job | None:
        return self._load(job_id)

    def get_by_key(self, idempotency_key: str) -> Job | None:
        return self._load(self._keys.get(idempotency_key))

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

    def delete(self, job_id: str) -> bool:
        with self._lock:
            self._history.pop(job_id, None)
            self._claims.pop(job_id, None)
            data = self._jobs.pop(job_id, None)
            if data is None:
                return False
            self._keys = {k: v for k, v in self._keys.items() if v != job_id}
            return True

    def claim(self, job_id: str, owner: str, *, until: float, now: float) -> bool:
        with self._lock:
            if job_id not in self._jobs:
                return False
            held = self._claims.get(job_id)
            if held is not None and held.owner != owner and held.until > now:
                return False
            self._claims[job_id] = Claim(owner=owner, until=until)
            return True

    def release(self, job_id: str, owner: str) -> None:
        with self._lock:
            held = self._claims.get(job_id)
            if held is not None and held.owner == owner:
                del self._claims[job_id]

    def claim_of(self, job_id: str) -> Claim | None:
        return self._claims.get(job_id)

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
