"""Jobs per second through a Celery fleet vs one process running the same jobs concurrently.

Both sides run the same jobs (fal-v2 lipsync-2 on the same local media, each result downloaded) against the
same loopback sandbox, with the same polling policy and a PostgreSQL job store: one process calls
``AsyncLipsyncer.run`` for every job at once; the fleet enqueues them for ``celery -A
lipsyncer.contrib.celery worker`` processes on Redis. Private redis-server and PostgreSQL instances are
started from the real binaries (as the tests do) and stopped at the end.

    .venv/bin/python bench/fleet.py [--jobs 40] [--workers 2] [--concurrency 2] [--processing 1.0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "fleet")]  # the tests' server and worker helpers

from fleet_support import SANDBOX_KEYS, FleetSetup, WorkerProcess, write_fleet_config  # noqa: E402

from lipsyncer import AsyncLipsyncer, LipsyncRequest, load_settings  # noqa: E402
from lipsyncer.contrib.celery import Fleet, create_app, enqueue, result  # noqa: E402
from lipsyncer.contrib.sandbox import Sandbox, SandboxConfig, serve_in_thread  # noqa: E402
from lipsyncer.contrib.sandbox.testing import sample_media  # noqa: E402
from servers import postgres_server, redis_server  # noqa: E402


def one_process(config: Path, request: LipsyncRequest, jobs: int, out: Path) -> float:
    """Seconds for one client to run every job concurrently (submit, wait, download)."""

    async def main() -> None:
        settings = load_settings(config, env=SANDBOX_KEYS)
        async with AsyncLipsyncer(settings, env=SANDBOX_KEYS) as client, anyio.create_task_group() as tg:
            for i in range(jobs):
                tg.start_soon(
                    lambda i=i: client.run(request, idempotency_key=f"one-{i}", save_to=out / f"one-{i}.mp4")
                )

    started = time.perf_counter()
    anyio.run(main)
    return time.perf_counter() - started


def fleet(
    setup: FleetSetup, request: LipsyncRequest, jobs: int, out: Path, workers: int, slots: int
) -> float:
    """Seconds from the first enqueue to the last stored result, with the workers already up."""
    fleet = Fleet(load_settings(setup.config, env=SANDBOX_KEYS), env=SANDBOX_KEYS)
    app = create_app(fleet)
    started_workers = [WorkerProcess(setup, f"bench{i}", concurrency=slots) for i in range(workers)]
    try:
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5) or []) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start:\n" + started_workers[0].output())
        started = time.perf_counter()
        ids = [
            enqueue(request, idempotency_key=f"fleet-{i}", save_to=out / f"fleet-{i}.mp4", app=app)
            for i in range(jobs)
        ]
        for job_id in ids:
            result(job_id, app=app).get(timeout=600)
        return time.perf_counter() - started
    finally:
        for worker in started_workers:
            worker.stop()
        fleet.runtime.close()


def main(jobs: int, workers: int, slots: int, processing: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="lipsyncer-fleet-bench-"))
    media = sample_media(work / "media")
    request = LipsyncRequest(video=media.video, audio=media.audio, model="fal-v2:lipsync-2")
    sandbox_config = SandboxConfig(processing_seconds=processing, queue_seconds=0.05)
    with (
        Sandbox(sandbox_config) as sandbox,
        serve_in_thread(sandbox) as server,
        postgres_server() as postgres,
        redis_server() as redis,
    ):

        def setup(name: str) -> FleetSetup:
            store = postgres.new_database()
            folder = work / name
            folder.mkdir()
            config = write_fleet_config(
                folder / "lipsyncer.toml",
                base_url=server.base_url,
                store_url=store,
                broker_url=redis.url(0),
                result_backend=redis.url(1),
            )
            return FleetSetup(config=config, store_url=store, broker_url=redis.url(0), work=folder)

        single = setup("one")
        alone = one_process(single.config, request, jobs, single.work)
        many = setup("fleet")
        spread = fleet(many, request, jobs, many.work, workers, slots)
        submits = len(sandbox.submits())

    assert submits == 2 * jobs, f"expected {2 * jobs} submits at the sandbox, saw {submits}"
    print(f"{jobs} jobs, sandbox processing {processing:g} s each, PostgreSQL store, results downloaded")
    print(f"one process (run x{jobs} concurrently): {jobs / alone:8.2f} jobs/s  ({alone:.1f} s)")
    print(f"fleet ({workers} workers x {slots} processes):    {jobs / spread:8.2f} jobs/s  ({spread:.1f} s)")
    print(f"fleet / one process: {alone / spread:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (machines)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--processing", type=float, default=1.0, help="sandbox seconds per job")
    args = parser.parse_args()
    main(args.jobs, args.workers, args.concurrency, args.processing)
