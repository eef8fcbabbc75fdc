"""Downloads against the sandbox's CDN: parts keyed to their URL, retries with backoff, failures that say why.

The network misbehaves through transports wrapped around the sandbox's own (the sandbox serves real bytes
and honours ``Range``); waits go to a recording ``sleep``, so nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.core.download import Backoff, DownloadError, download_video, part_path
from lipsyncer.core.schema import VideoFile

pytestmark = pytest.mark.anyio

NO_JITTER = Backoff(initial=0.5, multiplier=2.0, maximum=3.0, jitter=0.0)


def expected_delays(failures_in_a_row: list[int]) -> list[float]:
    """The backoff rule written out: 0.5 s doubling per failure in a row, capped at 3 s."""
    return [min(0.5 * 2.0 ** (n - 1), 3.0) for n in failures_in_a_row]


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class _Cut(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class Network(httpx.AsyncBaseTransport):
    """Scripted misbehaviour per request, in order: "cut" (half the body, then the connection drops),
    an int (that HTTP status), "drop" (no answer at all); then the sandbox's real answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport, script: list[str | int]) -> None:
        self.inner, self.script = inner, list(script)
        self.ranges: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.ranges.append(request.headers.get("range"))
        step = self.script.pop(0) if self.script else None
        if step == "drop":
            raise httpx.ReadError("connection reset by peer", request=request)
        if isinstance(step, int):
            return httpx.Response(step, text="busy")
        response = await self.inner.handle_async_request(request)
        if step == "cut":
            body = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers, stream=_Cut(body[: len(body) // 2])
            )
        return response


def host(sandbox: Sandbox, data: bytes, name: str) -> VideoFile:
    return VideoFile(
        url=sandbox.put_file(data, file_name=name, content_type="video/mp4"), file_size=len(data)
    )


async def fetch(network: Network, video: VideoFile, dest: Path, **kw: object) -> Path:
    async with httpx.AsyncClient(transport=network) as http:
        return await download_video(http, video, dest, **kw)  # type: ignore[arg-type]


async def test_a_part_left_by_another_url_is_never_spliced(sandbox: Sandbox, tmp_path: Path) -> None:
    first, second = bytes(range(256)) * 40, bytes(reversed(range(256))) * 40  # same size, other bytes
    a, b = host(sandbox, first, "a.mp4"), host(sandbox, second, "b.mp4")
    dest = tmp_path / "out.mp4"
    with pytest.raises(DownloadError):
        await fetch(Network(sandbox.transport(), ["cut"]), a, dest, retries=0, sleep=Sleeps())
    assert part_path(dest, a.url).stat().st_size == len(first) // 2  # half of a.mp4 waits on disk

    network = Network(sandbox.transport(), [])
    out = await fetch(network, b, dest, sleep=Sleeps())
    assert out.read_bytes() == second
    assert network.ranges == [None]  # b started from byte 0, not from a's half
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # a's part is gone too


async def test_an_unkeyed_part_from_an_older_version_is_not_spliced(sandbox: Sandbox, tmp_path: Path) -> None:
    data = bytes(range(200)) * 30
    video = host(sandbox, data, "c.mp4")
    dest = tmp_path / "out.mp4"
    (tmp_path / "out.mp4.part").write_bytes(b"x" * 100)
    network = Network(sandbox.transport(), [])
    assert (await fetch(network, video, dest, sleep=Sleeps())).read_bytes() == data
    assert network.ranges == [None]
    assert not (tmp_path / "out.mp4.part").exists()


async def test_the_same_url_resumes_where_it_stopped(sandbox: Sandbox, tmp_path: Path) -> None:
    data = bytes(range(256)) * 50
    video = host(sandbox, data, "d.mp4")
    dest = tmp_path / "out.mp4"
    with pytest.raises(DownloadError):
        await fetch(Network(sandbox.transport(), ["cut"]), video, dest, retries=0, sleep=Sleeps())
    network = Network(sandbox.transport(), [])
    assert (await fetch(network, video, dest, sleep=Sleeps())).read_bytes() == data
    assert network.ranges == [f"bytes={len(data) // 2}-"]


async def test_transient_answers_are_retried_with_backoff(sandbox: Sandbox, tmp_path: Path) -> None:
    data = b"v" * 5000
    video = host(sandbox, data, "e.mp4")
    sleeps = Sleeps()
    network = Network(sandbox.transport(), [503, "drop", 429])
    out = await fetch(network, video, tmp_path / "out.mp4", backoff=NO_JITTER, sleep=sleeps)
    assert out.read_bytes() == data
    assert sleeps.delays == expected_delays([1, 2, 3])
    assert network.ranges == [None, None, None, None]


async def test_progress_resets_the_backoff(sandbox: Sandbox, tmp_path: Path) -> None:
    data = bytes(range(256)) * 64
    video = host(sandbox, data, "f.mp4")
    sleeps = Sleeps()
    network = Network(sandbox.transport(), [503, "cut", "drop"])
    out = await fetch(network, video, tmp_path / "out.mp4", backoff=NO_JITTER, sleep=sleeps)
    assert out.read_bytes() == data
    # 503: 1st failure in a row; the cut saved bytes, so it counts as the 1st again; the drop is the 2nd.
    assert sleeps.delays == expected_delays([1, 1, 2])


async def test_a_download_that_keeps_failing_says_why_and_how_to_retry(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    video = host(sandbox, b"w" * 3000, "g.mp4")
    sleeps = Sleeps()
    network = Network(sandbox.transport(), ["drop"] * 10)
    with pytest.raises(DownloadError) as info:
        await fetch(
            network, video, tmp_path / "out.mp4", retries=3, job_id="job_42", backoff=NO_JITTER, sleep=sleeps
        )
    err = info.value
    assert err.tries == 4 and len(network.ranges) == 4
    assert err.reason == "ReadError: connection reset by peer"
    assert "after 4 tries: ReadError: connection reset by peer" in err.message
    assert err.fix is not None and "lipsyncer jobs resume job_42" in err.fix
    assert sleeps.delays == expected_delays([1, 2, 3])  # no wait after the last try
    assert isinstance(err.__cause__, httpx.ReadError)
    assert not (tmp_path / "out.mp4").exists()


async def test_a_client_error_is_not_retried(sandbox: Sandbox, tmp_path: Path) -> None:
    video = host(sandbox, b"z" * 100, "h.mp4")
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="HTTP 400"):
        await fetch(Network(sandbox.transport(), [400]), video, tmp_path / "out.mp4", sleep=sleeps)
    assert sleeps.delays == []
