"""Saving results before their links expire: streamed, resumable, verified, atomic.

A half-written file never appears under the final name: bytes go to a ``.part`` file and are renamed only
once the size checks out. The ``.part`` file's name carries a hash of the URL it holds bytes of
(``out.mp4.<hash>.part``), so a download resumes only the bytes of the *same* URL: a part left by another
URL (another job, another attempt at the destination) is never spliced into this one; it is removed.

A dropped connection resumes from the last byte on disk with ``Range``; a transient answer (5xx, 429, a
timeout) is tried again after a backoff. When the retries run out, the error says why (the last error) and
how to try again; the ``.part`` file is kept so that next time resumes it.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from .errors import LipsyncError, ResultExpiredError
from .schema import VideoFile, utcnow

__all__ = ["Backoff", "DownloadError", "download_video", "part_path"]

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

Sleep = Callable[[float], Awaitable[None]]


class DownloadError(LipsyncError):
    """A result could not be saved. ``tries`` were made; ``reason`` is the last failure."""

    retryable = True

    def __init__(
        self, message: str, *, reason: str | None = None, tries: int = 1, fix: str | None = None
    ) -> None:
        super().__init__(message, fix=fix)
        self.reason = reason
        self.tries = tries


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``n`` (1-based) of failures in a row: ``initial * multiplier**(n-1)``, capped at
    ``maximum``, times a random factor in ``[1 - jitter, 1 + jitter]``. Progress resets the count."""

    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.25

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        base = min(self.initial * self.multiplier ** max(failures - 1, 0), self.maximum)
        if not self.jitter:
            return base
        return base * (rng or random).uniform(1 - self.jitter, 1 + self.jitter)


def part_path(dest: Path, url: str) -> Path:
    """Where the bytes of ``url`` bound for ``dest`` collect until they are complete."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return dest.with_name(f"{dest.name}.{digest}.part")


class _Transient(Exception):
    """An answer worth another try (5xx, 429...), carried to the retry loop."""


async def download_video(
    client: httpx.AsyncClient,
    video: VideoFile,
    dest: str | Path,
    *,
    retries: int = 5,
    job_id: str | None = None,
    backoff: Backoff | None = None,
    sleep: Sleep = anyio.sleep,
) -> Path:
    """Stream ``video`` to ``dest``; at most ``retries`` more tries after the first, with ``backoff``.

    ``job_id`` names the job in the error's fix (``lipsyncer jobs resume <id>``); ``sleep`` is the wait
    between tries (tests pass one that records instead of sleeping).
    """
    dest = Path(dest).expanduser()
    backoff = backoff or Backoff()
    if video.expires_at is not None and utcnow() >= video.expires_at:
        raise ResultExpiredError(video.url, video.expires_at)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest, video.url)
    _drop_stale_parts(dest, keep=part)
    offset = part.stat().st_size if part.exists() else 0
    total: int | None = video.file_size
    last_error: Exception | None = None
    failures = 0  # in a row, without progress
    tries = 0

    while True:
        if total is not None and offset == total:
            break
        tries += 1
        start = offset
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            async with client.stream("GET", video.url, headers=headers) as response:
                if response.status_code in (403, 404, 410):
                    raise ResultExpiredError(video.url, video.expires_at)
                if response.status_code == 416 and offset and total in (None, offset):
                    break  # we already hold every byte
                if response.status_code in _TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {response.status_code}")
                if response.status_code == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                    if not match or int(match.group(1)) != offset:
                        raise DownloadError(f"server resumed at the wrong byte for {dest.name}")
                    if match.group(3) != "*":
                        total = _agree(total, int(match.group(3)), dest)
                elif response.status_code == 200:
                    offset = 0  # the server ignored Range: start over
                    length = response.headers.get("content-length")
                    if length is not None:
                        total = _agree(total, int(length), dest)
                else:
                    raise DownloadError(
                        f"downloading {dest.name} failed with HTTP {response.status_code}",
                        reason=f"HTTP {response.status_code}",
                        tries=tries,
                    )
                # Plain writes: a chunk written to local disk is cheaper than a thread hop per chunk.
                with open(part, "r+b" if offset else "wb") as fh:  # noqa: ASYNC230
                    fh.seek(offset)
                    fh.truncate()
                    # No chunk_size: a re-chunking buffer would lose what arrived before a cut.
                    async for chunk in response.aiter_bytes():
                        fh.write(chunk)
                        offset += len(chunk)
            last_error = None
            if total is None or offset >= total:
                break
            last_error = _Transient(f"the body ended at byte {offset} of {total}")
        except (httpx.TransportError, _Transient) as exc:  # cut, timed out, or a transient answer
            last_error = exc
            offset = part.stat().st_size if part.exists() else 0
        failures = 1 if offset > start else failures + 1
        if tries > retries:
            break
        await sleep(backoff.delay(failures))

    if last_error is not None:
        reason = _describe(last_error)
        raise DownloadError(
            f"download of {dest.name} failed after {tries} tries: {reason}",
            reason=reason,
            tries=tries,
            fix=(f"run `lipsyncer jobs resume {job_id}`" if job_id else "call download() again")
            + " to try again; the bytes saved so far are kept and resumed",
        ) from last_error
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{dest.name}: got {size} bytes, expected {total}", tries=tries)
    os.replace(part, dest)
    return dest


_PART_SUFFIX = re.compile(r"\.(?:[0-9a-f]{16}\.)?part")


def _drop_stale_parts(dest: Path, *, keep: Path) -> None:
    """Remove ``.part`` files of other URLs for this destination (and the unkeyed ``<name>.part`` of old)."""
    with os.scandir(dest.parent) as entries:  # names as strings: a folder of thousands of outputs stays cheap
        stale = [
            entry.path
            for entry in entries
            if entry.name.startswith(dest.name)
            and entry.name != keep.name
            and _PART_SUFFIX.fullmatch(entry.name[len(dest.name) :])
        ]
    for path in stale:
        Path(path).unlink(missing_ok=True)


def _describe(exc: Exception) -> str:
    if isinstance(exc, _Transient):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _agree(known: int | None, stated: int, dest: Path) -> int:
    if known is not None and known != stated:
        raise DownloadError(f"{dest.name}: the server states {stated} bytes but the result said {known}")
    return stated
