"""Bad local media fails before money: ``check_local_media`` on real files written with PyAV.

Each case runs with PyAV (``deep=True``) and, where the rule says the check does not need it, without
(``deep=False``: what a user without the ``media`` extra gets).
"""

from __future__ import annotations

import base64
import io
import os
import struct
import wave
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipsyncer import InvalidMediaError, InvalidRequestError, LipsyncRequest
from lipsyncer.contrib.sandbox.testing import SampleMedia, sample_media
from lipsyncer.core.media import MediaProbeError, check_local_media, probe, sniff


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("checks"))


def request(video: object, audio: object) -> LipsyncRequest:
    return LipsyncRequest(video=video, audio=audio, model="lipsync-2")


def silent_wav(path: Path, frames: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * frames)
    return path


@pytest.mark.parametrize("deep", [True, False])
def test_good_inputs_pass(media: SampleMedia, deep: bool) -> None:
    check_local_media(request(media.video, media.audio), deep=deep)
    check_local_media(request(media.av, media.av), deep=deep)  # a video with sound serves as audio too
    check_local_media(request(media.video.read_bytes(), media.audio.read_bytes()), deep=deep)


def test_urls_are_the_providers_to_fetch(media: SampleMedia) -> None:
    check_local_media(request("https://cdn.example/talk.mp4", "https://cdn.example/missing.wav"))


@pytest.mark.parametrize("deep", [True, False])
@pytest.mark.parametrize("field", ["video", "audio"])
def test_an_empty_file_is_refused(media: SampleMedia, tmp_path: Path, deep: bool, field: str) -> None:
    empty = tmp_path / ("empty.mp4" if field == "video" else "empty.wav")
    empty.write_bytes(b"")
    files = {"video": media.video, "audio": media.audio, field: empty}
    with pytest.raises(InvalidMediaError) as info:
        check_local_media(request(files["video"], files["audio"]), deep=deep)
    err = info.value
    assert isinstance(err, InvalidRequestError)
    assert (err.field, err.path) == (field, str(empty))
    assert "0 bytes" in err.message and str(empty) in err.message and err.fix


@pytest.mark.parametrize("deep", [True, False])
def test_a_text_file_named_mp4_is_refused(media: SampleMedia, tmp_path: Path, deep: bool) -> None:
    fake = tmp_path / "talk.mp4"
    fake.write_text("<html>404 not found</html>\n")
    with pytest.raises(InvalidMediaError, match="text file") as info:
        check_local_media(request(fake, media.audio), deep=deep)
    assert info.value.field == "video"


@pytest.mark.parametrize("deep", [True, False])
def test_swapped_video_and_audio_are_named_as_such(media: SampleMedia, deep: bool) -> None:
    with pytest.raises(InvalidMediaError, match="swapped") as info:
        check_local_media(request(media.audio, media.video), deep=deep)
    assert "swap them" in (info.value.fix or "")


@pytest.mark.parametrize("deep", [True, False])
def test_an_audio_file_as_video_is_refused(media: SampleMedia, deep: bool) -> None:
    with pytest.raises(InvalidMediaError, match="audio-only") as info:
        check_local_media(request(media.audio, media.long_audio), deep=deep)
    assert info.value.field == "video"


def test_a_video_without_sound_as_audio_is_refused_with_pyav(media: SampleMedia) -> None:
    with pytest.raises(InvalidMediaError, match="no audio stream") as info:
        check_local_media(request(media.video, media.video), deep=True)
    assert info.value.field == "audio"
    check_local_media(request(media.video, media.video), deep=False)  # without PyAV nobody can tell


def test_a_container_ffmpeg_cannot_read_is_refused_with_pyav(media: SampleMedia, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(media.video.read_bytes()[:40])  # an ftyp header and nothing after it
    with pytest.raises(InvalidMediaError, match="not a readable media file") as info:
        check_local_media(request(broken, media.audio), deep=True)
    assert info.value.field == "video" and info.value.fix


@pytest.mark.parametrize("deep", [True, False])
def test_a_wav_without_samples_has_zero_duration(media: SampleMedia, tmp_path: Path, deep: bool) -> None:
    """Without PyAV the standard library still reads WAV, so this holds in both modes."""
    empty = silent_wav(tmp_path / "silence.wav", 0)
    assert empty.stat().st_size > 0  # a header, not an empty file
    with pytest.raises(InvalidMediaError, match="zero duration") as info:
        check_local_media(request(media.video, empty), deep=deep)
    assert info.value.field == "audio"


def test_probing_a_wav_without_samples_is_an_error_not_a_zero_length(tmp_path: Path) -> None:
    """``probe`` answers a length to price and check against: none stated is refused, for WAV as for others."""
    with pytest.raises(MediaProbeError, match="no duration"):
        probe(silent_wav(tmp_path / "silence.wav", 0))


def test_a_truncated_wav_is_unreadable_without_pyav_too(media: SampleMedia, tmp_path: Path) -> None:
    cut = tmp_path / "cut.wav"
    cut.write_bytes(media.audio.read_bytes()[:20])
    with pytest.raises(InvalidMediaError, match="not a readable"):
        check_local_media(request(media.video, cut), deep=False)


def pcm_wav(frames: int, *, rate: int, channels: int, width: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * frames * channels * width)
    return out.getvalue()


@pytest.mark.parametrize(
    ("frames", "rate", "channels", "width"),
    [(16000, 16000, 1, 2), (66150, 44100, 2, 2), (12000, 8000, 1, 1), (4800, 48000, 2, 3)],
)
def test_a_pcm_wav_lasts_its_frames_over_its_rate_as_ffmpeg_says(
    tmp_path: Path, frames: int, rate: int, channels: int, width: int
) -> None:
    """PCM WAV is timed from its header by the standard library (PyAV costs ~100x as much per probe): the
    duration is frames / rate, and FFmpeg reads the same file to the same length."""
    import av

    path = tmp_path / "speech.wav"
    path.write_bytes(pcm_wav(frames, rate=rate, channels=channels, width=width))
    info = probe(path)
    assert info.duration == frames / rate and info.has_audio and not info.has_video
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.duration is not None and stream.time_base is not None
        assert float(stream.duration * stream.time_base) == pytest.approx(frames / rate, abs=1e-6)


def streamed_wav(frames: int, rate: int) -> bytes:
    """A WAV as a pipe writes it: mono 16-bit, the RIFF and data sizes left at their 0xFFFFFFFF placeholder."""
    data = bytearray(pcm_wav(frames, rate=rate, channels=1, width=2))
    at = data.index(b"data")
    data[4:8] = data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(data)


def test_a_streamed_wav_is_timed_by_its_samples_not_its_placeholder_size(
    media: SampleMedia, tmp_path: Path
) -> None:
    """Believing the header would make a 1 s clip ~37 hours long (0xFFFFFFFF bytes at 32,000 bytes a second):
    a price and a length limit off by that much. FFmpeg reads the samples; without it the clip is refused."""
    path = tmp_path / "piped.wav"
    path.write_bytes(streamed_wav(16000, 16000))
    assert probe(path).duration == pytest.approx(16000 / 16000, abs=1e-3)
    check_local_media(request(media.video, path), deep=True)
    with pytest.raises(InvalidMediaError, match="not a readable") as info:
        check_local_media(request(media.video, path), deep=False)
    whole_frames = 0xFFFFFFFF // 2  # the header's byte count in whole 2-byte frames, as `wave` counts them
    assert f"claims {whole_frames * 2} bytes" in str(info.value) and info.value.field == "audio"


def test_a_float_wav_the_standard_library_cannot_read_goes_to_ffmpeg(
    media: SampleMedia, tmp_path: Path
) -> None:
    rate, frames = 16000, 8000  # 0.5 s of 32-bit float mono: format tag 3, which `wave` refuses
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", frames * 4) + b"\x00" * frames * 4
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert probe(path).duration == pytest.approx(frames / rate, abs=1e-3)
    check_local_media(request(media.video, path), deep=True)
    with pytest.raises(InvalidMediaError, match="not a readable"):
        check_local_media(request(media.video, path), deep=False)


def test_data_uris_are_checked_too(media: SampleMedia) -> None:
    uri = "data:video/mp4;base64," + base64.b64encode(b"just some words, no frames").decode()
    with pytest.raises(InvalidMediaError, match="text file"):
        check_local_media(request(uri, media.audio))


def test_a_file_that_vanished_or_cannot_be_read_is_a_typed_error(media: SampleMedia, tmp_path: Path) -> None:
    gone = tmp_path / "gone.wav"
    gone.write_bytes(media.audio.read_bytes())
    req = request(media.video, gone)
    gone.unlink()
    with pytest.raises(InvalidMediaError, match="cannot read audio file") as info:
        check_local_media(req)
    assert info.value.field == "audio"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_is_a_typed_error(media: SampleMedia, tmp_path: Path) -> None:
    locked = tmp_path / "locked.wav"
    locked.write_bytes(media.audio.read_bytes())
    locked.chmod(0)
    with pytest.raises(InvalidMediaError, match="cannot read audio file"):
        check_local_media(request(media.video, locked))


def test_sniffing_names_the_common_formats(media: SampleMedia) -> None:
    assert sniff(media.video.read_bytes()[:64]) == ("video", "MP4/MOV")
    assert sniff(media.audio.read_bytes()[:64]) == ("audio", "WAV")
    assert sniff(b"ID3\x04" + bytes(60)) == ("audio", "MP3/AAC")
    assert sniff(b"\x1a\x45\xdf\xa3" + bytes(60)) == ("video", "Matroska/WebM")
    assert sniff("plain words, accents é and all\n".encode()) == ("text", "text")
    assert sniff(b"\x89PNG\r\n\x1a\n" + bytes(60)) == ("image", "PNG")


@pytest.mark.parametrize("deep", [True, False])
def test_a_still_image_is_not_a_video(media: SampleMedia, tmp_path: Path, deep: bool) -> None:
    still = tmp_path / "face.jpg"
    still.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200))
    with pytest.raises(InvalidMediaError, match="still image \\(JPEG\\)") as info:
        check_local_media(request(still, media.audio), deep=deep)
    assert info.value.field == "video"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=2048), deep=st.booleans(), as_video=st.booleans())
def test_arbitrary_bytes_pass_or_fail_typed(
    media: SampleMedia, data: bytes, deep: bool, as_video: bool
) -> None:
    """Whatever the bytes, the check says nothing or raises InvalidMediaError; never anything else."""
    if not data:  # empty bytes are refused earlier, when the request is built
        with pytest.raises(InvalidRequestError):
            request(data, media.audio)
        return
    req = request(data, media.audio) if as_video else request(media.video, data)
    try:
        check_local_media(req, deep=deep)
    except InvalidMediaError as exc:
        assert exc.field in ("video", "audio") and exc.fix


def live_webm(path: Path, frames: int, fps: int = 25) -> Path:
    """A WebM written the way a browser's MediaRecorder writes one: live, so no duration in its header."""
    import av

    with av.open(str(path), "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 7 % 256]) * plane.buffer_size)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_a_recording_without_a_stated_duration_is_measured_not_refused(
    media: SampleMedia, tmp_path: Path
) -> None:
    import av

    clip = live_webm(tmp_path / "recording.webm", frames=25)
    with av.open(str(clip)) as container:  # the premise: nothing in the file states its length
        assert container.duration is None and container.streams.video[0].duration is None
    check_local_media(request(clip, media.audio), deep=True)
    assert probe(clip).duration == pytest.approx(25 / 25, abs=0.05)  # 25 frames at 25 fps
