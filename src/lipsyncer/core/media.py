"""Media facts that routing and estimates need: output length per sync mode, and probing.

The sync-mode table in the providers' reference is the single source of these rules; the estimator prices with
``output_duration`` and the sandbox renders with it (its frame timeline lives in ``contrib/sandbox/timeline.py``),
so a disagreement shows up in tests rather than on an invoice.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

from .schema import SyncMode

__all__ = ["MediaInfo", "MediaProbeError", "output_duration", "probe"]


def output_duration(mode: SyncMode | str, video_seconds: float, audio_seconds: float) -> float:
    """Length of the provider's output for inputs of the given lengths."""
    mode = SyncMode(mode)
    if video_seconds <= 0 or audio_seconds <= 0:
        raise ValueError("media durations must be positive")
    if mode is SyncMode.CUT_OFF:
        return min(video_seconds, audio_seconds)
    if mode is SyncMode.SILENCE:
        return video_seconds
    return audio_seconds


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    has_video: bool = False
    has_audio: bool = False


class MediaProbeError(RuntimeError):
    """The file could not be read as media (or no reader is installed for it)."""


def probe(path: str | Path) -> MediaInfo:
    """Read a local file's duration and video geometry.

    WAV is read with the standard library; everything else needs PyAV (the ``media`` extra), because
    container parsing is FFmpeg's job, not ours.
    """
    path = Path(path)
    try:
        import av
    except ImportError:
        if path.suffix.lower() == ".wav":
            return _probe_wav(path)
        raise MediaProbeError(
            f"cannot read the duration of {path.name}: install the 'media' extra (pip install 'lipsyncer[media]')"
        ) from None
    try:
        with av.open(str(path)) as container:
            vstream = next(iter(container.streams.video), None)
            astream = next(iter(container.streams.audio), None)
            duration = _container_duration(container, vstream, astream)
            if vstream is None:
                return MediaInfo(duration=duration, has_audio=astream is not None)
            rate = vstream.average_rate or vstream.guessed_rate
            return MediaInfo(
                duration=duration,
                width=vstream.codec_context.width,
                height=vstream.codec_context.height,
                fps=float(rate) if rate else None,
                has_video=True,
                has_audio=astream is not None,
            )
    except MediaProbeError:
        raise
    except Exception as exc:  # PyAV raises many error types; all mean "not readable media" here.
        raise MediaProbeError(f"{path.name} is not readable media: {exc}") from exc


def _container_duration(container: object, vstream: object, astream: object) -> float:
    for stream in (vstream, astream):
        if stream is not None and getattr(stream, "duration", None) and getattr(stream, "time_base", None):
            return float(stream.duration * stream.time_base)  # type: ignore[attr-defined]
    duration = getattr(container, "duration", None)
    if duration:
        return float(duration) / 1_000_000
    raise MediaProbeError("the container states no duration")


def _probe_wav(path: Path) -> MediaInfo:
    try:
        with wave.open(str(path), "rb") as w:
            return MediaInfo(duration=w.getnframes() / w.getframerate(), has_audio=True)
    except (wave.Error, EOFError) as exc:
        raise MediaProbeError(f"{path.name} is not a readable WAV file: {exc}") from exc
