"""Many jobs at once: ``run_many``'s engine, outcomes in completion order.

Every item carries a key that is its job's idempotency key: a batch run again (after a crash, a deploy, a
Ctrl-C) submits nothing twice — finished items come back from the store, unfinished ones are resumed.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import anyio

from .errors import LipsyncError
from .schema import Job, LipsyncRequest, LipsyncResult

if TYPE_CHECKING:
    from .client import AsyncLipsyncer
    from .waiting import StatusCallback

__all__ = ["BatchItem", "Outcome", "run_batch"]


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
    limiter = anyio.CapacityLimiter(concurrency) if concurrency else None

    async def one(item: BatchItem) -> None:
        async with AsyncExitStack() as stack:
            if limiter is not None:
                await stack.enter_async_context(limiter)
            try:
                result = await client.run(
                    item.request, idempotency_key=item.key, save_to=item.save_to, on_status=on_status
                )
                outcome = Outcome(key=item.key, result=result)
            except LipsyncError as exc:
                outcome = Outcome(key=item.key, error=exc)
        await send.send(outcome)

    async with anyio.create_task_group() as tg, receive, send:
        for item in batch:
            tg.start_soon(one, item)
        for _ in batch:
            yield await receive.receive()
