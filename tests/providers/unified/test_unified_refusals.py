"""Requests this provider cannot honour are refused before any request: the sandbox sees nothing."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia
from lipsyncer.core.errors import (
    ConfigError,
    MissingCredentialsError,
    StorageError,
    UnsupportedOptionError,
)
from lipsyncer.core.provider import StorageContext
from lipsyncer.core.schema import ActiveSpeaker, JobState, LipsyncRequest, Option
from lipsyncer.providers.fal.storage import FalCdnStorage
from lipsyncer.providers.unified import UnifiedProvider

pytestmark = pytest.mark.anyio

Fn = Callable[..., Any]

# (model, request fields, the option named by the refusal)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("sync-3", {"temperature": 0.5}, "temperature"),
    ("sync-3", {"active_speaker": ActiveSpeaker.automatic()}, "active_speaker.auto"),
    ("lipsync-2", {"active_speaker": ActiveSpeaker.at(0, 10, 20)}, "active_speaker.point"),
    ("lipsync-2-pro", {"active_speaker": ActiveSpeaker.boxes([(0, 0, 10, 10)])}, "active_speaker.boxes"),
    (
        "lipsync-2",
        {"active_speaker": ActiveSpeaker.boxes_from("https://x.example/b.json")},
        "active_speaker.boxes_url",
    ),
    ("lipsync-2", {"active_speaker": ActiveSpeaker.face("aGVsbG8=")}, "active_speaker.face_image"),
    ("lipsync-2", {"model_mode": "lips"}, "model_mode"),
    ("sync-3", {"emotion": "happy"}, "emotion"),
    ("lipsync-2", {"webhook_url": "http://hooks.example.com/cb"}, "webhook"),
    ("sync-3", {"webhook_url": "https://10.1.2.3/cb"}, "webhook"),
    ("lipsync-2", {"webhook_url": "https://192.168.0.7:8443/cb"}, "webhook"),
    ("lipsync-2", {"webhook_url": "https://127.0.0.1/cb"}, "webhook"),
    ("lipsync-2", {"webhook_url": "https://localhost/cb"}, "webhook"),
    ("lipsync-2", {"webhook_url": "https://[::1]/cb"}, "webhook"),
    ("lipsync-2", {"webhook_url": "https://[fd00::5]/cb"}, "webhook"),
    (
        "lipsync-2",
        {"webhook_url": "http://127.0.0.1:9000/cb"},
        "webhook",
    ),  # insecure loopback not allowed here
    ("lipsync-2", {"webhook_url": "https://hooks.example.com/" + "a" * 2048}, "webhook"),
]


@pytest.mark.parametrize(("model", "fields", "option"), REFUSED)
async def test_refused_before_any_request(
    model: str, fields: dict[str, Any], option: str, sandbox: Sandbox, provider: UnifiedProvider, urls: Any
) -> None:
    request = urls.request(model, **fields)
    spec = provider.model_spec(model)
    assert spec is not None

    with pytest.raises(UnsupportedOptionError) as checked:
        provider.check(request, spec)
    with pytest.raises(UnsupportedOptionError) as submitted:
        await provider.submit(request, spec, video_url=urls.video, audio_url=urls.audio)

    assert checked.value.option == submitted.value.option == option
    assert checked.value.provider == "unified" and checked.value.fix
    assert sandbox.requests == []


async def test_a_callback_of_exactly_2048_chars_is_accepted(
    sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    url = "https://hooks.example.com/"
    url += "a" * (2048 - len(url))

    await submit(provider, urls.request("lipsync-2", webhook_url=url))

    assert sandbox.submits()[0].body["callback_url"] == url


async def test_insecure_loopback_callbacks_only_when_allowed(
    make_sandbox: Fn, make_provider: Fn, host: Fn, submit: Fn
) -> None:
    sandbox = make_sandbox(allow_insecure_callbacks=True)
    provider = make_provider(sandbox, allow_insecure_callbacks=True)
    urls = host(sandbox)

    await submit(provider, urls.request("sync-3", webhook_url="http://127.0.0.1:9/cb"))
    with pytest.raises(UnsupportedOptionError):  # private but not loopback: still refused
        await submit(provider, urls.request("sync-3", webhook_url="http://10.0.0.1:9/cb"))

    assert [r.body["callback_url"] for r in sandbox.submits()] == ["http://127.0.0.1:9/cb"]


async def test_every_model_honours_what_it_declares() -> None:
    declared = {m.id: m.options for m in UnifiedProvider.models}
    both = {Option.SYNC_MODE, Option.TEMPERATURE, Option.SPEAKER_AUTO, Option.WEBHOOK}
    assert declared == {
        "lipsync-2": both,
        "lipsync-2-pro": both,
        "sync-3": {Option.SYNC_MODE, Option.WEBHOOK},
    }


async def test_local_files_need_a_storage(
    sandbox: Sandbox, provider: UnifiedProvider, media: SampleMedia
) -> None:
    request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")

    with pytest.raises(StorageError) as caught:
        await provider.stage(request.video)

    assert "storage" in str(caught.value)
    assert sandbox.requests == []


async def test_data_uris_are_not_sent_as_is(
    sandbox: Sandbox, provider: UnifiedProvider, media: SampleMedia, urls: Any
) -> None:
    """The API fetches public URLs: a data URI needs a storage, like a local file."""
    data = "data:audio/wav;base64," + base64.b64encode(media.audio.read_bytes()).decode()
    request = LipsyncRequest(video=urls.video, audio=data, model="lipsync-2")
    spec = provider.model_spec("lipsync-2")
    assert spec is not None

    with pytest.raises(StorageError):
        await provider.stage(request.audio)
    with pytest.raises(StorageError) as caught:
        await provider.submit(request, spec, video_url=urls.video, audio_url=data)

    assert "audio" in str(caught.value)
    assert sandbox.requests == []


@pytest.mark.parametrize("form", ["path", "bytes", "data-uri"])
async def test_a_storage_hosts_local_media(
    form: str, sandbox: Sandbox, make_provider: Fn, media: SampleMedia, submit: Fn, job: Fn, finish: Fn
) -> None:
    """With ``storage = "fal-cdn"`` (here against the sandbox's CDN), every local form becomes a URL."""
    storage = FalCdnStorage(
        StorageContext(settings={}, api_key=SecretStr(sandbox.config.fal_key), transport=sandbox.transport())
    )
    provider = make_provider(sandbox, storage=storage)
    audio: Any = {
        "path": media.audio,
        "bytes": media.audio.read_bytes(),
        "data-uri": "data:audio/wav;base64," + base64.b64encode(media.audio.read_bytes()).decode(),
    }[form]
    try:
        submission = await submit(provider, LipsyncRequest(video=media.video, audio=audio, model="sync-3"))
        final = (await finish(provider, job(submission, "sync-3")))[-1]
    finally:
        await storage.aclose()

    [create] = sandbox.submits()
    assert create.body["video_url"].startswith("https://v3.fal.media/files/")
    assert create.body["audio_url"].startswith("https://v3.fal.media/files/")
    assert sandbox.file_bytes(create.body["audio_url"]) == media.audio.read_bytes()
    assert final.state is JobState.COMPLETED


async def test_missing_key(sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn) -> None:
    provider = make_provider(sandbox, key=None)

    with pytest.raises(MissingCredentialsError) as caught:
        await submit(provider, urls.request("lipsync-2"))

    assert caught.value.env_var == "EVOLINK_API_KEY"
    assert sandbox.requests == []


async def test_unknown_media_fields_setting(sandbox: Sandbox, make_provider: Fn) -> None:
    with pytest.raises(ConfigError) as caught:  # typed options: refused when the provider is built
        make_provider(sandbox, media_fields="v0")

    assert "providers.unified.options" in str(caught.value) and "media_fields" in str(caught.value)
    assert "current" in str(caught.value) and sandbox.requests == []


async def test_unknown_option_key_names_provider_and_key(sandbox: Sandbox, make_provider: Fn) -> None:
    with pytest.raises(ConfigError) as caught:
        make_provider(sandbox, result_ttl=60)
    assert "providers.unified.options: unknown key 'result_ttl'" in str(caught.value)
    assert "result_ttl_seconds" in (caught.value.fix or "")
