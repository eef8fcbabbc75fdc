"""fal reports progress only in its status logs: the adapter turns the newest percentage into JobStatus.progress."""

from __future__ import annotations

from fal_client.client import InProgress

from lipsyncer.core.schema import JobState
from lipsyncer.providers.fal._queue import status_from


def log(message: str) -> dict[str, str]:
    return {"message": message, "level": "INFO", "source": "USER", "timestamp": "2026-01-01T00:00:00+00:00"}


def test_the_newest_percentage_in_the_logs_is_the_progress() -> None:
    status = status_from(InProgress(logs=[log("Starting"), log("Processing: 10%"), log("Processing: 40%")]))
    assert (status.state, status.progress) == (JobState.RUNNING, 40.0)


def test_no_percentage_means_no_progress() -> None:
    assert status_from(InProgress(logs=[log("Starting lipsync-2 (sync_mode=loop)")])).progress is None
    assert status_from(InProgress(logs=None)).progress is None


def test_a_number_over_100_percent_is_not_progress() -> None:
    status = status_from(InProgress(logs=[log("Processing: 30%"), log("GPU at 250%")]))
    assert status.progress == 30.0
