"""The normalized request and result schema every provider maps to and from.

Inputs forbid unknown fields: a misspelt option is an error at construction, never a silent no-op.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import mimetypes
import re
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

__all__ = [
    "ActiveSpeaker",
    "Attempt",
    "Cost",
    "EventKind",
    "Job",
    "JobEvent",
    "JobState",
    "JobStatus",
    "LipsyncRequest",
    "LipsyncResult",
    "LogEntry",
    "MediaInput",
    "MediaKind",
    "MediaSource",
    "Option",
    "ServedBy",
    "SyncMode",
    "Timings",
    "VideoFile",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SyncMode(str, Enum):
    """What happens when video and audio lengths differ (table in docs/request.md)."""

    CUT_OFF = "cut_off"
    LOOP = "loop"
    BOUNCE = "bounce"
    SILENCE = "silence"
    REMAP = "remap"


class Option(str, Enum):
    """Normalized options a route may honour; providers declare sets of these per model."""

    SYNC_MODE = "sync_mode"
    TEMPERATURE = "temperature"
    SPEAKER_AUTO = "active_speaker.auto"
    SPEAKER_POINT = "active_speaker.point"
    SPEAKER_BOXES = "active_speaker.boxes"
    SPEAKER_BOXES_URL = "active_speaker.boxes_url"
    SPEAKER_FACE_IMAGE = "active_speaker.face_image"
    MODEL_MODE = "model_mode"
    EMOTION = "emotion"
    WEBHOOK = "webhook"


class _Input(BaseModel):
    """Inputs raise :class:`InvalidRequestError` (a ``ValueError``) naming what to change, not pydantic's report."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            from .errors import InvalidRequestError

            raise InvalidRequestError.from_validation(exc, type(self).__name__) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            from .errors import InvalidRequestError

            raise InvalidRequestError.from_validation(exc, cls.__name__) from None


# --------------------------------------------------------------------------------------------- media


MediaInput = str | Path | bytes
"""A local path, an http(s) URL, a ``data:`` URI, or raw bytes."""


class MediaKind(str, Enum):
    URL = "url"
    DATA_URI = "data_uri"
    PATH = "path"
    BYTES = "bytes"


_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I
)


class MediaSource(BaseModel):
    """A validated media input. Local paths are checked to exist when the request is built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MediaKind
    value: str | bytes
    name: str | None = None

    @classmethod
    def parse(cls, value: MediaInput | MediaSource, *, field: str) -> MediaSource:
        from .errors import InvalidRequestError

        if isinstance(value, MediaSource):
            return value
        if isinstance(value, (bytes, bytearray)):
            if not value:
                raise InvalidRequestError(
                    f"{field} is empty bytes", field=field, fix="pass the file's content"
                )
            return cls(kind=MediaKind.BYTES, value=bytes(value))
        if isinstance(value, Path):
            return cls._local(value, field)
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequestError(
                f"{field} must be a local path, an http(s) URL, a data URI or bytes", field=field
            )
        text = value.strip()
        if text[:5].lower() == "data:":
            if not _DATA_URI.match(text):
                raise InvalidRequestError(
                    f"{field} is not a valid data URI", field=field, fix="use data:<mime>;base64,<payload>"
                )
            header, _, payload = text.partition(",")
            if header.lower().endswith(";base64"):
                try:
                    base64.b64decode(payload, validate=True)
                except ValueError:
                    raise InvalidRequestError(
                        f"{field} has a data URI whose base64 payload does not decode", field=field
                    ) from None
            if not payload:
                raise InvalidRequestError(f"{field} is a data URI with no payload", field=field)
            return cls(kind=MediaKind.DATA_URI, value=text)
        parts = urlsplit(text)
        if parts.scheme:
            if parts.scheme.lower() not in ("http", "https") or len(parts.scheme) == 1:
                if len(parts.scheme) == 1:  # a Windows drive letter, not a scheme
                    return cls._local(Path(text), field)
                raise InvalidRequestError(
                    f"{field} has unsupported scheme {parts.scheme!r}",
                    field=field,
                    fix="use an http(s) URL, a data URI or a local path",
                )
            if not parts.hostname or " " in text:
                raise InvalidRequestError(f"{field} is not a valid URL: {text!r}", field=field)
            return cls(kind=MediaKind.URL, value=text, name=Path(parts.path).name or None)
        return cls._local(Path(text), field)

    @classmethod
    def _local(cls, path: Path, field: str) -> MediaSource:
        """A local file that exists; the file system's refusals (a name too long, no permission to look,
        a directory) become InvalidRequestError naming the field, never a bare OSError."""
        from .errors import InvalidRequestError

        try:
            path = path.expanduser()
            if path.is_dir():
                raise InvalidRequestError(
                    f"{field} is a directory, not a file: {path}",
                    field=field,
                    fix="pass the media file itself",
                )
            if not path.is_file():
                raise InvalidRequestError(
                    f"{field} file not found: {path}", field=field, fix="check the path, or pass a URL"
                )
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: "~" with no home directory
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            shown = str(path) if len(str(path)) <= 120 else str(path)[:117] + "..."
            raise InvalidRequestError(
                f"{field} path cannot be used ({reason}): {shown}",
                field=field,
                fix="check the path: each name at most 255 bytes, a file you may read, or pass a URL",
            ) from None
        return cls(kind=MediaKind.PATH, value=str(resolved), name=path.name)

    @property
    def is_remote(self) -> bool:
        """True when a provider can fetch it as is (URL or data URI)."""
        return self.kind in (MediaKind.URL, MediaKind.DATA_URI)

    @property
    def path(self) -> Path:
        if self.kind is not MediaKind.PATH:
            raise TypeError("not a local file")
        return Path(str(self.value))

    def decoded(self) -> MediaSource:
        """A data URI's payload as in-memory bytes, named after its MIME type so a storage can label it."""
        if self.kind is not MediaKind.DATA_URI:
            raise TypeError("not a data URI")
        header, _, payload = str(self.value).partition(",")
        mime = header[5:].split(";", 1)[0] or "application/octet-stream"
        data = base64.b64decode(payload) if header.lower().endswith(";base64") else unquote_to_bytes(payload)
        return MediaSource(
            kind=MediaKind.BYTES, value=data, name="media" + (mimetypes.guess_extension(mime) or ".bin")
        )

    def fingerprint(self) -> str:
        """Stable identity for de-duplication: URL text, or a hash of local content."""
        if self.kind is MediaKind.PATH:
            digest = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            return "sha256:" + digest.hexdigest()
        if self.kind is MediaKind.BYTES:
            assert isinstance(self.value, bytes)
            return "sha256:" + hashlib.sha256(self.value).hexdigest()
        return str(self.value)

    def describe(self) -> str:
        if self.kind is MediaKind.URL:
            return str(self.value)
        if self.kind is MediaKind.PATH:
            return str(self.value)
        if self.kind is MediaKind.DATA_URI:
            return f"<data URI, {len(self.value)} chars>"
        return f"<{len(self.value)} bytes>"

    @field_serializer("value")
    def _ser_value(self, value: str | bytes) -> str:
        if isinstance(value, bytes):
            return "base64:" + base64.b64encode(value).decode()
        return value


# --------------------------------------------------------------------------------------------- speaker

SpeakerMode = Literal["auto", "point", "boxes", "boxes_url", "face_image"]
Box = tuple[int, int, int, int]
"""``(x1, y1, x2, y2)`` in whole pixels."""


def _pixel(value: Any, where: str, unit: str = "pixels") -> int:
    """A pixel coordinate: an int, or a float with no fractional part (``80.0``); anything else is refused.

    fal v3 and sync.so take integers; rounding silently would point at a different face than the caller's.
    """
    from .errors import InvalidRequestError

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(
            f"active_speaker {where} must be a whole number of {unit}, got {value!r}",
            field="active_speaker",
            fix="pass integers, e.g. ActiveSpeaker.at(0, 412, 230)",
        )
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidRequestError(
            f"active_speaker {where} must be a whole number of {unit}, got {value!r}",
            field="active_speaker",
            fix=f"round it, e.g. {round(value) if math.isfinite(value) else 0}",
        )
    return int(value)


def _pixels(value: Any, size: int, where: str) -> tuple[int, ...]:
    from .errors import InvalidRequestError

    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != size:
        shape = "[x, y]" if size == 2 else "[x1, y1, x2, y2]"
        raise InvalidRequestError(
            f"active_speaker {where} must be {shape} in pixels, got {value!r}",
            field="active_speaker",
            fix=f"pass {size} whole numbers",
        )
    return tuple(_pixel(v, where) for v in value)


class ActiveSpeaker(_Input):
    """Which face to animate when several are visible: automatic, or exactly one explicit hint.

    Coordinates and boxes are whole pixels: ints, or floats without a fractional part (``80.0``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    auto: bool = False
    frame_number: int | None = Field(default=None, ge=0)
    coordinates: tuple[int, int] | None = None
    bounding_boxes: list[Box | None] | None = None
    bounding_boxes_url: str | None = None
    face_image: str | None = Field(default=None, description="base64 image, data URI, or local image path")

    @field_validator("frame_number", mode="before")
    @classmethod
    def _frame(cls, value: Any) -> Any:
        return None if value is None else _pixel(value, "frame_number", "frames")

    @field_validator("coordinates", mode="before")
    @classmethod
    def _point(cls, value: Any) -> Any:
        return None if value is None else _pixels(value, 2, "coordinates")

    @field_validator("bounding_boxes", mode="before")
    @classmethod
    def _boxes(cls, value: Any) -> Any:
        from .errors import InvalidRequestError

        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise InvalidRequestError(
                f"active_speaker bounding_boxes must be a list of [x1, y1, x2, y2] (or null), got {value!r}",
                field="active_speaker",
            )
        return [None if box is None else _pixels(box, 4, f"bounding box {i}") for i, box in enumerate(value)]

    @model_validator(mode="after")
    def _exactly_one(self) -> ActiveSpeaker:
        from .errors import InvalidRequestError

        point = self.frame_number is not None or self.coordinates is not None
        if point and (self.frame_number is None or self.coordinates is None):
            raise InvalidRequestError(
                "active_speaker point mode needs both frame_number and coordinates",
                field="active_speaker",
                fix="pass ActiveSpeaker.at(frame, x, y)",
            )
        chosen = [
            name
            for name, on in (
                ("auto", self.auto),
                ("point", point),
                ("boxes", self.bounding_boxes is not None),
                ("boxes_url", self.bounding_boxes_url is not None),
                ("face_image", self.face_image is not None),
            )
            if on
        ]
        if len(chosen) != 1:
            raise InvalidRequestError(
                "active_speaker takes exactly one of: auto, frame + point, bounding boxes, "
                f"bounding boxes URL, face image (got {', '.join(chosen) or 'none'})",
                field="active_speaker",
                fix="keep one mode",
            )
        if self.bounding_boxes is not None:
            if not self.bounding_boxes or all(b is None for b in self.bounding_boxes):
                raise InvalidRequestError(
                    "active_speaker bounding_boxes needs at least one box", field="active_speaker"
                )
            for box in self.bounding_boxes:
                if box is not None and not (box[0] < box[2] and box[1] < box[3]):
                    raise InvalidRequestError(
                        f"bounding box {list(box)} is not [x1, y1, x2, y2] with x1 < x2 and y1 < y2",
                        field="active_speaker",
                    )
        if self.coordinates is not None and min(self.coordinates) < 0:
            raise InvalidRequestError(
                "active_speaker coordinates must be non-negative", field="active_speaker"
            )
        if any(box is not None and min(box) < 0 for box in self.bounding_boxes or ()):
            raise InvalidRequestError(
                "active_speaker bounding boxes must be non-negative", field="active_speaker"
            )
        if self.bounding_boxes_url is not None:
            src = MediaSource.parse(self.bounding_boxes_url, field="active_speaker.bounding_boxes_url")
            if src.kind is not MediaKind.URL:
                raise InvalidRequestError(
                    "active_speaker bounding_boxes_url must be an http(s) URL", field="active_speaker"
                )
        return self

    @property
    def mode(self) -> SpeakerMode:
        if self.auto:
            return "auto"
        if self.frame_number is not None:
            return "point"
        if self.bounding_boxes is not None:
            return "boxes"
        if self.bounding_boxes_url is not None:
            return "boxes_url"
        return "face_image"

    @property
    def option(self) -> Option:
        return Option(f"active_speaker.{self.mode}")

    @classmethod
    def automatic(cls) -> ActiveSpeaker:
        return cls(auto=True)

    @classmethod
    def at(cls, frame: int, x: float, y: float) -> ActiveSpeaker:
        """The face at pixel ``(x, y)`` of frame ``frame`` (whole pixels; ``80.0`` is read as ``80``)."""
        return cls(frame_number=frame, coordinates=(x, y))

    @classmethod
    def boxes(cls, boxes: list[tuple[float, float, float, float] | None]) -> ActiveSpeaker:
        """One ``(x1, y1, x2, y2)`` box per frame, ``None`` for a frame without it (whole pixels)."""
        return cls(bounding_boxes=boxes)

    @classmethod
    def boxes_from(cls, url: str) -> ActiveSpeaker:
        return cls(bounding_boxes_url=url)

    @classmethod
    def face(cls, image: str) -> ActiveSpeaker:
        return cls(face_image=image)

    def face_image_base64(self) -> str | None:
        """The face image as plain base64, reading a local path when one was given."""
        if self.face_image is None:
            return None
        text = self.face_image
        if text.startswith("data:"):
            return text.partition(",")[2]
        try:
            candidate = Path(text).expanduser()
            if len(text) < 4096 and candidate.is_file():
                return base64.b64encode(candidate.read_bytes()).decode()
        except (OSError, RuntimeError):  # not a usable path (e.g. a base64 string longer than a file name)
            pass
        return text


# --------------------------------------------------------------------------------------------- request


def check_model_id(value: str) -> str:
    """A canonical model id or ``provider:model``; shared by requests and the config's default."""
    from .errors import InvalidRequestError

    value = value.strip()
    if not value or value.count(":") > 1 or value.startswith(":") or value.endswith(":"):
        raise InvalidRequestError(
            f"model {value!r} is not a model id or 'provider:model'",
            field="model",
            fix="e.g. 'lipsync-2-pro' or 'fal-v2-pro:lipsync-2-pro'",
        )
    return value


class LipsyncRequest(_Input):
    """One lip-sync job, provider-neutral. Validation here runs before any network call."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    video: MediaSource
    audio: MediaSource
    model: str | None = Field(
        default=None,
        description="canonical model id, or 'provider:model' to pin a provider; None: the config's `model`",
    )
    sync_mode: SyncMode = SyncMode.CUT_OFF
    temperature: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    active_speaker: ActiveSpeaker | None = None
    model_mode: str | None = None
    emotion: str | None = None
    webhook_url: str | None = None
    max_cost: Decimal | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="USD: routes estimated to cost more are excluded"
    )
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("video", "audio", mode="before")
    @classmethod
    def _media(cls, value: Any, info: Any) -> MediaSource:
        return MediaSource.parse(value, field=info.field_name)

    @field_validator("active_speaker", mode="before")
    @classmethod
    def _speaker(cls, value: Any) -> Any:
        if value is True:
            return ActiveSpeaker(auto=True)
        if value is False:
            return None
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        return None if value is None else check_model_id(value)

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        from .errors import InvalidRequestError

        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequestError(
                f"webhook_url must be an http(s) URL, got {value!r}", field="webhook_url"
            )
        return value

    @property
    def pinned_provider(self) -> str | None:
        return self.model.partition(":")[0] if self.model and ":" in self.model else None

    @property
    def model_id(self) -> str:
        if self.model is None:
            from .errors import InvalidRequestError

            raise InvalidRequestError(
                "the request names no model and the config sets none",
                field="model",
                fix="pass model=... or set `model` in the config",
            )
        return self.model.rpartition(":")[2]

    def options(self) -> frozenset[Option]:
        """The normalized options this request sets; a route must honour every one of them."""
        opts = {Option.SYNC_MODE}
        if self.temperature is not None:
            opts.add(Option.TEMPERATURE)
        if self.active_speaker is not None:
            opts.add(self.active_speaker.option)
        if self.model_mode is not None:
            opts.add(Option.MODEL_MODE)
        if self.emotion is not None:
            opts.add(Option.EMOTION)
        if self.webhook_url is not None:
            opts.add(Option.WEBHOOK)
        return frozenset(opts)

    def fingerprint(self) -> str:
        """A hash of what is billed: the same fingerprint means the same job would be paid twice."""
        data = self.model_dump(mode="json", exclude={"video", "audio", "metadata", "max_cost"})
        data["video"] = self.video.fingerprint()
        data["audio"] = self.audio.fingerprint()
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def summary(self) -> dict[str, Any]:
        """A log- and store-safe view: no media payloads, no secrets."""
        data = self.model_dump(mode="json", exclude={"video", "audio"})
        data["video"] = self.video.describe()
        data["audio"] = self.audio.describe()
        return data


# --------------------------------------------------------------------------------------------- status


class JobState(str, Enum):
    SUBMITTING = "submitting"
    """Write-ahead: the row exists, the submit may be on its way; no answer stored yet."""
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class LogEntry(BaseModel):
    message: str
    level: str | None = None
    source: str | None = None
    timestamp: str | None = None


class JobStatus(BaseModel):
    state: JobState
    progress: float | None = Field(default=None, ge=0, le=100)
    queue_position: int | None = None
    logs: list[LogEntry] = Field(default_factory=list)
    raw_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    observed_at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------------------------- result


class VideoFile(BaseModel):
    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    num_frames: int | None = None
    expires_at: datetime | None = None


class ServedBy(BaseModel):
    provider: str
    model: str
    endpoint: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model} ({self.endpoint})"


class Attempt(BaseModel):
    """One try at one route. ``may_have_been_billed`` is true once the provider could have accepted the job."""

    provider: str
    model: str
    endpoint: str | None = None
    remote_id: str | None = None
    error: str | None = Field(default=None, description="error class name; None for the attempt that served")
    message: str | None = None
    retryable: bool | None = None
    duration: float = 0.0
    may_have_been_billed: bool = False
    started_at: datetime = Field(default_factory=utcnow)


class Cost(BaseModel):
    amount: Decimal
    currency: str = "USD"
    seconds: float
    price_per_second: Decimal
    basis: Literal["output_duration", "estimate"] = "output_duration"

    @classmethod
    def of(
        cls, price_per_second: Decimal, seconds: float, basis: Literal["output_duration", "estimate"]
    ) -> Cost:
        amount = (price_per_second * Decimal(str(round(seconds, 3)))).quantize(Decimal("0.0001"))
        return cls(amount=amount, seconds=seconds, price_per_second=price_per_second, basis=basis)

    def __str__(self) -> str:
        return f"${self.amount:.4f} ({self.seconds:.2f} s at ${self.price_per_second}/s, {self.basis})"


class Timings(BaseModel):
    submitted_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def elapsed(self) -> float | None:
        if self.completed_at is None:
            return None
        return (self.completed_at - self.submitted_at).total_seconds()


class LipsyncResult(BaseModel):
    video: VideoFile
    served_by: ServedBy
    remote_id: str
    job_id: str
    attempts: list[Attempt] = Field(default_factory=list)
    cost: Cost | None = None
    timings: Timings
    saved_to: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------------------------- job


class Job(BaseModel):
    """The durable handle of a paid job: enough to resume it from another process."""

    id: str
    provider: str
    model: str
    endpoint: str
    remote_id: str | None = Field(
        default=None, description="None while submitting, and when the submit's outcome is unknown"
    )
    version: int = Field(default=0, description="bumped by every stored transition (compare-and-swap)")
    sends: int = Field(
        default=0,
        description="submit requests that may have left (counted before each leaves); 0: never sent",
    )
    idempotency_key: str | None = Field(
        default=None, description="the caller's key, else the job id: one job per key per store"
    )
    target: str | None = Field(
        default=None,
        description="where the provider's requests went (its base_url, or 'transport' for a custom one); "
        "None: the provider's real hosts. A resume that would send them elsewhere is refused.",
    )
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None
    request_fingerprint: str
    request: dict[str, Any] = Field(default_factory=dict, description="LipsyncRequest.summary()")
    submitted_at: datetime = Field(default_factory=utcnow)
    state: JobState = JobState.QUEUED
    last_status: JobStatus | None = None
    webhook_url: str | None = None
    save_to: str | None = Field(default=None, description="where to save the video once completed")
    attempts: list[Attempt] = Field(default_factory=list)
    result: LipsyncResult | None = None
    error_code: str | None = None
    error_message: str | None = None
    provider_data: dict[str, Any] = Field(default_factory=dict)
    poller: str | None = Field(
        default=None,
        description="on a task queue, the poll chain that owns the job's look-ups (None: the first one); "
        "a chain finding another here stops, so restarting a job's polls never multiplies them",
    )
    updated_at: datetime = Field(default_factory=utcnow)


EventKind = Literal[
    "submitted", "unknown", "status", "completed", "failed", "cancelled", "attempt_failed", "downloaded"
]


class JobEvent(BaseModel):
    """What observers of the ``job_event`` hook receive."""

    kind: EventKind
    job_id: str | None
    provider: str
    model: str
    status: JobStatus | None = None
    attempt: Attempt | None = None
    message: str | None = None
    estimated_cost: Cost | None = Field(default=None, description="from the route's price and media lengths")
    cost: Cost | None = Field(default=None, description="the actual cost, once the output's length is known")
    at: datetime = Field(default_factory=utcnow)
