"""The live progress of waiting jobs, fed by the client's ``on_status`` callback."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

from ..core.schema import Job, JobState, JobStatus, utcnow

__all__ = ["StatusProgress", "changes", "clock", "is_change", "percent", "status_text"]


def percent(status: JobStatus) -> float | None:
    """The provider's progress (fal's is read from its ``Processing: 40%`` logs by the fal plugins)."""
    return status.progress


def status_text(status: JobStatus) -> str:
    state = status.state
    if state is JobState.QUEUED:
        return "queued" + (f", position {status.queue_position}" if status.queue_position is not None else "")
    if state is JobState.RUNNING:
        done = percent(status)
        return "running" + (f", {done:.0f}%" if done is not None else "")
    if state in (JobState.FAILED, JobState.CANCELLED):
        reason = status.error_message or status.error_code
        return f"{state.value}: {reason}" if reason else f"{state.value}"
    return f"{state.value}"


def _detail(status: JobStatus) -> float | None:
    if status.state is JobState.QUEUED:
        return status.queue_position
    if status.state is JobState.RUNNING:
        done = percent(status)
        return None if done is None else round(done)
    return None


def is_change(before: JobStatus | None, status: JobStatus) -> bool:
    """A new state, or a new known position or percent in the same state (a status without one is not)."""
    if before is None or before.state is not status.state:
        return True
    now = _detail(status)
    return now is not None and now != _detail(before)


def changes(history: Iterable[JobStatus]) -> list[JobStatus]:
    """One row per change: ``queued`` then ``queued, position 0`` is one row, showing the position, observed
    when the state began; repeated look-ups that saw nothing new are dropped."""
    kept: list[JobStatus] = []
    for status in history:
        before = kept[-1] if kept else None
        if is_change(before, status):
            if before is not None and before.state is status.state and _detail(before) is None:
                kept[-1] = status.model_copy(update={"observed_at": before.observed_at})
            else:
                kept.append(status)
    return kept


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _SinceSubmitColumn(ProgressColumn):
    """Elapsed since the job was submitted (not since this process started: resumed jobs stay honest)."""

    def render(self, task: Task) -> Text:
        since = task.fields.get("since")
        seconds = (utcnow() - since).total_seconds() if isinstance(since, datetime) else task.elapsed or 0.0
        return Text(clock(seconds), style="progress.elapsed")


class StatusProgress:
    """A bar per job, fed by the client's ``on_status(job, status)`` callback.

    On a terminal it is a live bar (queue position, percent, elapsed); piped, it prints one line per change
    of state or queue position, so logs still tell the story.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live = console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            _SinceSubmitColumn(),
            console=console,
            disable=not self._live,
        )
        self._tasks: dict[str, TaskID] = {}
        self._last: dict[str, JobStatus] = {}

    def __enter__(self) -> StatusProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def track(self, job: Job) -> TaskID:
        if job.id not in self._tasks:
            self._tasks[job.id] = self._progress.add_task(
                f"{job.provider}:{job.model}", total=None, detail="submitted", since=job.submitted_at
            )
            if not self._live:
                self._console.print(Text(f"{job.id}: waiting on {job.provider}:{job.model}", style="dim"))
        return self._tasks[job.id]

    def __call__(self, job: Job, status: JobStatus) -> None:
        task = self.track(job)
        done = status.state is JobState.COMPLETED
        share = 100.0 if done else percent(status)
        text = status_text(status)
        self._progress.update(
            task, total=100 if share is not None else None, completed=share or 0, detail=text
        )
        if not self._live and is_change(self._last.get(job.id), status):
            self._console.print(Text(f"{job.id}: {text}", style="dim"))
            self._last[job.id] = status
