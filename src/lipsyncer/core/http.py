"""HTTP seams shared by providers, downloads and tests.

Transports are the seam, as in httpx: point a provider at the sandbox, a corporate gateway or a loopback server
by wrapping its transport, never by patching URLs inside the provider.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from .errors import InvalidRequestError

__all__ = ["BorrowedTransport", "RebaseTransport", "json_body", "pool_limits", "redact_headers"]

_SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-fal-cdn-token", "cookie", "proxy-authorization"}
)


def pool_limits(connections: int) -> httpx.Limits:
    """A connection pool that keeps ``connections`` open: httpcore closes an idle connection whenever its pool
    holds more than the keep-alive count (20 by default), so a pool keeping fewer than the requests in flight
    reconnects (TLS and all) for most of them."""
    return httpx.Limits(max_connections=max(100, connections), max_keepalive_connections=connections)


class BorrowedTransport(httpx.AsyncBaseTransport):
    """A transport someone else owns, lent: closing it (or a client built on it) leaves it open."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Left to the owner."""


class RebaseTransport(httpx.AsyncBaseTransport):
    """Send requests for the given hosts to ``base_url`` instead, keeping the original ``Host`` header.

    The provider keeps speaking in its real host names (URLs it stores and returns stay valid in production);
    only where the bytes go changes. ``hosts=None`` rebases every request. Without ``transport``, its own
    connection pool is made when first needed, and loads the CA certificates (~50 ms of CPU) only for its
    first https connection: a plain-HTTP ``base_url`` (a sandbox, a local gateway) never loads them.
    """

    def __init__(
        self,
        base_url: str,
        *,
        hosts: Iterable[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = httpx.URL(base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._base = base
        self._prefix = base.path.rstrip("/")
        self._hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self._given = transport
        self._own: httpx.AsyncHTTPTransport | None = None

    def _applies(self, url: httpx.URL) -> bool:
        if self._hosts is None:
            return True
        return url.host.lower() in self._hosts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._applies(request.url):
            original_host = request.url.netloc.decode("ascii")
            request.url = request.url.copy_with(
                scheme=self._base.scheme,
                host=self._base.host,
                port=self._base.port,
                raw_path=(self._prefix + request.url.raw_path.decode("ascii")).encode("ascii"),
            )
            request.headers["Host"] = original_host
        return await self._inner().handle_async_request(request)

    def _inner(self) -> httpx.AsyncBaseTransport:
        if self._given is not None:
            return self._given
        if self._own is None:
            from .pool import PooledTransport  # httpcore, when a request is first sent (as httpx imports it)

            self._own = PooledTransport()
        return self._own

    async def aclose(self) -> None:
        for inner in (self._given, self._own):
            if inner is not None:
                await inner.aclose()


def redact_headers(headers: httpx.Headers | dict[str, str]) -> dict[str, str]:
    """Headers safe to log or store: credentials replaced by a marker."""
    return {k: ("<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in dict(headers).items()}


def json_body(body: Any, *, what: str = "the request") -> bytes:
    """``body`` as the JSON bytes a request sends, encoded before anything leaves.

    A body JSON cannot carry (NaN or infinity, an object with no JSON form, text that is not valid Unicode)
    is a local error, raised as :class:`InvalidRequestError` naming the field: nothing was sent, so it is
    never an unknown outcome. Validation normally refuses such values earlier; this is the last check.
    """
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        where = _unencodable(body, ())
        field = ".".join(str(p) for p in where) if where else None
        raise InvalidRequestError(
            f"{what}: the body cannot be encoded as JSON"
            + (f" at {field}" if field else "")
            + f" ({type(exc).__name__}: {exc}); nothing was sent",
            field=field,
            fix="pass finite numbers and plain text (no NaN, infinity or binary values)",
        ) from None


def _unencodable(value: Any, path: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Where in ``value`` JSON fails: the path to the first value it cannot encode."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return (*path, key)
            found = _unencodable(item, (*path, key))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _unencodable(item, (*path, index))
            if found is not None:
                return found
        return None
    return path
