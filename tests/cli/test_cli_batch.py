"""`lipsyncer batch`: manifests validated before anything is sent, limits held at the sandbox, a dry run that
prices every row, a budget, and a batch killed halfway that completes with one submit per row."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from cli_support import SANDBOX_KEYS, Invoke, Media, cli_command, process_env, write_config

from lipsyncer import Lipsyncer, LipsyncError
from lipsyncer.contrib.sandbox import Sandbox, SandboxConfig, serve_in_thread
from lipsyncer.core.jobs import SQLiteJobStore
from lipsyncer.core.schema import JobState

# Published prices, USD per output second (reference §3-4): what a dry run must add up to.
PRICES = {
    ("fal-v2", "lipsync-2"): Decimal(3) / 60,
    ("fal-v3", "sync-3"): Decimal(8) / 60,
    ("fal-legacy", "lipsync-1.9.0-beta"): Decimal("0.7") / 60,
    ("fal-v2-pro", "lipsync-2-pro"): Decimal(5) / 60,
}
ROUTES = list(PRICES)


def hosted(sandbox: Sandbox, media: Media, n: int) -> tuple[str, str]:
    """The sample media under a per-row name on the sandbox CDN: distinct URLs, so each row's body is its own."""
    video = sandbox.put_file(media.video.read_bytes(), file_name=f"v{n}.mp4", content_type="video/mp4")
    audio = sandbox.put_file(media.audio.read_bytes(), file_name=f"a{n}.wav", content_type="audio/wav")
    return video, audio


def manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def limited_config(path: Path, base_url: str, *, in_flight: int, per_minute: float | None = None) -> Path:
    write_config(path, base_url)
    text = path.read_text()
    for provider, _ in ROUTES:
        section = f"[providers.{provider}]\n"
        limits = f"max_in_flight = {in_flight}\n" + (
            f"submits_per_minute = {per_minute}\n" if per_minute else ""
        )
        text = text.replace(section, section + limits)
    path.write_text(text)
    return path


@pytest.mark.slow
def test_a_200_row_batch_holds_max_in_flight_and_reports_every_row(
    cli: Invoke, clean_env: Path, media: Media
) -> None:
    with (
        Sandbox(SandboxConfig(processing_seconds=0.3, queue_seconds=0.05)) as sandbox,
        serve_in_thread(sandbox) as server,
    ):
        rows = []
        for n in range(200):
            provider, model = ROUTES[n % len(ROUTES)]
            video, audio = hosted(sandbox, media, n)
            rows.append({"id": f"ep{n:03}", "video": video, "audio": audio, "model": f"{provider}:{model}"})
        path = manifest(clean_env / "season.csv", rows)
        cfg = limited_config(clean_env / "cfg.toml", server.base_url, in_flight=5, per_minute=600)
        report = clean_env / "report.jsonl"
        store = clean_env / "jobs.sqlite"
        done = cli(["batch", path, "--report", report, "--config", cfg, "--store", store], env=SANDBOX_KEYS)
        assert done.code == 0, done.stderr + done.stdout
        lines = [json.loads(line) for line in report.read_text().splitlines()]
        assert sorted(line["id"] for line in lines) == sorted(r["id"] for r in rows)
        assert {line["state"] for line in lines} == {"completed"}
        for provider, _ in ROUTES:
            endpoint = {"fal-v2": "fal-ai/sync-lipsync/v2", "fal-v3": "fal-ai/sync-lipsync/v3"}.get(provider)
            if endpoint is not None:
                assert sandbox.max_in_flight(api="fal", endpoint=endpoint) <= 5
        # 600 a minute is 10 a second per provider: no one-second window may see more (+1 for arrival jitter)
        for endpoint, group in itertools.groupby(
            sorted(sandbox.submits(), key=lambda r: (r.endpoint or "", r.at)), key=lambda r: r.endpoint
        ):
            times = [r.at.timestamp() for r in group]
            busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
            assert busiest <= 10 + 1, (endpoint, busiest)
        assert len(sandbox.submits()) == 200
        assert sandbox.accepted_twice(by="body") == {}
        again = cli(["batch", path, "--config", cfg, "--store", store], env=SANDBOX_KEYS)
        assert again.code == 0 and len(sandbox.submits()) == 200  # a re-run sends nothing


def test_dry_run_prices_every_row_and_sends_nothing(
    cli: Invoke, clean_env: Path, media: Media, served: tuple[Sandbox, object], config: Path
) -> None:
    sandbox, _ = served
    rows = []
    expected = Decimal(0)
    modes = ["cut_off", "loop", "bounce", "silence", "remap"]
    for n in range(10):
        provider, model = ROUTES[n % len(ROUTES)]
        mode = modes[n % len(modes)]
        rows.append(
            {
                "id": f"r{n}",
                "video": str(media.video),
                "audio": str(media.audio),
                "model": f"{provider}:{model}",
                "sync_mode": mode,
            }
        )
        v, a = media.video_seconds, media.audio_seconds
        seconds = {"cut_off": min(v, a), "loop": a, "bounce": a, "silence": v, "remap": a}[mode]
        expected += (PRICES[(provider, model)] * Decimal(str(round(seconds, 3)))).quantize(Decimal("0.0001"))
    path = manifest(clean_env / "m.csv", rows)
    out = cli(["batch", path, "--dry-run", "--json", "--config", config], env=SANDBOX_KEYS)
    assert out.code == 0, out.stderr
    payload = json.loads(out.stdout)
    assert Decimal(payload["total"]) == expected
    assert sum(Decimal(v) for v in payload["per_provider"].values()) == expected
    assert sandbox.requests == []


def test_budget_refuses_rows_before_any_request(
    cli: Invoke, clean_env: Path, media: Media, served: tuple[Sandbox, object], config: Path
) -> None:
    sandbox, _ = served
    price = PRICES[("fal-v3", "sync-3")]
    one = (price * Decimal(str(min(media.video_seconds, media.audio_seconds)))).quantize(Decimal("0.0001"))
    rows = [
        {"id": f"r{n}", "video": str(media.video), "audio": str(media.audio), "model": "fal-v3:sync-3"}
        for n in range(3)
    ]
    path = manifest(clean_env / "m.csv", rows)
    budget = one * 2 + one / 2  # room for two rows, not three
    out = cli(
        ["batch", path, "--dry-run", "--budget", str(budget), "--json", "--config", config], env=SANDBOX_KEYS
    )
    payload = json.loads(out.stdout)
    refused = [row for row in payload["rows"] if row["refused"]]
    assert [row["id"] for row in refused] == ["r2"] and "budget" in refused[0]["refused"]
    assert sandbox.requests == []
    capped = manifest(
        clean_env / "capped.csv",
        [
            {
                "id": "c",
                "video": str(media.video),
                "audio": str(media.audio),
                "model": "sync-3",
                "max_cost": "0.01",
            }
        ],
    )
    out = cli(["batch", capped, "--config", config], env=SANDBOX_KEYS)
    assert out.code == 3 and "line 2 (id c)" in out.stderr and "max_cost" in out.stderr
    assert sandbox.requests == []


def test_bad_manifests_are_refused_naming_each_row(
    cli: Invoke, clean_env: Path, media: Media, served: tuple[Sandbox, object], config: Path
) -> None:
    sandbox, _ = served
    text_file = clean_env / "notes.mp4"
    text_file.write_text("not a video")
    cases = {
        "no_id.csv": ("video,audio\nv.mp4,a.wav\n", ["line 1", "no 'id' column"]),
        "dup.csv": (
            f"id,video,audio\nx,{media.video},{media.audio}\nx,{media.video},{media.audio}\n",
            ["line 3", "duplicate id"],
        ),
        "unknown.csv": (
            f"id,video,audio,colour\nx,{media.video},{media.audio},red\n",
            ["line 1", "'colour'"],
        ),
        "missing.csv": (
            f"id,video,audio\nx,{clean_env / 'nope.mp4'},{media.audio}\n",
            ["line 2 (id x)", "not found"],
        ),
        "unreadable.csv": (f"id,video,audio\nx,{text_file},{media.audio}\n", ["line 2 (id x)"]),
        "bad.jsonl": (
            '{"id": "a", "video": "v.mp4", "audio": "a.wav", "size": 3}\nnot json\n',
            ["line 1", "line 2"],
        ),
    }
    for name, (text, expected) in cases.items():
        path = clean_env / name
        path.write_text(text)
        out = cli(["batch", path, "--config", config], env=SANDBOX_KEYS)
        assert out.code == 3, (name, out.stdout, out.stderr)
        for fragment in expected:
            assert fragment in out.stderr, (name, fragment, out.stderr)
    assert sandbox.requests == []


class Receiver(httpx.BaseTransport):
    """The platform's webhook receiver, sharing the batch's job store. Deliveries are acknowledged at once
    and handled on a thread of their own, as a web server would (never inside the sandbox's delivery)."""

    def __init__(self) -> None:
        self.client: Lipsyncer | None = None
        self._queue: queue.Queue[httpx.Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self._queue.put(request)
        return httpx.Response(200)

    def _drain(self) -> None:
        while (request := self._queue.get()) is not None:
            provider = request.url.path.rstrip("/").rsplit("/", 1)[-1]
            if self.client is not None:
                with contextlib.suppress(LipsyncError):  # a later delivery or resume finishes it
                    self.client.handle_webhook(
                        provider, dict(request.headers), request.content, url=str(request.url)
                    )
            self._queue.task_done()

    def drained(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


@pytest.mark.slow
def test_a_batch_killed_halfway_completes_with_one_submit_per_row(clean_env: Path, media: Media) -> None:
    receiver = Receiver()
    with (
        Sandbox(
            SandboxConfig(processing_seconds=0.4, queue_seconds=0.05, webhook_transport=receiver)
        ) as sandbox,
        serve_in_thread(sandbox) as server,
    ):
        rows = []
        for n in range(40):
            video, audio = hosted(sandbox, media, n)
            provider, model = ROUTES[n % 2]
            rows.append({"id": f"row{n}", "video": video, "audio": audio, "model": f"{provider}:{model}"})
        path = manifest(clean_env / "m.csv", rows)
        cfg = limited_config(clean_env / "cfg.toml", server.base_url, in_flight=4)
        # Every job carries its id on the receiver's URL: a submit whose answer died with the process is
        # resolved by its webhook, never re-sent.
        cfg.write_text('webhook_url = "https://hooks.example/lipsync/{provider}"\n' + cfg.read_text())
        store = clean_env / "jobs.sqlite"
        report = clean_env / "report.jsonl"
        args = cli_command("batch", path, "--config", cfg, "--store", store, "--report", report)
        env = process_env(clean_env, SANDBOX_KEYS)
        with Lipsyncer(config=cfg, env=SANDBOX_KEYS, store=SQLiteJobStore(store)) as platform:
            receiver.client = platform
            process = subprocess.Popen(
                args, cwd=clean_env, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                give_up = time.monotonic() + 120
                while not report.exists() or len(report.read_text().splitlines()) < 10:
                    assert process.poll() is None, process.communicate()
                    assert time.monotonic() < give_up
                    time.sleep(0.02)
                process.send_signal(signal.SIGKILL)  # halfway: rows done, in flight, and not yet sent
                process.communicate(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
            before = len(sandbox.submits())
            assert 10 <= before < 40
            assert sandbox.wait_idle(60)  # the jobs the dead process left finish; their webhooks arrive
            receiver.drained()
            again = subprocess.run(
                args,
                cwd=clean_env,
                env=env,
                capture_output=True,
                text=True,
                timeout=float(os.environ.get("BATCH_RERUN_TIMEOUT", "300")),
            )
            receiver.drained()
            receiver.client = None
        receiver.close()
        jobs = {j.id: j for j in SQLiteJobStore(store).list_jobs(limit=1000)}
        accepted = sandbox.accepted_submits()
        assert sandbox.accepted_twice() == {} and None not in accepted  # one submit per row, all tagged
        # A submit counted but killed before it left can never be told from one whose answer was lost:
        # such a row stays unknown (nothing was billed); every row the sandbox took is completed.
        never_left = {i for i, j in jobs.items() if j.state is JobState.UNKNOWN and i not in accepted}
        assert {j.state for i, j in jobs.items() if i not in never_left} == {JobState.COMPLETED}
        assert len(jobs) == 40 and len(accepted) == 40 - len(never_left)
        assert again.returncode == (0 if not never_left else 6), again.stderr + again.stdout[-3000:]
