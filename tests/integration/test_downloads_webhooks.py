"""Results are saved safely, webhooks are verified and idempotent."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from lipsyncer import AsyncLipsyncer, JobState, LipsyncRequest, ResultExpiredError
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, eventually, fast_config
from lipsyncer.contrib.webhooks import webhook_app
from lipsyncer.core.download import download_video

pytestmark = pytest.mark.anyio


class _Cut(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class CutOnce(httpx.AsyncBaseTransport):
    """The network, not our code: the first full download of a file dies halfway through its body."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.ranges: list[str | None] = []
        self.cut_at: int | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or not request.url.path.startswith("/files/"):
            return response
        self.ranges.append(request.headers.get("range"))
        if self.cut_at is not None:
            return response
        body = await response.aread()
        self.cut_at = len(body) // 2
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Cut(body[: self.cut_at])
        )


async def test_a_download_cut_halfway_resumes_from_that_byte(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox, tmp_path: Path
) -> None:
    async with make_client() as client:
        result = await client.run(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
    cutter = CutOnce(sandbox.transport())
    async with httpx.AsyncClient(transport=cutter) as http:
        out = await download_video(http, result.video, tmp_path / "out.mp4")
    assert cutter.cut_at is not None and cutter.cut_at > 0
    assert cutter.ranges == [None, f"bytes={cutter.cut_at}-"]
    assert out.read_bytes() == sandbox.file_bytes(result.video.url)
    assert list(tmp_path.glob("out.mp4*.part")) == []  # no .part file left behind


async def test_an_expired_link_says_so(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox, tmp_path: Path
) -> None:
    async with make_client() as client:
        result = await client.run(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
        sandbox.add_fault(Fault(kind="expired_links", status=410))
        with pytest.raises(ResultExpiredError, match="expired"):
            await client.download(result, tmp_path / "late.mp4")
    assert not (tmp_path / "late.mp4").exists()


async def test_unified_results_expire_after_their_ttl(tmp_path: Path, media: SampleMedia) -> None:
    from datetime import timedelta

    from lipsyncer import SQLiteJobStore, load_settings
    from lipsyncer.core.schema import utcnow

    with Sandbox(fast_config(strict=True)) as sandbox:
        env = {"FAL_KEY": sandbox.config.fal_key, "EVOLINK_API_KEY": sandbox.config.unified_key}
        settings = load_settings(
            env=env,
            cwd=tmp_path,
            only=["unified"],
            storage="fal-cdn",
            polling={"initial_interval": 0.02, "max_interval": 0.1},
        )
        async with AsyncLipsyncer(
            settings, env=env, transport=sandbox.transport(), store=SQLiteJobStore(tmp_path / "j.sqlite")
        ) as client:
            result = await client.run(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
            assert result.video.expires_at is not None
            assert timedelta(hours=23) < result.video.expires_at - utcnow() <= timedelta(hours=24)
            stale = result.model_copy(
                update={"video": result.video.model_copy(update={"expires_at": utcnow()})}
            )
            with pytest.raises(ResultExpiredError) as info:
                await client.download(stale, tmp_path / "x.mp4")
            assert info.value.expired_at is not None
            assert (
                len(sandbox.find_requests(api="unified", operation="file")) == 0
            )  # refused before any request


class Recorder(httpx.BaseTransport):
    """Where the sandbox delivers webhooks: it keeps them for the test to replay into the receiver."""

    def __init__(self) -> None:
        self.deliveries: list[httpx.Request] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.deliveries.append(request)
        return httpx.Response(200)


async def test_fal_webhook_completes_the_job_once_and_forgeries_are_refused(
    media: SampleMedia, tmp_path: Path
) -> None:
    from lipsyncer import SQLiteJobStore, load_settings

    recorder = Recorder()
    with Sandbox(fast_config(strict=True, webhook_transport=recorder)) as sandbox:
        env = {"FAL_KEY": sandbox.config.fal_key}
        settings = load_settings(env=env, cwd=tmp_path)
        async with AsyncLipsyncer(
            settings, env=env, transport=sandbox.transport(), store=SQLiteJobStore(tmp_path / "j.sqlite")
        ) as client:
            request = LipsyncRequest(
                video=media.video,
                audio=media.audio,
                model="lipsync-2-pro",
                webhook_url="https://hooks.example/lipsync/fal-v2-pro",
            )
            job = await client.submit(request)

            async def delivered() -> bool:
                return bool(recorder.deliveries)

            await eventually(delivered)
            delivery = recorder.deliveries[0]
            assert delivery.url.params.get("fal_webhook") is None
            app = webhook_app(client)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="https://hooks.example"
            ) as http:
                headers = {k: v for k, v in delivery.headers.items() if k.lower().startswith("x-fal-webhook")}
                forged = await http.post(
                    "/lipsync/fal-v2-pro", content=delivery.content + b" ", headers=headers
                )
                assert forged.status_code == 401
                first = await http.post("/lipsync/fal-v2-pro", content=delivery.content, headers=headers)
                assert first.status_code == 200 and first.json() == {"job": job.id, "state": "completed"}
                stored = client.store.get(job.id)
                assert stored is not None and stored.state is JobState.COMPLETED and stored.result is not None
                history = len(client.store.history(job.id))
                again = await http.post("/lipsync/fal-v2-pro", content=delivery.content, headers=headers)
                assert again.status_code == 200
                assert len(client.store.history(job.id)) == history  # a duplicate changes nothing
                unknown = await http.post("/lipsync/nope", content=b"{}", headers=headers)
                assert unknown.status_code == 404
            result = await client.wait(job.id)  # already complete: no further look-up needed
            assert result.remote_id == job.remote_id
