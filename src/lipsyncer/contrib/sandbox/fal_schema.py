"""Input schemas of fal's four Sync lipsync endpoints, checked the way fal's (pydantic) apps check them.

Errors come out as fal's 422 ``detail`` items. Fields an endpoint does not have, and v3 options sync-3 ignores,
are *reported* (fal accepts and drops them); under ``strict`` they become errors, so a provider that sends
something a model will not honour fails loudly in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .wire import fal_detail_item

__all__ = ["FAL_ENDPOINTS", "EndpointSpec", "FalInput", "validate_fal_input"]

SYNC_MODES = ("cut_off", "loop", "bounce", "silence", "remap")
MODEL_MODES = ("lips", "face", "head", "lipsync", "emotion", "talking_head")
PROMPTS = ("happy", "sad", "angry", "disgusted", "surprised", "neutral")
SYNC3_IGNORED_OPTIONS = ("temperature", "occlusion_detection_enabled", "model_mode", "prompt")


@dataclass(frozen=True)
class EndpointSpec:
    endpoint_id: str
    models: tuple[str, ...]
    default_model: str
    has_model_field: bool
    has_options: bool = False

    @property
    def fields(self) -> frozenset[str]:
        names = {"video_url", "audio_url", "sync_mode"}
        if self.has_model_field:
            names.add("model")
        if self.has_options:
            names.add("options")
        return frozenset(names)


FAL_ENDPOINTS: dict[str, EndpointSpec] = {
    spec.endpoint_id: spec
    for spec in (
        EndpointSpec(
            "fal-ai/sync-lipsync",
            ("lipsync-1.9.0-beta", "lipsync-1.8.0", "lipsync-1.7.1"),
            "lipsync-1.9.0-beta",
            has_model_field=True,
        ),
        EndpointSpec(
            "fal-ai/sync-lipsync/v2", ("lipsync-2", "lipsync-2-pro"), "lipsync-2", has_model_field=True
        ),
        EndpointSpec(
            "fal-ai/sync-lipsync/v2/pro", ("lipsync-2-pro",), "lipsync-2-pro", has_model_field=False
        ),
        EndpointSpec(
            "fal-ai/sync-lipsync/v3", ("sync-3",), "sync-3", has_model_field=False, has_options=True
        ),
    )
}


@dataclass(frozen=True)
class FalInput:
    video_url: str
    audio_url: str
    sync_mode: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)


def _enum_text(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


class _Checker:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.errors: list[dict[str, Any]] = []
        self.ignored: list[str] = []

    def error(
        self,
        loc: Sequence[str | int],
        error_type: str,
        msg: str,
        value: Any,
        ctx: dict[str, Any] | None = None,
    ) -> None:
        self.errors.append(
            fal_detail_item(error_type, msg, loc=["body", *loc], ctx=ctx, input=value, with_input=True)
        )

    def unknown(self, loc: list[str | int], value: Any) -> None:
        self.ignored.append(".".join(str(part) for part in loc))
        if self.strict:
            self.error(loc, "extra_forbidden", "Extra inputs are not permitted", value)

    def ignored_by_model(self, loc: list[str | int], value: Any, model: str) -> None:
        name = ".".join(str(part) for part in loc)
        self.ignored.append(name)
        if self.strict:
            self.error(
                loc,
                "feature_not_supported",
                f"{name} is ignored by {model}; remove it (the sandbox is in strict mode)",
                value,
            )

    def string(self, data: dict[str, Any], name: str, loc: list[str], *, required: bool) -> str | None:
        if name not in data:
            if required:
                self.errors.append(
                    fal_detail_item(
                        "missing", "Field required", loc=["body", *loc], input=data, with_input=True
                    )
                )
            return None
        value = data[name]
        if not isinstance(value, str):
            self.error(loc, "string_type", "Input should be a valid string", value)
            return None
        return value

    def enum(self, data: dict[str, Any], name: str, loc: list[str], values: tuple[str, ...]) -> str | None:
        if name not in data:
            return None
        value = data[name]
        if not isinstance(value, str) or value not in values:
            expected = _enum_text(values)
            self.error(loc, "enum", f"Input should be {expected}", value, {"expected": expected})
            return None
        return value

    def boolean(self, data: dict[str, Any], name: str, loc: list[str]) -> None:
        if name in data and not isinstance(data[name], bool):
            self.error(loc, "bool_type", "Input should be a valid boolean", data[name])

    def number(self, data: dict[str, Any], name: str, loc: list[str], lo: float, hi: float) -> None:
        if name not in data:
            return
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(loc, "float_type", "Input should be a valid number", value)
        elif value < lo:
            self.error(
                loc,
                "greater_than_equal",
                f"Input should be greater than or equal to {lo:g}",
                value,
                {"ge": lo},
            )
        elif value > hi:
            self.error(
                loc, "less_than_equal", f"Input should be less than or equal to {hi:g}", value, {"le": hi}
            )

    def dict_of(self, value: Any, loc: list[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(loc, "dict_type", "Input should be a valid dictionary", value)
            return None
        return value


def validate_fal_input(
    spec: EndpointSpec, body: Any, *, strict: bool
) -> tuple[FalInput | None, list[dict[str, Any]], list[str]]:
    """Check ``body`` against the endpoint: (parsed input or None, 422 detail items, ignored field paths)."""
    check = _Checker(strict)
    if not isinstance(body, dict):
        check.error([], "dict_type", "Input should be a valid dictionary", body)
        return None, check.errors, check.ignored
    video_url = check.string(body, "video_url", ["video_url"], required=True)
    audio_url = check.string(body, "audio_url", ["audio_url"], required=True)
    sync_mode = check.enum(body, "sync_mode", ["sync_mode"], SYNC_MODES) or "cut_off"
    model = spec.default_model
    if spec.has_model_field:
        model = check.enum(body, "model", ["model"], spec.models) or spec.default_model
    options: dict[str, Any] = {}
    for name in body:
        if name not in spec.fields:
            check.unknown([name], body[name])
    if spec.has_options and "options" in body:
        parsed = check.dict_of(body["options"], ["options"])
        if parsed is not None:
            options = parsed
            sync_mode = _check_options(check, parsed, model) or sync_mode
    if check.errors or video_url is None or audio_url is None:
        return None, check.errors, check.ignored
    return FalInput(video_url, audio_url, sync_mode, model, options), [], check.ignored


_OPTION_FIELDS = frozenset(
    {
        "sync_mode",
        "active_speaker_detection",
        "model_mode",
        "prompt",
        "temperature",
        "occlusion_detection_enabled",
    }
)
_SPEAKER_FIELDS = frozenset(
    {
        "auto_detect",
        "frame_number",
        "coordinates",
        "bounding_boxes",
        "bounding_boxes_url",
        "face_image",
        "v3",
        "use_v2",
    }
)


def _check_options(check: _Checker, options: dict[str, Any], model: str) -> str | None:
    sync_mode = check.enum(options, "sync_mode", ["options", "sync_mode"], SYNC_MODES)
    check.enum(options, "model_mode", ["options", "model_mode"], MODEL_MODES)
    check.enum(options, "prompt", ["options", "prompt"], PROMPTS)
    check.number(options, "temperature", ["options", "temperature"], 0.0, 1.0)
    check.boolean(options, "occlusion_detection_enabled", ["options", "occlusion_detection_enabled"])
    for name, value in options.items():
        if name not in _OPTION_FIELDS:
            check.unknown(["options", name], value)
        elif name in SYNC3_IGNORED_OPTIONS and model == "sync-3":
            check.ignored_by_model(["options", name], value, model)
    if "active_speaker_detection" in options:
        asd = check.dict_of(options["active_speaker_detection"], ["options", "active_speaker_detection"])
        if asd is not None:
            _check_speaker(check, asd)
    return sync_mode


def _check_speaker(check: _Checker, asd: dict[str, Any]) -> None:
    base = ["options", "active_speaker_detection"]
    for name in ("auto_detect", "v3", "use_v2"):
        check.boolean(asd, name, [*base, name])
    for name in ("bounding_boxes_url", "face_image"):
        check.string(asd, name, [*base, name], required=False)
    if "frame_number" in asd:
        value = asd["frame_number"]
        if isinstance(value, bool) or not isinstance(value, int):
            check.error([*base, "frame_number"], "int_type", "Input should be a valid integer", value)
        elif value < 0:
            check.error(
                [*base, "frame_number"],
                "greater_than_equal",
                "Input should be greater than or equal to 0",
                value,
                {"ge": 0},
            )
    # fal's published types: coordinates list<integer>, bounding_boxes list<list<integer>> (no null frames).
    if "coordinates" in asd:
        _check_numbers(check, asd["coordinates"], [*base, "coordinates"], 2)
    if "bounding_boxes" in asd:
        boxes = asd["bounding_boxes"]
        if not isinstance(boxes, list):
            check.error([*base, "bounding_boxes"], "list_type", "Input should be a valid list", boxes)
        else:
            for i, box in enumerate(boxes):
                _check_numbers(check, box, [*base, "bounding_boxes", i], 4)
    if ("frame_number" in asd) != ("coordinates" in asd):
        check.error(
            base, "value_error", "Value error, frame_number and coordinates must be given together", asd
        )
    for name, value in asd.items():
        if name not in _SPEAKER_FIELDS:
            check.unknown([*base, name], value)


def _check_numbers(check: _Checker, value: Any, loc: list[str | int], length: int) -> None:
    if not isinstance(value, list):
        check.error(loc, "list_type", "Input should be a valid list", value)
        return
    if len(value) != length:
        kind = "too_short" if len(value) < length else "too_long"
        bound = "at least" if kind == "too_short" else "at most"
        check.error(
            loc,
            kind,
            f"List should have {bound} {length} items after validation, not {len(value)}",
            value,
            {
                "field_type": "List",
                "min_length" if kind == "too_short" else "max_length": length,
                "actual_length": len(value),
            },
        )
        return
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            check.error([*loc, i], "int_type", "Input should be a valid integer", item)
        elif isinstance(item, float) and not item.is_integer():
            check.error(
                [*loc, i],
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
                item,
            )
