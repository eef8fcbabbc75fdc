"""Flags shared by several commands, and turning them into a :class:`LipsyncRequest`.

All request validation is the schema's: the CLI only parses shapes (``X,Y@FRAME``, a boxes file), so the
command line and the Python API refuse exactly the same inputs with the same messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..core.schema import ActiveSpeaker, LipsyncRequest, SyncMode
from .errors import CliInputError

if TYPE_CHECKING:
    from ..core.client import AsyncLipsyncer

__all__ = [
    "DEFAULT_MODEL",
    "ActiveSpeakerOpt",
    "AudioArg",
    "ConfigOpt",
    "ForceOpt",
    "JsonOpt",
    "ModelOpt",
    "ProviderOpt",
    "SandboxOpt",
    "StoreOpt",
    "SyncModeOpt",
    "TemperatureOpt",
    "VideoArg",
    "WebhookOpt",
    "WideOpt",
    "build_request",
    "parse_active_speaker",
    "with_default_model",
]

DEFAULT_MODEL = "lipsync-2"

VideoArg = Annotated[
    str, typer.Argument(metavar="VIDEO", help="Video: a local file, an http(s) URL or a data URI.")
]
AudioArg = Annotated[
    str, typer.Argument(metavar="AUDIO", help="Audio: a local file, an http(s) URL or a data URI.")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Model id (e.g. lipsync-2-pro, sync-3), or 'provider:model' to pin. Default: the config's `model`, "
        f"else {DEFAULT_MODEL}.",
    ),
]
ProviderOpt = Annotated[
    str | None,
    typer.Option(
        "--provider",
        "-p",
        metavar="ID",
        help="Pin the provider (same as -m PROVIDER:MODEL; with no -m, MODEL is lipsync-2).",
    ),
]
SyncModeOpt = Annotated[
    SyncMode,
    typer.Option(
        "--sync-mode",
        case_sensitive=False,
        metavar="MODE",
        help="What happens when video and audio lengths differ: "
        + ", ".join(m.value for m in SyncMode)
        + ".",
    ),
]
TemperatureOpt = Annotated[
    float | None,
    typer.Option("--temperature", metavar="T", help="Expressiveness 0..1 (only models that honour it)."),
]
ActiveSpeakerOpt = Annotated[
    str | None,
    typer.Option(
        "--active-speaker",
        metavar="auto|X,Y@FRAME|BOXES.json|URL",
        help="Which face to animate: auto, a point on a frame, a JSON file of per-frame boxes, or its URL.",
    ),
]
WebhookOpt = Annotated[
    str | None, typer.Option("--webhook", metavar="URL", help="Ask the provider to POST completion here.")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="PATH", help="A lipsyncer TOML config (else the usual places)."),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="PATH|URL",
        help="Job store: a SQLite path or a postgresql:// URL (default: config / data dir).",
    ),
]
SandboxOpt = Annotated[
    bool,
    typer.Option("--sandbox", help="Use an in-process sandbox: no key needed, nothing leaves the process."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
WideOpt = Annotated[
    bool, typer.Option("--wide", help="Every column, whatever the terminal's width (default: fit it).")
]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file.")]


def build_request(
    video: str,
    audio: str,
    *,
    model: str | None,
    provider: str | None = None,
    sync_mode: SyncMode = SyncMode.CUT_OFF,
    temperature: float | None = None,
    active_speaker: str | None = None,
    webhook: str | None = None,
) -> LipsyncRequest:
    """The request the flags describe; the schema raises :class:`InvalidRequestError` for bad values."""
    if provider is not None:
        model = model or DEFAULT_MODEL  # a pin names its model: -p alone means the CLI default
        pinned, _, bare = model.rpartition(":")
        if pinned and pinned != provider:
            raise CliInputError(
                f"--provider {provider} conflicts with --model {model}",
                fix=f"pass either -p {provider} -m {bare} or -m {model}",
            )
        model = f"{provider}:{bare}"
    _not_a_directory("video", video)
    _not_a_directory("audio", audio)
    fields: dict[str, Any] = {"video": video, "audio": audio, "model": model, "sync_mode": sync_mode}
    if temperature is not None:
        fields["temperature"] = temperature
    if active_speaker is not None:
        fields["active_speaker"] = parse_active_speaker(active_speaker)
    if webhook is not None:
        fields["webhook_url"] = webhook
    return LipsyncRequest(**fields)


_MEDIA_SUFFIXES = {
    "video": (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"),
    "audio": (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus"),
}


def _not_a_directory(name: str, value: str) -> None:
    """A directory is not a missing file: say what it is, and name a file inside it that would do."""
    if "://" in value or value.startswith("data:"):
        return
    folder = Path(value).expanduser()
    if not folder.is_dir():
        return
    inside = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _MEDIA_SUFFIXES[name])
    example = f", e.g. {folder / inside[0]}" if inside else ""
    raise CliInputError(
        f"the {name} {value} is a directory, not a file", fix=f"name a {name} file{example}, or pass a URL"
    )


def parse_active_speaker(text: str) -> ActiveSpeaker:
    """``auto``, ``X,Y@FRAME``, a local JSON file of boxes, or an http(s) URL of one."""
    value = text.strip()
    if value.lower() == "auto":
        return ActiveSpeaker.automatic()
    if value.lower().startswith(("http://", "https://")):
        return ActiveSpeaker.boxes_from(value)
    if "@" in value:
        point, _, frame = value.partition("@")
        try:
            x, y = (float(v) for v in point.split(","))
            return ActiveSpeaker.at(int(frame), x, y)
        except ValueError:
            raise CliInputError(
                f"--active-speaker {text!r} is not X,Y@FRAME", fix="e.g. --active-speaker 320,180@0"
            ) from None
    path = Path(value).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        return ActiveSpeaker.boxes(_read_boxes(path))
    raise CliInputError(
        f"--active-speaker {text!r} is not auto, X,Y@FRAME, a boxes .json file or a URL",
        fix="e.g. --active-speaker auto",
    )


def _read_boxes(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliInputError(f"--active-speaker file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise CliInputError(f"--active-speaker file {path} is not readable JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("bounding_boxes")
    if not isinstance(data, list):
        raise CliInputError(
            f"--active-speaker file {path} must hold a list of [x1, y1, x2, y2] boxes (or null) per frame",
            fix='e.g. [[10, 20, 110, 140], null, [12, 20, 112, 140]] or {"bounding_boxes": [...]}',
        )
    return [tuple(box) if isinstance(box, list) else box for box in data]


def with_default_model(request: LipsyncRequest, client: AsyncLipsyncer) -> LipsyncRequest:
    """No -m and no `model` in the config: the CLI's own default, so a bare `lipsyncer run` still works."""
    if request.model is None and client.settings.model is None:
        return request.model_copy(update={"model": DEFAULT_MODEL})
    return client.resolve_request(request)
