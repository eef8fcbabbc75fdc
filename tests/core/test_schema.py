"""Bad input is refused at construction with a typed error naming the field: no network is reachable here."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lipsyncer import ActiveSpeaker, InvalidRequestError, LipsyncRequest, Option, SyncMode

VIDEO = "https://media.example/talk.mp4"
AUDIO = "https://media.example/dub.wav"


def make(**fields: object) -> LipsyncRequest:
    return LipsyncRequest(**{"video": VIDEO, "audio": AUDIO, "model": "lipsync-2", **fields})


@given(st.floats().filter(lambda t: not 0.0 <= t <= 1.0))
def test_temperature_outside_unit_interval_is_refused(t: float) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make(temperature=t)
    assert info.value.field == "temperature"


@given(st.text(min_size=1).filter(lambda k: k not in LipsyncRequest.model_fields and k.isidentifier()))
def test_unknown_fields_are_refused_by_name(key: str) -> None:
    with pytest.raises(InvalidRequestError, match="unknown field"):
        make(**{key: 1})


@given(
    st.sampled_from(
        ["ftp://host/a.mp4", "http://", "https:// spaced.example/a", "data:video/mp4;base64,!!!", "s3://b/k"]
    )
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make(video=url)
    assert info.value.field == "video"


@given(st.text(alphabet="abcdefghij/_-.", min_size=1, max_size=30))
def test_missing_local_files_are_refused(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    missing = tmp_path_factory.getbasetemp() / "absent" / name.lstrip("/")
    with pytest.raises(InvalidRequestError, match="not found"):
        make(audio=str(missing))


speaker_modes = {
    "auto": {"auto": True},
    "point": {"frame_number": 3, "coordinates": (10.0, 20.0)},
    "boxes": {"bounding_boxes": [(0.0, 0.0, 10.0, 10.0), None]},
    "boxes_url": {"bounding_boxes_url": "https://media.example/boxes.json"},
    "face_image": {"face_image": base64.b64encode(b"png").decode()},
}


@given(st.lists(st.sampled_from(sorted(speaker_modes)), min_size=2, max_size=5, unique=True))
def test_two_active_speaker_modes_at_once_are_refused(modes: list[str]) -> None:
    fields: dict[str, object] = {}
    for mode in modes:
        fields.update(speaker_modes[mode])
    with pytest.raises(InvalidRequestError, match="exactly one"):
        ActiveSpeaker(**fields)


@pytest.mark.parametrize("mode", sorted(speaker_modes))
def test_each_active_speaker_mode_maps_to_its_option(mode: str) -> None:
    request = make(active_speaker=ActiveSpeaker(**speaker_modes[mode]))
    assert Option(f"active_speaker.{mode}") in request.options()
    assert request.active_speaker is not None and request.active_speaker.mode == mode


def test_half_a_point_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="frame_number and coordinates"):
        ActiveSpeaker(frame_number=2)


@pytest.mark.parametrize("model", ["", ":lipsync-2", "fal-v3:", "a:b:c"])
def test_malformed_model_ids_are_refused(model: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make(model=model)
    assert info.value.field == "model"


def test_options_name_exactly_what_is_set(tmp_path: Path) -> None:
    assert make().options() == {Option.SYNC_MODE}
    request = make(temperature=0.3, active_speaker=True, webhook_url="https://hooks.example/x")
    assert request.options() == {Option.SYNC_MODE, Option.TEMPERATURE, Option.SPEAKER_AUTO, Option.WEBHOOK}
    assert make(model="fal-v3:sync-3").pinned_provider == "fal-v3"


def test_fingerprint_follows_billed_content(tmp_path: Path) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"one")
    first = make(audio=clip).fingerprint()
    assert make(audio=clip, metadata={"ticket": "1"}).fingerprint() == first  # metadata is not billed
    clip.write_bytes(b"two")
    assert make(audio=clip).fingerprint() != first
    assert make(audio=clip, sync_mode=SyncMode.LOOP).fingerprint() != make(audio=clip).fingerprint()


def test_summary_holds_no_media_payload() -> None:
    payload = base64.b64encode(b"x" * 3000).decode()
    request = make(audio=f"data:audio/wav;base64,{payload}")
    assert payload not in str(request.summary())


# ------------------------------------------------------------------------ whole pixels, finite numbers


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_integral_coordinates_are_kept_as_ints(x: int, y: int) -> None:
    for speaker in (ActiveSpeaker.at(3, x, y), ActiveSpeaker.at(3, float(x), float(y))):
        assert speaker.coordinates == (x, y)
        assert all(type(c) is int for c in speaker.coordinates)


@given(
    st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda v: not (v == v and abs(v) != float("inf") and float(v).is_integer())
    )
)
def test_non_integral_or_non_finite_coordinates_are_refused_with_a_fix(value: float) -> None:
    for build in (
        lambda: ActiveSpeaker.at(3, value, 10),
        lambda: ActiveSpeaker.boxes([(0, 0, 10, value)]),
        lambda: ActiveSpeaker(frame_number=value, coordinates=(1, 1)),
    ):
        with pytest.raises(InvalidRequestError) as info:
            build()
        assert info.value.field == "active_speaker"
        assert "whole number" in info.value.message and info.value.fix


@pytest.mark.parametrize("value", [True, "12", None, [1, 2]])
def test_coordinates_that_are_not_numbers_are_refused(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        ActiveSpeaker(frame_number=0, coordinates=(value, 1))


def test_negative_boxes_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="non-negative"):
        ActiveSpeaker.boxes([(-1, 0, 10, 10)])


@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v <= 1))
def test_temperature_must_be_finite_and_in_range(value: float) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make(temperature=value)
    assert info.value.field == "temperature"


# ---------------------------------------------------------------------------- the file system's refusals


@pytest.mark.parametrize("field", ["video", "audio"])
def test_a_path_too_long_for_the_file_system_is_a_typed_error(tmp_path: Path, field: str) -> None:
    long_name = "x" * 300 + ".mp4"  # one name over 255 bytes: the OS refuses it (ENAMETOOLONG)
    with pytest.raises(InvalidRequestError) as info:
        make(**{field: str(tmp_path / long_name)})
    assert info.value.field == field
    assert "cannot be used" in info.value.message and info.value.fix


def test_a_directory_is_not_a_media_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="is a directory") as info:
        make(video=tmp_path)
    assert info.value.field == "video"


def test_a_long_base64_face_image_is_not_mistaken_for_a_path() -> None:
    """A base64 image longer than a file name once made ``is_file`` raise ENAMETOOLONG."""
    payload = base64.b64encode(b"\x89PNG" + bytes(range(256)) * 2).decode().replace("/", "A")
    assert ActiveSpeaker.face(payload).face_image_base64() == payload
