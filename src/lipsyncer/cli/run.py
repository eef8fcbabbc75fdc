"""``run``, ``route`` and ``estimate``: the same request flags, three depths of commitment.

``route`` and ``estimate`` never touch the network; ``run`` shows the plan, submits (the job is stored with its
output path before anything waits), follows the job live and saves the video.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from ..core.schema import LipsyncRequest, MediaKind, SyncMode
from .errors import CliInputError
from .helptext import PlainCommand
from .options import (
    ActiveSpeakerOpt,
    AudioArg,
    ConfigOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    ProviderOpt,
    SandboxOpt,
    StoreOpt,
    SyncModeOpt,
    TemperatureOpt,
    VideoArg,
    WebhookOpt,
    WideOpt,
    build_request,
    with_default_model,
)
from .payloads import plan_payload, result_payload
from .progress import StatusProgress
from .render import Ui, estimate_table, excluded_lines, money, plan_text, rate, result_lines
from .session import ClientOptions, open_session

if TYPE_CHECKING:  # the client (and its job store's SQLAlchemy) loads when a command runs, not to parse it
    from ..core.client import AsyncLipsyncer

__all__ = ["default_output", "output_path", "register", "run_request"]

OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help="Where to save the video (default: VIDEO-NAME.lipsync.mp4 here). An existing file is kept "
        "unless --force.",
    ),
]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Also say why every other route was excluded.")]
VideoSecondsOpt = Annotated[
    float | None,
    typer.Option("--video-seconds", metavar="S", min=0.001, help="Video length, for URLs (not probed)."),
]
AudioSecondsOpt = Annotated[
    float | None,
    typer.Option("--audio-seconds", metavar="S", min=0.001, help="Audio length, for URLs (not probed)."),
]


def register(app: typer.Typer) -> None:
    app.command("run", cls=PlainCommand)(run_command)
    app.command("route", cls=PlainCommand)(route_command)
    app.command("estimate", cls=PlainCommand)(estimate_command)


# ------------------------------------------------------------------------------------------- run


def run_command(
    video: VideoArg,
    audio: AudioArg,
    model: ModelOpt = None,
    provider: ProviderOpt = None,
    sync_mode: SyncModeOpt = SyncMode.CUT_OFF,
    temperature: TemperatureOpt = None,
    active_speaker: ActiveSpeakerOpt = None,
    webhook: WebhookOpt = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    sandbox: SandboxOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Lip-sync VIDEO to AUDIO: route, submit, follow, save.

    The job (with its output path) is stored before anything waits: `lipsyncer jobs resume` finishes it
    after a crash.
    """
    ui = Ui.create(json_mode=as_json)
    request = build_request(
        video,
        audio,
        model=model,
        provider=provider,
        sync_mode=sync_mode,
        temperature=temperature,
        active_speaker=active_speaker,
        webhook=webhook,
    )
    options = ClientOptions(config=config, store=store, sandbox=sandbox)

    async def go() -> None:
        async with open_session(options) as session:
            if session.store_note:
                ui.say(session.store_note, style="dim")
            await run_request(session.client, request, ui, output, force=force)

    anyio.run(go)


async def run_request(
    client: AsyncLipsyncer, request: LipsyncRequest, ui: Ui, output: Path | None, *, force: bool = False
) -> None:
    """The body of ``run``: every refusal (an existing ``-o`` included) happens before ``submit`` sends a byte."""
    request = with_default_model(request, client)
    save_to = default_output(request, output, client, force=force)
    plan = client.route(request)
    ui.show(plan_text(plan))
    estimate = plan.estimate(plan.first)
    if estimate is not None:
        ui.say(f"Estimated cost on {plan.first.id}: {money(estimate.amount)} for {estimate.seconds:.2f} s")
    job = await client.submit(request, save_to=save_to)
    ui.say(f"Submitted {job.id} to {job.provider}:{job.model} (remote id {job.remote_id})")
    with StatusProgress(ui.out) as progress:
        progress.track(job)
        result = await client.wait(job, on_status=progress)
    if result.saved_to is None and save_to is not None:
        result = await client.download(result, save_to)
    ui.show(result_lines(result))
    if ui.json_mode:
        ui.emit_json(result_payload(result))


def default_output(
    request: LipsyncRequest, output: Path | None, client: AsyncLipsyncer, *, force: bool = False
) -> Path | None:
    """``-o``, else the config's ``download_dir`` (the client names the file), else next to the cwd."""
    stem = Path(request.video.name or "video").stem or "video"
    if output is None and client.settings.download_dir:
        return None
    return output_path(output, Path.cwd() / f"{stem}.lipsync.mp4", force=force)


def output_path(output: Path | None, default: Path, *, force: bool) -> Path:
    """Where a command writes a file: a default never replaces anything (``name-1.mp4``, ``name-2.mp4``...);
    a path the user named is refused when it exists, unless ``--force``; a directory gets the default name."""
    if output is not None:
        output = output.expanduser()
        if output.is_dir():
            output = output / default.name
        if output.exists() and not force:
            raise CliInputError(
                f"{output} already exists", fix="pass --force to overwrite it, or choose another -o PATH"
            )
        return output.resolve()
    candidate, n = default, 1
    while candidate.exists():
        candidate = default.with_name(f"{default.stem}-{n}{default.suffix}")
        n += 1
    return candidate.resolve()


# ------------------------------------------------------------------------------------------- route


def route_command(
    video: VideoArg,
    audio: AudioArg,
    model: ModelOpt = None,
    provider: ProviderOpt = None,
    sync_mode: SyncModeOpt = SyncMode.CUT_OFF,
    temperature: TemperatureOpt = None,
    active_speaker: ActiveSpeakerOpt = None,
    webhook: WebhookOpt = None,
    explain: ExplainOpt = False,
    sandbox: SandboxOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Which routes would serve a request, in order.

    No network call; --explain says why every other route was excluded.
    """
    ui = Ui.create(json_mode=as_json)
    request = build_request(
        video,
        audio,
        model=model,
        provider=provider,
        sync_mode=sync_mode,
        temperature=temperature,
        active_speaker=active_speaker,
        webhook=webhook,
    )

    async def go() -> None:
        async with open_session(ClientOptions(config=config, sandbox=sandbox, ephemeral=True)) as session:
            plan = session.client.route(with_default_model(request, session.client))
            if explain:
                ui.show(plan_text(plan))
            else:
                for i, route in enumerate(plan.candidates, 1):
                    ui.say(f"{i}. {route.id}  ({route.model.endpoint}, {rate(route.price_per_second)})")
            if ui.json_mode:
                ui.emit_json(plan_payload(plan))

    anyio.run(go)


# ------------------------------------------------------------------------------------------- estimate


def estimate_command(
    video: VideoArg,
    audio: AudioArg,
    model: ModelOpt = None,
    provider: ProviderOpt = None,
    sync_mode: SyncModeOpt = SyncMode.CUT_OFF,
    temperature: TemperatureOpt = None,
    active_speaker: ActiveSpeakerOpt = None,
    webhook: WebhookOpt = None,
    video_seconds: VideoSecondsOpt = None,
    audio_seconds: AudioSecondsOpt = None,
    sandbox: SandboxOpt = False,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Cost per candidate route for a request.

    Local files are probed; for URLs pass --video-seconds and --audio-seconds.
    """
    ui = Ui.create(json_mode=as_json)
    request = build_request(
        video,
        audio,
        model=model,
        provider=provider,
        sync_mode=sync_mode,
        temperature=temperature,
        active_speaker=active_speaker,
        webhook=webhook,
    )

    durations = {"video": video_seconds, "audio": audio_seconds}
    for name, media in (("video", request.video), ("audio", request.audio)):
        if durations[name] is not None:
            continue
        if media.kind is not MediaKind.PATH:
            raise CliInputError(
                f"the {name} is not a local file, so its duration cannot be probed",
                fix=f"pass --{name}-seconds S (its length in seconds)",
            )
        durations[name] = _probed_seconds(name, media.path)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, sandbox=sandbox, ephemeral=True)) as session:
            plan = session.client.estimate(
                with_default_model(request, session.client),
                video_seconds=durations["video"],
                audio_seconds=durations["audio"],
            )
            ui.show(estimate_table(plan, wide=wide))
            if plan.excluded:
                ui.say("Excluded:")
                ui.show(excluded_lines(plan))
            if ui.json_mode:
                ui.emit_json(plan_payload(plan))

    anyio.run(go)


def _probed_seconds(name: str, path: Path) -> float:
    """A local file's duration, or an error naming the file and the flag that replaces probing."""
    from ..core.media import MediaProbeError, probe

    try:
        return probe(path).duration
    except MediaProbeError as exc:
        raise CliInputError(
            f"cannot read the {name}'s duration from {path}: {exc}",
            fix=f"pass a readable {name} file, or give its length with --{name}-seconds S",
        ) from None
