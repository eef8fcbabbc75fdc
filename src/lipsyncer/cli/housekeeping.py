"""Keeping a job store tidy and readable elsewhere: which jobs ``jobs prune`` removes, ``jobs export`` rows.

Only finished jobs (completed, failed, cancelled) are ever pruned: a queued, running, submitting or unknown
job is money in flight, and its row is how it gets resumed or resolved.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..core.schema import Job, JobState
from .errors import CliInputError

__all__ = [
    "CSV_COLUMNS",
    "FINISHED",
    "csv_rows",
    "delete_jobs",
    "jsonl_lines",
    "parse_age",
    "prunable",
]

FINISHED = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    """``90s``, ``45m``, ``12h``, ``30d``, ``2w``."""
    found = _AGE.match(text)
    if not found:
        raise CliInputError(
            f"--older-than {text!r} is not a duration", fix="e.g. --older-than 30d (units: s, m, h, d, w)"
        )
    return timedelta(seconds=float(found.group(1)) * _UNIT_SECONDS[found.group(2).lower()])


def prunable(jobs: Iterable[Job], *, older_than: timedelta, now: datetime) -> list[Job]:
    """Finished jobs last updated before ``now - older_than`` (a job that just finished is kept a while)."""
    cutoff = now - older_than
    return [job for job in jobs if job.state.finished and job.updated_at < cutoff]


def delete_jobs(store: object, job_ids: Sequence[str]) -> int:
    """Delete through the store's own ``delete(job_id) -> bool`` (True when the job existed; its status history
    goes with it); a store without one is refused, never worked around behind its back."""
    if not job_ids:
        return 0
    delete = getattr(store, "delete", None)
    if not callable(delete):
        raise CliInputError(
            f"{store!r} cannot delete jobs (it has no delete(job_id) method)",
            fix="use --dry-run to list what would go, or a store that implements delete",
        )
    return sum(1 for job_id in job_ids if delete(job_id))


CSV_COLUMNS = (
    "id",
    "state",
    "provider",
    "model",
    "endpoint",
    "remote_id",
    "submitted_at",
    "updated_at",
    "save_to",
    "saved_to",
    "output_seconds",
    "cost",
    "currency",
    "video_url",
    "error_code",
    "error_message",
)
"""One flat row per job for spreadsheets; ``jsonl`` keeps everything."""


def _row(job: Job) -> dict[str, Any]:
    result = job.result
    cost = result.cost if result else None
    return {
        "id": job.id,
        "state": job.state.value,
        "provider": job.provider,
        "model": job.model,
        "endpoint": job.endpoint,
        "remote_id": job.remote_id or "",
        "submitted_at": job.submitted_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "save_to": job.save_to or "",
        "saved_to": (result.saved_to or "") if result else "",
        "output_seconds": cost.seconds if cost else "",
        "cost": str(cost.amount) if cost else "",
        "currency": cost.currency if cost else "",
        "video_url": result.video.url if result else "",
        "error_code": job.error_code or "",
        "error_message": job.error_message or "",
    }


def csv_rows(jobs: Iterable[Job]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for job in jobs:
        writer.writerow(_row(job))
    return out.getvalue()


def jsonl_lines(jobs: Iterable[Job]) -> str:
    """One stored job record per line, exactly as ``jobs show --json`` prints it (without the history)."""
    return "".join(job.model_dump_json() + "\n" for job in jobs)
