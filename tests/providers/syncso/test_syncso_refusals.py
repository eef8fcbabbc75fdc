"""What the sync.so provider refuses before any request, with a typed error saying what to change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lipsyncer import (
    ActiveSpeaker,
    ConfigError,
    InvalidRequestError,
    LipsyncRequest,
    MissingCredentialsError,
    ProviderContext,
    StorageError,
    UnsupportedOptionError,
)
from lipsyncer.contrib.sandbox import Sandbox, write_sample_audio, write_sample_video
from lipsyncer.core.config import ProviderSettings
from lipsyncer.providers.syncso import SyncsoProvider

pytestmark = pytest.mark.anyio
Fn = Callable[..., Any]


@pytest.mark.parametrize(
    ("model", "fields", "option"),
    [
        ("lipsync-2", {"emotion": "happy"}, "emotion"),
        ("lipsync-2-pro", {"model_mode": "face"}, "model_mode"),
        ("sync-3", {"temperature": 0.5}, "temperature"),
        (
            "sync-3",
            {"active_speaker": ActiveSpeaker.boxes_from("https://x.example.com/b.json")},
            "active_speaker.boxes_url",
        ),
        ("react-1", {"active_speaker": ActiveSpeaker.face("aGVsbG8=")}, "active_speaker.face_image"),
        (
            "react-1",
            {"model_mode": "lipsync"},
            "model_mode",
        ),  # fal's wider list; sync.so takes lips|face|head
        ("react-1", {"emotion": "ecstatic"}, "emotion"),
    ],
)
async def test_options_not_honoured_are_refused(
    model: str,
    fields: dict[str, Any],
    option: str,
    sandbox: Sandbox,
    provider: SyncsoProvider,
    urls: Any,
    submit: Fn,
) -> None:
    with pytest.raises(UnsupportedOptionError) as caught:
        await submit(provider, urls.request(model, **fields))
    assert caught.value.option == option and caught.value.fix
    assert sandbox.requests == []


@pytest.mark.parametrize(
    "speaker",
    [lambda: ActiveSpeaker.at(3, 10.5, 20.0), lambda: ActiveSpeaker.boxes([(0.0, 0.0, 10.25, 10.0)])],
    ids=["point", "boxes"],
)
async def test_fractional_pixels_are_refused(
    speaker: Callable[[], ActiveSpeaker], sandbox: Sandbox, provider: SyncsoProvider, urls: Any, submit: Fn
) -> None:
    """sync.so takes integers: a fraction is refused (by the schema, else by the provider), never rounded."""
    with pytest.raises(InvalidRequestError) as caught:
        await submit(provider, urls.request("lipsync-2", active_speaker=speaker()))
    assert caught.value.field == "active_speaker" and caught.value.fix
    assert sandbox.requests == []


async def test_react_1_takes_at_most_15_seconds_of_local_media(
    sandbox: Sandbox, provider: SyncsoProvider, tmp_path: Path, media: Any
) -> None:
    long_video = write_sample_video(tmp_path / "long.mp4", 16.0)
    spec = provider.model_spec("react-1")
    assert spec is not None and spec.max_video_seconds == 15.0
    with pytest.raises(InvalidRequestError) as caught:
        provider.check(LipsyncRequest(video=long_video, audio=media.audio, model="react-1"), spec)
    assert caught.value.field == "video" and "15" in str(caught.value)
    long_audio = write_sample_audio(tmp_path / "long.wav", 15.5)
    with pytest.raises(InvalidRequestError) as caught:
        provider.check(LipsyncRequest(video=media.video, audio=long_audio, model="react-1"), spec)
    assert caught.value.field == "audio"
    provider.check(LipsyncRequest(video=media.video, audio=media.audio, model="react-1"), spec)  # short: fine
    other = provider.model_spec("lipsync-2")
    assert other is not None
    provider.check(LipsyncRequest(video=long_video, audio=media.audio, model="lipsync-2"), other)  # no limit


async def test_local_files_need_hosting(sandbox: Sandbox, provider: SyncsoProvider, media: Any) -> None:

    with pytest.raises(StorageError):
        await provider.stage(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2").video)


def test_unknown_option_key_is_a_config_error_naming_provider_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        SyncsoProvider(ProviderContext(settings=ProviderSettings(options={"occlusion_detection": True})))
    text = str(caught.value)
    assert "providers.syncso.options" in text and "'occlusion_detection'" in text
    assert "occlusion_detection_enabled" in (caught.value.fix or "")  # lists what it takes


def test_wrong_option_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="webhook_tolerance_seconds"):
        SyncsoProvider(ProviderContext(settings=ProviderSettings(options={"webhook_tolerance_seconds": -1})))


async def test_occlusion_option_is_sent_except_to_sync_3(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    provider = make_provider(sandbox, occlusion_detection_enabled=True)
    await submit(provider, urls.request("lipsync-2"), key="k1")
    await submit(provider, urls.request("sync-3"), key="k2")
    lipsync, sync3 = sandbox.find_requests(api="syncso", operation="create")
    assert lipsync.body["options"] == {"sync_mode": "cut_off", "occlusion_detection_enabled": True}
    assert sync3.body["options"] == {"sync_mode": "cut_off"}


def test_missing_key_is_typed(sandbox: Sandbox) -> None:

    provider = SyncsoProvider(ProviderContext(settings=ProviderSettings(), api_key=None))
    with pytest.raises(MissingCredentialsError, match="SYNC_API_KEY"):
        provider._client()
