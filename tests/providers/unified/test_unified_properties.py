"""Property: whatever valid request this provider accepts, the strict sandbox accepts its body as is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import fast_config, sample_media
from lipsyncer.core.config import ProviderSettings
from lipsyncer.core.provider import ProviderContext
from lipsyncer.core.schema import ActiveSpeaker, LipsyncRequest, SyncMode
from lipsyncer.providers.unified import UnifiedProvider

LIPSYNC_2 = ("lipsync-2", "lipsync-2-pro")


@st.composite
def servable(draw: st.DrawFn) -> dict[str, Any]:
    """Request fields this provider can serve: lipsync-2 options only on lipsync-2 models."""
    model = draw(st.sampled_from(["lipsync-2", "lipsync-2-pro", "sync-3"]))
    fields: dict[str, Any] = {"model": model, "sync_mode": draw(st.sampled_from(list(SyncMode)))}
    if model in LIPSYNC_2:
        temperature = draw(st.none() | st.floats(0.0, 1.0, allow_nan=False))
        if temperature is not None:
            fields["temperature"] = temperature
        if draw(st.booleans()):
            fields["active_speaker"] = ActiveSpeaker.automatic()
    if draw(st.booleans()):
        path = draw(st.text("abcdefghij0123456789-_/", max_size=60))
        fields["webhook_url"] = f"https://hooks.example.com/{path}"
    return fields


@pytest.fixture(scope="module")
def strict_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, str, str]]:
    media = sample_media(tmp_path_factory.mktemp("unified-property-media"))
    no_network = httpx.MockTransport(lambda request: httpx.Response(200))
    with Sandbox(fast_config(strict=True, webhook_transport=no_network)) as sandbox:
        base = "https://cdn.example.com"
        video = sandbox.put_file(
            media.video.read_bytes(), file_name="v.mp4", content_type="video/mp4", base_url=base
        )
        audio = sandbox.put_file(
            media.audio.read_bytes(), file_name="a.wav", content_type="audio/wav", base_url=base
        )
        yield sandbox, video, audio


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=servable())
def test_strict_sandbox_accepts_every_servable_request(
    fields: dict[str, Any], strict_sandbox: tuple[Sandbox, str, str]
) -> None:
    sandbox, video, audio = strict_sandbox
    request = LipsyncRequest(video=video, audio=audio, **fields)

    async def send() -> None:
        provider = UnifiedProvider(
            ProviderContext(
                settings=ProviderSettings(),
                api_key=SecretStr(sandbox.config.unified_key),
                transport=sandbox.transport(),
            )
        )
        try:
            spec = provider.model_spec(request.model_id)
            assert spec is not None
            provider.check(request, spec)
            await provider.submit(request, spec, video_url=video, audio_url=audio)
        finally:
            await provider.aclose()

    anyio.run(send)

    create = sandbox.submits()[-1]
    assert create.status == 200 and create.ignored_fields == ()
    assert create.body["model"] == request.model_id
    assert create.body["sync_mode"] == request.sync_mode.value
