"""The live progress of waiting jobs, fed by the client's ``on_status`` callback."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

from ..core.schema import Job, JobState, JobStatus, utcnow

__all__ = ["StatusProgress", "clock", "status_text"]


def status_text(status: JobStatus) -> str:
    state = status.state
    if state is JobState.QUEUED:
        return "queued" + (f", position {status.queue_position}" if status.queue_position is not None else "")
    if state is JobState.RUNNING:
        return "running" + (f", {status.progress:.0f}%" if status.progress is not None else "")
    if state in (JobState.FAILED, JobState.CANCELLED):
        reason = status.error_message or status.error_code
        return f"{state.value}: {reason}" if reason else f"{state.value}"
    return f"{state.value}"


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
        self._last: dict[str, tuple[JobState, int | None]] = {}

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
        known = status.progress is not None or done
        self._progress.update(
            task,
            total=100 if known else None,
            completed=100 if done else (status.progress or 0),
            detail=status_text(status),
        )
        key = (status.state, status.queue_position)
        if not self._live and self._last.get(job.id) != key:
            self._console.print(Text(f"{job.id}: {status_text(status)}", style="dim"))
        self._last[job.id] = key
