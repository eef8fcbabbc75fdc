"""run_many, per-provider limits and spend caps through the client, against the sandbox over HTTP."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from lipsyncer import (
    AsyncLipsyncer,
    BatchItem,
    JobEvent,
    JobStatus,
    Lipsyncer,
    LipsyncRequest,
    NoRouteError,
    SyncMode,
    hookimpl,
    load_settings,
)
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config
from lipsyncer.core.media import probe

pytestmark = pytest.mark.anyio


class InFlight:
    """Counts, from job events, the jobs submitted and not yet settled per provider (the client's view)."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    @hookimpl
    def job_event(self, event: JobEvent) -> None:
        if event.kind == "submitted":
            self.now[event.provider] = self.now.get(event.provider, 0) + 1
        elif event.kind in ("completed", "failed", "cancelled", "unknown"):
            self.now[event.provider] -= 1
        self.peak[event.provider] = max(self.peak.get(event.provider, 0), self.now.get(event.provider, 0))


async def sandbox_peak(sandbox: Sandbox, api: str, stop: anyio.Event, peak: list[int]) -> None:
    """Sample the sandbox's own count of that API's unfinished jobs until ``stop``."""
    while not stop.is_set():
        busy = sum(1 for j in sandbox.jobs if j.api == api and not j.state.finished)
        peak[0] = max(peak[0], busy)
        await anyio.sleep(0.005)


async def test_run_many_holds_max_in_flight_and_yields_every_outcome(
    media: SampleMedia, tmp_path: Path
) -> None:
    counter = InFlight()
    with Sandbox(fast_config(strict=True, processing_seconds=0.3, queue_seconds=0.05)) as sandbox:
        env = {"FAL_KEY": sandbox.config.fal_key}
        settings = load_settings(
            env=env,
            cwd=tmp_path,
            only=["fal-v2"],
            polling={"initial_interval": 0.02, "max_interval": 0.05, "jitter": 0.1},
            providers={"fal-v2": {"max_in_flight": 3}},
        )
        from lipsyncer import SQLiteJobStore

        items = [
            BatchItem(f"row-{i}", LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
            for i in range(12)
        ]
        async with AsyncLipsyncer(
            settings,
            env=env,
            transport=sandbox.transport(),
            store=SQLiteJobStore(tmp_path / "j.sqlite"),
            plugins=[counter],
        ) as client:
            stop = anyio.Event()
            peak = [0]
            keys = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(sandbox_peak, sandbox, "fal", stop, peak)
                async for outcome in client.run_many(items):
                    assert outcome.ok, outcome.error
                    keys.append(outcome.key)
                stop.set()
            again = [o async for o in client.run_many(items)]  # the same keys: nothing is sent again
    assert sorted(keys) == sorted(i.key for i in items)
    assert counter.peak["fal-v2"] <= 3 and peak[0] <= 3
    assert len(sandbox.submits()) == 12
    assert all(o.ok for o in again) and len({o.job_id for o in again}) == 12


async def test_a_rate_limited_provider_is_backed_off_and_recorded(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    sandbox.add_fault(
        Fault(kind="http_error", api="unified", operation="create", status=429, times=1, retry_after=1)
    )
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    async with make_client(only=["unified"], storage="fal-cdn") as client:
        result = await client.run(request)
    assert [a.error for a in result.attempts] == ["RateLimitedError", None]
    creates = sandbox.find_requests(api="unified", operation="create")
    assert (creates[1].at - creates[0].at).total_seconds() >= 1.0  # Retry-After honoured


async def test_submits_per_minute_queues_instead_of_exceeding(
    make_client: Callable[..., AsyncLipsyncer], sandbox: Sandbox
) -> None:
    rate = 120.0  # two a second: no window of one second may see more than two (plus the bucket's one)
    request = LipsyncRequest(video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="sync-3")
    limited = make_client(only=["fal-v3"], providers={"fal-v3": {"submits_per_minute": rate}})
    async with limited as client, anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(lambda i=i: client.submit(request, idempotency_key=f"k{i}"))
    times = sorted(r.at.timestamp() for r in sandbox.submits())
    assert len(times) == 6
    gap = 60.0 / rate
    assert all(b - a >= gap * 0.9 for a, b in itertools.pairwise(times))


async def test_max_cost_excludes_routes_over_it_before_any_request(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    seconds = min(probe(media.video).duration, probe(media.audio).duration)  # cut_off: the shorter one
    async with make_client(storage="fal-cdn") as client:  # unified (0.083/s) next to fal (5/60 per s)
        request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2-pro")
        plan = client.route(request)
        prices = {r.id: r.price_per_second for r in plan.candidates}
        cheapest = min(prices.values())
        cap = (cheapest * Decimal(str(round(seconds, 3)))).quantize(Decimal("0.0001"))
        capped = client.route(request.model_copy(update={"max_cost": cap}))
        assert {r.price_per_second for r in capped.candidates} == {cheapest}
        assert any(e.kind == "cost" and "max_cost" in e.reason for e in capped.excluded)
        with pytest.raises(NoRouteError) as info:
            await client.submit(request.model_copy(update={"max_cost": cap / 2}))
        assert info.value.fix and "max_cost" in info.value.fix
        remote = LipsyncRequest(
            video="https://m.example/v.mp4",
            audio="https://m.example/a.wav",
            model="lipsync-2",
            max_cost=Decimal(1),
        )
        with pytest.raises(NoRouteError, match="no route"):
            client.route(remote)
    assert sandbox.requests == []


def test_the_blocking_client_iterates_outcomes(media: SampleMedia, tmp_path: Path) -> None:
    from lipsyncer import SQLiteJobStore

    with Sandbox(fast_config(processing_seconds=0.2)) as sandbox:
        env = {"FAL_KEY": sandbox.config.fal_key}
        settings = load_settings(
            env=env, cwd=tmp_path, polling={"initial_interval": 0.02, "max_interval": 0.05}
        )
        with Lipsyncer(
            settings, env=env, transport=sandbox.transport(), store=SQLiteJobStore(tmp_path / "b.sqlite")
        ) as lip:
            modes = [SyncMode.CUT_OFF, SyncMode.LOOP, SyncMode.BOUNCE]
            items = [
                (m.value, LipsyncRequest(video=media.video, audio=media.audio, model="sync-3", sync_mode=m))
                for m in modes
            ]
            outcomes = list(lip.run_many(items, concurrency=2))
    assert sorted(o.key for o in outcomes) == sorted(m.value for m in modes) and all(o.ok for o in outcomes)


def fal_client_on(sandbox: Sandbox, tmp_path: Path, interval: float) -> AsyncLipsyncer:
    """A client of fal-v2 on ``sandbox``, polling every ``interval`` seconds."""
    from lipsyncer import SQLiteJobStore

    env = {"FAL_KEY": sandbox.config.fal_key}
    settings = load_settings(
        env=env,
        cwd=tmp_path,
        only=["fal-v2"],
        polling={"initial_interval": interval, "max_interval": interval, "jitter": 0.0},
    )
    return AsyncLipsyncer(
        settings, env=env, transport=sandbox.transport(), store=SQLiteJobStore(tmp_path / "j.sqlite")
    )


async def test_a_batch_asks_for_no_logs_and_a_watched_run_reads_its_percent(
    make_sandbox: Callable[..., Sandbox], media: SampleMedia, tmp_path: Path
) -> None:
    """fal sends its progress only in its logs, whole on every look-up: only a watcher pays for them."""
    sandbox = make_sandbox(processing_seconds=0.6, queue_seconds=0.0)
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    seen: list[float | None] = []
    async with fal_client_on(sandbox, tmp_path, 0.1) as client:
        async for outcome in client.run_many([(f"k{i}", request) for i in range(3)]):
            assert outcome.ok, outcome.error
        batch_looks = sandbox.find_requests(api="fal", operation="status")
        batch_history = [h for key in ("k0", "k1", "k2") for h in history_of(client, key)]
        await client.run(request, on_status=lambda job, status: seen.append(status.progress))
        watched_looks = sandbox.find_requests(api="fal", operation="status")[len(batch_looks) :]
    assert batch_looks and {r.query.get("logs") for r in batch_looks} == {"false"}
    assert batch_history and not any(h.logs for h in batch_history)
    assert {h.progress for h in batch_history} <= {None, 100.0}  # 100: fal's "completed"
    assert watched_looks and {r.query.get("logs") for r in watched_looks} == {"true"}
    # The sandbox logs "Processing: N%" every tenth of the processing time: a watcher sees those numbers.
    assert any(p is not None and 0 < p < 100 and p % 10 == 0 for p in seen), seen


def history_of(client: AsyncLipsyncer, key: str) -> list[JobStatus]:
    job = client.store.get_by_key(key)
    assert job is not None
    return client.store.history(job.id)


async def test_the_submit_answer_is_the_first_look_up(
    make_sandbox: Callable[..., Sandbox], media: SampleMedia, tmp_path: Path
) -> None:
    """A job just submitted is looked up one interval later, not at once: fal answered the submit with its
    state a moment ago. Jobs done before the first interval need one look-up each."""
    sandbox = make_sandbox(processing_seconds=0.2, queue_seconds=0.0)
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
    async with fal_client_on(sandbox, tmp_path, 1.5) as client:
        outcomes = [o async for o in client.run_many([(f"k{i}", request) for i in range(4)])]
        assert all(o.ok for o in outcomes)
        # The submit's answer is the first entry of each job's history, the one look-up the second.
        assert [[h.raw_status for h in history_of(client, f"k{i}")] for i in range(4)] == [
            ["IN_QUEUE", "COMPLETED"]
        ] * 4
    assert len(sandbox.find_requests(api="fal", operation="status")) == 4
