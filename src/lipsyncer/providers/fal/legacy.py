"""fal-legacy: lipsync 1.x on ``fal-ai/sync-lipsync``, chosen by the ``model`` field (1.9.0-beta by default)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from lipsyncer import ModelSpec, Provider, hookimpl

from ._base import FAL_OPTIONS, FalProvider

__all__ = ["FalLegacyProvider", "register_providers"]

ENDPOINT = "fal-ai/sync-lipsync"
PRICE = Decimal("0.70") / 60


def _model(model_id: str) -> ModelSpec:
    # Generation time is published for 1.9 only (30-60 s per 30 s clip); the older versions are no slower.
    return ModelSpec(
        id=model_id,
        endpoint=ENDPOINT,
        options=FAL_OPTIONS,
        price_per_second=PRICE,
        wire_name=model_id,
        seconds_per_output_second=2.0,
    )


class FalLegacyProvider(FalProvider):
    id = "fal-legacy"
    description = "lipsync-1.9.0-beta, 1.8.0 and 1.7.1 through fal's queue (fal-ai/sync-lipsync)"
    docs_url = "https://fal.ai/models/fal-ai/sync-lipsync/api"
    default_priority = 50
    sends_model = True
    models = (_model("lipsync-1.9.0-beta"), _model("lipsync-1.8.0"), _model("lipsync-1.7.1"))


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(FalLegacyProvider)
