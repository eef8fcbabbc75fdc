"""Counting what the sandbox accepted and finished, for exactly-once checks and in-flight limits.

A submit is *accepted* when the sandbox created a job for it, whatever the client then saw (a dropped
connection, a gateway page or a held answer still leave the job). Tests group accepted jobs by a marker the
client put on the request (the ``lipsyncer_job`` query parameter of the webhook URL by default) to prove no
request was accepted twice.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable

from .jobs import Job, JobView

__all__ = ["Grouping", "group_accepted", "max_overlap"]

Grouping = str | Callable[[JobView], str | None]
"""How to group accepted jobs: ``"body"``, ``"idempotency_key"``, a webhook-URL query parameter, or a function."""


def _key_of(by: Grouping) -> Callable[[JobView], str | None]:
    if callable(by):
        return by
    if by == "body":
        return lambda job: job.body_digest
    if by == "idempotency_key":
        return lambda job: job.idempotency_key
    return lambda job: job.webhook_param(by)


def group_accepted(jobs: Iterable[JobView], by: Grouping) -> dict[str | None, int]:
    """Accepted jobs per group, in first-seen order; jobs the grouping cannot place count under None."""
    key = _key_of(by)
    return dict(Counter(key(job) for job in jobs))


def max_overlap(jobs: Iterable[Job], now: float) -> int:
    """The most jobs in flight (accepted, not yet visibly finished) at any one instant up to ``now``.

    A job is in flight on ``[submitted, end)``; one ending exactly when another starts does not overlap it,
    and a job that began and ended at one instant counts at that instant.
    """
    events: list[tuple[float, int, int]] = []  # (time, order, delta): ends, then starts, then instant ends
    for job in jobs:
        end = job.in_flight_until()
        if end is None or end > now:
            end = math.inf
        events.append((job.submitted, 1, 1))
        events.append((end, 2 if end <= job.submitted else 0, -1))
    events.sort()
    current = peak = 0
    for _, _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
