"""Many jobs at once: ``run_many``'s engine, outcomes in completion order.

Every item carries a key that is its job's idempotency key: a batch run again (after a crash, a deploy, a
Ctrl-C) submits nothing twice — finished items come back from the store, unfinished ones are resumed.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import anyio
import anyio.abc

from .errors import LipsyncError
from .manifest import ManifestError, ManifestRow, RowProblem
from .media import check_local_media
from .router import RoutePlan
from .schedule import Schedule
from .schema import Cost, Job, JobState, LipsyncRequest, LipsyncResult, MediaKind
from .waiting import finished

if TYPE_CHECKING:
    from .client import AsyncLipsyncer
    from .submit import CheckedRequest
    from .waiting import StatusCallback

_SUBMITTING = 64
"""Items of a batch between their start and their provider's answer, at most."""

__all__ = ["BatchItem", "BatchPlan", "Outcome", "PlannedRow", "plan_batch", "run_batch"]


class BatchItem(NamedTuple):
    """One job of a batch: its key (the idempotency key), the request, and where to save the video."""

    key: str
    request: LipsyncRequest
    save_to: str | Path | None = None


@dataclass(frozen=True)
class Outcome:
    """How one item ended: its result, or the typed error (with the stored job when one exists)."""

    key: str
    result: LipsyncResult | None = None
    error: LipsyncError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def job_id(self) -> str | None:
        if self.result is not None:
            return self.result.job_id
        job = self.error.job if self.error is not None else None
        return job.id if isinstance(job, Job) else None


async def run_batch(
    client: AsyncLipsyncer,
    items: Iterable[BatchItem | tuple[str, LipsyncRequest]],
    *,
    concurrency: int | None,
    on_status: StatusCallback | None = None,
) -> AsyncIterator[Outcome]:
    batch = [BatchItem(*item) for item in items]
    keys = [item.key for item in batch]
    if len(set(keys)) != len(keys):
        from .errors import InvalidRequestError

        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise InvalidRequestError(
            f"batch keys must be unique; repeated: {', '.join(duplicated[:5])}",
            field="key",
            fix="give every item its own key (it is the item's idempotency key)",
        )
    send, receive = anyio.create_memory_object_stream[Outcome](max_buffer_size=math.inf)
    limiter = anyio.Semaphore(concurrency) if concurrency else None
    # Items are routed, written ahead and sent a few dozen at a time: thousands at once would only queue at
    # the providers' request slots while each held its plan, its job row and its request body in memory.
    # An item gets its task only once it may start: ten thousand waiting items are list entries, not tasks.
    submitting = anyio.Semaphore(min(concurrency or _SUBMITTING, _SUBMITTING))

    # Items sharing one request object (a season's dubs of one clip, a load test) are checked and routed once.
    checked: dict[int, tuple[LipsyncRequest, CheckedRequest]] = {}

    def check(request: LipsyncRequest) -> CheckedRequest:
        known = checked.get(id(request))
        if known is not None and known[0] is request:
            return known[1]
        done = client._checked(request)  # a refused request raises each time: its error is its item's own
        checked[id(request)] = (request, done)  # the request is kept, so its id is not reused
        return done

    async def ended(outcome: Outcome) -> None:
        if limiter is not None:
            limiter.release()
        await send.send(outcome)

    async def one(item: BatchItem, schedule: Schedule) -> None:
        """Submit one item (the feeder took its places in ``limiter`` and ``submitting`` for it) and hand it
        to the schedule, which polls it without a task of its own until it finishes."""
        waiting = client._waiting
        try:
            try:
                job = await client._submit(
                    check(item.request), idempotency_key=item.key, save_to=item.save_to
                )
            finally:
                submitting.release()
            job = await client._settle_send(job, current=True)
            job, result = waiting.before_polling(job, current=True)
            if result is None and not finished(job):
                # A batch's on_status counts states: its look-ups leave out progress detail (fal's logs).
                schedule.add(item.key, *waiting.polling(job, on_status, progress=False))
                return
        except LipsyncError as exc:
            await failed(item.key, exc)
            return
        if result is None:
            await settled(item.key, job)  # finished at its send: settled as the schedule settles its jobs
        else:
            await ended(Outcome(key=item.key, result=result))

    async def settled(key: str, job: Job) -> None:
        try:
            outcome = Outcome(key=key, result=await client._waiting.after_polling(job))
        except LipsyncError as exc:
            outcome = Outcome(key=key, error=exc)
        await ended(outcome)

    async def failed(key: str, error: LipsyncError) -> None:
        await ended(Outcome(key=key, error=error))

    async def feed(tg: anyio.abc.TaskGroup, schedule: Schedule) -> None:
        for item in batch:
            if limiter is not None:
                await limiter.acquire()
            await submitting.acquire()
            tg.start_soon(one, item, schedule)

    async with client.lifecycle.renewing(), anyio.create_task_group() as tg, receive, send:
        schedule = Schedule(client._waiting, tg, settled, failed)
        try:
            tg.start_soon(schedule.run)
            tg.start_soon(feed, tg, schedule)
            for _ in batch:
                yield await receive.receive()
            tg.cancel_scope.cancel()  # every item ended: only the schedule's dispatcher is left
        finally:
            schedule.close()


# ---------------------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class PlannedRow:
    """One manifest row, routed and priced: what a run would do with it."""

    row: ManifestRow
    key: str
    provider: str | None
    estimate: Cost | None
    """The dearest candidate's estimate: a fallback can never spend more than this."""
    refused: str | None = None
    """Why the row is not sent (over the budget); None when it runs."""
    stored: Job | None = None
    """The job already stored under the row's key (a re-run)."""


@dataclass(frozen=True)
class BatchPlan:
    rows: list[PlannedRow]
    budget: Decimal | None

    @property
    def runnable(self) -> list[PlannedRow]:
        return [p for p in self.rows if p.refused is None]

    @property
    def total(self) -> Decimal:
        return sum((p.estimate.amount for p in self.runnable if p.estimate is not None), Decimal(0))

    def per_provider(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for p in self.runnable:
            if p.provider is not None and p.estimate is not None:
                out[p.provider] = out.get(p.provider, Decimal(0)) + p.estimate.amount
        return dict(sorted(out.items()))


def plan_batch(
    client: AsyncLipsyncer,
    rows: Iterable[ManifestRow],
    *,
    budget: Decimal | None = None,
    retry_failed: bool = False,
    source: str | Path = "manifest",
) -> BatchPlan:
    """Route and price every row before anything is sent; raise :class:`ManifestError` naming every row no
    route can serve or whose media cannot be read. Rows that would take the committed spend (finished rows'
    costs, then each runnable row's estimate, in manifest order) over ``budget`` are refused with the reason.
    """
    rows = list(rows)
    problems: list[RowProblem] = []
    routed: list[tuple[ManifestRow, RoutePlan]] = []
    path = Path(source)
    for row in rows:
        try:
            check_local_media(row.request)  # unreadable, empty or swapped files: refused with the row
            local = all(m.kind is MediaKind.PATH for m in (row.request.video, row.request.audio))
            plan = client.estimate(row.request) if local else client.route(row.request)
        except LipsyncError as exc:
            problems.append(RowProblem(row.line, row.id, exc.message, exc.fix))
            continue
        routed.append((row, plan))
    if problems:
        raise ManifestError(path, problems)
    planned: list[PlannedRow] = []
    committed = Decimal(0)
    for row, plan in routed:
        key, stored = _key_for(client, row.id, retry_failed)
        seconds = plan.output_seconds
        estimate = (
            max((r.cost(seconds) for r in plan.candidates), key=lambda c: c.amount) if seconds else None
        )
        if stored is not None and stored.state is JobState.COMPLETED:
            spent = stored.result.cost if stored.result is not None and stored.result.cost else estimate
            committed += spent.amount if spent is not None else Decimal(0)
            planned.append(PlannedRow(row, key, stored.provider, spent, stored=stored))
            continue
        refused = None
        if budget is not None:
            if estimate is None:
                refused = "its cost cannot be estimated (remote media), so the budget cannot be held"
            elif committed + estimate.amount > budget:
                refused = (
                    f"estimated ${estimate.amount} would take the batch's committed ${committed} over the "
                    f"${budget} budget"
                )
            else:
                committed += estimate.amount
        planned.append(PlannedRow(row, key, plan.first.provider.id, estimate, refused=refused, stored=stored))
    return BatchPlan(rows=planned, budget=budget)


def _key_for(client: AsyncLipsyncer, row_id: str, retry_failed: bool) -> tuple[str, Job | None]:
    """The row's idempotency key: its id; with ``retry_failed``, a new key after each failed or cancelled
    attempt (``id~2``, ``id~3``...), so a retry is a new job and the failed one stays on record."""
    key, n = row_id, 1
    while True:
        stored = client.store.get_by_key(key)
        if stored is None or not retry_failed or stored.state not in (JobState.FAILED, JobState.CANCELLED):
            return key, stored
        n += 1
        key = f"{row_id}~{n}"
