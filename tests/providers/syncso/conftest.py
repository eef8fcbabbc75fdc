"""Fixtures for the sync.so provider tests: fast sandboxes and providers wired to them in-process.

The tests run with ``--import-mode=importlib``, so shared helpers are handed out as fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lipsyncer import Job, JobStatus, LipsyncRequest, ProviderContext, Submission
from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, eventually, sample_media
from lipsyncer.core.config import PollingPolicy, ProviderSettings
from lipsyncer.providers.syncso import SyncsoProvider

KEY = "sandbox-syncso-key"
SECRET = "whsec_sandbox"


@dataclass(frozen=True)
class Urls:
    video: str
    audio: str

    def request(self, model: str, **fields: Any) -> LipsyncRequest:
        return LipsyncRequest(video=self.video, audio=self.audio, model=model, **fields)


def build_provider(
    sandbox: Sandbox,
    *,
    key: str | None = KEY,
    transport: httpx.AsyncBaseTransport | None = None,
    base_url: str | None = None,
    call_timeout: float | None = None,
    secret: str | None = SECRET,
    **options: Any,
) -> SyncsoProvider:
    settings = ProviderSettings(
        base_url=base_url,
        options=options,
        polling=PollingPolicy(call_timeout=call_timeout) if call_timeout is not None else None,
    )
    return SyncsoProvider(
        ProviderContext(
            settings=settings,
            api_key=SecretStr(key) if key is not None else None,
            transport=transport or sandbox.transport(),
            webhook_secret=SecretStr(secret) if secret is not None else None,
        )
    )


async def submit_request(
    provider: SyncsoProvider, request: LipsyncRequest, *, key: str | None = "job-1"
) -> Submission:
    """What the client does with a route: check, stage, submit (with the job's idempotency key)."""
    spec = provider.model_spec(request.model_id)
    assert spec is not None
    provider.check(request, spec)
    video = await provider.stage(request.video)
    audio = await provider.stage(request.audio)
    return await provider.submit(
        request, spec, video_url=video, audio_url=audio, webhook_url=request.webhook_url, idempotency_key=key
    )


def job_of(submission: Submission | str, model: str = "lipsync-2") -> Job:
    return Job(
        id="job-1",
        provider="syncso",
        model=model,
        endpoint="/v2/generate",
        remote_id=submission if isinstance(submission, str) else submission.remote_id,
        request_fingerprint="test",
    )


async def run_to_end(provider: SyncsoProvider, job: Job) -> list[JobStatus]:
    """Every status look-up until the generation finishes (the guard is against hangs, not timing)."""
    seen: list[JobStatus] = []

    async def finished() -> bool:
        seen.append(await provider.status(job))
        return seen[-1].state.finished

    await eventually(finished, every=0.01)
    return seen


def _receiver(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("syncso-media"))


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    """Strict sandboxes; webhooks go to an in-memory receiver, never to the network."""
    return {"strict": True, "webhook_transport": httpx.MockTransport(_receiver)}


def host_media(sandbox: Sandbox, media: SampleMedia) -> Urls:
    """The sample inputs, hosted by that sandbox under a public-looking https host."""
    base = "https://cdn.example.com"
    return Urls(
        video=sandbox.put_file(
            media.video.read_bytes(), file_name="talk.mp4", content_type="video/mp4", base_url=base
        ),
        audio=sandbox.put_file(
            media.audio.read_bytes(), file_name="dub.wav", content_type="audio/wav", base_url=base
        ),
    )


@pytest.fixture
def host(media: SampleMedia) -> Callable[[Sandbox], Urls]:
    """``host(sandbox)``: the sample inputs hosted by a sandbox made in the test."""
    return lambda sandbox: host_media(sandbox, media)


@pytest.fixture
def urls(sandbox: Sandbox, media: SampleMedia) -> Urls:
    return host_media(sandbox, media)


@pytest.fixture
async def make_provider() -> AsyncIterator[Callable[..., SyncsoProvider]]:
    """``make_provider(sandbox, **kwargs)`` (see ``build_provider``); every provider is closed after the test."""
    made: list[SyncsoProvider] = []

    def make(sandbox: Sandbox, **kwargs: Any) -> SyncsoProvider:
        provider = build_provider(sandbox, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def provider(sandbox: Sandbox, make_provider: Callable[..., SyncsoProvider]) -> SyncsoProvider:
    return make_provider(sandbox)


@pytest.fixture
def submit() -> Callable[..., Awaitable[Submission]]:
    return submit_request


@pytest.fixture
def job() -> Callable[..., Job]:
    return job_of


@pytest.fixture
def finish() -> Callable[[SyncsoProvider, Job], Awaitable[list[JobStatus]]]:
    return run_to_end
