"""Running the sandbox on a real loopback socket: in a background thread for tests, or blocking for the CLI.

uvicorn serves the same ASGI app; a small protocol subclass exposes each connection's socket to the app so a
``drop_connection`` fault can abort it, which is what a client sees when a real server dies mid-request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import Sandbox
from .config import SandboxConfig
from .transport import TRANSPORT_STATE_KEY

__all__ = ["LoopbackServer", "serve", "serve_in_thread"]

log = logging.getLogger(__name__)


class _SocketAwareProtocol(H11Protocol):
    """uvicorn's h11 protocol, putting the connection's transport into every request's ``scope["state"]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app_state = {**self.app_state, TRANSPORT_STATE_KEY: transport}


@dataclass(frozen=True)
class LoopbackServer:
    host: str
    port: int
    base_url: str
    sandbox: Sandbox


def _uvicorn_config(sandbox: Sandbox, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        sandbox.app,
        host=host,
        port=port,
        lifespan="off",
        interface="asgi3",
        log_level=log_level,
        access_log=False,
        http=_SocketAwareProtocol,
        ws="none",
        loop="asyncio",
        timeout_graceful_shutdown=2,
        backlog=1024,
    )


@contextmanager
def serve_in_thread(
    sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
) -> Iterator[LoopbackServer]:
    """Serve ``sandbox`` on ``host:port`` (0: any free port) from a daemon thread until the block exits."""
    server = uvicorn.Server(_uvicorn_config(sandbox, host, port, log_level))
    thread = threading.Thread(target=server.run, name="lipsyncer-sandbox-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the sandbox server could not start on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the sandbox server did not start within 15 s")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield LoopbackServer(host=host, port=bound, base_url=f"http://{shown}:{bound}", sandbox=sandbox)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(
    config: SandboxConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    log_level: str = "info",
    sandbox: Sandbox | None = None,
) -> None:
    """Run a sandbox on ``host:port`` until interrupted (what ``lipsyncer sandbox serve`` calls).

    ``sandbox``: serve this one (the caller closes it) instead of building one from ``config``.
    """
    if sandbox is not None:
        if config is not None:
            raise ValueError("give config or sandbox, not both")
        _run(sandbox, host, port, log_level)
        return
    with Sandbox(config) as owned:
        _run(owned, host, port, log_level)


def _run(sandbox: Sandbox, host: str, port: int, log_level: str) -> None:
    server = uvicorn.Server(_uvicorn_config(sandbox, host, port, log_level))
    log.info("lipsyncer sandbox on http://%s:%s (seed %s)", host, port, sandbox.config.seed)
    server.run()
