"""Offline, faithful emulator of fal's queue API, the unified task API and sync.so's API, with real MP4 output.

In-process::

    with Sandbox() as sandbox:
        fal = FalAsyncClient(key=sandbox.config.fal_key, transport=sandbox.transport())

With a clock the test moves (nothing advances until it does)::

    clock = ManualClock()
    with Sandbox(SandboxConfig(clock=clock)) as sandbox:
        ...; clock.advance(5)

On loopback::

    with Sandbox() as sandbox, serve_in_thread(sandbox) as server:
        fal = FalAsyncClient(key=..., transport=RebaseTransport(server.base_url))

See ``docs/sandbox.md`` for the wire contracts, faults and what is not emulated.
"""

from __future__ import annotations

from .app import Sandbox
from .client_config import EMULATED_PROVIDERS
from .clock import Clock, ManualClock, MonotonicClock
from .config import SandboxConfig
from .faults import Fault, FaultStats
from .jobs import JobView
from .media import SANDBOX_TAG, read_frame_indices, render_lipsync, write_sample_audio, write_sample_video
from .recording import RecordedRequest, WebhookDelivery
from .server import LoopbackServer, serve, serve_in_thread
from .webhooks import signed_message

__all__ = [
    "EMULATED_PROVIDERS",
    "SANDBOX_TAG",
    "Clock",
    "Fault",
    "FaultStats",
    "JobView",
    "LoopbackServer",
    "ManualClock",
    "MonotonicClock",
    "RecordedRequest",
    "Sandbox",
    "SandboxConfig",
    "WebhookDelivery",
    "read_frame_indices",
    "render_lipsync",
    "serve",
    "serve_in_thread",
    "signed_message",
    "write_sample_audio",
    "write_sample_video",
]
