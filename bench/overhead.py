"""What lipsyncer costs on top of the raw clients, per call, against the same in-process sandbox.

Each row runs the raw client (fal-client or httpx) and lipsyncer side by side, alternating rounds so machine
noise hits both, and prints the median per-call time and the ratio. lipsyncer's extra work per call is
request validation, routing, a SQLite write of the job handle (fsync'd in WAL mode) and the status history.

    .venv/bin/python bench/overhead.py [--rounds 5] [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from lipsyncer import AsyncLipsyncer, LipsyncRequest, SQLiteJobStore, load_settings
from lipsyncer.contrib.sandbox import Sandbox, SandboxConfig
from lipsyncer.contrib.sandbox.media import write_sample_audio, write_sample_video
from lipsyncer.providers.fal._client import FalAsyncClient

Call = Callable[[], Awaitable[object]]


async def per_call(fn: Call, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls


async def compare(
    name: str, baseline: Call, ours: Call, *, rounds: int, calls: int
) -> tuple[str, float, float]:
    base_times, our_times = [], []
    for _ in range(rounds):
        base_times.append(await per_call(baseline, calls))
        our_times.append(await per_call(ours, calls))
    return name, statistics.median(base_times), statistics.median(our_times)


async def main(rounds: int, calls: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="lipsyncer-bench-"))
    # Jobs never leave the queue: rendering would otherwise compete for the CPU with what is measured.
    config = SandboxConfig(queue_seconds=3600, processing_seconds=1)
    with Sandbox(config) as sandbox:
        video = sandbox.put_file(
            write_sample_video(work / "v.mp4", 1.0).read_bytes(), file_name="v.mp4", content_type="video/mp4"
        )
        audio = sandbox.put_file(
            write_sample_audio(work / "a.wav", 1.0).read_bytes(), file_name="a.wav", content_type="audio/wav"
        )
        env = {"FAL_KEY": config.fal_key, "EVOLINK_API_KEY": config.unified_key}
        fal_raw = FalAsyncClient(key=config.fal_key, transport=sandbox.transport())
        http_raw = httpx.AsyncClient(
            transport=sandbox.transport(),
            base_url="https://api.evolink.ai",
            headers={"Authorization": f"Bearer {config.unified_key}"},
        )

        def client(only: str) -> AsyncLipsyncer:
            settings = load_settings(env=env, cwd=work, only=[only])
            store = SQLiteJobStore(work / f"{only}.sqlite")
            return AsyncLipsyncer(settings, env=env, transport=sandbox.transport(), store=store)

        fal_client, unified_client = client("fal-v2"), client("unified")
        arguments = {"video_url": video, "audio_url": audio, "sync_mode": "cut_off", "model": "lipsync-2"}
        request = LipsyncRequest(video=video, audio=audio, model="lipsync-2")
        fal_job = await fal_client.submit(request)
        handle = await fal_raw.submit("fal-ai/sync-lipsync/v2", arguments)
        unified_job = await unified_client.submit(request)

        rows = [
            await compare(
                "fal submit (fal-client vs lipsyncer)",
                lambda: fal_raw.submit("fal-ai/sync-lipsync/v2", arguments),
                lambda: fal_client.submit(request),
                rounds=rounds,
                calls=calls,
            ),
            await compare(
                "fal status (fal-client vs lipsyncer)",
                lambda: fal_raw.status("fal-ai/sync-lipsync", handle.request_id, with_logs=True),
                lambda: fal_client.status(fal_job),
                rounds=rounds,
                calls=calls,
            ),
            await compare(
                "unified create (httpx vs lipsyncer)",
                lambda: http_raw.post("/v1/videos/generations", json={**arguments, "model": "lipsync-2"}),
                lambda: unified_client.submit(request),
                rounds=rounds,
                calls=calls,
            ),
            await compare(
                "unified query (httpx vs lipsyncer)",
                lambda: http_raw.get(f"/v1/tasks/{unified_job.remote_id}"),
                lambda: unified_client.status(unified_job),
                rounds=rounds,
                calls=calls,
            ),
        ]
        await fal_raw.aclose()
        await http_raw.aclose()
        await fal_client.aclose()
        await unified_client.aclose()

    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'baseline':>10}  {'lipsyncer':>10}  {'ratio':>6}")
    for name, base, ours in rows:
        print(f"{name:<{width}}  {base * 1e3:>8.2f}ms  {ours * 1e3:>8.2f}ms  {ours / base:>5.2f}x")
    print(f"(median of {rounds} alternating rounds of {calls} calls each, in-process sandbox)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
