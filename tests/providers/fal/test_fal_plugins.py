"""The fal plugins as the host sees them: entry points, registration, and the data the router reads."""

from __future__ import annotations

import httpx
import pytest
from fal_client.client import CDN_URL, FAL_QUEUE_RUN_HOST, FAL_RUN_HOST, REST_URL

from lipsyncer import AsyncLipsyncer, LipsyncRequest, MemoryJobStore, load_settings
from lipsyncer.contrib.sandbox.fal_schema import FAL_ENDPOINTS
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


@pytest.mark.parametrize("provider", [FalV3Provider, FalV2Provider, FalV2ProProvider, FalLegacyProvider])
def test_every_declared_model_is_one_its_endpoint_serves(provider: type[FalProvider]) -> None:
    """Declared data against fal's input schema (as the sandbox emulates it from the reference), not restated:
    prices, options and credentials are pinned by the capability-matrix docs test."""
    provider.validate_ids()
    for model in provider.models:
        spec = FAL_ENDPOINTS[model.endpoint]
        assert model.id in spec.models, f"{model.endpoint} does not serve {model.id}"
        # The `model` field is sent exactly where the endpoint has one (v2/pro and v3 have none).
        assert (model.wire_name is not None) is spec.has_model_field
        assert model.wire_name in (None, model.id)
        # Speaker hints travel in `options`, which only v3 has.
        assert bool(model.options & SPEAKER) is spec.has_options


def test_the_dedicated_pro_endpoint_is_tried_first() -> None:
    env = {"FAL_KEY": "k-fal"}
    client = AsyncLipsyncer(load_settings(env=env, cwd="/"), env=env, store=MemoryJobStore())
    request = LipsyncRequest(
        video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="lipsync-2-pro"
    )
    fal_routes = [r.provider.id for r in client.route(request).candidates if r.provider.id.startswith("fal-")]
    assert fal_routes == ["fal-v2-pro", "fal-v2"]


def test_every_host_fal_client_uses_is_rebased() -> None:
    """fal-client's own hosts (queue, run, REST, CDN) must all be sent to a sandbox or gateway ``base_url``."""
    used = {FAL_QUEUE_RUN_HOST, FAL_RUN_HOST, httpx.URL(REST_URL).host, httpx.URL(CDN_URL).host}
    assert used <= set(FAL_HOSTS)
    assert FalCdnStorage.hosts == FAL_HOSTS
    assert all(
        p.hosts == FAL_HOSTS for p in (FalV3Provider, FalV2Provider, FalV2ProProvider, FalLegacyProvider)
    )
