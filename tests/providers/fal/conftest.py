"""Fixtures for the fal provider tests: a strict, fast sandbox on loopback and providers wired to it.

Providers reach the sandbox the way they would reach a gateway: ``base_url`` rebases every fal host (queue,
rest, CDN) onto the loopback server, and fal-client does the HTTP. The tests run with
``--import-mode=importlib``, so shared helpers are handed out as fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import httpx
import pytest
from pydantic import SecretStr

from lipsyncer.contrib.sandbox import Sandbox, serve_in_thread
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config, sample_media
from lipsyncer.core.config import ProviderSettings
from lipsyncer.core.provider import ProviderContext, Submission
from lipsyncer.core.schema import Job, JobStatus, LipsyncRequest
from lipsyncer.providers.fal._base import FalProvider

KEY = "fal-test-key-8c1e5a0f:4b7d93e2c6a1"
"""Distinctive, so a leak check that searches for it means something."""

WEBHOOK = "https://hooks.example.test/fal?token=t0k"


def _accept_webhook(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


@dataclass
class Bed:
    """One sandbox on loopback, its hosted sample inputs, and the providers built against it."""

    sandbox: Sandbox
    base_url: str
    media: SampleMedia
    video_url: str
    audio_url: str
    made: list[FalProvider] = field(default_factory=list)
    key: ClassVar[str] = KEY
    webhook: ClassVar[str] = WEBHOOK

    def provider(
        self,
        cls: type[FalProvider],
        *,
        key: str | None = KEY,
        transport: httpx.AsyncBaseTransport | None = None,
        base_url: str | None = "<sandbox>",
        **options: Any,
    ) -> FalProvider:
        settings = ProviderSettings(
            base_url=self.base_url if base_url == "<sandbox>" else base_url, options=options
        )
        provider = cls(
            ProviderContext(
                settings=settings, api_key=SecretStr(key) if key is not None else None, transport=transport
            )
        )
        self.made.append(provider)
        return provider

    def request(self, model: str, **fields: Any) -> LipsyncRequest:
        fields.setdefault("video", self.video_url)
        fields.setdefault("audio", self.audio_url)
        return LipsyncRequest(model=model, **fields)

    async def submit(self, provider: FalProvider, request: LipsyncRequest) -> Submission:
        """What the client does with a route: check, stage, submit."""
        spec = provider.model_spec(request.model_id)
        assert spec is not None, request.model_id
        provider.check(request, spec)
        video = await provider.stage(request.video)
        audio = await provider.stage(request.audio)
        return await provider.submit(
            request, spec, video_url=video, audio_url=audio, webhook_url=request.webhook_url
        )

    @staticmethod
    def job(provider: FalProvider, submission: Submission, model: str) -> Job:
        """The durable handle the core would store (built from the submission only)."""
        return Job(
            id="job-under-test",
            provider=provider.id,
            model=model,
            endpoint=submission.endpoint,
            remote_id=submission.remote_id,
            status_url=submission.status_url,
            result_url=submission.result_url,
            cancel_url=submission.cancel_url,
            request_fingerprint="test",
            provider_data=dict(submission.provider_data),
        )

    @staticmethod
    async def wait(provider: FalProvider, job: Job, *, limit: float = 30.0) -> list[JobStatus]:
        """Every status seen until the job finished (a guard against hangs, not a timing assertion)."""
        seen: list[JobStatus] = []
        with anyio.fail_after(limit):
            while True:
                status = await provider.status(job)
                seen.append(status)
                if status.state.finished:
                    return seen
                await anyio.sleep(0.01)


MakeBed = Callable[..., Awaitable[Bed]]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("fal-media"))


@pytest.fixture
async def make_bed(media: SampleMedia) -> AsyncIterator[MakeBed]:
    """Build a strict, fast sandbox served on loopback (config overrides allowed); all closed afterwards."""
    stack = ExitStack()
    beds: list[Bed] = []

    async def make(**config: Any) -> Bed:
        values: dict[str, Any] = {
            "strict": True,
            "fal_key": KEY,
            "webhook_transport": httpx.MockTransport(_accept_webhook),
        }
        values.update(config)
        sandbox = stack.enter_context(Sandbox(fast_config(**values)))
        server = stack.enter_context(serve_in_thread(sandbox))
        bed = Bed(
            sandbox=sandbox,
            base_url=server.base_url,
            media=media,
            video_url=sandbox.put_file(
                media.video.read_bytes(), file_name="talk.mp4", content_type="video/mp4"
            ),
            audio_url=sandbox.put_file(
                media.audio.read_bytes(), file_name="dub.wav", content_type="audio/wav"
            ),
        )
        beds.append(bed)
        return bed

    try:
        yield make
    finally:
        for bed in beds:
            for provider in bed.made:
                await provider.aclose()
        stack.close()


@pytest.fixture
async def bed(make_bed: MakeBed) -> Bed:
    return await make_bed()
