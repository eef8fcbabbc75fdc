"""`lipsyncer demo` runs the real pipeline offline (its MP4 follows the sync mode's rule); `sandbox serve` serves it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
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

from lipsyncer.core.media import probe
from lipsyncer.core.schema import SyncMode


def sync_rule(mode: str, v: float, a: float) -> float:
    """The output length each sync mode gives (reference §1), written out here rather than imported."""
    return {"cut_off": min(v, a), "loop": a, "bounce": a, "silence": v, "remap": a}[
        str(getattr(mode, "value", mode))
    ]


VENV_SCRIPT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lipsyncer"


@pytest.mark.parametrize("mode", list(SyncMode))
def test_demo_output_follows_the_sync_mode_rule(cli: Invoke, clean_env: Path, mode: SyncMode) -> None:
    argv = ["demo", "-o", "demo.mp4", "--sync-mode", mode.value, "--workdir", "inputs", "--json"]
    outcome = cli([*argv, "--processing-seconds", "0.05"])  # the rule, not the wait, is under test
    assert outcome.code == 0, outcome.stderr
    payload = json.loads(outcome.stdout)
    video, audio = clean_env / "inputs" / "sample-video.mp4", clean_env / "inputs" / "sample-audio.wav"
    expected = sync_rule(mode, probe(video).duration, probe(audio).duration)
    seconds, videos = probe_mp4(clean_env / "demo.mp4")
    assert videos == 1
    assert abs(seconds - expected) <= 0.1, (mode, seconds, expected)
    assert payload["duration_ok"] is True and payload["sync_mode"] == mode.value
    assert payload["expected_seconds"] == pytest.approx(expected)
    assert payload["served_by"]["provider"] == "fal-v2"
    assert float(payload["estimated_cost"]) > 0
    assert payload["saved_to"] == str((clean_env / "demo.mp4").resolve())


def test_demo_prints_route_cost_served_by_and_the_duration_check(cli: Invoke, clean_env: Path) -> None:
    outcome = cli(["demo"])
    assert outcome.code == 0, outcome.stderr
    text = outcome.stdout
    assert "Routing 'lipsync-2' by priority:" in text  # the plan's explanation
    assert "Excluded:" in text and "unified:lipsync-2" in text
    assert "Estimated cost on fal-v2:lipsync-2: $0.15 for 3.00 s" in text
    assert "Served by fal-v2:lipsync-2 (fal-ai/sync-lipsync/v2)" in text
    assert "loop rule (audio length)" in text and "expected 3.00 s [ok]" in text
    seconds, _ = probe_mp4(clean_env / "lipsyncer-demo.mp4")  # the default output, in the cwd
    assert abs(seconds - 3.0) <= 0.1


@pytest.mark.slow
def test_demo_from_the_installed_script_needs_no_key_and_no_network(clean_env: Path) -> None:
    script = [str(VENV_SCRIPT)] if VENV_SCRIPT.exists() else cli_command()
    env = process_env(clean_env)  # no key of any kind
    outcome = run_process([*script, "demo", "--sync-mode", "remap"], cwd=clean_env, env=env)
    assert outcome.code == 0, outcome.stderr
    assert "[ok]" in outcome.stdout
    seconds, videos = probe_mp4(clean_env / "lipsyncer-demo.mp4")
    assert videos == 1 and abs(seconds - 3.0) <= 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_sandbox_serve_answers_a_run_from_another_process(cli: Invoke, clean_env: Path, media: Media) -> None:
    port = free_port()
    env = process_env(clean_env)
    server = subprocess.Popen(
        cli_command("sandbox", "serve", "--port", str(port), "--processing-seconds", "0.3"),
        cwd=clean_env,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    http = httpx.Client()  # one for every attempt: each new client loads the CA certificates (~40 ms of CPU)
    try:
        give_up = time.monotonic() + 60
        while True:  # wait until it listens (a guard, not a timed assertion)
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < give_up, "the sandbox never started listening"
            try:
                if http.get(f"{base_url}/_sandbox/requests", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        cfg = write_config(clean_env / "cfg.toml", base_url)
        ran = cli(
            ["run", media.video, media.audio, "--config", cfg, "-o", "served.mp4", "--store", "jobs.sqlite"],
            env=SANDBOX_KEYS,
        )
        assert ran.code == 0, ran.stderr
        assert probe_mp4(clean_env / "served.mp4")[1] == 1
        recorded = http.get(f"{base_url}/_sandbox/requests").json()["requests"]
        submits = [r for r in recorded if (r["api"], r["operation"]) == ("fal", "submit")]
        assert len(submits) == 1
    finally:
        http.close()
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0
    assert f"lipsyncer sandbox on {base_url}" in out and "FAL_KEY=sandbox-fal-key" in out
