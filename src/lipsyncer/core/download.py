"""Saving results before their links expire: streamed, resumable, verified, atomic.

A half-written file never appears under the final name: bytes go to ``<name>.part`` and are renamed only once
the size checks out. A dropped connection resumes from the last byte on disk with ``Range``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

from .errors import LipsyncError, ResultExpiredError
from .schema import VideoFile, utcnow

__all__ = ["DownloadError", "download_video"]

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(LipsyncError):
    retryable = True


async def download_video(
    client: httpx.AsyncClient,
    video: VideoFile,
    dest: str | Path,
    *,
    max_resumes: int = 5,
) -> Path:
    dest = Path(dest).expanduser()
    if video.expires_at is not None and utcnow() >= video.expires_at:
        raise ResultExpiredError(video.url, video.expires_at)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    total: int | None = video.file_size
    last_error: Exception | None = None

    for _ in range(max_resumes + 1):
        if total is not None and offset == total:
            break
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            async with client.stream("GET", video.url, headers=headers) as response:
                if response.status_code in (403, 404, 410):
                    raise ResultExpiredError(video.url, video.expires_at)
                if response.status_code == 416 and offset and total in (None, offset):
                    break  # we already hold every byte
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
                    raise DownloadError(f"downloading {dest.name} failed with HTTP {response.status_code}")
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
        except httpx.TransportError as exc:  # connection cut mid-body: resume from what is on disk
            last_error = exc
            offset = part.stat().st_size if part.exists() else 0
    else:
        raise DownloadError(
            f"download of {dest.name} did not complete after {max_resumes} resumes"
        ) from last_error

    if last_error is not None:
        raise DownloadError(f"download of {dest.name} failed: {last_error}") from last_error
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{dest.name}: got {size} bytes, expected {total}")
    os.replace(part, dest)
    return dest


def _agree(known: int | None, stated: int, dest: Path) -> int:
    if known is not None and known != stated:
        raise DownloadError(f"{dest.name}: the server states {stated} bytes but the result said {known}")
    return stated
