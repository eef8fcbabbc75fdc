"""fal's storage as emulated: CDN tokens, uploads (and fal-client's fallback), downloads with Range."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault, ManualClock, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia as Media
from lipsyncer.providers.fal._client import FalAsyncClient

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}


async def test_token_shape(http: httpx.AsyncClient) -> None:
    response = await http.post(TOKEN_URL, json={}, headers=FAL_AUTH)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "token_type", "base_url", "expires_at"}
    assert body["token_type"] == "Bearer"
    assert body["base_url"] == "https://v3.fal.media"
    assert datetime.fromisoformat(body["expires_at"]).tzinfo is not None


async def test_raw_upload_and_download(http: httpx.AsyncClient) -> None:
    token = (await http.post(TOKEN_URL, json={}, headers=FAL_AUTH)).json()
    data = bytes(range(256)) * 4
    upload = await http.post(
        "https://v3.fal.media/files/upload",
        content=data,
        headers={
            "Authorization": f"{token['token_type']} {token['token']}",
            "Content-Type": "application/x-test",
            "X-Fal-File-Name": "my clip (1).bin",
        },
    )
    assert upload.status_code == 200
    url = upload.json()["access_url"]
    assert url.startswith("https://v3.fal.media/files/") and url.endswith("/my_clip_1_.bin")

    whole = await http.get(url)
    assert (whole.status_code, whole.content) == (200, data)
    assert whole.headers["content-type"] == "application/x-test"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(len(data))

    part = await http.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert part.headers["content-length"] == "10"
    tail = await http.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    open_end = await http.get(url, headers={"Range": "bytes=1000-"})
    assert open_end.content == data[1000:]
    beyond = await http.get(url, headers={"Range": "bytes=5000-6000"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    head = await http.head(url)
    assert (
        head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
    )


async def test_upload_needs_a_valid_token(http: httpx.AsyncClient) -> None:
    for auth in ("Bearer made-up", "Key sandbox-fal-key", ""):
        response = await http.post(
            "https://v3.fal.media/files/upload", content=b"x", headers={"Authorization": auth}
        )
        assert response.status_code == 401 and isinstance(response.json()["detail"], str)


async def test_unknown_file_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("https://v3.fal.media/files/none/such.mp4")
    assert response.status_code == 404


async def test_fal_client_upload_file_round_trip(sandbox: Sandbox, fal: FalAsyncClient, media: Media) -> None:
    url = await fal.upload_file(media.audio)
    assert sandbox.file_bytes(url) == media.audio.read_bytes()
    ops = [(r.api, r.operation, r.host) for r in sandbox.requests]
    assert ops == [("cdn", "token", "rest.fal.ai"), ("cdn", "upload", "v3.fal.media")]
    upload = sandbox.requests[1]
    assert upload.headers["x-fal-file-name"] == "dub.wav"
    assert upload.headers["content-type"] == "audio/x-wav" or upload.headers["content-type"].startswith(
        "audio/"
    )
    assert upload.headers["authorization"] == "<redacted>"


async def test_fal_client_falls_back_to_storage_upload(
    sandbox: Sandbox, fal: FalAsyncClient, media: Media
) -> None:
    """When the v3 CDN upload fails, fal-client initiates a storage upload and PUTs the bytes."""
    sandbox.add_fault(Fault(kind="http_error", api="cdn", operation="upload", status=500))
    url = await fal.upload_file(media.video)
    assert sandbox.file_bytes(url) == media.video.read_bytes()
    ops = [r.operation for r in sandbox.requests]
    assert ops == ["token", "upload", "upload_initiate", "upload_put"]
    assert sandbox.requests[1].status == 500


async def test_expired_links_fault(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    url = sandbox.put_file(b"abc", file_name="a.bin")
    sandbox.add_fault(Fault(kind="expired_links", times=1))
    sandbox.add_fault(Fault(kind="expired_links", status=410, times=1))
    first = await http.get(url)
    assert (first.status_code, first.json()) == (404, {"detail": "File not found"})
    second = await http.get(url)
    assert second.status_code == 410 and "expired" in second.json()["detail"]
    third = await http.get(url)
    assert third.status_code == 200 and third.content == b"abc"
    assert [r.faults for r in sandbox.find_requests(operation="file")] == [
        ("expired_links",),
        ("expired_links",),
        (),
    ]


async def test_cdn_ttl_expires_files_and_tokens(make_sandbox: Callable[..., Sandbox]) -> None:
    clock = ManualClock()
    sandbox = make_sandbox(clock=clock, cdn_ttl_seconds=600, cdn_token_ttl_seconds=3600)
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        token = (await http.post(TOKEN_URL, json={}, headers=FAL_AUTH)).json()["token"]

        async def upload() -> httpx.Response:
            return await http.post(
                "https://v3.fal.media/files/upload",
                content=b"soon gone",
                headers={"Authorization": f"Bearer {token}"},
            )

        url = (await upload()).json()["access_url"]
        clock.advance(599.5)
        assert (await http.get(url)).status_code == 200
        clock.advance(0.5)  # uploaded at t=0 with a 600 s lifetime
        assert (await http.get(url)).status_code == 404
        assert (await upload()).status_code == 200, "the token (3600 s) still works"
        clock.advance(3000)
        assert (await upload()).status_code == 401, "and is refused once expired"
