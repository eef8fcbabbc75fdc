"""``demo`` and ``sandbox serve``: the whole pipeline offline, and the emulator on a loopback port.

The demo runs the real path (router -> provider plugin -> fal-client/httpx -> sandbox -> download) with inputs
of different lengths, then checks the saved file's probed duration against the sync mode's rule.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import anyio
import typer

from ..core.media import output_duration, probe
from ..core.schema import LipsyncRequest, SyncMode
from .errors import EXIT_ERROR, Failure
from .helptext import PlainCommand, PlainGroup
from .options import ConfigOpt, ForceOpt, JsonOpt, ModelOpt, StoreOpt, SyncModeOpt
from .payloads import result_payload
from .progress import StatusProgress
from .render import Ui, money, plan_text, result_lines
from .session import ClientOptions, open_session

__all__ = ["RULES", "register"]

RULES: Mapping[SyncMode, str] = MappingProxyType(
    {
        SyncMode.CUT_OFF: "min(video, audio)",
        SyncMode.LOOP: "audio length",
        SyncMode.BOUNCE: "audio length",
        SyncMode.SILENCE: "video length",
        SyncMode.REMAP: "audio length",
    }
)
"""How each sync mode sets the output length, in words (the numbers come from ``core.media``)."""

DEMO_POLLING: Mapping[str, float] = MappingProxyType(
    {"initial_interval": 0.25, "max_interval": 1.0, "multiplier": 1.5}
)
"""The sandbox answers in about a second: poll it far more often than a real provider."""


def register(app: typer.Typer) -> None:
    app.command("demo", cls=PlainCommand)(demo_command)
    from . import APP_SETTINGS

    sandbox = typer.Typer(
        help="The offline emulator of the fal and unified APIs.", cls=PlainGroup, **APP_SETTINGS
    )
    sandbox.command("serve", cls=PlainCommand)(serve_command)
    app.add_typer(sandbox, name="sandbox")


def demo_command(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Where to write the demo's MP4 (default: ./lipsyncer-demo.mp4, numbered if it exists).",
        ),
    ] = None,
    force: ForceOpt = False,
    model: ModelOpt = "lipsync-2",
    sync_mode: SyncModeOpt = SyncMode.LOOP,
    video_seconds: Annotated[
        float, typer.Option("--video-seconds", min=0.2, help="Sample video length.")
    ] = 2.0,
    audio_seconds: Annotated[
        float, typer.Option("--audio-seconds", min=0.2, help="Sample audio length.")
    ] = 3.0,
    processing_seconds: Annotated[
        float, typer.Option("--processing-seconds", min=0.0, help="How long the sandbox 'works' on the job.")
    ] = 1.0,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", metavar="DIR", help="Keep the sample inputs here (default: a temp dir)."),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """The whole pipeline offline on the sandbox, no key.

    Runs router, provider plugin, fal-client/httpx, the in-process sandbox and the download, then checks the
    saved MP4's duration against the sync mode's rule.
    """
    from ..contrib.sandbox import write_sample_audio, write_sample_video
    from .run import output_path

    ui = Ui.create(json_mode=as_json)
    target = output_path(output, Path.cwd() / "lipsyncer-demo.mp4", force=force)
    ui.say(f"The demo writes its MP4 to {target} (choose with -o PATH)", style="bold")
    with tempfile.TemporaryDirectory(prefix="lipsyncer-demo-") as tmp:
        folder = (workdir or Path(tmp)).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        video = write_sample_video(folder / "sample-video.mp4", video_seconds)
        audio = write_sample_audio(folder / "sample-audio.wav", audio_seconds)
        ui.say(
            f"Sample inputs: {video.name} ({video_seconds:g} s) and {audio.name} ({audio_seconds:g} s) in {folder}"
        )
        request = LipsyncRequest(video=str(video), audio=str(audio), model=model, sync_mode=sync_mode)
        options = ClientOptions(
            config=config,
            store=store,
            sandbox=True,
            read_config=False,
            sandbox_settings={"processing_seconds": processing_seconds},
            overrides=None if config is not None else {"polling": dict(DEMO_POLLING)},
        )
        failure = anyio.run(_demo, ui, request, target, options)
    if failure is not None:
        ui.failure(failure)
        raise typer.Exit(failure.code)


async def _demo(ui: Ui, request: LipsyncRequest, output: Path, options: ClientOptions) -> Failure | None:
    async with open_session(options) as session:
        client = session.client
        plan = client.route(request)
        ui.show(plan_text(plan))
        estimate = plan.estimate(plan.first)
        if estimate is not None:
            ui.say(
                f"Estimated cost on {plan.first.id}: {money(estimate.amount)} for {estimate.seconds:.2f} s"
            )
        job = await client.submit(request, save_to=output)
        ui.say(f"Submitted {job.id} to {job.provider}:{job.model} (remote id {job.remote_id})")
        with StatusProgress(ui.out) as progress:
            progress.track(job)
            result = await client.wait(job, on_status=progress)
        if result.saved_to is None:
            result = await client.download(result, output)
        ui.show(result_lines(result))
        return _check(ui, request, result, estimate_amount=str(estimate.amount) if estimate else None)


def _check(ui: Ui, request: LipsyncRequest, result: Any, *, estimate_amount: str | None) -> Failure | None:
    """Probe the saved file and compare it with the sync mode's rule."""
    video_s = probe(request.video.path).duration
    audio_s = probe(request.audio.path).duration
    expected = output_duration(request.sync_mode, video_s, audio_s)
    actual = probe(result.saved_to).duration
    tolerance = 0.1  # a couple of frames at 25 fps, plus AAC priming
    ok = abs(actual - expected) <= tolerance
    mode = request.sync_mode
    ui.say(
        f"Output duration {actual:.2f} s; {mode.value} rule ({RULES[mode]}): "
        f"video {video_s:.2f} s, audio {audio_s:.2f} s -> expected {expected:.2f} s "
        + ("[ok]" if ok else "[MISMATCH]"),
        style="bold green" if ok else "bold red",
    )
    if ui.json_mode:
        payload = result_payload(result, expected_seconds=expected)
        payload.update(
            {
                "sync_mode": mode.value,
                "input_seconds": {"video": video_s, "audio": audio_s},
                "probed_seconds": actual,
                "duration_ok": ok,
                "estimated_cost": estimate_amount,
            }
        )
        ui.emit_json(payload)
    if ok:
        return None
    return Failure(
        f"the output lasts {actual:.2f} s but the {mode.value} rule gives {expected:.2f} s",
        "report this: the sandbox and core.media disagree",
        EXIT_ERROR,
    )


def serve_command(
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = 8765,
    processing_seconds: Annotated[
        float, typer.Option("--processing-seconds", min=0.0, help="Least time a job is in progress.")
    ] = 1.0,
    queue_seconds: Annotated[
        float, typer.Option("--queue-seconds", min=0.0, help="Time a job waits queued.")
    ] = 0.2,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Ids and fault coin flips derive from it (default: a fresh one per run)."
        ),
    ] = None,
    insecure_callbacks: Annotated[
        bool,
        typer.Option(
            "--insecure-callbacks",
            help="Let the unified API call back http:// loopback URLs (to try webhooks locally).",
        ),
    ] = False,
) -> None:
    """Serve the sandbox on HOST:PORT until interrupted, and print the config that points lipsyncer at it."""
    from ..contrib.sandbox import Sandbox, SandboxConfig, serve

    if port == 0:
        port = _free_port(host)
    config = SandboxConfig(
        processing_seconds=processing_seconds,
        queue_seconds=queue_seconds,
        seed=seed,
        allow_insecure_callbacks=insecure_callbacks,
    )
    ui = Ui.create()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    with Sandbox(config) as sandbox:
        ui.say(f"lipsyncer sandbox on {url} (Ctrl-C to stop)", style="bold")
        ui.say(
            f"keys it accepts: FAL_KEY={config.fal_key}  EVOLINK_API_KEY={config.unified_key}  "
            f"SYNC_API_KEY={config.syncso_key}  (sync.so webhooks signed with SYNC_WEBHOOK_SECRET="
            f"{config.syncso_webhook_secret})"
        )
        ui.say(f"seed: {sandbox.config.seed} (--seed {sandbox.config.seed} repeats this run's ids)")
        ui.say("point a config at it (a lipsyncer.toml, or --config FILE):")
        ui.say()
        ui.say(sandbox.client_config_toml(url))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after a graceful shutdown
            serve(host=host, port=port, sandbox=sandbox)
    ui.say("sandbox stopped")


def _free_port(host: str) -> int:
    """A port nothing listens on now, so the printed URL is the one served (``--port 0``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
