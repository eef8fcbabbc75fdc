"""Local media through fal's CDN: the providers' own upload path and the ``fal-cdn`` storage."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from lipsyncer.core.errors import AuthenticationError, MissingCredentialsError
from lipsyncer.core.provider import StorageContext
from lipsyncer.core.schema import JobState, MediaSource
from lipsyncer.providers.fal.storage import FalCdnStorage
from lipsyncer.providers.fal.v3 import FalV3Provider

pytestmark = pytest.mark.anyio


async def test_local_video_and_audio_go_through_fal_v3(bed: Any) -> None:
    provider = bed.provider(FalV3Provider)
    request = bed.request("sync-3", video=str(bed.media.video), audio=bed.media.audio)

    submission = await bed.submit(provider, request)

    tokens = bed.sandbox.find_requests(api="cdn", operation="token")
    uploads = bed.sandbox.find_requests(api="cdn", operation="upload")
    assert len(tokens) == 1  # one CDN token, cached for both uploads
    assert tokens[0].host == "rest.fal.ai" and tokens[0].query == {"storage_type": "fal-cdn-v3"}
    assert [(u.host, u.headers["content-type"], u.headers["x-fal-file-name"]) for u in uploads] == [
        ("v3.fal.media", "video/mp4", "talk.mp4"),
        ("v3.fal.media", "audio/x-wav", "dub.wav"),
    ]
    assert all(u.headers["authorization"] == "<redacted>" for u in uploads)
    [sent] = bed.sandbox.submits()
    video_url, audio_url = sent.body["video_url"], sent.body["audio_url"]
    assert video_url.startswith("https://v3.fal.media/files/") and video_url.endswith("/talk.mp4")
    assert bed.sandbox.file_bytes(video_url) == bed.media.video.read_bytes()
    assert bed.sandbox.file_bytes(audio_url) == bed.media.audio.read_bytes()

    job = bed.job(provider, submission, "sync-3")
    assert (await bed.wait(provider, job))[-1].state is JobState.COMPLETED
    assert (await provider.result(job)).video.duration is not None


async def test_bytes_are_uploaded_with_a_sniffed_content_type(bed: Any) -> None:
    provider = bed.provider(FalV3Provider)
    url = await provider.stage(MediaSource.parse(bed.media.audio.read_bytes(), field="audio"))
    [upload] = bed.sandbox.find_requests(api="cdn", operation="upload")
    assert upload.headers["content-type"] == "audio/wav"
    assert bed.sandbox.file_bytes(url) == bed.media.audio.read_bytes()


async def test_remote_media_is_not_uploaded(bed: Any) -> None:
    provider = bed.provider(FalV3Provider)
    assert await provider.stage(MediaSource.parse(bed.video_url, field="video")) == bed.video_url
    assert bed.sandbox.requests == []


async def test_upload_with_a_refused_key(bed: Any) -> None:
    provider = bed.provider(FalV3Provider, key="wrong")
    with pytest.raises(AuthenticationError) as caught:
        await provider.stage(MediaSource.parse(bed.media.video, field="video"))
    assert (caught.value.status_code, caught.value.accepted) == (401, False)


async def test_fal_cdn_storage_hosts_files_for_other_providers(bed: Any) -> None:
    storage = FalCdnStorage(StorageContext(settings={"base_url": bed.base_url}, api_key=SecretStr(bed.key)))
    try:
        path_url = await storage.put(MediaSource.parse(bed.media.video, field="video"))
        bytes_url = await storage.put(MediaSource.parse(bed.media.audio.read_bytes(), field="audio"))
        remote = await storage.put(MediaSource.parse(bed.video_url, field="video"))
    finally:
        await storage.aclose()
    assert bed.sandbox.file_bytes(path_url) == bed.media.video.read_bytes()
    assert bed.sandbox.file_bytes(bytes_url) == bed.media.audio.read_bytes()
    assert remote == bed.video_url
    assert len(bed.sandbox.find_requests(api="cdn", operation="upload")) == 2


async def test_fal_cdn_storage_in_process_and_without_key(bed: Any) -> None:
    storage = FalCdnStorage(
        StorageContext(settings={}, api_key=SecretStr(bed.key), transport=bed.sandbox.transport())
    )
    try:
        url = await storage.put(MediaSource.parse(bed.media.audio, field="audio"))
    finally:
        await storage.aclose()
    assert bed.sandbox.file_bytes(url) == bed.media.audio.read_bytes()

    keyless = FalCdnStorage(StorageContext(settings={}, transport=bed.sandbox.transport()))
    with pytest.raises(MissingCredentialsError):
        await keyless.put(MediaSource.parse(bed.media.audio, field="audio"))
