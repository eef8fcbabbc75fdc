"""The connection pool lipsyncer's own HTTP transports use: httpcore's, handing each idle connection to one request.

httpcore 1.0's pool (``_assign_requests_to_connections``) hands an idle HTTP/1.1 connection to *every* request
that is waiting when it runs, and the connection stays idle until the first of them starts on it. All the others
then fail with ``ConnectionNotAvailable``, queue again and run the pass again, which scans every waiting request
against every connection. With a few dozen requests arriving together (a batch's due look-ups), most of the CPU
of a run goes there, and the pool keeps reusing a handful of connections instead of opening the ones it may.
Its surplus keep-alive and expiry checks also count all connections instead of the idle ones, and may close a
connection already handed to a request: the close runs after the pass, and if the request started on it in
between, the socket is closed under a request that was sent (encode/httpcore issues #1035 and #1110). A fal
submit lost so is a job that may be billed with no answer; under load the bench lost about one in a thousand.

:class:`PooledTransport` is ``httpx.AsyncHTTPTransport`` with a pool whose pass hands each idle connection to
one waiting request, opens new connections (up to ``max_connections``) for the rest, and closes only idle
connections no request holds. Everything else (connecting, HTTP/1.1, timeouts, errors) is httpcore's and httpx's.
It speaks HTTP/1.1 only, as every pool lipsyncer builds does.

It also keeps a submit off a connection that may be going stale. A server closes a connection idle for its
keep-alive timeout (uvicorn: 5 s, gunicorn: 2 s); a request written at that moment is lost with the socket, and
for a POST that creates a paid job the client cannot tell whether it arrived. So a request whose method is not
idempotent (POST, PATCH) only reuses a connection idle for less than ``fresh_for`` seconds, and otherwise gets
a new one. Look-ups (GET) reuse any connection not yet expired, as in httpcore.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpcore
import httpx

__all__ = ["PooledTransport", "SingleHandPool"]

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class SingleHandPool(httpcore.AsyncConnectionPool):
    """httpcore's HTTP/1.1 pool with a pass that never hands one connection to two requests.

    Probing a connection for expiry asks the socket whether it is readable (the server may have closed it),
    through several layers of extra-attribute look-ups: ~20 µs each. httpcore probes every connection on every
    pass, i.e. twice per request, which at 64 connections was a quarter of a busy batch's CPU. Here an idle
    connection is probed when it is about to be handed out, and all of them at most once per ``sweep_every``
    seconds, so expired connections still close within about a second.
    """

    def __init__(
        self,
        *args: Any,
        fresh_for: float = 1.0,
        sweep_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        tls: Callable[[], ssl.SSLContext] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._tls = tls
        self._fresh_for = fresh_for
        self._sweep_every = sweep_every
        self._clock = clock
        self._swept = -math.inf
        self._idle_since: dict[int, float] = {}

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        # Connections held by a request: started on, or handed over and about to start. Neither is handed again
        # nor closed here: connections are closed after the pass, by which time the request may have started,
        # and its socket would be closed under it (for a submit: sent, its answer lost). Expiry is checked when
        # a connection is handed over, which is where it matters.
        held = {id(r.connection) for r in self._requests if r.connection is not None}
        now = self._clock()
        sweep = now - self._swept >= self._sweep_every
        if sweep:
            self._swept = now
        closing: list[httpcore.AsyncConnectionInterface] = []
        kept: list[httpcore.AsyncConnectionInterface] = []
        for connection in self._connections:
            if connection.is_closed():
                continue
            if sweep and id(connection) not in held and connection.has_expired():
                closing.append(connection)
                continue
            kept.append(connection)
        idle = [c for c in kept if id(c) not in held and c.is_idle()]
        surplus = len(idle) - self._max_keepalive_connections
        if surplus > 0:
            dropped = {id(c) for c in idle[:surplus]}
            closing.extend(idle[:surplus])
            kept = [c for c in kept if id(c) not in dropped]
            idle = idle[surplus:]
        self._connections = kept
        # When each idle connection was first seen idle: a pass runs as each response closes.
        self._idle_since = {id(c): self._idle_since.get(id(c), now) for c in idle}

        free = [c for c in idle if c.is_available()]
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            request = pool_request.request
            fresh_after = -math.inf if request.method in _IDEMPOTENT else now - self._fresh_for
            match = self._reusable(free, request.url.origin, fresh_after, closing)
            if match is None and len(self._connections) >= self._max_connections:
                # Full: make room by closing an idle connection (to another origin, or gone stale).
                spare = next((c for c in free if c.is_idle()), None)
                if spare is None:
                    continue  # waits for a connection to come back
                free.remove(spare)
                self._connections.remove(spare)
                closing.append(spare)
            if match is None:
                match = self.create_connection(request.url.origin)
                self._connections.append(match)
            pool_request.assign_to_connection(match)
        return closing

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        # The TLS context is made for the first https connection: a pool that only ever speaks plain HTTP
        # (to a sandbox, a local gateway) never loads the CA certificates (~40 ms of CPU).
        if self._ssl_context is None and self._tls is not None and origin.scheme == b"https":
            self._ssl_context = self._tls()
        return super().create_connection(origin)

    def _reusable(
        self,
        free: list[httpcore.AsyncConnectionInterface],
        origin: httpcore.Origin,
        fresh_after: float,
        closing: list[httpcore.AsyncConnectionInterface],
    ) -> httpcore.AsyncConnectionInterface | None:
        """Take the first free connection to ``origin`` idle since ``fresh_after`` and not expired; close the
        expired ones met on the way."""
        for connection in list(free):
            if not connection.can_handle_request(origin):
                continue
            if self._idle_since.get(id(connection), -math.inf) < fresh_after:
                continue  # idle too long for this request; left for a look-up
            free.remove(connection)
            if not connection.has_expired():
                return connection
            self._connections.remove(connection)
            closing.append(connection)
        return None


class PooledTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` (HTTP/1.1, no proxy) on a :class:`SingleHandPool`.

    ``verify`` as in httpx, or a function returning the ``ssl.SSLContext`` to use, called for the first https
    connection: building a context loads the CA certificates (~40 ms of CPU), so pools share one, and a pool
    that never speaks https never builds it.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool | Callable[[], ssl.SSLContext] = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        if callable(verify):
            tls = verify
        elif isinstance(verify, ssl.SSLContext):
            tls = lambda: verify  # noqa: E731
        else:
            tls = lambda: httpx.create_ssl_context(verify=verify)  # noqa: E731
        super().__init__(verify=False, limits=limits)  # httpx's own pool, replaced below, never connects
        self._pool = SingleHandPool(
            tls=tls,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
        )
