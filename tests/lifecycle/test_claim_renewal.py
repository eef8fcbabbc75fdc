"""A claim held longer than its lease stays held: renewed by a task of its own, or by the one renewer a batch
runs for every claim it holds. Expiry is judged by the test's clock; renewals tick in real time."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from lipsyncer import Job, MemoryJobStore
from lipsyncer.contrib.sandbox.testing import eventually
from lipsyncer.core.lifecycle import Lifecycle

pytestmark = pytest.mark.anyio

LEASE = 0.06
"""Seconds: renewals every LEASE / 3 of real time."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def renewed_beyond(store: MemoryJobStore, job_id: str, when: float) -> None:
    """Wait until the stored claim reaches past ``when``."""

    async def renewed() -> bool:
        held = store.claim_of(job_id)
        return held is not None and held.until > when

    await eventually(renewed, within=10, every=LEASE / 6)


@pytest.mark.parametrize("shared", [False, True], ids=["own-task", "shared-renewer"])
async def test_a_claim_held_past_its_lease_is_renewed_and_released_at_the_end(shared: bool) -> None:
    store, clock = MemoryJobStore(), Clock()
    mine = Lifecycle(store, lambda e: None, owner="me", clock=clock, lease=LEASE)
    other = Lifecycle(store, lambda e: None, owner="other", clock=clock, lease=LEASE)
    job, _ = mine.begin(Job(id="job_x", provider="p", model="m", endpoint="e", request_fingerprint="f"))
    async with AsyncExitStack() as stack:
        if shared:
            await stack.enter_async_context(mine.renewing())
        async with mine.holding(job.id) as held, mine.holding(job.id) as again:
            assert held and again  # ours already: taken again
            for _ in range(4):  # each step ends the lease the claim had: without renewal, free after one
                clock.now += LEASE
                await renewed_beyond(store, job.id, clock.now)
                assert not other.claim(job.id)
            assert not await _holds_with(other, job.id)
        assert store.claim_of(job.id) is None, "released when the block ended"
    assert other.claim(job.id)


async def _holds_with(lifecycle: Lifecycle, job_id: str) -> bool:
    async with lifecycle.holding(job_id) as held:
        return held
