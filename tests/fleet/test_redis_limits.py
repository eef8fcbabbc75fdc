"""Fleet-wide limits on a private redis-server: slots, pauses and submit rates shared by every process, and a
provider's max_in_flight held across two Celery worker processes (the sandbox records the most in flight)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fleet_support import SANDBOX_KEYS, FleetSetup, WorkerProcess

from lipsyncer import ConfigError, JobState, LipsyncRequest, load_settings
from lipsyncer.contrib.celery import Fleet, create_app, enqueue, result
from lipsyncer.contrib.redis_limits import RedisLimits
from lipsyncer.contrib.sandbox import LoopbackServer
from lipsyncer.contrib.sandbox.testing import SampleMedia
from lipsyncer.core.client import AsyncLipsyncer
from lipsyncer.core.jobs import store_from_url
from servers import RedisServer


@pytest.fixture
def limits_url(redis: RedisServer) -> str:
    return redis.url(redis.new_db())


@pytest.fixture
def make_limits(limits_url: str) -> Iterator[Callable[[], RedisLimits]]:
    made: list[RedisLimits] = []

    def make() -> RedisLimits:
        made.append(RedisLimits(limits_url))
        return made[-1]

    yield make
    for limits in made:
        anyio.run(limits.aclose)


def test_slots_are_shared_and_taken_atomically(make_limits: Callable[[], RedisLimits]) -> None:
    """Twelve clients race for three slots: exactly three jobs get one; a holder keeps its own."""
    handles = [make_limits() for _ in range(12)]
    barrier = threading.Barrier(len(handles))
    won: list[str] = []
    lock = threading.Lock()

    def race(index: int, limits: RedisLimits) -> None:
        barrier.wait()
        if limits.try_acquire("fal-v2", f"job_{index}", 3):
            with lock:
                won.append(f"job_{index}")

    threads = [threading.Thread(target=race, args=(i, h)) for i, h in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = make_limits()
    assert len(won) == 3 and other.in_flight("fal-v2") == 3
    assert other.try_acquire("fal-v2", won[0], 3)  # the job already holds its slot
    assert not other.try_acquire("fal-v2", "job_late", 3)
    assert other.in_flight("unified") == 0  # per provider
    handles[0].release("fal-v2", won[0])  # any process releases a settled job's slot
    assert other.try_acquire("fal-v2", "job_late", 3)
    other.release("fal-v2", "job_never_held")  # idempotent
    assert other.in_flight("fal-v2") == 3


def test_a_pause_is_seen_everywhere_and_never_shortened(make_limits: Callable[[], RedisLimits]) -> None:
    one, two = make_limits(), make_limits()

    async def go() -> tuple[float, float, float]:
        before = await two.paused_for("fal-v2")
        await one.pause("fal-v2", 30)
        await one.pause("fal-v2", 1)  # a shorter Retry-After does not end the longer pause
        return before, await two.paused_for("fal-v2"), await two.paused_for("unified")

    before, after, elsewhere = anyio.run(go)
    assert before == 0.0 and 1 < after <= 30 and elsewhere == 0.0


def test_a_submit_rate_holds_across_clients(make_limits: Callable[[], RedisLimits]) -> None:
    """Two a minute: two clients take one token each at once; a third take is still waiting a moment later."""
    one, two = make_limits(), make_limits()

    async def go() -> bool:
        await one.take("fal-v2", 2)
        await two.take("fal-v2", 2)
        with anyio.move_on_after(0.5) as scope:
            await one.take("fal-v2", 2)
        return scope.cancelled_caught

    assert anyio.run(go)  # the minute's window is full: nothing ends it within half a second


def test_limits_backend_config_builds_the_redis_backend(tmp_path: Path, limits_url: str) -> None:
    settings = load_settings(
        env={}, cwd=tmp_path, job_store=str(tmp_path / "j.sqlite"), limits={"backend": limits_url}
    )
    client = AsyncLipsyncer(settings, env=SANDBOX_KEYS)
    try:
        assert isinstance(client.registry.limits.backend, RedisLimits)
    finally:
        anyio.run(client.aclose)
    wrong = settings.with_overrides(limits={"backend": "memcached://127.0.0.1:1"})
    with pytest.raises(ConfigError) as info:
        AsyncLipsyncer(wrong, env=SANDBOX_KEYS)
    assert info.value.fix is not None


# ---------------------------------------------------------------------------------------- across workers

CAP = 3
JOBS = 16


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    return {"processing_seconds": 1.0, "queue_seconds": 0.1}


@pytest.mark.slow
def test_max_in_flight_holds_across_two_worker_processes(
    fleet_setup: FleetSetup,
    served: LoopbackServer,
    media: SampleMedia,
    limits_url: str,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """Two worker machines share fal-v2's three slots through Redis. One pool process each: a slot is held
    while the job is at the provider, not while a worker runs a task, so two processes can hold all three."""
    config = fleet_setup.config
    text = config.read_text().replace("[providers.fal-v2]\n", f"[providers.fal-v2]\nmax_in_flight = {CAP}\n")
    config.write_text(f'{text}\n[limits]\nbackend = "{limits_url}"\n')
    workers = [start_workers("a", concurrency=1), start_workers("b", concurrency=1)]
    fleet = Fleet(load_settings(config, env=SANDBOX_KEYS), env=SANDBOX_KEYS)
    app = create_app(fleet)
    request = LipsyncRequest(video=media.video, audio=media.audio, model="fal-v2:lipsync-2")
    try:
        ids = [enqueue(request, idempotency_key=f"capped-{i}", app=app) for i in range(JOBS)]
        for job_id in ids:
            result(job_id, app=app).get(timeout=300)
    except Exception:
        print("\n".join(w.output()[-3000:] for w in workers))
        raise
    finally:
        fleet.runtime.close()
    sandbox = served.sandbox
    store = store_from_url(fleet_setup.store_url)
    try:
        assert all(store.get(i).state is JobState.COMPLETED for i in ids)  # type: ignore[union-attr]
    finally:
        store.close()
    assert len(sandbox.submits()) == JOBS
    assert 2 <= sandbox.max_in_flight(api="fal") <= CAP  # ran in parallel, never over the cap
    limits = RedisLimits(limits_url)
    try:
        assert limits.in_flight("fal-v2") == 0  # every settled job gave its slot back
    finally:
        anyio.run(limits.aclose)
