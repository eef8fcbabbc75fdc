"""The job store protocol: the semantics that make "never billed twice, nothing paid lost" hold across processes.

- every row carries a ``version``; :meth:`JobStore.update` is a compare-and-swap on it, so a stale writer
  (a waiter holding an old copy, a second resumer) can never overwrite a newer state;
- an idempotency key is unique per store: :meth:`JobStore.create` returns the job already stored under the
  key instead of writing a second one;
- a claim (owner + lease expiry) lets exactly one waiter, webhook handler, process or worker complete and
  download a job; an expired lease is free to take, so a crashed owner blocks no one for long.

Only :mod:`lipsyncer.core.lifecycle` writes job state through these methods.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..schema import Job, JobState, JobStatus

__all__ = ["SCHEMA_VERSION", "Claim", "JobStore", "default_store_path", "job_summary"]

SCHEMA_VERSION = 3
"""1 (lipsyncer 0.1): no versions, keys or claims. 2: versions, keys, claims. 3: status history ordered by its
own sequence column (PostgreSQL has no rowid)."""


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

    def update(self, job: Job, *, status: JobStatus | None = None) -> Job | None:
        """Compare-and-swap: store ``job`` as version ``job.version + 1`` if the stored version is still
        ``job.version``; return the stored job, or None when another writer got there first. With
        ``status``, append it to the job's history in the same transaction, only when the swap succeeds."""

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


def job_summary(job: Job) -> dict[str, object]:
    """A compact, secret-free view for CLIs and logs."""
    fields = {"id", "provider", "model", "endpoint", "remote_id", "state", "submitted_at"}
    summary: dict[str, object] = json.loads(job.model_dump_json(include=fields))
    return summary
