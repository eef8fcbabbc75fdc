"""A paid job survives its process: SIGKILL after submit, then `jobs resume` in a new process saves the video."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_support import (
    SANDBOX_KEYS,
    Invoke,
    Media,
    cli_command,
    probe_mp4,
    process_env,
    run_process,
    write_config,
)

from lipsyncer import Lipsyncer, LipsyncRequest
from lipsyncer.cli.errors import EXIT_JOB_FAILED
from lipsyncer.contrib.sandbox import Sandbox, SandboxConfig, serve_in_thread
from lipsyncer.core.jobs import SQLiteJobStore
from lipsyncer.core.schema import Job, JobState


def wait_for_stored_job(store: Path, process: subprocess.Popen[str], guard: float = 60.0) -> Job:
    """Poll the job store until the running process has stored a submitted job (with its remote id)."""
    give_up = time.monotonic() + guard
    while time.monotonic() < give_up:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"lipsyncer run ended (code {process.returncode}) before the job was stored:\n{err}")
        if store.exists():
            jobs = [j for j in SQLiteJobStore(store).list_jobs() if j.remote_id]
            if jobs:
                return jobs[0]
        time.sleep(0.05)
    pytest.fail("the job never reached the job store")


@pytest.mark.slow
def test_sigkill_after_submit_then_resume_in_a_new_process(clean_env: Path, media: Media) -> None:
    config = SandboxConfig(processing_seconds=4.0, queue_seconds=0.2)
    with Sandbox(config) as sandbox, serve_in_thread(sandbox) as server:
        cfg = write_config(clean_env / "cfg.toml", server.base_url)
        store = clean_env / "state" / "jobs.sqlite"
        out = clean_env / "out.mp4"
        env = process_env(clean_env, SANDBOX_KEYS)
        run = cli_command("run", media.video, media.audio, "-o", out, "--config", cfg, "--store", store)
        process = subprocess.Popen(
            run, cwd=clean_env, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            job = wait_for_stored_job(store, process)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == -signal.SIGKILL
        assert len(sandbox.submits()) == 1
        assert not out.exists()
        stored = SQLiteJobStore(store).get(job.id)
        assert stored is not None and stored.state in (JobState.QUEUED, JobState.RUNNING)
        assert stored.save_to == str(out.resolve())  # the output path travels with the job

        resumed = run_process(
            cli_command("jobs", "resume", "--config", cfg, "--store", store, "--json"), cwd=clean_env, env=env
        )
        assert resumed.code == 0, resumed.stderr
        payload = json.loads(resumed.stdout)
        assert payload["errors"] == []
        [result] = payload["results"]
        assert result["job_id"] == job.id and result["remote_id"] == job.remote_id
        assert result["saved_to"] == str(out.resolve())

        assert len(sandbox.submits()) == 1  # resumed by look-up, never sent again
        seconds, videos = probe_mp4(out)
        assert videos == 1 and seconds > 0
        finished = SQLiteJobStore(store).get(job.id)
        assert finished is not None and finished.state is JobState.COMPLETED


def test_cancel_then_resume_reports_the_cancellation(cli: Invoke, media: Media, clean_env: Path) -> None:
    with (
        Sandbox(SandboxConfig(processing_seconds=30.0, queue_seconds=0.1)) as sandbox,
        serve_in_thread(sandbox) as server,
    ):
        cfg = write_config(clean_env / "cfg.toml", server.base_url)
        store = clean_env / "jobs.sqlite"
        with Lipsyncer(config=cfg, env=SANDBOX_KEYS, store=SQLiteJobStore(store)) as client:
            job = client.submit(
                LipsyncRequest(video=str(media.video), audio=str(media.audio), model="lipsync-2")
            )
        common = ["--config", cfg, "--store", store]
        listed = cli(["jobs", "list", *common])
        assert job.id in listed.stdout and "queued" in listed.stdout

        cancelled = cli(["jobs", "cancel", job.id, *common], env=SANDBOX_KEYS)
        assert cancelled.code == 0, cancelled.stderr
        assert "cancellation requested" in cancelled.stdout
        assert [r.operation for r in sandbox.requests if r.api == "fal"].count("cancel") == 1

        resumed = cli(["jobs", "resume", job.id, *common], env=SANDBOX_KEYS)
        assert resumed.code == EXIT_JOB_FAILED, resumed.stderr
        assert resumed.error_lines[0].startswith("error: ") and "cancel" in resumed.error_lines[0]
        assert len(sandbox.submits()) == 1
