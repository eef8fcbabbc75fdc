"""Media facts that routing and estimates need: output length per sync mode, probing, input checks.

The sync-mode table in the providers' reference is the single source of these rules; the estimator prices with
``output_duration`` and the sandbox renders with it (its frame timeline lives in ``contrib/sandbox/timeline.py``),
so a disagreement shows up in tests rather than on an invoice.
:func:`check_local_media` refuses local inputs that cannot be what the request says before anything is
uploaded or paid for.
"""

from __future__ import annotations

import importlib.util
import io
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import InvalidMediaError
from .schema import LipsyncRequest, MediaKind, MediaSource, SyncMode

__all__ = [
    "MediaInfo",
    "MediaProbeError",
    "check_local_media",
    "output_duration",
    "probe",
]


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
    if not _have_pyav():
        if path.suffix.lower() == ".wav":
            return _probe_wav(path)
        raise MediaProbeError(
            f"cannot read the duration of {path.name}: install the 'media' extra (pip install 'lipsyncer[media]')"
        )
    info = _read(path, path.name, wav=_is_wav(path), deep=True)
    assert info is not None  # deep: FFmpeg reads what the standard library does not
    if info.duration <= 0:
        raise MediaProbeError(f"{path.name}: the container states no duration")
    return info


def _have_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


def _is_wav(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False  # PyAV says what is wrong with it
    return sniff(head)[1] == "WAV"


def _read(target: Path | io.BytesIO, name: str, *, wav: bool, deep: bool) -> MediaInfo | None:
    """Streams and duration: the standard library for PCM WAV; else PyAV when ``deep``; else None."""
    if wav:
        try:
            return _probe_wav(target, name)
        except MediaProbeError:
            if not deep:
                raise  # FFmpeg's turn when it is here: it reads float, extensible and streamed WAV
    if deep:
        return _probe_av(str(target) if isinstance(target, Path) else target, name)
    return None


def _probe_av(target: str | io.BytesIO, name: str) -> MediaInfo:
    """Streams and duration as PyAV (FFmpeg) reads them; duration 0.0 when the container states none."""
    import av

    try:
        with av.open(target) as container:
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
    except Exception as exc:  # PyAV raises many error types; all mean "not readable media" here.
        raise MediaProbeError(f"{name} is not readable media: {exc}") from exc


def _container_duration(container: Any, vstream: Any, astream: Any) -> float:
    """The stated duration (a stream's, else the container's); when none is stated (a live recording, such
    as a browser's WebM), the end of the last packet, read by demuxing (no decoding). 0.0: no packets."""
    for stream in (vstream, astream):
        if stream is not None and getattr(stream, "duration", None) and getattr(stream, "time_base", None):
            return float(stream.duration * stream.time_base)
    duration = getattr(container, "duration", None)
    if duration:
        return float(duration) / 1_000_000
    stream = vstream if vstream is not None else astream
    if stream is None or stream.time_base is None:
        return 0.0
    end = 0.0
    for packet in container.demux(stream):
        start = packet.pts if packet.pts is not None else packet.dts
        if start is not None:
            end = max(end, float((start + (packet.duration or 0)) * stream.time_base))
    return end


def _probe_wav(path: Path | io.BytesIO, name: str | None = None) -> MediaInfo:
    """A PCM WAV's duration from its header, with the standard library: what FFmpeg would say, at a hundredth
    of the cost (a batch probes every row's audio). A header that claims more samples than the file holds
    (a streamed WAV's placeholder size) is refused rather than believed: a wrong duration is a wrong price."""
    name = name or (path.name if isinstance(path, Path) else "the WAV data")
    try:
        with wave.open(str(path) if isinstance(path, Path) else path, "rb") as w:
            rate, frames = w.getframerate(), w.getnframes()
            claimed = frames * w.getsampwidth() * w.getnchannels()
    except (wave.Error, EOFError) as exc:
        raise MediaProbeError(f"{name} is not a readable WAV file: {exc}") from exc
    size = path.stat().st_size if isinstance(path, Path) else len(path.getbuffer())
    if claimed > size:
        raise MediaProbeError(
            f"{name} is not a readable WAV file: its header claims {claimed} bytes of samples, "
            f"the file holds {size}"
        )
    return MediaInfo(duration=frames / rate if rate else 0.0, has_audio=True)


# ------------------------------------------------------------------------------------ local input checks

Sniffed = Literal["video", "audio", "image", "text", "unknown"]

_HEAD = 4096
_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ")


def sniff(head: bytes) -> tuple[Sniffed, str]:
    """What the first bytes of a file say it is (no decoder needed), and the format's name.

    "video": a container that normally holds a picture (MP4/MOV, Matroska/WebM, AVI, MPEG-TS, FLV);
    "audio": an audio-only format (WAV, MP3, FLAC, Ogg, AAC, M4A); "image": a still picture (PNG, JPEG,
    GIF, WebP); "text": no media at all.
    """
    if head[4:8] == b"ftyp":
        return ("audio", "M4A") if head[8:12] in _AUDIO_BRANDS else ("video", "MP4/MOV")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio", "WAV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "AVI"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video", "Matroska/WebM"
    if head[:3] == b"FLV":
        return "video", "FLV"
    if head[:1] == b"\x47" and len(head) > 188 and head[188:189] == b"\x47":
        return "video", "MPEG-TS"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio", "MP3/AAC"
    if head[:4] == b"fLaC":
        return "audio", "FLAC"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "image", "PNG"
    if head[:3] == b"\xff\xd8\xff":
        return "image", "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WebP"
    if head[:4] == b"OggS":
        return "audio", "Ogg"
    if _looks_like_text(head):
        return "text", "text"
    return "unknown", "unknown"


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * max(len(text), 1)


@dataclass(frozen=True)
class _Local:
    """One local input, read enough to judge it: its field, how to name it, its size and first bytes."""

    field: str
    shown: str
    size: int
    head: bytes
    path: Path | None = None
    data: bytes | None = None

    def refuse(self, what: str, fix: str) -> InvalidMediaError:
        return InvalidMediaError(
            f"{self.field} {self.shown} {what}", field=self.field, path=self.shown, fix=fix
        )

    def probe(self, deep: bool) -> MediaInfo | None:
        """Streams and duration: the standard library for PCM WAV; else PyAV when ``deep``; else None."""
        target = self.path if self.path is not None else io.BytesIO(self.data or b"")
        return _read(target, self.shown, wav=sniff(self.head)[1] == "WAV", deep=deep)


def _local(media: MediaSource, field: str) -> _Local | None:
    if media.kind is MediaKind.URL:
        return None  # the provider fetches it; nothing here to read
    if media.kind is MediaKind.DATA_URI:
        media = media.decoded()
    if media.kind is MediaKind.BYTES:
        assert isinstance(media.value, bytes)
        data = media.value
        return _Local(field, f"<{len(data)} bytes>", len(data), data[:_HEAD], data=data)
    path = media.path
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
    except OSError as exc:
        raise InvalidMediaError(
            f"cannot read {field} file {path}: {exc.strerror or exc}",
            field=field,
            path=str(path),
            fix="check that the file exists and that you may read it",
        ) from None
    return _Local(field, str(path), size, head, path=path)


def check_local_media(request: LipsyncRequest, *, deep: bool | None = None) -> None:
    """Refuse local inputs (paths, bytes, data URIs) that cannot be what the request says, before any upload.

    Raises :class:`~lipsyncer.core.errors.InvalidMediaError` naming the file and the fix for: an empty file;
    a file that is text, not media; video and audio given the wrong way round; a video that is an audio-only
    format. With PyAV (``deep``, the default when the ``media`` extra is installed) also for: a file FFmpeg
    cannot read as a container, a video without a video stream, an audio input without an audio stream, and
    a zero duration. PCM WAV is read by the standard library in both modes, so without PyAV it still gets the
    deep checks; other formats get the checks above only. URLs are the provider's to fetch and are not checked.
    """
    video, audio = _local(request.video, "video"), _local(request.audio, "audio")
    if video is None and audio is None:
        return  # URLs only: nothing to read (and no module look-up per request of a batch)
    deep = _have_pyav() if deep is None else deep
    for item in (video, audio):
        if item is not None and item.size == 0:
            raise item.refuse(
                "is empty (0 bytes)", "pass the complete file; an export or download may have failed"
            )
    kinds = {item.field: sniff(item.head) for item in (video, audio) if item is not None}
    for item in (video, audio):
        if item is not None and kinds[item.field][0] == "text":
            raise item.refuse(
                "is a text file, not media",
                f"pass the {item.field} file itself (an MP4 for video, a WAV or MP3 for audio)",
            )
    for item in (video, audio):
        if item is not None and kinds[item.field][0] == "image":
            raise item.refuse(
                f"is a still image ({kinds[item.field][1]}), not a {item.field} file",
                "pass a video clip of the speaker as video= and the speech as audio=",
            )
    if (
        video is not None
        and audio is not None
        and kinds["video"][0] == "audio"
        and kinds["audio"][0] == "video"
    ):
        raise _swapped(video, audio)
    if video is not None and kinds["video"][0] == "audio":
        raise video.refuse(
            f"is an audio-only file ({kinds['video'][1]}), so it has no picture to lip-sync",
            "pass the clip with the face as video= and the speech as audio=",
        )
    infos: dict[str, MediaInfo] = {}
    for item in (video, audio):
        if item is None:
            continue
        try:
            info = item.probe(deep)
        except MediaProbeError as exc:
            raise item.refuse(
                f"is not a readable media file ({exc.__cause__ or exc})",
                "re-export it as MP4 (H.264) for video or WAV/MP3 for audio",
            ) from None
        if info is not None:
            infos[item.field] = info
    vinfo, ainfo = infos.get("video"), infos.get("audio")
    if video is not None and vinfo is not None and not vinfo.has_video:
        if audio is not None and ainfo is not None and ainfo.has_video:
            raise _swapped(video, audio)
        raise video.refuse("has no video stream", "pass a video file with the speaker's face as video=")
    if audio is not None and ainfo is not None and not ainfo.has_audio:
        raise audio.refuse(
            "has no audio stream", "pass the speech as a WAV or MP3 file (or a video with sound)"
        )
    for item, info in ((video, vinfo), (audio, ainfo)):
        if item is not None and info is not None and not info.duration > 0:
            raise item.refuse("has zero duration", "pass a file with some content; it may be truncated")


def _swapped(video: _Local, audio: _Local) -> InvalidMediaError:
    return InvalidMediaError(
        f"video and audio look swapped: video {video.shown} holds only audio and audio {audio.shown} holds video",
        field="video",
        path=video.shown,
        fix="swap them: the clip with the face goes in video=, the speech in audio=",
    )
