"""fal-v2-pro: lipsync-2-pro on its own endpoint ``fal-ai/sync-lipsync/v2/pro``, which has no ``model`` field."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from lipsyncer import ModelSpec, Provider, hookimpl

from ._base import FAL_OPTIONS, FalProvider

__all__ = ["FalV2ProProvider", "register_providers"]


class FalV2ProProvider(FalProvider):
    id = "fal-v2-pro"
    description = "lipsync-2-pro through fal's queue (fal-ai/sync-lipsync/v2/pro)"
    docs_url = "https://fal.ai/models/fal-ai/sync-lipsync/v2/pro/api"
    default_priority = 50
    models = (
        ModelSpec(
            id="lipsync-2-pro",
            endpoint="fal-ai/sync-lipsync/v2/pro",
            options=FAL_OPTIONS,
            price_per_second=Decimal(5) / 60,
            seconds_per_output_second=10.0,
        ),
    )


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(FalV2ProProvider)
