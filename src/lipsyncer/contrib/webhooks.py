"""An ASGI app that receives provider webhooks and hands them to a client.

Mount it in any ASGI server or framework (``app.mount("/lipsync", webhook_app(client))``); providers then
deliver to ``https://your.host/lipsync/<provider-id>``. Verification is the provider's (fal: Ed25519
signature; sync.so: HMAC ``Sync-Signature`` then a look-up; unified: re-query), idempotency the job store's.
Plain ASGI: no web framework required.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..core.client import AsyncLipsyncer
from ..core.errors import ConfigError, LipsyncError, WebhookVerificationError

__all__ = ["webhook_app"]

log = logging.getLogger("lipsyncer.webhooks")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 4 * 1024 * 1024


def webhook_app(client: AsyncLipsyncer) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """``POST /<provider-id>``: 200 when handled (or a duplicate), 401 when unverifiable, 404 unknown provider."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _reply(send, 405, {"error": "POST only"})
            return
        provider_id = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        body = await _read_body(receive)
        if body is None:
            await _reply(send, 413, {"error": "body too large"})
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        url = scope["path"] + (f"?{query}" if query else "")  # lipsyncer_job=<id> resolves lost answers
        try:
            job = await client.handle_webhook(provider_id, headers, body, url=url)
        except ConfigError:
            await _reply(send, 404, {"error": f"unknown provider {provider_id!r}"})
        except WebhookVerificationError as exc:
            log.warning("rejected %s webhook: %s", provider_id, exc)
            await _reply(send, 401, {"error": "verification failed"})
        except LipsyncError as exc:
            log.error("could not handle %s webhook: %s", provider_id, exc)
            await _reply(send, 500, {"error": "not handled; deliver again"})
        else:
            await _reply(
                send, 200, {"job": job.id if job else None, "state": job.state.value if job else None}
            )

    return app


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _reply(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
