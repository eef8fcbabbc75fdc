"""Real media for the sandbox: fetching inputs offline, rendering a sync-mode-true MP4, sample clips.

The output is not a lip-sync, but it has every property a client can check: an H.264/AAC MP4 with the input's
width, height and frame rate, a video timeline that follows the sync mode (``timeline.source_time`` per output
frame), and an audio track trimmed and padded by ``timeline.audio_plan``. A ``comment`` tag marks it as sandbox
output. Sample clips stamp each frame's index as binary stripes so a test can read the timeline back.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import sys
import wave
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import av
import httpx
from av.audio.frame import AudioFrame
from av.video.frame import PictureType, VideoFrame

from lipsyncer.core.media import MediaInfo, MediaProbeError, output_duration, probe
from lipsyncer.core.schema import SyncMode

from .cdn import FileStore
from .exchange import is_loopback_host
from .timeline import audio_plan, source_time

__all__ = [
    "SANDBOX_TAG",
    "MediaFailure",
    "Rendered",
    "fetch_media",
    "probe_input",
    "read_frame_indices",
    "render_lipsync",
    "write_sample_audio",
    "write_sample_video",
]

SANDBOX_TAG = "lipsyncer-sandbox"
"""The MP4 ``comment`` tag of every file the sandbox renders."""

MediaField = Literal["video_url", "audio_url"]
_STAMP_BITS = 10


class MediaFailure(Exception):
    """An input could not be fetched (``download``) or read as media of the right kind (``format``)."""

    def __init__(self, field: MediaField, kind: Literal["download", "format"], message: str) -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind
        self.message = message


# ------------------------------------------------------------------------------------------------ fetch


def fetch_media(url: str, field: MediaField, files: FileStore, *, timeout: float = 10.0) -> bytes:
    """The bytes behind ``url`` without leaving the machine.

    Sandbox-hosted ``/files/...`` URLs come from the sandbox's own store whatever host they name; ``data:``
    URIs are decoded; other loopback http(s) URLs are fetched. Anything else fails as a download error, since
    the sandbox has no network.
    """
    text = url.strip()
    if text[:5].lower() == "data:":
        return _decode_data_uri(text, field)
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise MediaFailure(field, "download", f"{field} is not an http(s) URL or a data URI")
    path = unquote(parts.path)
    if path.startswith("/files/"):
        stored = files.get(path)
        if stored is not None:
            return stored.data
    host = parts.netloc.rpartition("@")[2]
    if not is_loopback_host(host):
        raise MediaFailure(field, "download", f"{field} could not be downloaded (the sandbox has no network)")
    try:
        response = httpx.get(text, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise MediaFailure(field, "download", f"{field} could not be downloaded: {exc}") from None
    if response.status_code != 200:
        raise MediaFailure(field, "download", f"{field} could not be downloaded: HTTP {response.status_code}")
    return response.content


def _decode_data_uri(text: str, field: MediaField) -> bytes:
    header, sep, payload = text.partition(",")
    if not sep:
        raise MediaFailure(field, "download", f"{field} is a malformed data URI")
    if header.lower().endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise MediaFailure(field, "download", f"{field} has a data URI that does not decode") from None
    return unquote_to_bytes(payload)


def probe_input(path: Path, field: MediaField) -> MediaInfo:
    """``core.media.probe`` with the checks a provider makes: the video has frames, the audio has sound."""
    try:
        info = probe(path)
    except MediaProbeError as exc:
        raise MediaFailure(field, "format", f"{field} is not readable media: {exc}") from None
    if field == "video_url" and not info.has_video:
        raise MediaFailure(field, "format", "video_url has no video stream")
    if field == "audio_url" and not info.has_audio:
        raise MediaFailure(field, "format", "audio_url has no audio stream")
    if info.duration <= 0:
        raise MediaFailure(field, "format", f"{field} has no duration")
    return info


# ----------------------------------------------------------------------------------------------- render


@dataclass(frozen=True)
class Rendered:
    """A rendered output file and the facts fal v3 reports about it."""

    data: bytes
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    audio_seconds: float


# Encoder settings for clips of a second or two: one x264 thread (a thread pool costs more than it saves on
# 40 small frames) and FFmpeg's fast AAC coder (the default search coder was half of each render's CPU).
_H264 = {"preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
_AAC = {"aac_coder": "fast"}


def render_lipsync(
    video: Path,
    audio: Path,
    mode: SyncMode | str,
    *,
    video_info: MediaInfo | None = None,
    audio_info: MediaInfo | None = None,
    sample_rate: int = 44100,
    channels: int = 1,
) -> Rendered:
    """Write the sandbox's stand-in for a lip-synced video: the sync mode's timeline, real H.264 and AAC."""
    video_info = video_info or probe_input(video, "video_url")
    audio_info = audio_info or probe_input(audio, "audio_url")
    mode = SyncMode(mode)
    v, a = video_info.duration, audio_info.duration
    frames, rate = _decode_video(video)
    fps = float(rate)
    out_seconds = output_duration(mode, v, a)
    n_out = max(1, round(out_seconds * fps))

    plan = audio_plan(mode, v, a)
    layout = "mono" if channels == 1 else "stereo"
    frame_bytes = 2 * channels
    pcm = _decode_audio(audio, sample_rate, layout)
    keep = round(plan.keep * sample_rate)
    total = max(1, round(plan.total * sample_rate))
    pcm = pcm[: keep * frame_bytes]
    pcm += bytes(total * frame_bytes - len(pcm))

    width, height = frames[0].width, frames[0].height
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        out.metadata["comment"] = SANDBOX_TAG
        vstream = out.add_stream("libx264", rate=rate)
        vstream.width = width
        vstream.height = height
        vstream.pix_fmt = pix_fmt
        vstream.options = dict(_H264)
        astream = out.add_stream("aac", rate=sample_rate)
        astream.layout = layout
        astream.options = dict(_AAC)
        converted: dict[int, VideoFrame] = {}
        time_base = 1 / rate
        for i in range(n_out):
            src = source_time(mode, i / fps, v, a)
            index = min(math.floor(src * fps + 1e-6), len(frames) - 1)
            frame = converted.get(index)
            if frame is None:
                frame = frames[index].reformat(format=pix_fmt)
                frame.pict_type = PictureType.NONE
                converted[index] = frame
            frame.pts = i
            frame.time_base = time_base
            for packet in vstream.encode(frame):
                out.mux(packet)
        for packet in vstream.encode(None):
            out.mux(packet)
        aframe = _audio_frame(pcm, total, layout, sample_rate)
        for packet in astream.encode(aframe):
            out.mux(packet)
        for packet in astream.encode(None):
            out.mux(packet)
    return Rendered(
        data=buffer.getvalue(),
        width=width,
        height=height,
        fps=fps,
        num_frames=n_out,
        duration=n_out / fps,
        audio_seconds=total / sample_rate,
    )


def _decode_video(path: Path) -> tuple[list[VideoFrame], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        frames = list(container.decode(stream))
    if not frames:
        raise MediaFailure("video_url", "format", "video_url has no decodable frames")
    return frames, Fraction(rate)


def _decode_audio(path: Path, sample_rate: int, layout: str) -> bytes:
    resampler = av.AudioResampler(format="s16", layout=layout, rate=sample_rate)
    chunks: list[bytes] = []
    width = 2 * (1 if layout == "mono" else 2)

    def take(frames: list[AudioFrame]) -> None:
        for frame in frames:
            chunks.append(bytes(frame.planes[0])[: frame.samples * width])

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            take(resampler.resample(frame))
    take(resampler.resample(None))
    return b"".join(chunks)


def _audio_frame(pcm: bytes, samples: int, layout: str, sample_rate: int) -> AudioFrame:
    frame = AudioFrame(format="s16", layout=layout, samples=samples)
    plane = frame.planes[0]
    plane.update(pcm + bytes(plane.buffer_size - len(pcm)))
    frame.sample_rate = sample_rate
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    return frame


# ------------------------------------------------------------------------------------------ sample clips


def write_sample_video(
    path: str | Path,
    seconds: float,
    width: int = 160,
    height: int = 120,
    fps: int = 25,
    *,
    audio: bool = False,
    sample_rate: int = 44100,
) -> Path:
    """An H.264 MP4 test clip: a moving box, with each frame's index stamped as binary stripes on top.

    ``read_frame_indices`` reads the stamps back (index modulo 1024), which is how tests check that an
    output's timeline follows the sync mode. ``audio=True`` adds an AAC tone as long as the video.
    """
    path = Path(path)
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    if width < 2 * _STAMP_BITS or height < 8:
        raise ValueError(f"sample videos are at least {2 * _STAMP_BITS}x8 pixels")
    count = max(1, round(seconds * fps))
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    with av.open(str(path), "w", format="mp4") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width = width
        vstream.height = height
        vstream.pix_fmt = pix_fmt
        vstream.options = dict(_H264)
        astream = None
        if audio:
            astream = out.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
            astream.options = dict(_AAC)
        for i in range(count):
            frame = _pattern_frame(i, width, height, pix_fmt)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vstream.encode(frame):
                out.mux(packet)
        for packet in vstream.encode(None):
            out.mux(packet)
        if astream is not None:
            samples = round(count / fps * sample_rate)
            pcm = _tone(samples, sample_rate, 440.0)
            for packet in astream.encode(_audio_frame(pcm, samples, "mono", sample_rate)):
                out.mux(packet)
            for packet in astream.encode(None):
                out.mux(packet)
    return path


def write_sample_audio(
    path: str | Path, seconds: float, sample_rate: int = 16000, *, frequency: float = 440.0
) -> Path:
    """A mono 16-bit WAV tone of exactly ``round(seconds * sample_rate)`` samples."""
    path = Path(path)
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    samples = max(1, round(seconds * sample_rate))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(_tone(samples, sample_rate, frequency))
    return path


def read_frame_indices(path: str | Path) -> list[int]:
    """The stamped source-frame index of every frame of a video made from ``write_sample_video`` clips."""
    indices: list[int] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            indices.append(_read_stamp(frame))
    return indices


def _tone(samples: int, sample_rate: int, frequency: float) -> bytes:
    step = 2 * math.pi * frequency / sample_rate
    # A whole-hertz tone repeats every sample_rate / gcd(sample_rate, frequency) samples: compute one period
    # and repeat it (a sine per sample in Python cost ~40 ms per second of audio).
    period = sample_rate // math.gcd(sample_rate, int(frequency)) if frequency == int(frequency) else samples
    one = array("h", (int(9000 * math.sin(step * n)) for n in range(min(period, samples))))
    data = (one * (samples // len(one) + 1))[:samples]
    if sys.byteorder == "big":  # WAV and s16 PCM are little-endian
        data.byteswap()
    return data.tobytes()


def _stamp_rows(index: int, width: int) -> bytes:
    stripe = width // _STAMP_BITS
    row = bytearray(b"\x80" * width)
    for bit in range(_STAMP_BITS):
        on = (index >> (_STAMP_BITS - 1 - bit)) & 1
        row[bit * stripe : (bit + 1) * stripe] = (b"\xeb" if on else b"\x10") * stripe
    return bytes(row)


def _pattern_rows(index: int, width: int, height: int) -> Iterator[bytes]:
    band = max(2, height // 3)
    stamp = _stamp_rows(index, width)
    for _ in range(band):
        yield stamp
    box = max(4, width // 8)
    x = (index * 5) % max(1, width - box)
    base = bytearray((40 + (col * 120) // width) for col in range(width))
    base[x : x + box] = b"\xd0" * box
    moving = bytes(base)
    for _ in range(height - band):
        yield moving


def _pattern_frame(index: int, width: int, height: int, pix_fmt: str) -> VideoFrame:
    frame = VideoFrame(width, height, pix_fmt)
    luma = frame.planes[0]
    luma.update(_pad_rows(_pattern_rows(index, width, height), width, luma.line_size, luma.buffer_size))
    for plane, value in (
        (frame.planes[1], 128 + (index * 3) % 40),
        (frame.planes[2], 128 - (index * 2) % 40),
    ):
        plane.update(bytes([value]) * plane.buffer_size)
    return frame


def _pad_rows(rows: Iterator[bytes], width: int, line_size: int, buffer_size: int) -> bytes:
    pad = bytes(line_size - width)
    data = b"".join(row + pad for row in rows)
    return data + bytes(buffer_size - len(data))


def _read_stamp(frame: VideoFrame) -> int:
    luma = frame.planes[0]
    data = bytes(luma)
    stripe = frame.width // _STAMP_BITS
    band = max(2, frame.height // 3)
    row = band // 2
    value = 0
    for bit in range(_STAMP_BITS):
        lo = bit * stripe + stripe // 4
        hi = max(lo + 1, bit * stripe + (3 * stripe) // 4)
        start = row * luma.line_size
        level = sum(data[start + lo : start + hi]) / (hi - lo)
        value = (value << 1) | (1 if level > 128 else 0)
    return value
