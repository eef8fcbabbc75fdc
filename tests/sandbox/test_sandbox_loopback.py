"""The sandbox on a real loopback socket: fal-client through RebaseTransport, direct URLs, concurrency."""

from __future__ import annotations

import base64
import hashlib
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
from typing import Any

import anyio
import fal_client
import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from lipsyncer.contrib.sandbox import Fault, Sandbox, serve_in_thread
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.contrib.sandbox.testing import eventually, wait_fal_completed, wait_task_finished
from lipsyncer.core.http import RebaseTransport
from lipsyncer.core.schema import JobState
from lipsyncer.providers.fal._client import FalAsyncClient

pytestmark = pytest.mark.anyio

FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}
UNIFIED_AUTH = {"Authorization": "Bearer sandbox-unified-key"}


class Captured:
    """A loopback webhook receiver: records raw bodies and headers."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, dict[str, str]]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        with self.lock:
            self.items.append((body, dict(request.headers)))
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
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)


def hosted(sandbox: Sandbox, path: Path) -> str:
    return sandbox.put_file(path.read_bytes(), file_name=path.name)


async def test_fal_client_through_rebase_transport(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    sandbox = make_sandbox()
    with serve_in_thread(sandbox) as server, receiver() as (hook_base, hooks):
        client = FalAsyncClient(key="sandbox-fal-key", transport=RebaseTransport(server.base_url))
        video = await client.upload_file(media.video)
        audio = await client.upload_file(media.audio)
        assert video.startswith("https://v3.fal.media/files/")
        handle = await client.submit(
            "fal-ai/sync-lipsync/v3",
            {"video_url": video, "audio_url": audio, "sync_mode": "remap"},
            webhook_url=f"{hook_base}/fal",
            start_timeout=60,
            priority="normal",
        )
        assert handle.status_url.startswith("https://queue.fal.run/fal-ai/sync-lipsync/requests/")

        async def done() -> bool:
            return isinstance(await handle.status(with_logs=True), fal_client.Completed)

        await eventually(done)
        output = await handle.get()
        async with httpx.AsyncClient(transport=RebaseTransport(server.base_url)) as http:
            download = await http.get(output["video"]["url"])
        assert download.status_code == 200 and len(download.content) == output["video"]["file_size"]
        assert sandbox.wait_idle(20)
        await client.aclose()

        (body, headers) = hooks.items[0]
        payload = json.loads(body)
        assert payload["status"] == "OK" and payload["payload"] == output
        async with httpx.AsyncClient() as plain:
            jwks = (await plain.get(f"{server.base_url}/.well-known/jwks.json")).json()
        x = jwks["keys"][0]["x"]
        key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
        message = "\n".join(
            [
                headers["x-fal-webhook-request-id"],
                headers["x-fal-webhook-user-id"],
                headers["x-fal-webhook-timestamp"],
                hashlib.sha256(body).hexdigest(),
            ]
        ).encode()
        key.verify(bytes.fromhex(headers["x-fal-webhook-signature"]), message)

    hosts = {r.host for r in sandbox.requests}
    assert {"rest.fal.ai", "v3.fal.media", "queue.fal.run"} <= hosts
    assert sandbox.job(handle.request_id).state is JobState.COMPLETED


async def test_direct_loopback_urls_and_admin(make_sandbox: Callable[..., Sandbox], media: Media) -> None:
    sandbox = make_sandbox()
    with serve_in_thread(sandbox) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            token = (
                await http.post(
                    "/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, headers=FAL_AUTH
                )
            ).json()
            assert token["base_url"] == server.base_url
            upload = await http.post(
                "/files/upload",
                content=media.video.read_bytes(),
                headers={"Authorization": f"Bearer {token['token']}", "X-Fal-File-Name": "v.mp4"},
            )
            video = upload.json()["access_url"]
            assert video.startswith(f"{server.base_url}/files/")
            body = {"video_url": video, "audio_url": hosted(sandbox, media.audio)}
            submitted = (await http.post("/fal-ai/sync-lipsync/v2", json=body, headers=FAL_AUTH)).json()
            assert submitted["status_url"].startswith(f"{server.base_url}/fal-ai/sync-lipsync/requests/")
            await wait_fal_completed(http, submitted["status_url"])
            output = (await http.get(submitted["response_url"], headers=FAL_AUTH)).json()
            assert output["video"]["url"].startswith(f"{server.base_url}/files/")
            assert (await http.get(output["video"]["url"])).status_code == 200

            task = (await http.post("/v1/videos/generations", json=body, headers=UNIFIED_AUTH)).json()
            final = await wait_task_finished(http, f"{server.base_url}/v1/tasks/{task['id']}")
            assert final["results"][0].startswith(f"{server.base_url}/files/")
            # URLs follow each request's own Host and scheme (X-Forwarded-Proto from a TLS proxy wins).
            behind_proxy = await http.get(
                f"/v1/tasks/{task['id']}", headers={**UNIFIED_AUTH, "X-Forwarded-Proto": "https"}
            )
            assert behind_proxy.json()["results"][0].startswith(f"https://127.0.0.1:{server.port}/files/")

            jobs = (await http.get("/_sandbox/jobs")).json()["jobs"]
            assert [j["id"] for j in jobs] == [submitted["request_id"], task["id"]]
            assert jobs[0]["state"] == "completed" and jobs[0]["endpoint"] == "fal-ai/sync-lipsync/v2"
            records = (await http.get("/_sandbox/requests")).json()["requests"]
            submit = next(r for r in records if r["operation"] == "submit")
            assert submit["headers"]["authorization"] == "<redacted>" and submit["body"] == body
            assert (
                submit["api"] == "fal"
                and submit["status"] == 200
                and submit["job_id"] == submitted["request_id"]
            )
            assert {r["api"] for r in records} >= {"fal", "cdn", "unified", "admin"}
            assert "deliveries" in (await http.get("/_sandbox/webhooks")).json()


async def test_dropped_connection_on_a_real_socket(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    sandbox = make_sandbox(faults=[Fault(kind="drop_after_accept", api="fal", operation="submit", times=1)])
    with serve_in_thread(sandbox) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            body = {"video_url": hosted(sandbox, media.video), "audio_url": hosted(sandbox, media.audio)}
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post("/fal-ai/sync-lipsync/v2", json=body, headers=FAL_AUTH)
            # The server keeps serving; the job the lost response described exists.
            (job,) = sandbox.jobs
            status = await http.get(f"/fal-ai/sync-lipsync/requests/{job.id}/status", headers=FAL_AUTH)
            assert status.status_code in (200, 202)
            sandbox.add_fault(Fault(kind="drop_connection", api="fal", operation="status", times=1))
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(f"/fal-ai/sync-lipsync/requests/{job.id}/status", headers=FAL_AUTH)


async def test_slow_response_times_out_on_a_real_socket(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(faults=[Fault(kind="slow", api="cdn", seconds=1.0, times=1)])
    url = sandbox.put_file(b"abc", file_name="a.bin")
    with serve_in_thread(sandbox) as server:
        async with httpx.AsyncClient(transport=RebaseTransport(server.base_url), timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url)
            assert (await http.get(url, timeout=30)).content == b"abc"


async def test_unified_callback_to_a_loopback_receiver(
    make_sandbox: Callable[..., Sandbox], media: Media
) -> None:
    sandbox = make_sandbox(allow_insecure_callbacks=True)
    with serve_in_thread(sandbox) as server, receiver() as (hook_base, hooks):
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            body = {
                "model": "lipsync-2-pro",
                "video_url": hosted(sandbox, media.video),
                "audio_url": hosted(sandbox, media.audio),
                "callback_url": f"{hook_base}/done",
            }
            task = (await http.post("/v1/videos/generations", json=body, headers=UNIFIED_AUTH)).json()
            assert sandbox.wait_idle(20)
            query = (await http.get(f"/v1/tasks/{task['id']}", headers=UNIFIED_AUTH)).json()
    (raw, _headers) = hooks.items[0]
    assert json.loads(raw) == query and query["status"] == "completed"


@pytest.mark.slow
async def test_a_hundred_concurrent_jobs(make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
    from lipsyncer.contrib.sandbox import write_sample_audio, write_sample_video

    sandbox = make_sandbox(queue_seconds=0.05, processing_seconds=0.05)
    video = sandbox.put_file(
        write_sample_video(tmp_path / "v.mp4", 0.4, width=64, height=48).read_bytes(), file_name="v.mp4"
    )
    audio = sandbox.put_file(write_sample_audio(tmp_path / "a.wav", 0.4).read_bytes(), file_name="a.wav")
    limit = anyio.Semaphore(16)
    outputs: dict[int, dict[str, Any]] = {}
    ids: dict[int, str] = {}

    with serve_in_thread(sandbox) as server:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(
            transport=RebaseTransport(server.base_url, transport=httpx.AsyncHTTPTransport(limits=limits)),
            timeout=30,
        ) as http:

            async def one(n: int) -> None:
                api = "fal" if n % 2 else "unified"
                async with limit:
                    if api == "fal":
                        sub = await http.post(
                            "https://queue.fal.run/fal-ai/sync-lipsync/v2",
                            json={"video_url": video, "audio_url": audio, "sync_mode": "loop"},
                            headers=FAL_AUTH,
                        )
                        ids[n] = sub.json()["request_id"]
                    else:
                        sub = await http.post(
                            "https://api.evolink.ai/v1/videos/generations",
                            json={"video_url": video, "audio_url": audio},
                            headers=UNIFIED_AUTH,
                        )
                        ids[n] = sub.json()["id"]
                    assert sub.status_code == 200
                if api == "fal":
                    status = await wait_fal_completed(http, sub.json()["status_url"], within=60)
                    assert "error" not in status
                    async with limit:
                        outputs[n] = (await http.get(sub.json()["response_url"], headers=FAL_AUTH)).json()
                else:
                    final = await wait_task_finished(
                        http, f"https://api.evolink.ai/v1/tasks/{ids[n]}", within=60
                    )
                    assert final["status"] == "completed"
                    outputs[n] = final

            async with anyio.create_task_group() as group:
                for n in range(100):
                    group.start_soon(one, n)

    assert len(outputs) == 100
    assert len(set(ids.values())) == 100, "no duplicated job ids"
    jobs = sandbox.jobs
    assert len(jobs) == 100 and {j.id for j in jobs} == set(ids.values()), "no lost or extra jobs"
    assert all(j.state is JobState.COMPLETED for j in jobs)
    urls = [o["video"]["url"] for o in outputs.values() if "video" in o] + [
        o["results"][0] for o in outputs.values() if "results" in o
    ]
    assert len(set(urls)) == 100, "every job has its own output"
    assert len(sandbox.submits()) == 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_runs_until_terminated() -> None:
    """``serve()`` is what ``lipsyncer sandbox serve`` runs: blocking, in its own process."""
    port = _free_port()
    code = f"from lipsyncer.contrib.sandbox import serve; serve(host='127.0.0.1', port={port}, log_level='warning')"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    http = httpx.Client()  # one for every attempt: each new client loads the CA certificates (~40 ms of CPU)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = http.get(f"http://127.0.0.1:{port}/_sandbox/jobs", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert response.json() == {"jobs": []}
        token = http.post(f"http://127.0.0.1:{port}/storage/auth/token", headers=FAL_AUTH)
        assert token.status_code == 200
    finally:
        http.close()
        process.terminate()
        _, err = process.communicate(timeout=15)
    # Still serving when told to stop (no exit of its own), then a graceful shutdown: uvicorn finishes and
    # re-raises the signal, or exits 0; never a crash or a traceback.
    assert process.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err and "Error" not in err
