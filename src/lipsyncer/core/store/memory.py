"""A job store in memory, with the same semantics as the SQL store: for tests and short scripts."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ..errors import ConfigError
from ..schema import Job, JobState, JobStatus, utcnow
from .base import Claim

__all__ = ["MemoryJobStore"]


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

    def update(self, job: Job, *, status: JobStatus | None = None) -> Job | None:
        with self._lock:
            stored = self._load(job.id)
            if stored is None or stored.version != job.version:
                return None
            new = job.model_copy(update={"version": job.version + 1})
            new.updated_at = utcnow()
            self._jobs[job.id] = new.model_dump_json()
            if status is not None:
                self._history.setdefault(job.id, []).append(status.model_dump_json())
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
