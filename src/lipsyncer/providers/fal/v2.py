"""fal-v2: lipsync-2 and lipsync-2-pro on ``fal-ai/sync-lipsync/v2``, chosen by the ``model`` field."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from lipsyncer import ModelSpec, Provider, hookimpl

from ._base import FAL_OPTIONS, FalProvider

__all__ = ["FalV2Provider", "register_providers"]

ENDPOINT = "fal-ai/sync-lipsync/v2"


class FalV2Provider(FalProvider):
    id = "fal-v2"
    description = "lipsync-2 and lipsync-2-pro through fal's queue (fal-ai/sync-lipsync/v2)"
    docs_url = "https://fal.ai/models/fal-ai/sync-lipsync/v2/api"
    default_priority = 60  # lipsync-2-pro: fal-v2-pro's dedicated endpoint is tried first
    sends_model = True
    models = (
        ModelSpec(
            id="lipsync-2",
            endpoint=ENDPOINT,
            options=FAL_OPTIONS,
            price_per_second=Decimal(3) / 60,
            wire_name="lipsync-2",
            seconds_per_output_second=6.0,
        ),
        ModelSpec(
            id="lipsync-2-pro",
            endpoint=ENDPOINT,
            options=FAL_OPTIONS,
            price_per_second=Decimal(5) / 60,
            wire_name="lipsync-2-pro",
            seconds_per_output_second=10.0,
        ),
    )


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(FalV2Provider)
