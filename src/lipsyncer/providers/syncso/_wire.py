"""sync.so's wire shapes: the generate body (as the SDK's typed objects), Generation bodies and their states.

Pure functions and constants, so the provider module is left with I/O. Contract: section 5 of the providers'
reference, checked against ``syncsdk`` 0.3.0 (``sync.common.types``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lipsyncer import (
    ActiveSpeaker,
    InvalidRequestError,
    JobState,
    JobStatus,
    LipsyncRequest,
    ModelSpec,
    Option,
)

if TYPE_CHECKING:  # the SDK's types (~100 ms to import) load with the first request, not with the plugin
    from sync.common.types import ActiveSpeaker as SdkActiveSpeaker
    from sync.common.types import Audio, GenerationOptions, Video

__all__ = [
    "DEFAULT_BASE_URL",
    "EMOTIONS",
    "FPS",
    "GENERATE",
    "MODEL_MODES",
    "Generation",
    "check_idempotency_key",
    "generation_options",
    "job_status",
    "media_inputs",
    "parse_generation",
    "speaker_detection",
]

DEFAULT_BASE_URL = "https://api.sync.so"
GENERATE = "/v2/generate"
FPS = 25
"""sync.so bills per output frame, quoted at this frame rate."""

MODEL_MODES = ("lips", "face", "head")
"""react-1's edit region (``options.model_mode``)."""
EMOTIONS = ("happy", "sad", "angry", "disgusted", "surprised", "neutral")
"""react-1's single-word emotion prompts (``options.prompt``)."""

_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")

_STATES: Mapping[str, JobState] = {
    "PENDING": JobState.QUEUED,
    "PROCESSING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "REJECTED": JobState.FAILED,
    "TIMED_OUT": JobState.FAILED,
    "CANCELED": JobState.CANCELLED,
    "CANCELLED": JobState.CANCELLED,
}
_TRANSIENT = ("timeout", "timed_out", "internal", "unavailable", "capacity")
"""Words in an error code or status that say trying again may succeed (sync.so publishes no split)."""


def check_idempotency_key(key: str) -> str:
    """sync.so takes 1-128 characters of ``[A-Za-z0-9._~-]``; anything else is refused before sending."""
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequestError(
            f"idempotency key {key[:40]!r} is not 1-128 characters of letters, digits and . _ ~ -",
            field="idempotency_key",
            fix="use a key such as a UUID or the job id",
        )
    return key


# --------------------------------------------------------------------------------------------- create


def _pixels(values: tuple[float, ...] | list[float], what: str) -> list[int]:
    """Whole pixel coordinates as ints; a fraction is refused rather than rounded behind the user's back."""
    out: list[int] = []
    for value in values:
        if not math.isfinite(value) or not float(value).is_integer():
            raise InvalidRequestError(
                f"active_speaker {what} must be whole pixels, got {list(values)}",
                field="active_speaker",
                fix="round the coordinates to integers",
            )
        out.append(int(value))
    return out


def speaker_detection(speaker: ActiveSpeaker) -> SdkActiveSpeaker:
    """``options.active_speaker_detection``: auto, frame + point, or per-frame boxes (``None`` frames kept)."""
    from sync.common.types import ActiveSpeaker as SdkActiveSpeaker

    if speaker.mode == "auto":
        return SdkActiveSpeaker(auto_detect=True)
    if speaker.mode == "point":
        assert speaker.frame_number is not None and speaker.coordinates is not None
        return SdkActiveSpeaker(
            frame_number=speaker.frame_number, coordinates=_pixels(speaker.coordinates, "coordinates")
        )
    if speaker.mode == "boxes":
        assert speaker.bounding_boxes is not None
        boxes = [None if b is None else _pixels(b, "bounding_boxes") for b in speaker.bounding_boxes]
        return SdkActiveSpeaker(bounding_boxes=boxes)
    raise InvalidRequestError(  # the capability data keeps these routes out; a direct call lands here
        f"sync.so takes no active_speaker {speaker.mode}", field="active_speaker"
    )


def generation_options(
    request: LipsyncRequest, model: ModelSpec, *, occlusion_detection: bool | None = None
) -> GenerationOptions:
    """``options``: ``sync_mode`` always (sync.so defaults to loop, fal to cut_off), the rest only when set
    and honoured by the model (``check`` has refused what is set and not honoured)."""
    from sync.common.types import GenerationOptions

    values: dict[str, Any] = {"sync_mode": request.sync_mode.value}
    if request.temperature is not None and model.honours(Option.TEMPERATURE):
        values["temperature"] = request.temperature
    if request.active_speaker is not None and model.honours(request.active_speaker.option):
        values["active_speaker_detection"] = speaker_detection(request.active_speaker)
    if request.model_mode is not None and model.honours(Option.MODEL_MODE):
        values["model_mode"] = request.model_mode
    if request.emotion is not None and model.honours(Option.EMOTION):
        values["prompt"] = request.emotion
    if occlusion_detection is not None and model.id != "sync-3":  # sync-3 handles occlusion itself
        values["occlusion_detection_enabled"] = occlusion_detection
    return GenerationOptions(**values)


def media_inputs(video_url: str, audio_url: str) -> list[Video | Audio]:
    from sync.common.types import Audio, Video

    return [Video(url=video_url), Audio(url=audio_url)]


# --------------------------------------------------------------------------------------------- generations


@dataclass(frozen=True)
class Generation:
    """The fields of a Generation body (create answer, look-up, webhook) that lipsyncer acts on."""

    id: str
    status: str
    model: str | None
    output_url: str | None
    output_duration: float | None
    error: str | None
    error_code: str | None
    created_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def state(self) -> JobState:
        return _STATES.get(self.status, JobState.UNKNOWN)


def _text(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_generation(data: Any) -> Generation:
    """Read a Generation leniently (``outputUrl`` or the newer ``outputMediaUrl``; ``error_code`` or
    ``errorCode``); ValueError when it has no id or status."""
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("the generation body has no id")
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise ValueError("the generation body has no status")
    duration = data.get("outputDuration")
    seconds = (
        float(duration)
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration >= 0
        else None
    )
    return Generation(
        id=data["id"],
        status=status.strip().upper(),
        model=_text(data, "model"),
        output_url=_text(data, "outputUrl", "outputMediaUrl"),
        output_duration=seconds,
        error=_text(data, "error"),
        error_code=_text(data, "error_code", "errorCode"),
        created_at=_timestamp(data.get("createdAt")),
        raw=dict(data),
    )


def job_status(generation: Generation) -> JobStatus:
    state = generation.state
    if state not in (JobState.FAILED, JobState.CANCELLED):
        progress = 100.0 if state is JobState.COMPLETED else None
        return JobStatus(state=state, progress=progress, raw_status=generation.status)
    code = generation.error_code or generation.status.lower()
    text = f"{code} {generation.status}".lower()
    retryable = (
        state is JobState.FAILED and generation.status != "REJECTED" and any(w in text for w in _TRANSIENT)
    )
    return JobStatus(
        state=state,
        raw_status=generation.status,
        error_code=code,
        error_message=generation.error,
        retryable=retryable,
    )
