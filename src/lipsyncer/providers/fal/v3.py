"""fal-v3: sync-3 on ``fal-ai/sync-lipsync/v3``, the only fal route that can pick the speaking face.

Everything but ``sync_mode`` goes under ``options``; ``temperature``, ``occlusion_detection_enabled``,
``model_mode`` and ``prompt`` are never sent because sync-3 ignores them (and extra options are reported to
fail it with an opaque error). fal's published types make ``coordinates`` and ``bounding_boxes`` integers with
no ``null`` frames (sync.so's own API allows them): fractions are refused, never rounded, and boxes with a
missing frame are left to a route that takes them (``syncso``).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from lipsyncer import (
    ActiveSpeaker,
    InvalidRequestError,
    LipsyncRequest,
    ModelSpec,
    Option,
    Provider,
    UnsupportedOptionError,
    hookimpl,
)

from ._base import FAL_OPTIONS, FalProvider

__all__ = ["FalV3Provider", "register_providers"]

_SPEAKER = frozenset(
    {
        Option.SPEAKER_AUTO,
        Option.SPEAKER_POINT,
        Option.SPEAKER_BOXES,
        Option.SPEAKER_BOXES_URL,
        Option.SPEAKER_FACE_IMAGE,
    }
)


class FalV3Provider(FalProvider):
    id = "fal-v3"
    description = "sync-3 through fal's queue (fal-ai/sync-lipsync/v3), with active-speaker selection"
    docs_url = "https://fal.ai/models/fal-ai/sync-lipsync/v3/api"
    default_priority = 50
    models = (
        ModelSpec(
            id="sync-3",
            endpoint="fal-ai/sync-lipsync/v3",
            options=FAL_OPTIONS | _SPEAKER,
            price_per_second=Decimal(8) / 60,
            seconds_per_output_second=30.0,
            option_notes=(
                (Option.SPEAKER_POINT, "integers"),
                (Option.SPEAKER_BOXES, "integers, no null frames"),
            ),
        ),
    )

    def check(self, request: LipsyncRequest, model: ModelSpec) -> None:
        super().check(request, model)
        speaker = request.active_speaker
        if speaker is None or speaker.mode not in ("point", "boxes"):
            return
        if speaker.mode == "boxes" and any(box is None for box in speaker.bounding_boxes or ()):
            raise UnsupportedOptionError(
                f"{self.id} takes a box for every frame: fal's bounding_boxes have no null frames",
                option=Option.SPEAKER_BOXES.value,
                provider=self.id,
                fix="give a box for every frame, or use a route that takes null frames (syncso)",
            )
        values = list(speaker.coordinates or ()) + [c for b in speaker.bounding_boxes or () if b for c in b]
        if any(not float(v).is_integer() for v in values):
            raise InvalidRequestError(
                f"{self.id} takes active_speaker {speaker.mode} as whole pixels, got {values}",
                field="active_speaker",
                fix="round the coordinates to integers",
            )

    def extra_input(self, request: LipsyncRequest, model: ModelSpec) -> dict[str, Any]:
        if request.active_speaker is None:
            return {}
        return {"options": {"active_speaker_detection": speaker_detection(request.active_speaker)}}


def speaker_detection(speaker: ActiveSpeaker) -> dict[str, Any]:
    """``options.active_speaker_detection`` for each way of naming the speaker."""
    if speaker.mode == "auto":
        return {"auto_detect": True}
    if speaker.mode == "point":
        assert speaker.frame_number is not None and speaker.coordinates is not None
        return {"frame_number": speaker.frame_number, "coordinates": [_num(c) for c in speaker.coordinates]}
    if speaker.mode == "boxes":
        assert speaker.bounding_boxes is not None
        boxes = [None if box is None else [_num(c) for c in box] for box in speaker.bounding_boxes]
        return {"bounding_boxes": boxes}
    if speaker.mode == "boxes_url":
        return {"bounding_boxes_url": speaker.bounding_boxes_url}
    return {"face_image": speaker.face_image_base64()}


def _num(value: float) -> int:
    """Pixel coordinates as integers (``100``, not ``100.0``); ``check`` has refused fractions."""
    return int(value)


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(FalV3Provider)
