"""The fal plugins as the host sees them: entry points, registration, and the data the router reads."""

from __future__ import annotations

from decimal import Decimal

import pytest

from lipsyncer.core.plugins import PluginHost
from lipsyncer.core.schema import Option
from lipsyncer.providers.fal._base import FalProvider
from lipsyncer.providers.fal._client import FAL_HOSTS
from lipsyncer.providers.fal.legacy import FalLegacyProvider
from lipsyncer.providers.fal.storage import FalCdnStorage
from lipsyncer.providers.fal.v2 import FalV2Provider
from lipsyncer.providers.fal.v2_pro import FalV2ProProvider
from lipsyncer.providers.fal.v3 import FalV3Provider

ENTRY_POINTS = ["fal-v3", "fal-v2", "fal-v2-pro", "fal-legacy", "fal-storage"]
SPEAKER = {
    Option.SPEAKER_AUTO,
    Option.SPEAKER_POINT,
    Option.SPEAKER_BOXES,
    Option.SPEAKER_BOXES_URL,
    Option.SPEAKER_FACE_IMAGE,
}


def test_each_plugin_is_its_own_entry_point() -> None:
    host = PluginHost(allow=ENTRY_POINTS, strict=True)
    assert host.providers == {
        "fal-v3": FalV3Provider,
        "fal-v2": FalV2Provider,
        "fal-v2-pro": FalV2ProProvider,
        "fal-legacy": FalLegacyProvider,
    }
    assert host.storages == {"fal-cdn": FalCdnStorage}
    assert {name: r.providers or r.storages for name, r in host.reports.items()} == {
        "fal-v3": ["fal-v3"],
        "fal-v2": ["fal-v2"],
        "fal-v2-pro": ["fal-v2-pro"],
        "fal-legacy": ["fal-legacy"],
        "fal-storage": ["fal-cdn"],
    }


@pytest.mark.parametrize(
    ("provider", "models"),
    [
        (FalV3Provider, {"sync-3": ("fal-ai/sync-lipsync/v3", Decimal(8) / 60, 30.0)}),
        (
            FalV2Provider,
            {
                "lipsync-2": ("fal-ai/sync-lipsync/v2", Decimal(3) / 60, 6.0),
                "lipsync-2-pro": ("fal-ai/sync-lipsync/v2", Decimal(5) / 60, 10.0),
            },
        ),
        (FalV2ProProvider, {"lipsync-2-pro": ("fal-ai/sync-lipsync/v2/pro", Decimal(5) / 60, 10.0)}),
        (
            FalLegacyProvider,
            {
                m: ("fal-ai/sync-lipsync", Decimal("0.70") / 60, 2.0)
                for m in ("lipsync-1.9.0-beta", "lipsync-1.8.0", "lipsync-1.7.1")
            },
        ),
    ],
)
def test_declared_data(provider: type[FalProvider], models: dict[str, tuple[str, Decimal, float]]) -> None:
    provider.validate_ids()
    assert {
        m.id: (m.endpoint, m.price_per_second, m.seconds_per_output_second) for m in provider.models
    } == models
    assert (provider.credential_env, provider.can_cancel, provider.accepts_webhooks) == (
        "FAL_KEY",
        True,
        True,
    )
    assert provider.uploads_local_files and provider.hosts == FAL_HOSTS
    assert provider.docs_url and provider.docs_url.startswith("https://fal.ai/models/fal-ai/sync-lipsync")
    assert provider.description and provider.default_priority < 100
    for model in provider.models:
        assert {Option.SYNC_MODE, Option.WEBHOOK} <= model.options
        assert not model.options & {Option.TEMPERATURE, Option.MODEL_MODE, Option.EMOTION}
        assert (model.options >= SPEAKER) is (provider is FalV3Provider)
        assert bool(model.options & SPEAKER) is (provider is FalV3Provider)
        # The wire name is what goes into a `model` field; fal-v2-pro and fal-v3 have none to fill.
        assert model.wire_name == (None if provider in (FalV2ProProvider, FalV3Provider) else model.id)


def test_the_dedicated_pro_endpoint_is_preferred() -> None:
    assert FalV2ProProvider.default_priority < FalV2Provider.default_priority


def test_every_fal_host_is_rebased() -> None:
    assert {"queue.fal.run", "rest.fal.ai", "rest.alpha.fal.ai", "v3.fal.media", "queue.falrun.com"} <= set(
        FAL_HOSTS
    )
    assert FalCdnStorage.hosts == FAL_HOSTS and FalCdnStorage.credential_env == "FAL_KEY"
