"""Typed provider options: each provider's settings model, and a typo as a ConfigError naming provider and key."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ConfigDict

from lipsyncer import ConfigError, ModelSpec, Option, ProviderOptions, load_settings
from lipsyncer.core.plugins import PluginHost
from lipsyncer.core.provider import check_provider_options

PROVIDERS = PluginHost().providers


@pytest.mark.parametrize("provider_id", sorted(PROVIDERS))
def test_every_built_in_declares_a_strict_settings_model(provider_id: str) -> None:
    model = PROVIDERS[provider_id].options_model
    assert issubclass(model, ProviderOptions) and model.model_config.get("extra") == "forbid"


@pytest.mark.parametrize(
    ("provider_id", "options", "key"),
    [
        ("fal-v3", {"start_timout": 600}, "start_timout"),
        ("fal-legacy", {"queue_priority": "urgent"}, "queue_priority"),
        ("unified", {"media_field": "legacy"}, "media_field"),
        ("syncso", {"occlusion": True}, "occlusion"),
    ],
)
def test_config_is_checked_against_the_installed_providers(
    provider_id: str, options: dict[str, Any], key: str, tmp_path: Any
) -> None:
    settings = load_settings(env={}, cwd=tmp_path, providers={provider_id: {"options": options}})
    with pytest.raises(ConfigError) as caught:
        check_provider_options(settings.providers, PROVIDERS)
    assert f"providers.{provider_id}.options" in str(caught.value) and repr(key) in str(caught.value)
    assert caught.value.fix and caught.value.fix.startswith(f"{provider_id} takes these options:")


def test_valid_options_and_unknown_providers_pass(tmp_path: Any) -> None:
    settings = load_settings(
        env={},
        cwd=tmp_path,
        providers={
            "fal-v3": {"options": {"start_timeout": 600, "queue_priority": "low"}},
            "unified": {"options": {"media_fields": "legacy", "allow_insecure_callbacks": "true"}},
            "syncso": {"options": {"occlusion_detection_enabled": True}},
            "not-installed": {"options": {"anything": 1}},  # its plugin may be blocked or absent
        },
    )
    check_provider_options(settings.providers, PROVIDERS)


def test_a_settings_model_that_takes_any_key_is_refused_at_registration() -> None:
    from lipsyncer import Provider

    class Loose(ProviderOptions):
        model_config = ConfigDict(extra="allow")

    class Sloppy(Provider):
        id = "sloppy"
        models = (
            ModelSpec(
                id="m", endpoint="/x", options=frozenset({Option.SYNC_MODE}), price_per_second=Decimal(0)
            ),
        )
        options_model = Loose

    with pytest.raises(TypeError, match="extra='forbid'"):
        Sloppy.validate_ids()


def test_a_client_refuses_a_typo_in_provider_options_when_built(tmp_path: Any) -> None:
    from lipsyncer import AsyncLipsyncer, LipsyncRequest, MemoryJobStore

    env = {"FAL_KEY": "k"}
    settings = load_settings(env=env, cwd=tmp_path, providers={"fal-v3": {"options": {"start_timout": 5}}})
    with pytest.raises(ConfigError, match=re.escape("providers.fal-v3.options: unknown key 'start_timout'")):
        client = AsyncLipsyncer(settings, env=env, store=MemoryJobStore())
        client.route(
            LipsyncRequest(video="https://a.example/v.mp4", audio="https://a.example/a.wav", model="sync-3")
        )
