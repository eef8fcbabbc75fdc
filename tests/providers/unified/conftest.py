"""Fixtures for the unified provider tests: strict, fast sandboxes and providers wired to them in-process.

The tests run with ``--import-mode=importlib``, so shared helpers are handed out as fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, eventually, sample_media
from lipsyncer.core.config import PollingPolicy, ProviderSettings
from lipsyncer.core.provider import ProviderContext, Storage, Submission
from lipsyncer.core.schema import Job, JobStatus, LipsyncRequest
from lipsyncer.providers.unified import UnifiedProvider

KEY = "sandbox-unified-key"


@dataclass(frozen=True)
class Urls:
    video: str
    audio: str

    def request(self, model: str, **fields: Any) -> LipsyncRequest:
        return LipsyncRequest(video=self.video, audio=self.audio, model=model, **fields)


def host_media(sandbox: Sandbox, media: SampleMedia) -> Urls:
    """The sample inputs, hosted by the sandbox under a public-looking https host."""
    base = "https://cdn.example.com"
    return Urls(
        video=sandbox.put_file(
            media.video.read_bytes(), file_name="talk.mp4", content_type="video/mp4", base_url=base
        ),
        audio=sandbox.put_file(
            media.audio.read_bytes(), file_name="dub.wav", content_type="audio/wav", base_url=base
        ),
    )


def build_provider(
    sandbox: Sandbox,
    *,
    key: str | None = KEY,
    transport: httpx.AsyncBaseTransport | None = None,
    base_url: str | None = None,
    call_timeout: float | None = None,
    storage: Storage | None = None,
    **options: Any,
) -> UnifiedProvider:
    settings = ProviderSettings(
        base_url=base_url,
        options=options,
        polling=PollingPolicy(call_timeout=call_timeout) if call_timeout is not None else None,
    )
    return UnifiedProvider(
        ProviderContext(
            settings=settings,
            api_key=SecretStr(key) if key is not None else None,
            transport=transport or sandbox.transport(),
            storage=storage,
        )
    )


async def submit_request(provider: UnifiedProvider, request: LipsyncRequest) -> Submission:
    """What the client does with a route: check, stage, submit."""
    spec = provider.model_spec(request.model_id)
    assert spec is not None
    provider.check(request, spec)
    video = await provider.stage(request.video)
    audio = await provider.stage(request.audio)
    return await provider.submit(
        request, spec, video_url=video, audio_url=audio, webhook_url=request.webhook_url
    )


def job_of(submission: Submission | str, model: str = "lipsync-2") -> Job:
    return Job(
        id="job_test",
        provider="unified",
        model=model,
        endpoint="/v1/videos/generations",
        remote_id=submission if isinstance(submission, str) else submission.remote_id,
        request_fingerprint="test",
    )


async def run_to_end(provider: UnifiedProvider, job: Job) -> list[JobStatus]:
    """Every status look-up until the task finishes (the guard is against hangs, not a timing assertion)."""
    seen: list[JobStatus] = []

    async def finished() -> bool:
        seen.append(await provider.status(job))
        return seen[-1].state.finished

    await eventually(finished, every=0.01)
    return seen


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("unified-media"))


def _receiver(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    """Strict sandboxes; callbacks go to an in-memory receiver, never to the network."""
    return {"strict": True, "webhook_transport": httpx.MockTransport(_receiver)}


@pytest.fixture
def host(media: SampleMedia) -> Callable[[Sandbox], Urls]:
    """``host(sandbox)``: the sample inputs hosted by that sandbox."""
    return lambda sandbox: host_media(sandbox, media)


@pytest.fixture
def urls(sandbox: Sandbox, media: SampleMedia) -> Urls:
    return host_media(sandbox, media)


@pytest.fixture
async def make_provider() -> AsyncIterator[Callable[..., UnifiedProvider]]:
    """``make_provider(sandbox, **kwargs)`` (see ``build_provider``); every provider is closed after the test."""
    made: list[UnifiedProvider] = []

    def make(sandbox: Sandbox, **kwargs: Any) -> UnifiedProvider:
        provider = build_provider(sandbox, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def provider(sandbox: Sandbox, make_provider: Callable[..., UnifiedProvider]) -> UnifiedProvider:
    return make_provider(sandbox)


@pytest.fixture
def submit() -> Callable[[UnifiedProvider, LipsyncRequest], Awaitable[Submission]]:
    return submit_request


@pytest.fixture
def job() -> Callable[..., Job]:
    """``job(submission_or_task_id, model="lipsync-2")``: the stored handle the client would pass back."""
    return job_of


@pytest.fixture
def finish() -> Callable[[UnifiedProvider, Job], Awaitable[list[JobStatus]]]:
    """``await finish(provider, job)``: the statuses seen until the task finished."""
    return run_to_end
