"""lipsyncer's connection pool: each idle connection goes to one waiting request, against a real loopback server.

The assignment pass is driven directly where the race it fixes cannot be produced on demand through the public
API (as httpcore's own regression tests do); the end-to-end test sends hundreds of requests through few
connections over real sockets.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpcore
import httpx
import pytest
from anyio.abc import SocketStream
from httpcore._async.connection_pool import AsyncPoolRequest

from lipsyncer.contrib.sandbox.testing import eventually
from lipsyncer.core.pool import PooledTransport, SingleHandPool

pytestmark = pytest.mark.anyio


@dataclass
class Server:
    """A keep-alive HTTP/1.1 server on loopback that records connections and concurrency."""

    url: str = ""
    connections: int = 0
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    overlapping_on_one_connection: int = 0
    hold: anyio.Event = field(default_factory=anyio.Event)
    arrived: int = 0
    expected: int = 0
    all_arrived: anyio.Event = field(default_factory=anyio.Event)
    close_after_response: bool = False
    streams: list[SocketStream] = field(default_factory=list)

    async def serve(self, stream: SocketStream) -> None:
        self.connections += 1
        self.streams.append(stream)
        busy = False
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        buffer += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return
                _, buffer = buffer.split(b"\r\n\r\n", 1)  # GETs only: no body
                if busy:
                    self.overlapping_on_one_connection += 1
                busy = True
                self.requests += 1
                self.arrived += 1
                if self.arrived == self.expected:
                    self.all_arrived.set()
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                await self.hold.wait()
                self.in_flight -= 1
                busy = False
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if self.close_after_response:
                    return  # as a server whose keep-alive ran out


@asynccontextmanager
async def loopback() -> AsyncIterator[Server]:
    server = Server()
    server.hold.set()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.url = f"http://127.0.0.1:{port}/"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.serve)
        yield server
        tg.cancel_scope.cancel()


async def _warm(pool: httpcore.AsyncConnectionPool, url: str, n: int, server: Server) -> None:
    """Leave ``n`` idle connections in ``pool``: ``n`` requests held at the server until all have arrived."""
    server.hold, server.all_arrived = anyio.Event(), anyio.Event()
    server.arrived, server.expected = 0, n

    async def one() -> None:
        response = await pool.request("GET", url)
        assert response.status == 200

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
        with anyio.fail_after(10):
            await server.all_arrived.wait()
        server.hold.set()
    assert len(pool.connections) == n and all(c.is_idle() for c in pool.connections)


def _waiting(
    pool: httpcore.AsyncConnectionPool, url: str, n: int, method: str = "GET"
) -> list[AsyncPoolRequest]:
    """``n`` requests queued on ``pool``, as ``handle_async_request`` queues them before its assignment pass."""
    queued = [AsyncPoolRequest(httpcore.Request(method, url)) for _ in range(n)]
    pool._requests.extend(queued)
    return queued


async def _settle(pool: httpcore.AsyncConnectionPool, queued: list[AsyncPoolRequest]) -> None:
    for request in queued:
        pool._requests.remove(request)
    await pool.aclose()


async def test_each_idle_connection_goes_to_one_waiting_request() -> None:
    async with loopback() as server:
        pool = SingleHandPool(max_connections=4, max_keepalive_connections=4)
        await _warm(pool, server.url, 3, server)
        idle = list(pool.connections)
        queued = _waiting(pool, server.url, 6)
        pool._assign_requests_to_connections()
        # The rule: the 3 idle connections go to the first 3 requests, one each; the pool may open one more
        # (4 at most), for the 4th; the last 2 wait for a connection to come back.
        handed = [r.connection for r in queued]
        assert handed[:3] == idle
        assert handed[3] is not None and handed[3] not in idle
        assert handed[4:] == [None, None]
        assert len(pool.connections) == 4
        await _settle(pool, queued)


async def test_httpcore_still_hands_one_idle_connection_to_every_waiting_request() -> None:
    """Why SingleHandPool exists. If this fails after upgrading httpcore, its pass may be fixed upstream."""
    async with loopback() as server:
        pool = httpcore.AsyncConnectionPool(max_connections=4, max_keepalive_connections=4)
        await _warm(pool, server.url, 3, server)
        queued = _waiting(pool, server.url, 6)
        pool._assign_requests_to_connections()
        assert len({id(r.connection) for r in queued}) == 1  # all six got the first idle connection
        await _settle(pool, queued)


async def test_surplus_idle_connections_close_but_not_one_handed_to_a_request() -> None:
    async with loopback() as server:
        pool = SingleHandPool(max_connections=4, max_keepalive_connections=4)
        await _warm(pool, server.url, 3, server)
        first = pool.connections[0]
        queued = _waiting(pool, server.url, 1)
        pool._assign_requests_to_connections()
        assert queued[0].connection is first
        pool._max_keepalive_connections = 1  # as if the keep-alive count were 1 from here on
        pool._assign_requests_to_connections()
        # The rule: idle connections no request holds are surplus beyond 1 kept; the handed-over one is held.
        assert first in pool.connections and not first.is_closed()
        assert len(pool.connections) == 2
        await _settle(pool, queued)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_post_only_reuses_a_connection_idle_for_less_than_fresh_for() -> None:
    clock = Clock()
    async with loopback() as server:
        pool = SingleHandPool(max_connections=3, max_keepalive_connections=3, fresh_for=1.0, clock=clock)
        await _warm(pool, server.url, 2, server)  # both went idle at 1000.0
        idle = list(pool.connections)
        clock.now = 1000.5
        fresh = _waiting(pool, server.url, 1, "POST")
        pool._assign_requests_to_connections()
        # The rule: idle 0.5 s < 1 s, so a POST may take it.
        assert fresh[0].connection is idle[0]
        clock.now = 1002.0
        late = _waiting(pool, server.url, 1, "POST") + _waiting(pool, server.url, 1, "GET")
        pool._assign_requests_to_connections()
        # Idle 2 s >= 1 s: the POST gets a new connection (the pool has room for one), the GET the idle one.
        assert late[0].connection not in idle and late[0].connection is not None
        assert late[1].connection is idle[1]
        full = _waiting(pool, server.url, 1, "POST")
        pool._assign_requests_to_connections()
        assert full[0].connection is None  # no fresh connection and no room: it waits
        await _settle(pool, fresh + late + full)


async def test_a_connection_handed_to_a_request_is_not_closed_under_it() -> None:
    clock = Clock()
    async with loopback() as server:
        pool = SingleHandPool(max_connections=2, max_keepalive_connections=2, sweep_every=1.0, clock=clock)
        await _warm(pool, server.url, 1, server)
        (handed,) = pool.connections
        queued = _waiting(pool, server.url, 1)
        pool._assign_requests_to_connections()
        assert queued[0].connection is handed
        await server.streams[0].aclose()  # the server drops it before the request starts on it

        async def seen_closed() -> bool:
            return handed.has_expired()

        await eventually(seen_closed)
        clock.now += 5  # a sweep of expired connections is due
        closing = pool._assign_requests_to_connections()
        # The rule: the pass closes no connection a request holds (the close would run after the pass, when
        # the request may have started on it); the request keeps it and learns of the close itself.
        assert closing == [] and queued[0].connection is handed
        await _settle(pool, queued)


async def test_a_connection_the_server_closed_is_not_handed_out() -> None:
    async with loopback() as server:
        pool = SingleHandPool(max_connections=4, max_keepalive_connections=4)
        server.close_after_response = True
        await _warm(pool, server.url, 2, server)
        closed_by_server = list(pool.connections)

        async def seen_closed() -> bool:
            return all(c.has_expired() for c in closed_by_server)

        await eventually(seen_closed)  # the server's FIN has reached the client's sockets
        queued = _waiting(pool, server.url, 2)
        closing = pool._assign_requests_to_connections()
        # The rule: both idle connections were closed by the server, so each request gets a new one.
        assert [r.connection in closed_by_server for r in queued] == [False, False]
        assert set(map(id, closing)) == set(map(id, closed_by_server))
        await pool._close_connections(closing)
        await _settle(pool, queued)


async def test_hundreds_of_requests_share_few_connections() -> None:
    limit = 8
    async with loopback() as server:
        transport = PooledTransport(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        )
        async with httpx.AsyncClient(transport=transport) as client:

            async def one() -> None:
                response = await client.get(server.url)
                assert response.text == "ok"

            for _burst in range(3):  # bursts on warm connections, as a batch's due look-ups arrive
                async with anyio.create_task_group() as tg:
                    for _ in range(100):
                        tg.start_soon(one)
        assert server.requests == 300
        assert server.connections <= limit
        assert server.most_in_flight <= limit
        assert server.overlapping_on_one_connection == 0


async def test_the_tls_context_is_made_for_the_first_https_connection_only() -> None:
    made: list[ssl.SSLContext] = []

    def tls() -> ssl.SSLContext:
        made.append(ssl.create_default_context())
        return made[-1]

    async with loopback() as server:
        transport = PooledTransport(verify=tls)
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(server.url)).text == "ok"
        assert made == []  # plain HTTP only: the CA certificates were never loaded
    pool = SingleHandPool(tls=tls)
    first = pool.create_connection(httpcore.Origin(b"https", b"example.invalid", 443))
    second = pool.create_connection(httpcore.Origin(b"https", b"example.invalid", 443))
    assert len(made) == 1  # made once, shared by every https connection of the pool
    await first.aclose()
    await second.aclose()
