"""The sandbox's render timeline: which input frame each output frame shows, and how the audio is cut or padded.

Only the sandbox renders, so this lives here; the output *length* per sync mode is ``core.media.output_duration``,
shared with the estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lipsyncer.core.media import output_duration
from lipsyncer.core.schema import SyncMode

__all__ = ["AudioPlan", "audio_plan", "source_time"]


def source_time(mode: SyncMode | str, t: float, video_seconds: float, audio_seconds: float) -> float:
    """The input-video time shown at output time ``t`` (clamped into the input video)."""
    mode = SyncMode(mode)
    v = video_seconds
    if mode is SyncMode.REMAP:
        src = t * v / audio_seconds
    elif mode is SyncMode.LOOP and v < audio_seconds:
        src = math.fmod(t, v)
    elif mode is SyncMode.BOUNCE and v < audio_seconds:
        phase = math.fmod(t, 2 * v)
        src = phase if phase < v else 2 * v - phase
    else:
        src = t
    return min(max(src, 0.0), v)


@dataclass(frozen=True)
class AudioPlan:
    """How the input audio becomes the output's audio track: keep the first ``keep`` seconds, then pad."""

    keep: float
    pad: float

    @property
    def total(self) -> float:
        return self.keep + self.pad


def audio_plan(mode: SyncMode | str, video_seconds: float, audio_seconds: float) -> AudioPlan:
    out = output_duration(mode, video_seconds, audio_seconds)
    keep = min(audio_seconds, out)
    return AudioPlan(keep=keep, pad=max(0.0, out - keep))
