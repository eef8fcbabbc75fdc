"""Thousands of concurrent jobs in one process: lipsyncer's ``run_many`` against raw fal-client, side by side.

One loopback sandbox server (its own process) serves both; each run is a fresh process, so CPU and memory are
the client's alone. Jobs take ``--seconds`` at the sandbox and are polled every ``--poll`` seconds by both.

- baseline: raw ``fal_client.AsyncClient`` (through fal-client's own API), a task per job, every HTTP call under
  one semaphore of 64, the same polling interval;
- lipsyncer: ``client.run_many(items)`` with ``max_requests = 64`` per provider and the same polling, writing
  every job to SQLite (the durable handle, status history, claims).

Printed per job count: CPU per job, memory growth (peak RSS over the process's start), wall time, status
requests per job, jobs completed (none may be lost), and the lipsyncer/baseline ratios; then each run's
requests per job by kind.

Each run gets the pool its users get: fal-client httpx's own, lipsyncer the one it builds for a ``base_url``
(``lipsyncer.core.pool``, which hands an idle connection to one waiting request instead of to all of them).
``--same-pool`` gives lipsyncer httpx's pool too, to tell the pool's share of a difference from the client's.
Both keep as many connections open as the 64 requests in flight: httpcore closes an idle connection whenever
its pool holds more than ``max_keepalive_connections`` (httpx's default: 20) in total, so with 64 requests in
flight a default pool settles either into opening a TCP connection per request or into reusing a few dozen,
and which one a run lands in decides more of its CPU than the client on top does.

    .venv/bin/python bench/batch.py [--jobs 500 2000 10000] [--seconds 3] [--poll 1] [--same-pool]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

FAL_ENDPOINT = "fal-ai/sync-lipsync/v2"


@dataclass(frozen=True)
class Served:
    base_url: str
    video: str
    audio: str
    key: str


@dataclass(frozen=True)
class Measured:
    jobs: int
    completed: int
    cpu: float
    rss_growth_mb: float
    wall: float
    status_calls: int
    requests: dict[str, int]
    errors: dict[str, int]
    """Why jobs did not complete: error type and message, with how many ended so."""


def serve(conn: Connection, seconds: float) -> None:
    """The sandbox process: serve on loopback until told to stop."""
    from lipsyncer.contrib.sandbox import Sandbox, SandboxConfig, serve_in_thread
    from lipsyncer.contrib.sandbox.media import write_sample_audio, write_sample_video

    work = Path(tempfile.mkdtemp(prefix="lipsyncer-bench-"))
    config = SandboxConfig(queue_seconds=0.0, processing_seconds=seconds, render_workers=2)
    with Sandbox(config) as sandbox, serve_in_thread(sandbox, log_level="error") as server:
        video = sandbox.put_file(
            write_sample_video(work / "v.mp4", 0.5).read_bytes(), file_name="v.mp4", content_type="video/mp4"
        )
        audio = sandbox.put_file(
            write_sample_audio(work / "a.wav", 0.5).read_bytes(), file_name="a.wav", content_type="audio/wav"
        )
        conn.send(Served(server.base_url, video, audio, config.fal_key))
        conn.recv()  # stop


class Counting(httpx.AsyncBaseTransport):
    """Counts requests by kind on their way out; the same thin layer for both runs."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.kinds: dict[str, int] = {}

    @property
    def status(self) -> int:
        return self.kinds.get("status", 0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = (
            "submit"
            if request.method == "POST"
            else "status"
            if path.endswith("/status")
            else "result"
            if "/requests/" in path
            else f"{request.method} other"
        )
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=64)
"""Both runs' pools keep open as many connections as there are requests in flight."""


def _pool(pool: str) -> httpx.AsyncHTTPTransport:
    """httpx's own pool, or the one lipsyncer builds for a ``base_url``."""
    if pool == "httpx":
        return httpx.AsyncHTTPTransport(limits=LIMITS)
    from lipsyncer.core.pool import PooledTransport

    return PooledTransport(limits=LIMITS)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_raw(served: Served, jobs: int, poll: float, pool: str) -> Measured:
    import fal_client

    from lipsyncer.core.http import RebaseTransport
    from lipsyncer.providers.fal._client import FAL_HOSTS, FalAsyncClient

    counting = Counting(RebaseTransport(served.base_url, hosts=FAL_HOSTS, transport=_pool(pool)))
    fal = FalAsyncClient(key=served.key, transport=counting)
    gate = asyncio.Semaphore(64)
    arguments = {"video_url": served.video, "audio_url": served.audio, "sync_mode": "cut_off"}
    rss, cpu, wall = _rss_mb(), time.process_time(), time.perf_counter()

    async def one() -> bool:
        async with gate:
            handle = await fal.submit(FAL_ENDPOINT, arguments)
        while True:
            await asyncio.sleep(poll)
            async with gate:
                status = await fal.status("fal-ai/sync-lipsync", handle.request_id, with_logs=False)
            if isinstance(status, fal_client.Completed):
                break
        async with gate:
            await fal.result("fal-ai/sync-lipsync", handle.request_id)
        return True

    done = await asyncio.gather(*(one() for _ in range(jobs)), return_exceptions=True)
    measured = Measured(
        jobs,
        sum(1 for d in done if d is True),
        time.process_time() - cpu,
        _rss_mb() - rss,
        time.perf_counter() - wall,
        counting.status,
        dict(counting.kinds),
        _tally(d for d in done if isinstance(d, BaseException)),
    )
    await fal.aclose()
    await counting.aclose()
    return measured


async def run_ours(served: Served, jobs: int, poll: float, pool: str) -> Measured:
    from lipsyncer import AsyncLipsyncer, BatchItem, LipsyncRequest, SQLiteJobStore, load_settings
    from lipsyncer.core.http import RebaseTransport
    from lipsyncer.providers.fal._client import FAL_HOSTS

    work = Path(tempfile.mkdtemp(prefix="lipsyncer-bench-"))
    env = {"FAL_KEY": served.key}
    counting = Counting(RebaseTransport(served.base_url, hosts=FAL_HOSTS, transport=_pool(pool)))
    settings = load_settings(
        env=env,
        cwd=work,
        only=["fal-v2"],
        providers={"fal-v2": {"max_requests": 64}},
        polling={"initial_interval": poll, "max_interval": poll, "multiplier": 1.0, "jitter": 0.0},
    )
    request = LipsyncRequest(video=served.video, audio=served.audio, model="lipsync-2")
    items = [BatchItem(f"job-{n}", request) for n in range(jobs)]
    completed = 0
    failed: list[BaseException] = []
    async with AsyncLipsyncer(
        settings, env=env, transport=counting, store=SQLiteJobStore(work / "jobs.sqlite")
    ) as client:
        client.provider("fal-v2")  # built (plugins imported) before measuring, as the baseline's client is
        rss, cpu, wall = _rss_mb(), time.process_time(), time.perf_counter()
        async for outcome in client.run_many(items):
            completed += outcome.ok
            if outcome.error is not None:
                failed.append(outcome.error)
    return Measured(
        jobs,
        completed,
        time.process_time() - cpu,
        _rss_mb() - rss,
        time.perf_counter() - wall,
        counting.status,
        dict(counting.kinds),
        _tally(failed),
    )


def _tally(errors: Iterable[BaseException]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for error in errors:
        key = f"{type(error).__name__}: {str(error)[:300]}"
        tally[key] = tally.get(key, 0) + 1
    return tally


def measure(kind: str, served: Served, jobs: int, poll: float, pool: str, conn: Connection) -> None:
    runner = run_raw if kind == "raw" else run_ours
    conn.send(asyncio.run(runner(served, jobs, poll, pool)))


def in_process(kind: str, served: Served, jobs: int, poll: float, pool: str) -> Measured:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=measure, args=(kind, served, jobs, poll, pool, child))
    process.start()
    result: Measured = parent.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, nargs="+", default=[500, 2000, 10000])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long a job takes at the sandbox")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status look-ups")
    parser.add_argument("--same-pool", action="store_true", help="httpx's connection pool for lipsyncer too")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    sandbox = ctx.Process(target=serve, args=(child, args.seconds), daemon=True)
    sandbox.start()
    served: Served = parent.recv()
    head = f"{'jobs':>6}  {'client':<9} {'CPU/job':>9} {'+RSS':>8} {'wall':>8} {'status/job':>10} {'done':>6}"
    print(head)
    try:
        for jobs in args.jobs:
            raw = in_process("raw", served, jobs, args.poll, "httpx")
            ours = in_process(
                "lipsyncer", served, jobs, args.poll, "httpx" if args.same_pool else "lipsyncer"
            )
            for name, m in (("fal-client", raw), ("lipsyncer", ours)):
                print(
                    f"{jobs:>6}  {name:<9} {m.cpu / jobs * 1e3:>7.2f}ms {m.rss_growth_mb:>6.1f}MB "
                    f"{m.wall:>7.1f}s {m.status_calls / jobs:>10.2f} {m.completed:>6}"
                )
            print(
                f"{'':>6}  {'ratio':<9} {ours.cpu / max(raw.cpu, 1e-9):>8.2f}x "
                f"{ours.rss_growth_mb / max(raw.rss_growth_mb, 1e-9):>7.2f}x {ours.wall / raw.wall:>7.2f}x"
            )
            for name, m in (("fal-client", raw), ("lipsyncer", ours)):
                kinds = ", ".join(f"{kind} {n / jobs:.2f}" for kind, n in sorted(m.requests.items()))
                print(f"{'':>6}  {name:<9} requests per job: {kinds}")
                for error, n in m.errors.items():
                    print(f"{'':>6}  {name:<9} {n} not completed: {error}")
            sys.stdout.flush()
    finally:
        parent.send("stop")
        sandbox.join(timeout=30)


if __name__ == "__main__":
    main()
