"""``demo`` and ``sandbox serve``: the whole pipeline offline, and the emulator on a loopback port.

The demo runs the real path (router -> provider plugin -> fal-client/httpx -> sandbox -> download) with inputs
of different lengths, then checks the saved file's probed duration against the sync mode's rule.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import anyio
import typer

from ..core.media import output_duration, probe
from ..core.plugins import PluginHost
from ..core.schema import LipsyncRequest, SyncMode
from .errors import EXIT_ERROR, Failure
from .options import ConfigOpt, JsonOpt, ModelOpt, StoreOpt, SyncModeOpt
from .payloads import result_payload
from .progress import StatusProgress
from .render import Ui, plan_text, result_lines
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
    app.command("demo")(demo_command)
    sandbox = typer.Typer(
        help="The offline emulator of the fal queue and unified task APIs.", no_args_is_help=True
    )
    sandbox.command("serve")(serve_command)
    app.add_typer(sandbox, name="sandbox")


def demo_command(
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="PATH", help="Where to write the demo's MP4.")
    ] = Path("lipsyncer-demo.mp4"),
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
    """Run the real pipeline offline against the in-process sandbox, no key needed, and check the output."""
    from ..contrib.sandbox import write_sample_audio, write_sample_video

    ui = Ui.create(json_mode=as_json)
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
        failure = anyio.run(_demo, ui, request, output.expanduser().resolve(), options)
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
            ui.say(f"Estimated cost on {plan.first.id}: ${estimate.amount:.4f} for {estimate.seconds:.2f} s")
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
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8765,
    processing_seconds: Annotated[
        float, typer.Option("--processing-seconds", min=0.0, help="Least time a job is in progress.")
    ] = 1.0,
    queue_seconds: Annotated[
        float, typer.Option("--queue-seconds", min=0.0, help="Time a job waits queued.")
    ] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Ids and fault coin flips derive from it.")] = 0,
) -> None:
    """Serve the sandbox on HOST:PORT until interrupted (point providers' base_url at it)."""
    from ..contrib.sandbox import SandboxConfig, serve

    config = SandboxConfig(processing_seconds=processing_seconds, queue_seconds=queue_seconds, seed=seed)
    ui = Ui.create()
    url = f"http://{host}:{port}"
    ui.say(f"lipsyncer sandbox on {url} (Ctrl-C to stop)", style="bold")
    ui.say(
        f"keys it accepts: FAL_KEY={config.fal_key}  EVOLINK_API_KEY={config.unified_key}  "
        f"SYNC_API_KEY={config.syncso_key}  (sync.so webhooks signed with SYNC_WEBHOOK_SECRET="
        f"{config.syncso_webhook_secret})"
    )
    ui.say("point a config at it:")
    for pid in sorted(PluginHost().providers):
        ui.say(f'  [providers.{pid}]\n  base_url = "{url}"')
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after a graceful shutdown
        serve(config, host, port)
    ui.say("sandbox stopped")
