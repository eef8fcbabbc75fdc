"""fal-client's AsyncClient with a transport seam.

fal-client builds its httpx clients internally (queue, CDN, CDN token) and its token manager even opens a
fresh client per refresh. Overriding these three members is the narrowest way to route every fal call through
a transport of ours (sandbox, gateway, loopback) while keeping fal-client's own retry and parsing logic.
Verified against fal-client 1.0.x.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import fal_client
import httpx
from asyncstdlib import cached_property as async_cached_property
from fal_client.client import USER_AGENT, AsyncCDNTokenManager, CDNToken

__all__ = ["FAL_HOSTS", "FalAsyncClient"]

FAL_HOSTS = ("queue.fal.run", "fal.run", "rest.fal.ai", "rest.alpha.fal.ai", "v3.fal.media", "fal.media")


class _TokenManager(AsyncCDNTokenManager):  # type: ignore[misc]
    def __init__(self, auth: Any, transport: httpx.AsyncBaseTransport | None) -> None:
        super().__init__(auth)
        self._transport = transport

    async def _refresh_token(self) -> CDNToken:
        async with httpx.AsyncClient(transport=self._transport) as client:
            response = await client.post(self._url, headers=self._headers, json={})
            response.raise_for_status()
            data = response.json()
        return CDNToken(
            token=data["token"],
            token_type=data["token_type"],
            base_upload_url=data["base_url"],
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )


@dataclass(unsafe_hash=True)
class FalAsyncClient(fal_client.AsyncClient):  # type: ignore[misc]
    """``fal_client.AsyncClient`` whose every request goes through ``transport`` (None: fal-client's default)."""

    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False, compare=False, hash=False)

    @async_cached_property(asyncio.Lock)
    async def _client(self) -> httpx.AsyncClient:
        if self.transport is None:
            return await super()._client  # type: ignore[no-any-return]
        auth = await self._auth
        return httpx.AsyncClient(
            transport=self.transport,
            headers={"Authorization": auth.header_value, "User-Agent": USER_AGENT},
            timeout=self.default_timeout,
        )

    @async_cached_property(asyncio.Lock)
    async def _token_manager(self) -> AsyncCDNTokenManager:
        return _TokenManager(await self._auth, self.transport)

    @asynccontextmanager
    async def _cdn_client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            transport=self.transport, headers={"User-Agent": USER_AGENT}, timeout=self.default_timeout
        ) as client:
            yield client

    async def aclose(self) -> None:
        """Close the cached queue client (fal-client leaves it open for the process's life)."""
        if "_client" in self.__dict__:
            client = await self._client
            await client.aclose()
