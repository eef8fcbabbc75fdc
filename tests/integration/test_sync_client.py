"""The blocking client: same surface, one private loop, and an interrupted wait never hangs or loses the job."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from lipsyncer import (
    JobNotFoundError,
    Lipsyncer,
    LipsyncRequest,
    NoRouteError,
    SQLiteJobStore,
    load_settings,
)
from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config


def client(sandbox: Sandbox, tmp_path: Path, **settings: object) -> Lipsyncer:
    env = {"FAL_KEY": sandbox.config.fal_key, "EVOLINK_API_KEY": sandbox.config.unified_key}
    settings.setdefault("polling", {"initial_interval": 0.02, "max_interval": 0.1})
    return Lipsyncer(
        load_settings(env=env, cwd=tmp_path, **settings),
        env=env,
        transport=sandbox.transport(),
        store=SQLiteJobStore(tmp_path / "jobs.sqlite"),
    )


def test_interrupting_wait_cancels_the_wait_not_the_job(media: SampleMedia, tmp_path: Path) -> None:
    with Sandbox(fast_config(processing_seconds=30)) as sandbox:
        lip = client(sandbox, tmp_path)
        job = lip.submit(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))

        def interrupt(*_: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            with pytest.raises(KeyboardInterrupt):
                lip.wait(job)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        closer = threading.Thread(target=lip.close)
        closer.start()
        closer.join(20)  # a hang guard, not a timing assertion
        assert not closer.is_alive(), "close() must not wait for the 30 s job"
        stored = SQLiteJobStore(tmp_path / "jobs.sqlite").get(job.id)
        assert stored is not None and not stored.state.finished, "the job stays stored and resumable"
        assert len(sandbox.submits()) == 1


def test_resume_saves_completed_jobs_that_were_never_saved(media: SampleMedia, tmp_path: Path) -> None:
    with Sandbox(fast_config()) as sandbox:
        with client(sandbox, tmp_path) as lip:
            job = lip.submit(
                LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"),
                save_to=tmp_path / "late.mp4",
            )
            result = lip.wait(job)  # completes and downloads...
        (tmp_path / "late.mp4").unlink()  # ...then pretend the process died before saving
        stored = SQLiteJobStore(tmp_path / "jobs.sqlite")
        done = stored.get(job.id)
        assert done is not None and done.result is not None
        done.result = done.result.model_copy(update={"saved_to": None})
        assert stored.update(done) is not None  # a CAS like any writer
        with client(sandbox, tmp_path) as lip:
            (outcome,) = lip.resume()
        assert not isinstance(outcome, Exception) and outcome.remote_id == result.remote_id
        assert (tmp_path / "late.mp4").stat().st_size > 0
        assert len(sandbox.submits()) == 1


def test_typed_errors_for_unknown_jobs_and_missing_keys(tmp_path: Path) -> None:
    with Sandbox(fast_config()) as sandbox, client(sandbox, tmp_path) as lip, pytest.raises(JobNotFoundError):
        lip.wait("job_does_not_exist")
    with Lipsyncer(
        load_settings(env={}, cwd=tmp_path), env={}, store=SQLiteJobStore(tmp_path / "x.sqlite")
    ) as bare:
        request = LipsyncRequest(
            video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="sync-3"
        )
        with pytest.raises(NoRouteError) as info:
            bare.route(request)
    assert info.value.fix == "set EVOLINK_API_KEY or FAL_KEY or SYNC_API_KEY"
    assert {e.kind for e in info.value.exclusions} >= {"credentials", "model"}


def test_a_closed_client_refuses_every_call(tmp_path: Path) -> None:
    from lipsyncer import AsyncLipsyncer, ClientClosedError

    lip = Lipsyncer(load_settings(env={}, cwd=tmp_path), env={}, store=SQLiteJobStore(tmp_path / "c.sqlite"))
    lip.close()
    lip.close()  # idempotent
    assert lip.closed
    request = LipsyncRequest(video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="sync-3")
    for call in (lambda: lip.submit(request), lambda: lip.route(request), lambda: lip.wait("job_x")):
        with pytest.raises(ClientClosedError):
            call()

    async def closed_async() -> None:
        client = AsyncLipsyncer(
            load_settings(env={}, cwd=tmp_path), env={}, store=SQLiteJobStore(tmp_path / "d")
        )
        await client.aclose()
        with pytest.raises(ClientClosedError):
            client.provider("fal-v3")

    import anyio

    anyio.run(closed_async)


def test_an_unclosed_client_never_hangs_interpreter_exit(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "from lipsyncer import Lipsyncer, JobNotFoundError, load_settings, SQLiteJobStore\n"
        f"lip = Lipsyncer(load_settings(env={{}}), env={{}}, store=SQLiteJobStore({str(tmp_path / 'u.sqlite')!r}))\n"
        "try:\n    lip.wait('job_missing')\nexcept JobNotFoundError:\n    print('looked up')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "looked up"
