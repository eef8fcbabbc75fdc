"""Rendered output follows the sync mode's rule (written out below), with real H.264/AAC, probed with PyAV."""

from __future__ import annotations

import base64
import math
import tempfile
import wave
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipsyncer.contrib.sandbox import (
    SANDBOX_TAG,
    Sandbox,
    read_frame_indices,
    render_lipsync,
    serve_in_thread,
    write_sample_audio,
    write_sample_video,
)
from lipsyncer.contrib.sandbox.media import MediaFailure, fetch_media
from lipsyncer.contrib.sandbox.testing import fast_config
from lipsyncer.core.media import probe
from lipsyncer.core.schema import SyncMode

# AAC codes audio in frames of 1024 samples. The MP4 edit list trims the encoder's priming and padding, so the
# audio stream's stated duration should equal the plan to the sample; one AAC frame is the tolerance because a
# demuxer that ignores edit lists (or a muxer that rounds the last packet) is off by at most that much.
AAC_FRAME = 1024


# The sync-mode rule (reference section 1, docs/request.md), written out here so the renderer is checked against
# the rule itself and not against core.media's implementation of it (which the renderer uses).
def rule_seconds(mode: SyncMode, v: float, a: float) -> float:
    """How long the output lasts: cut_off min(V, A); silence V; loop, bounce and remap A."""
    return {"cut_off": min(v, a), "silence": v, "loop": a, "bounce": a, "remap": a}[mode.value]


def rule_source_time(mode: SyncMode, t: float, v: float, a: float) -> float:
    """The input time shown at output time t: remap stretches, loop restarts, bounce reflects, others play on."""
    if mode is SyncMode.REMAP:
        src = t * v / a
    elif mode is SyncMode.LOOP:
        src = t % v
    elif mode is SyncMode.BOUNCE:
        phase = t % (2 * v)
        src = phase if phase <= v else 2 * v - phase
    else:
        src = t
    return min(src, v)


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.duration is not None and stream.time_base is not None
        return float(stream.duration * stream.time_base)


def _video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("mode", list(SyncMode))
@settings(max_examples=6, deadline=None)
@given(
    video_seconds=st.floats(min_value=0.4, max_value=2.5),
    audio_seconds=st.floats(min_value=0.4, max_value=2.5),
    fps=st.sampled_from([15, 24, 25, 30]),
    sample_rate=st.sampled_from([16000, 22050, 44100]),
)
def test_render_follows_the_sync_mode(
    mode: SyncMode, video_seconds: float, audio_seconds: float, fps: int, sample_rate: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        video = write_sample_video(root / "in.mp4", video_seconds, width=96, height=64, fps=fps)
        audio = write_sample_audio(root / "in.wav", audio_seconds, sample_rate=sample_rate)
        v, a = probe(video).duration, probe(audio).duration
        rendered = render_lipsync(video, audio, mode)
        out = root / "out.mp4"
        out.write_bytes(rendered.data)

        info = probe(out)
        expected = rule_seconds(mode, v, a)
        assert (info.width, info.height) == (96, 64)
        assert info.fps == pytest.approx(fps)
        assert abs(info.duration - expected) <= 1 / fps + 1e-6
        frames = _video_frames(out)
        assert frames == rendered.num_frames == max(1, round(expected * fps))

        # The sound lasts as long as the output: the input audio cut there, or padded with silence.
        assert abs(_audio_seconds(out) - expected) <= AAC_FRAME / 44100

        # The frame shown at output time t is the input frame at the rule's source time.
        input_frames = round(v * fps)
        expected_indices = [
            min(math.floor(rule_source_time(mode, i / fps, v, a) * fps + 1e-6), input_frames - 1)
            for i in range(frames)
        ]
        assert read_frame_indices(out) == expected_indices

        with av.open(str(out)) as container:
            assert container.metadata.get("comment") == SANDBOX_TAG
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio[0].codec_context.name == "aac"
            assert container.streams.audio[0].codec_context.sample_rate == 44100


def test_bounce_plays_backwards(tmp_path: Path) -> None:
    video = write_sample_video(tmp_path / "v.mp4", 0.4, fps=10)  # frames 0..3
    audio = write_sample_audio(tmp_path / "a.wav", 1.2)
    out = tmp_path / "out.mp4"
    out.write_bytes(render_lipsync(video, audio, "bounce").data)
    assert read_frame_indices(out) == [0, 1, 2, 3, 3, 3, 2, 1, 0, 1, 2, 3]


def test_silence_pads_audio_and_keeps_video_length(tmp_path: Path) -> None:
    video = write_sample_video(tmp_path / "v.mp4", 2.0)
    audio = write_sample_audio(tmp_path / "a.wav", 0.5)
    out = tmp_path / "out.mp4"
    rendered = render_lipsync(video, audio, "silence")
    out.write_bytes(rendered.data)
    assert probe(out).duration == pytest.approx(2.0)
    assert rendered.audio_seconds == pytest.approx(2.0)
    # The last half second of sound is digital silence.
    with av.open(str(out)) as container:
        samples = [frame for frame in container.decode(audio=0)]
    tail = samples[-5:]
    assert all(max(abs(x) for x in bytes(f.planes[0])[: f.samples * 4]) == 0 for f in tail)


def test_stereo_output_and_odd_sizes(tmp_path: Path) -> None:
    video = write_sample_video(tmp_path / "v.mp4", 0.6, width=81, height=61)
    audio = write_sample_audio(tmp_path / "a.wav", 0.6)
    out = tmp_path / "out.mp4"
    out.write_bytes(render_lipsync(video, audio, "cut_off", channels=2, sample_rate=48000).data)
    info = probe(out)
    assert (info.width, info.height) == (81, 61)
    with av.open(str(out)) as container:
        ctx = container.streams.audio[0].codec_context
        assert (ctx.sample_rate, ctx.channels) == (48000, 2)


def test_sample_writers(tmp_path: Path) -> None:
    video = write_sample_video(tmp_path / "v.mp4", 1.2, fps=25, audio=True)
    assert read_frame_indices(video) == list(range(30))
    info = probe(video)
    assert info.has_audio and info.duration == pytest.approx(1.2)
    assert _audio_seconds(video) == pytest.approx(1.2, abs=1e-3)
    audio = write_sample_audio(tmp_path / "a.wav", 0.75, sample_rate=8000)
    with wave.open(str(audio)) as w:
        assert (w.getnframes(), w.getframerate(), w.getnchannels(), w.getsampwidth()) == (6000, 8000, 1, 2)
    with pytest.raises(ValueError):
        write_sample_video(tmp_path / "x.mp4", 0)
    with pytest.raises(ValueError):
        write_sample_audio(tmp_path / "x.wav", -1)


def test_fetch_rules(tmp_path: Path) -> None:
    with Sandbox(fast_config()) as sandbox:
        files = sandbox._engine.files
        assert fetch_media("data:text/plain,hello%20there", "video_url", files) == b"hello there"
        assert (
            fetch_media("data:;base64," + base64.b64encode(b"\x00\x01").decode(), "audio_url", files)
            == b"\x00\x01"
        )
        url = sandbox.put_file(b"stored", file_name="s.bin", base_url="https://anything.example")
        assert fetch_media(url.replace("anything.example", "v3.fal.media"), "video_url", files) == b"stored"
        for bad in (
            "data:;base64,***",
            "data:nocomma",
            "ftp://127.0.0.1/x",
            "https://example.com/x.mp4",
            "/etc/passwd",
        ):
            with pytest.raises(MediaFailure) as caught:
                fetch_media(bad, "video_url", files)
            assert caught.value.kind == "download" and caught.value.field == "video_url"


def test_loopback_inputs_are_fetched_over_http(tmp_path: Path) -> None:
    """A loopback URL that is not one of the sandbox's own files is downloaded, like any public URL."""
    video = write_sample_video(tmp_path / "v.mp4", 0.4)
    with Sandbox(fast_config()) as other, serve_in_thread(other) as server, Sandbox(fast_config()) as sandbox:
        path = other.put_file(video.read_bytes(), file_name="v.mp4", base_url=server.base_url)
        assert fetch_media(path, "video_url", sandbox._engine.files) == video.read_bytes()
        with pytest.raises(MediaFailure):
            fetch_media(server.base_url + "/files/none/x.mp4", "video_url", sandbox._engine.files)
