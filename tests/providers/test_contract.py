"""The shared provider contract (``lipsyncer.testing``) run against every built-in provider, over the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import fal_client
import httpx
import pytest
from pydantic import SecretStr

from lipsyncer import (
    LipsyncRequest,
    Provider,
    ProviderContext,
    ProviderError,
    Submission,
    SubmitOutcomeUnknownError,
)
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, eventually, fast_config, sample_media
from lipsyncer.core.config import ProviderSettings
from lipsyncer.core.plugins import PluginHost
from lipsyncer.providers.syncso import SyncsoProvider
from lipsyncer.testing import (
    CONTRACT_CHECKS,
    ContractHarness,
    check_secrets_stay_secret,
    check_unknown_outcome,
)

pytestmark = pytest.mark.anyio

# provider id -> (model to run, sandbox API, its job-creating operation, the SandboxConfig field of its key)
BUILT_INS: dict[str, tuple[str, str, str, str]] = {
    "fal-v3": ("sync-3", "fal", "submit", "fal_key"),
    "fal-v2": ("lipsync-2", "fal", "submit", "fal_key"),
    "fal-v2-pro": ("lipsync-2-pro", "fal", "submit", "fal_key"),
    "fal-legacy": ("lipsync-1.9.0-beta", "fal", "submit", "fal_key"),
    "unified": ("lipsync-2", "unified", "create", "unified_key"),
    "syncso": ("lipsync-2", "syncso", "create", "syncso_key"),
}


class SandboxHarness(ContractHarness):
    """A built-in provider against an in-process sandbox; the sandbox's faults steer it."""

    def __init__(self, provider_id: str, sandbox: Sandbox, media: SampleMedia) -> None:
        self.cls: type[Provider] = PluginHost().providers[provider_id]
        self.provider_cls = self.cls
        self.model, self.api, self.operation, key_field = BUILT_INS[provider_id]
        self.sandbox = sandbox
        self.key = str(getattr(sandbox.config, key_field))
        base = "https://cdn.example.com"
        self.video = sandbox.put_file(
            media.video.read_bytes(), file_name="v.mp4", content_type="video/mp4", base_url=base
        )
        self.audio = sandbox.put_file(
            media.audio.read_bytes(), file_name="a.wav", content_type="audio/wav", base_url=base
        )

    def provider(self, *, api_key: str | None = None) -> Provider:
        return self.cls(
            ProviderContext(
                settings=ProviderSettings(),
                api_key=SecretStr(api_key or self.key),
                transport=self.sandbox.transport(),
                webhook_secret=SecretStr(self.sandbox.config.syncso_webhook_secret),
            )
        )

    def request(self, **fields: Any) -> LipsyncRequest:
        return LipsyncRequest(video=self.video, audio=self.audio, model=self.model, **fields)

    def refuse_submits(self, status: int) -> None:
        self.sandbox.add_fault(
            Fault(kind="http_error", api=self.api, operation=self.operation, status=status)
        )  # type: ignore[arg-type]

    def drop_next_submit_after_accept(self) -> None:
        self.sandbox.add_fault(
            Fault(kind="drop_after_accept", api=self.api, operation=self.operation, times=1)
        )  # type: ignore[arg-type]

    def submits_seen(self) -> int:
        return len(self.sandbox.submits())

    def jobs_created(self) -> int:
        return len(self.sandbox.jobs)

    async def delivery(self, submission: Submission) -> tuple[Mapping[str, str], bytes]:
        async def delivered() -> bool:
            return any(d.job_id == submission.remote_id and d.ok for d in self.sandbox.webhook_deliveries)

        await eventually(delivered, within=self.within)
        first = next(d for d in self.sandbox.webhook_deliveries if d.job_id == submission.remote_id and d.ok)
        return first.headers, first.body


@pytest.fixture
def no_fal_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """fal-client retries 429s ten times with a growing backoff: made instant (its attempt count unchanged)."""
    monkeypatch.setattr(fal_client.client, "_get_retry_delay", lambda *args, **kwargs: 0.0)


@pytest.fixture(scope="module")
def contract_media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("contract-media"))  # read only: one set for every harness


@pytest.fixture
async def harness_for(
    contract_media: SampleMedia, no_fal_backoff: None
) -> AsyncIterator[Callable[[str], SandboxHarness]]:
    made: list[Sandbox] = []

    def make(provider_id: str) -> SandboxHarness:
        sandbox = Sandbox(
            fast_config(strict=True, webhook_transport=httpx.MockTransport(lambda r: httpx.Response(200)))
        )
        made.append(sandbox)
        return SandboxHarness(provider_id, sandbox, contract_media)

    yield make
    for sandbox in made:
        sandbox.close()


def test_every_built_in_provider_is_covered() -> None:
    assert set(BUILT_INS) == set(PluginHost().providers)


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("provider_id", sorted(BUILT_INS))
async def test_contract(
    provider_id: str,
    check: Callable[[ContractHarness], Awaitable[None]],
    harness_for: Callable[[str], SandboxHarness],
) -> None:
    await check(harness_for(provider_id))


# ------------------------------------------------------------------------- the checks catch what they claim to


class _Leaky(SyncsoProvider):
    """Puts the key into its refusals: what check_secrets_stay_secret exists to catch."""

    async def submit(self, *args: Any, **kwargs: Any) -> Submission:
        try:
            return await super().submit(*args, **kwargs)
        except ProviderError:
            raise ProviderError(f"key {self.context.key()} refused", provider=self.id) from None


class _Resender(SyncsoProvider):
    """Sends a lost submit again under a new key: a second paid job, what check_unknown_outcome catches."""

    async def submit(self, *args: Any, **kwargs: Any) -> Submission:
        try:
            return await super().submit(*args, **kwargs)
        except SubmitOutcomeUnknownError:
            kwargs["idempotency_key"] = "another-key"
            return await super().submit(*args, **kwargs)


@pytest.mark.parametrize(
    ("broken", "check"), [(_Leaky, check_secrets_stay_secret), (_Resender, check_unknown_outcome)]
)
async def test_a_broken_provider_fails_the_contract(
    broken: type[SyncsoProvider],
    check: Callable[[ContractHarness], Awaitable[None]],
    harness_for: Callable[[str], SandboxHarness],
) -> None:
    harness = harness_for("syncso")
    harness.cls = harness.provider_cls = broken
    with pytest.raises(AssertionError):
        await check(harness)
