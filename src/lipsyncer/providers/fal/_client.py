"""fal-client's AsyncClient with a transport seam, one-shot submits, and a bounded backup-domain fallback.

fal-client builds its httpx clients internally (queue, CDN, CDN token) and its token manager even opens a
fresh client per refresh. Overriding these three members is the narrowest way to route every fal call through
a transport of ours (sandbox, gateway, loopback) while keeping fal-client's own retry and parsing logic.

Submits are sent exactly once. fal-client's ``submit`` runs the POST through its retry loop, which re-sends on
transport errors, 408/409/429 and nginx 502/503/504 pages: after the request has left, each of those may hide
a job fal queued (and bills), so a re-send could bill it twice. :meth:`FalAsyncClient.submit` sends one POST
without that loop; whether to try again (and where) is the core's decision, within its attempt budget.
Status, result and cancel keep fal-client's retries: sending a GET twice costs nothing.
:class:`SubmitGuard` still sits under the queue client, always, and turns a transport error after a submit
was sent into :class:`SubmitSent`, which is not an ``httpx.HTTPError``: no retry loop can mistake it.
Verified against fal-client 1.0.x.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import fal_client
import httpx
from asyncstdlib import cached_property as async_cached_property
from fal_client._headers import Priority, add_hint_header, add_priority_header, add_timeout_header
from fal_client.auth import FAL_QUEUE_RUN_HOST, FAL_RUN_HOST, AuthCredentials
from fal_client.client import (
    QUEUE_POLL_TIMEOUT,
    QUEUE_URL_FORMAT,
    USER_AGENT,
    AsyncCDNTokenManager,
    AsyncRequestHandle,
    CDNToken,
    _async_maybe_retry_request,
    _async_request,
    _limit_connect_timeout,
)

from ...core.http import BorrowedTransport, RebaseTransport, json_body, pool_limits
from ...core.pool import PooledTransport

__all__ = [
    "BACKUP_DOMAINS",
    "FAL_HOSTS",
    "BackupDomains",
    "FalAsyncClient",
    "SubmitGuard",
    "SubmitSent",
    "borrow",
    "fal_transport",
]

log = logging.getLogger("lipsyncer.providers.fal")

FAL_HOSTS = (
    "queue.fal.run",
    "fal.run",
    "queue.falrun.com",
    "falrun.com",
    "rest.fal.ai",
    "rest.alpha.fal.ai",
    "v3.fal.media",
    "v3b.fal.media",
    "fal.media",
)
"""Every host fal-client or fal's outputs use (``falrun.com``: fal-client's backup domains)."""

_SUBMIT_HOSTS = frozenset(
    {FAL_QUEUE_RUN_HOST, FAL_RUN_HOST, "queue.fal.run", "fal.run", "queue.falrun.com", "falrun.com"}
)
"""Hosts where a POST queues or runs a paid job."""
_QUEUE_HOSTS = frozenset({FAL_QUEUE_RUN_HOST, "queue.fal.run", "queue.falrun.com"})
_QUEUE_PREFIXES = tuple(f"https://{host}/" for host in sorted(_QUEUE_HOSTS))
"""Stored URLs as fal returns them: a prefix test needs no URL parse per look-up of thousands of jobs."""
BACKUP_DOMAINS = {"fal.run": "falrun.com", "queue.fal.run": "queue.falrun.com"}
"""fal's primary hosts and the backup each is tried on when it cannot be reached (as fal-client does)."""
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Transport errors raised before a byte of the request left: safe for fal-client to retry."""


class SubmitSent(Exception):
    """A submit left this process but its answer was lost or unreadable; the job may exist.

    Never an ``httpx.HTTPError``, so no retry loop takes it for a transport error worth repeating.
    """

    def __init__(self, url: httpx.URL, cause: Exception, *, what: str = "after the request was sent") -> None:
        super().__init__(f"POST {url.copy_with(query=None)}: {type(cause).__name__} {what}")
        self.url = url


class SubmitGuard(httpx.AsyncBaseTransport):
    """Under every queue client: a transport error after a submit was sent becomes :class:`SubmitSent`.

    Connect errors (nothing was sent) pass through as they are. Submits are not retried by anyone here
    (:meth:`FalAsyncClient.submit` sends once); the guard keeps a lost answer from ever looking like a
    transport error that some retry loop would repeat.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, *, owns_inner: bool) -> None:
        self._inner = inner
        self._owns_inner = owns_inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.host not in _SUBMIT_HOSTS:
            return await self._inner.handle_async_request(request)
        url = request.url  # inner transports may rebase the request in place
        try:
            response = await self._inner.handle_async_request(request)
        except _NOTHING_SENT:
            raise
        except httpx.TransportError as exc:
            raise SubmitSent(url, exc) from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _GuardedStream(response.stream, url)
        return response

    async def aclose(self) -> None:
        if self._owns_inner:
            await self._inner.aclose()


class _GuardedStream(httpx.AsyncByteStream):
    """The response body of a submit: losing it mid-way is as unknown an outcome as losing the headers."""

    def __init__(self, stream: httpx.AsyncByteStream, url: httpx.URL) -> None:
        self._stream = stream
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError as exc:
            raise SubmitSent(self._url, exc) from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


class BackupDomains(httpx.AsyncBaseTransport):
    """fal-client's backup-domain fallback, bounded per request and logged once per client.

    A request to ``fal.run`` or ``queue.fal.run`` whose connection cannot be made (nothing was sent) is tried
    once, and only once, on the backup domain; if that cannot connect either, the primary's error is raised.
    fal-client logs a warning for every such switch, and its retry loop runs up to ten per call: a poller
    cut off from fal would print one every few seconds for hours. Here the first switch per host is a
    warning, later ones are debug lines.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, *, connections: int = 20) -> None:
        # An httpx client, as fal-client does, so each domain goes through its own environment proxy; its pool
        # keeps ``connections`` open.
        self._client = httpx.AsyncClient(
            transport=transport or PooledTransport(limits=pool_limits(connections)), follow_redirects=False
        )
        self._warned: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _limit_connect_timeout(request)
        try:
            return await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            host = BACKUP_DOMAINS.get(request.url.host)
            if host is None:
                raise
            backup = request.url.copy_with(host=host)
            self._note(request.url, host, exc)
            headers = request.headers.copy()
            headers["Host"] = backup.netloc.decode("ascii")
            retry = httpx.Request(
                request.method,
                backup,
                headers=headers,
                stream=request.stream,
                extensions=dict(request.extensions),
            )
            try:
                return await self._client.send(retry, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise exc from None

    def _note(self, primary: httpx.URL, backup: str, exc: Exception) -> None:
        first = primary.host not in self._warned
        self._warned.add(primary.host)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "cannot connect to %s (%s); trying its backup domain %s%s",
            primary.host,
            type(exc).__name__,
            backup,
            " (said once; later switches are logged at debug level)" if first else "",
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def borrow(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncBaseTransport | None:
    """``transport`` for a short-lived ``async with httpx.AsyncClient(...)``, which would otherwise close it."""
    return None if transport is None else BorrowedTransport(transport)


def fal_transport(
    transport: httpx.AsyncBaseTransport | None, base_url: str | None
) -> httpx.AsyncBaseTransport | None:
    """The transport for fal calls: ``transport`` (borrowed, never closed here), rebased onto ``base_url``.

    The result belongs to the caller, and closing it never closes ``transport``. None means fal-client's
    default network path.
    """
    borrowed = borrow(transport)
    if base_url:
        return RebaseTransport(base_url, hosts=FAL_HOSTS, transport=borrowed)
    return borrowed


def _on_queue_host(url: str) -> bool:
    return httpx.URL(url).host in _QUEUE_HOSTS


def _parse_expiry(text: str) -> datetime:
    """fal's ``expires_at``; a trailing ``Z`` (not parsed by Python 3.10) and naive times are read as UTC."""
    when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


class _TokenManager(AsyncCDNTokenManager):
    def __init__(self, auth: AuthCredentials, transport: httpx.AsyncBaseTransport | None) -> None:
        super().__init__(auth)
        self._transport = transport

    async def _refresh_token(self) -> CDNToken:
        async with httpx.AsyncClient(transport=borrow(self._transport)) as client:
            response = await client.post(self._url, headers=self._headers, json={})
            response.raise_for_status()
            data = response.json()
        return CDNToken(
            token=data["token"],
            token_type=data["token_type"],
            base_upload_url=data["base_url"],
            expires_at=_parse_expiry(data["expires_at"]),
        )


@dataclass(unsafe_hash=True)
class FalAsyncClient(fal_client.AsyncClient):
    """``fal_client.AsyncClient`` whose every request goes through ``transport`` (None: fal's default path).

    ``transport`` is borrowed: :meth:`aclose` closes what this client built, never ``transport``. Pass ``key``
    explicitly; fal-client would otherwise read ``FAL_KEY`` or ``~/.fal`` from the process.
    """

    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False, compare=False, hash=False)
    connections: int = field(default=20, repr=False, compare=False, hash=False)
    """Connections the default network path keeps open: at least the requests this client sends at once."""

    @async_cached_property(asyncio.Lock)
    async def _client(self) -> httpx.AsyncClient:
        auth = await self._auth
        inner = BackupDomains(connections=self.connections) if self.transport is None else self.transport
        return httpx.AsyncClient(
            transport=SubmitGuard(inner, owns_inner=self.transport is None),
            headers={"Authorization": auth.header_value, "User-Agent": USER_AGENT},
            timeout=self.default_timeout,
        )

    @async_cached_property(asyncio.Lock)
    async def _token_manager(self) -> AsyncCDNTokenManager:
        return _TokenManager(await self._auth, self.transport)

    @async_cached_property(asyncio.Lock)
    async def _cdn_http(self) -> httpx.AsyncClient:
        # One for every upload; fal-client builds one per file, which loads the CA certificates (~40 ms of
        # CPU) and opens a new TLS connection each time.
        return httpx.AsyncClient(
            transport=borrow(self.transport), headers={"User-Agent": USER_AGENT}, timeout=self.default_timeout
        )

    @asynccontextmanager
    async def _cdn_client(self) -> AsyncIterator[httpx.AsyncClient]:
        yield await self._cdn_http

    async def submit(
        self,
        application: str,
        arguments: Any,
        *,
        path: str = "",
        hint: str | None = None,
        webhook_url: str | None = None,
        priority: Priority | None = None,
        headers: dict[str, str] | None = None,
        start_timeout: float | None = None,
    ) -> AsyncRequestHandle:
        """Queue a job with exactly one POST (fal-client's own ``submit`` retries it; see the module doc).

        The body is encoded before anything is sent: a body that cannot be encoded (NaN, an object JSON has
        no form for) raises :class:`~lipsyncer.core.errors.InvalidRequestError`, a local error. A 2xx answer
        that names no request raises :class:`SubmitSent`: the job may be queued all the same.
        """
        body = json_body(arguments, what=application)
        url = QUEUE_URL_FORMAT + application + ("/" + path.lstrip("/") if path else "")
        if webhook_url is not None:
            url += "?" + urlencode({"fal_webhook": webhook_url})
        sent: dict[str, str] = {**(headers or {}), "Content-Type": "application/json"}
        if hint is not None:
            add_hint_header(hint, sent)
        if priority is not None:
            add_priority_header(priority, sent)
        if start_timeout is not None:
            add_timeout_header(start_timeout, sent)
        client = await self._client
        response = await _async_request(
            client, "POST", url, content=body, timeout=self.default_timeout, headers=sent
        )
        try:
            data = response.json()
            return AsyncRequestHandle(
                request_id=data["request_id"],
                response_url=data["response_url"],
                status_url=data["status_url"],
                cancel_url=data["cancel_url"],
                client=client,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SubmitSent(
                httpx.URL(url), exc, what=f"reading a {response.status_code} answer without a request id"
            ) from exc

    async def handle(
        self,
        application: str,
        request_id: str,
        *,
        status_url: str | None = None,
        response_url: str | None = None,
        cancel_url: str | None = None,
    ) -> AsyncRequestHandle:
        """A handle for a stored job: fal's own URLs when they point at fal's queue, else derived from the ids.

        A URL on any other host is ignored, so a tampered job store cannot make us send the key elsewhere.
        """
        derived = await self.get_handle(application, request_id)
        urls = (status_url, response_url, cancel_url)
        if not all(url and (url.startswith(_QUEUE_PREFIXES) or _on_queue_host(url)) for url in urls):
            return derived
        assert status_url and response_url and cancel_url
        return AsyncRequestHandle(
            request_id=request_id,
            response_url=response_url,
            status_url=status_url,
            cancel_url=cancel_url,
            client=derived.client,
        )

    async def response(self, handle: AsyncRequestHandle) -> Any:
        """The output of a finished request in one GET (``handle.get()`` first polls status every 0.1 s)."""
        reply = await _async_maybe_retry_request(
            handle.client, "GET", handle.response_url, timeout=QUEUE_POLL_TIMEOUT
        )
        return reply.json()

    async def aclose(self) -> None:
        """Close the cached queue and upload clients (fal-client leaves them open for the process's life)."""
        for name in ("_client", "_cdn_http"):
            if name in self.__dict__:
                client = await getattr(self, name)
                await client.aclose()
