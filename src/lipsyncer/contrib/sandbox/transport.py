"""The in-process transport: httpx's ASGI transport plus the two things a real socket adds.

A connection the sandbox drops surfaces as ``httpx.RemoteProtocolError`` (as when a server closes the socket
without answering), and a response slower than the request's read timeout raises ``httpx.ReadTimeout``. Both
matter: fal-client retries transport errors by itself, and "submit outcome unknown" comes from exactly these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

__all__ = ["TRANSPORT_STATE_KEY", "ConnectionDropped", "SandboxTransport"]

TRANSPORT_STATE_KEY = "lipsyncer.sandbox.socket"
"""Key under which the loopback server puts the connection's asyncio transport into ``scope["state"]``."""


class ConnectionDropped(Exception):
    """Raised by the sandbox app when a fault drops a connection that has no socket to close."""


class SandboxTransport(httpx.AsyncBaseTransport):
    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
        self._inner = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        read = timeouts.get("read")
        try:
            if read is None:
                return await self._inner.handle_async_request(request)
            with anyio.fail_after(read):
                return await self._inner.handle_async_request(request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None
        except TimeoutError:
            raise httpx.ReadTimeout(f"the sandbox did not answer within {read} s", request=request) from None

    async def aclose(self) -> None:
        await self._inner.aclose()
