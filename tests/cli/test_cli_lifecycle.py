"""Exactly once across processes: a SIGKILL inside the submit window, two resumers on one store, and the
`jobs resume` / `jobs resolve` commands, against a loopback sandbox."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from cli_support import SANDBOX_KEYS, Invoke, Media, process_env, write_config

from lipsyncer import Lipsyncer, LipsyncRequest, SubmitOutcomeUnknownError
from lipsyncer.contrib.sandbox import Fault, Sandbox, SandboxConfig, serve_in_thread
from lipsyncer.core.jobs import SQLiteJobStore
from lipsyncer.core.schema import JobState

RANK = {"submitting": 0, "unknown": 0, "queued": 1, "running": 2, "completed": 3, "failed": 3, "cancelled": 3}


class Recorder(httpx.BaseTransport):
    def __init__(self) -> None:
        self.deliveries: list[httpx.Request] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.deliveries.append(request)
        return httpx.Response(200)


SUBMITTER = """
import sys
from lipsyncer import Lipsyncer, LipsyncRequest
from lipsyncer.core.jobs import SQLiteJobStore
config, store, video, audio, out = sys.argv[1:6]
with Lipsyncer(config=config, store=SQLiteJobStore(store)) as client:
    client.submit(
        LipsyncRequest(video=video, audio=audio, model="lipsync-2", webhook_url="https://hooks.example/lipsync/fal-v2"),
        save_to=out,
    )
"""


def until(check: object, guard: float = 60.0) -> None:
    give_up = time.monotonic() + guard
    while not check():  # type: ignore[operator]
        if time.monotonic() > give_up:
            pytest.fail("condition not reached")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_inside_the_submit_window_then_a_tagged_webhook_completes_the_job(
    clean_env: Path, media: Media
) -> None:
    recorder = Recorder()
    config = SandboxConfig(processing_seconds=0.5, queue_seconds=0.1, webhook_transport=recorder)
    with Sandbox(config) as sandbox, serve_in_thread(sandbox) as server:
        # The sandbox takes the job, then holds its answer: the submitter is killed while it waits for it.
        sandbox.add_fault(Fault(kind="slow", api="fal", operation="submit", seconds=4.0, after=True, times=1))
        cfg = write_config(clean_env / "cfg.toml", server.base_url)
        store = clean_env / "jobs.sqlite"
        out = clean_env / "out.mp4"
        args = [str(cfg), str(store), str(media.video), str(media.audio), str(out)]
        process = subprocess.Popen(
            [sys.executable, "-c", SUBMITTER, *args],
            cwd=clean_env,
            env=process_env(clean_env, SANDBOX_KEYS),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            until(lambda: bool(sandbox.submits()))
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        [row] = SQLiteJobStore(store).list_jobs()
        assert (
            row.state is JobState.SUBMITTING and row.remote_id is None
        )  # written ahead, answer never stored

        with Lipsyncer(config=cfg, env=SANDBOX_KEYS, store=SQLiteJobStore(store)) as client:
            [outcome] = client.resume()  # the submitter is dead: its row becomes unknown, never re-sent
            assert isinstance(outcome, SubmitOutcomeUnknownError)
            assert client.store.get(row.id).state is JobState.UNKNOWN  # type: ignore[union-attr]
            until(lambda: bool(recorder.deliveries))
            delivery = recorder.deliveries[0]
            assert delivery.url.params["lipsyncer_job"] == row.id
            job = client.handle_webhook(
                "fal-v2", dict(delivery.headers), delivery.content, url=str(delivery.url)
            )
        assert job is not None and job.state is JobState.COMPLETED and job.remote_id == sandbox.jobs[0].id
        assert job.result is not None and job.result.saved_to == str(out.resolve()) and out.stat().st_size > 0
        assert len(sandbox.submits()) == 1


RESUMER = """
import json, sys
from lipsyncer import Lipsyncer
from lipsyncer.core.jobs import SQLiteJobStore
config, store = sys.argv[1:3]
with Lipsyncer(config=config, store=SQLiteJobStore(store)) as client:
    outcomes = client.resume()
print(json.dumps([getattr(o, "job_id", None) or repr(o) for o in outcomes]))
"""


@pytest.mark.slow
def test_two_processes_resuming_one_store_complete_and_download_each_job_once(
    clean_env: Path, media: Media
) -> None:
    with (
        Sandbox(SandboxConfig(processing_seconds=1.5, queue_seconds=0.1)) as sandbox,
        serve_in_thread(sandbox) as server,
    ):
        cfg = write_config(clean_env / "cfg.toml", server.base_url)
        store = clean_env / "jobs.sqlite"
        with Lipsyncer(config=cfg, env=SANDBOX_KEYS, store=SQLiteJobStore(store)) as client:
            jobs = [
                client.submit(
                    LipsyncRequest(video=media.video, audio=media.audio, model=model),
                    save_to=clean_env / f"out-{i}.mp4",
                )
                for i, model in enumerate(["lipsync-2", "lipsync-2-pro", "sync-3", "lipsync-1.9.0-beta"] * 2)
            ]
        env = process_env(clean_env, SANDBOX_KEYS)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RESUMER, str(cfg), str(store)],
                cwd=clean_env,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=180) for p in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
        finished = {j.id: j for j in SQLiteJobStore(store).list_jobs(limit=100)}
        returned = [json.loads(out) for out, _ in outputs]
        ids = {job.id for job in jobs}
        # A resumer returns a result (never an error) for every job it found unfinished, including the jobs the
        # other one completes; one that starts late finds fewer. Together they return every job.
        assert all(set(one) <= ids for one in returned), returned
        assert set().union(*returned) == ids, returned
        for job in jobs:
            stored = finished[job.id]
            assert stored.state is JobState.COMPLETED and stored.result is not None
            assert Path(stored.result.saved_to or "").stat().st_size > 0
            ranks = [RANK[s.state.value] for s in SQLiteJobStore(store).history(job.id)]
            assert ranks == sorted(ranks)  # no row regressed
        result_gets = Counter(r.job_id for r in sandbox.find_requests(api="fal", operation="result"))
        file_gets = Counter(
            r.path for r in sandbox.find_requests(api="cdn", operation="file") if r.method == "GET"
        )
        assert set(result_gets.values()) == {1}  # fetched once per job
        assert sorted(file_gets.values()) == [1] * len(jobs)  # downloaded once per job
        assert len(sandbox.submits()) == len(jobs)


def test_jobs_resolve_attaches_a_remote_id_and_resume_finishes_the_job(
    cli: Invoke, config: Path, clean_env: Path, media: Media, served: tuple[Sandbox, object]
) -> None:
    sandbox, _ = served
    sandbox.add_fault(Fault(kind="drop_after_accept", api="fal", operation="submit", times=1))
    store = clean_env / "jobs.sqlite"
    with (
        Lipsyncer(config=config, env=SANDBOX_KEYS, store=SQLiteJobStore(store)) as client,
        pytest.raises(SubmitOutcomeUnknownError) as info,
    ):
        client.submit(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
    job = info.value.job
    assert job is not None
    common = ["--config", config, "--store", store]
    listed = cli(["jobs", "resume", *common, "--json"], env=SANDBOX_KEYS)
    assert listed.code != 0 and "lipsyncer jobs resolve" in listed.stdout + listed.stderr
    wrong = cli(["jobs", "resolve", "job_nope", "r", *common])
    assert wrong.code != 0 and "no job" in wrong.stderr
    resolved = cli(["jobs", "resolve", job.id, sandbox.jobs[0].id, *common])
    assert resolved.code == 0, resolved.stderr
    assert f"lipsyncer jobs resume {job.id}" in resolved.stdout
    again = cli(["jobs", "resolve", job.id, "another-id", *common])
    assert again.code != 0 and "already has remote id" in again.stderr
    resumed = cli(["jobs", "resume", job.id, *common, "--json"], env=SANDBOX_KEYS)
    assert resumed.code == 0, resumed.stderr
    [result] = json.loads(resumed.stdout)["results"]
    assert result["remote_id"] == sandbox.jobs[0].id
    assert len(sandbox.submits()) == 1
