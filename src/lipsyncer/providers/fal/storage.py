"""fal-cdn: hosts local files on fal's CDN for providers that cannot take uploads (such as the unified API).

Enable it with ``storage = "fal-cdn"``; it needs ``FAL_KEY``. Storage settings (``[storages.fal-cdn]``) may
set ``base_url`` to send the token and upload calls to a sandbox or gateway.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from lipsyncer import MediaSource, MissingCredentialsError, Storage, StorageContext, hookimpl

from ._client import FAL_HOSTS, fal_transport
from ._queue import FalQueue

__all__ = ["FalCdnStorage", "register_storage"]


class FalCdnStorage(Storage):
    """Uploads through fal-client (``upload_file`` / ``upload``) and returns the CDN's access URL."""

    id = "fal-cdn"
    credential_env = "FAL_KEY"
    hosts = FAL_HOSTS

    def __init__(self, context: StorageContext) -> None:
        super().__init__(context)
        self._queue: FalQueue | None = None
        self._owned: httpx.AsyncBaseTransport | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r}>"

    async def put(self, media: MediaSource) -> str:
        if media.is_remote:
            return str(media.value)
        if self._queue is None:
            if self.context.api_key is None:
                raise MissingCredentialsError(self.id, self.credential_env or "FAL_KEY")
            base_url = self.context.settings.get("base_url")
            transport = fal_transport(self.context.transport, str(base_url) if base_url else None)
            self._owned = transport
            self._queue = FalQueue(
                name=self.id,
                key=self.context.api_key.get_secret_value(),
                transport=transport,
                redactor=self.context.redactor,
            )
        return await self._queue.upload(media)

    async def aclose(self) -> None:
        if self._queue is not None:
            await self._queue.aclose()
            self._queue = None
        if self._owned is not None:
            await self._owned.aclose()
            self._owned = None


@hookimpl
def register_storage(register: Callable[[type[Storage]], None]) -> None:
    register(FalCdnStorage)
