"""Pointing lipsyncer at a sandbox: unique ids per instance, the config it prints, unified with local files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from lipsyncer import AsyncLipsyncer, LipsyncRequest, Settings, SQLiteJobStore, load_settings
from lipsyncer.contrib.sandbox import ManualClock, Sandbox, serve_in_thread
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media

pytestmark = pytest.mark.anyio

FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}
UNIFIED_AUTH = {"Authorization": "Bearer sandbox-unified-key"}
KEYS = {"FAL_KEY": "sandbox-fal-key", "EVOLINK_API_KEY": "sandbox-unified-key"}
PROVIDERS = ("fal-v3", "fal-v2", "fal-v2-pro", "fal-legacy", "unified", "syncso")
FAST_POLLING = "[polling]\ninitial_interval = 0.05\nmax_interval = 0.2\nmultiplier = 1.5\n"


async def first_ids(sandbox: Sandbox) -> tuple[str, str]:
    """The first fal request id and the first unified task id a sandbox hands out."""
    body = {"video_url": "https://media.invalid/v.mp4", "audio_url": "https://media.invalid/a.wav"}
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        fal = await http.post("https://queue.fal.run/fal-ai/sync-lipsync/v2", json=body, headers=FAL_AUTH)
        task = await http.post(
            "https://api.evolink.ai/v1/videos/generations", json=body, headers=UNIFIED_AUTH
        )
    return fal.json()["request_id"], task.json()["id"]


async def test_ids_are_unique_per_instance_and_repeat_under_a_seed(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    wall = 1_800_000_000.0  # unified ids carry the creation second: pin it so only the seed differs
    a, b = make_sandbox(clock=ManualClock(wall=wall)), make_sandbox(clock=ManualClock(wall=wall))
    assert isinstance(a.config.seed, int) and a.config.seed != b.config.seed
    ids_a, ids_b = await first_ids(a), await first_ids(b)
    assert ids_a[0] != ids_b[0] and ids_a[1] != ids_b[1]

    seeded = [make_sandbox(seed=42, clock=ManualClock(wall=wall)) for _ in range(2)]
    assert await first_ids(seeded[0]) == await first_ids(seeded[1])
    # A sandbox built from another's seed repeats its run.
    replay = make_sandbox(seed=a.config.seed, clock=ManualClock(wall=wall))
    assert await first_ids(replay) == ids_a


def expected_config(base_url: str | None, *, insecure: bool) -> dict[str, object]:
    """Written out: every emulated provider and the fal-cdn storage at the sandbox, unified callbacks opt-in."""
    target = {} if base_url is None else {"base_url": base_url}
    providers: dict[str, dict[str, object]] = {pid: dict(target) for pid in PROVIDERS}
    if insecure:
        providers["unified"]["options"] = {"allow_insecure_callbacks": True}
        providers["syncso"]["options"] = {"allow_insecure_webhooks": True}
    return {"storage": "fal-cdn", "storages": {"fal-cdn": dict(target)}, "providers": providers}


@pytest.mark.parametrize(("base_url", "insecure"), [("http://127.0.0.1:9999", True), (None, False)])
def test_client_config_as_dict_and_toml(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path, base_url: str | None, insecure: bool
) -> None:
    sandbox = make_sandbox(allow_insecure_callbacks=insecure)
    assert sandbox.client_config(base_url) == expected_config(base_url, insecure=insecure)
    text = sandbox.client_config_toml(base_url)
    assert tomllib.loads(text) == expected_config(base_url, insecure=insecure)
    # It is a valid lipsyncer config file as written.
    path = tmp_path / "lipsyncer.toml"
    path.write_text(text)
    settings = load_settings(path, env={})
    assert settings.storage == "fal-cdn"
    assert settings.provider("unified").base_url == base_url
    assert settings.provider("unified").options == ({"allow_insecure_callbacks": True} if insecure else {})
    assert settings.storages["fal-cdn"].get("base_url") == base_url


class Captured:
    """A loopback receiver for unified callbacks."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await Request(scope, receive).body()
        with self.lock:
            self.bodies.append(body)
        await Response(status_code=200)(scope, receive, send)


@contextmanager
def receiver() -> Iterator[tuple[str, Captured]]:
    app = Captured()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(10)


async def test_unified_with_local_files_and_a_loopback_callback_through_the_printed_config(
    make_sandbox: Callable[..., Sandbox], media: Media, tmp_path: Path
) -> None:
    sandbox = make_sandbox(allow_insecure_callbacks=True)
    with serve_in_thread(sandbox) as server, receiver() as (hook_base, hooks):
        config = tmp_path / "lipsyncer.toml"
        config.write_text(sandbox.client_config_toml(server.base_url) + FAST_POLLING)
        async with AsyncLipsyncer(
            load_settings(config, env=KEYS), env=KEYS, store=SQLiteJobStore(tmp_path / "jobs.sqlite")
        ) as client:
            request = LipsyncRequest(
                video=media.video,
                audio=media.audio,
                model="unified:lipsync-2",
                sync_mode="cut_off",
                webhook_url=f"{hook_base}/done",
            )
            result = await client.run(request)
        assert sandbox.wait_idle(20)

    assert result.served_by.provider == "unified"
    # The local files went to the sandbox's fal CDN (the storage), and the task fetched them from there.
    assert len(sandbox.find_requests(api="cdn", operation="upload")) == 2
    (create,) = sandbox.submits()
    assert sandbox.file_bytes(create.body["video_url"]) == media.video.read_bytes()
    assert sandbox.file_bytes(create.body["audio_url"]) == media.audio.read_bytes()
    assert create.body["callback_url"].startswith(f"{hook_base}/done")
    (callback,) = hooks.bodies
    assert json.loads(callback)["status"] == "completed"


async def test_in_process_the_config_without_base_url_is_enough_for_unified_with_local_files(
    make_sandbox: Callable[..., Sandbox], media: Media, tmp_path: Path
) -> None:
    """What ``--sandbox`` needs: the storage (and options) only; the transport reaches the sandbox."""
    sandbox = make_sandbox()
    settings = Settings().with_overrides(**sandbox.client_config(), polling={"initial_interval": 0.05})
    async with AsyncLipsyncer(
        settings, env=KEYS, transport=sandbox.transport(), store=SQLiteJobStore(tmp_path / "jobs.sqlite")
    ) as client:
        result = await client.run(
            LipsyncRequest(video=media.video, audio=media.audio, model="unified:sync-3")
        )
    assert result.served_by.provider == "unified"
    (create,) = sandbox.submits()
    assert sandbox.file_bytes(create.body["video_url"]) == media.video.read_bytes()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_sandbox_serve_prints_a_config_that_reaches_it(tmp_path: Path) -> None:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "lipsyncer.cli", "sandbox", "serve", "--port", str(port)]
    command += ["--seed", "9", "--insecure-callbacks"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    http = httpx.Client()  # one for every attempt: each new client loads the CA certificates (~40 ms of CPU)
    try:
        give_up = time.monotonic() + 60
        while True:  # wait until it listens (a guard, not a timed assertion)
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < give_up, "the sandbox never started listening"
            try:
                created = http.post(
                    f"{base_url}/v1/videos/generations",
                    json={
                        "video_url": "https://media.invalid/v.mp4",
                        "audio_url": "https://media.invalid/a.wav",
                        "callback_url": "http://127.0.0.1:1/hook",
                    },
                    headers=UNIFIED_AUTH,
                    timeout=2,
                )
                break
            except httpx.TransportError:
                time.sleep(0.05)
    finally:
        http.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert created.status_code == 200, "--insecure-callbacks: the sandbox takes an http loopback callback"
    assert "seed: 9 " in out
    toml_text = out[out.index("storage = ") : out.index("sandbox stopped")]
    assert tomllib.loads(toml_text) == expected_config(base_url, insecure=True)
