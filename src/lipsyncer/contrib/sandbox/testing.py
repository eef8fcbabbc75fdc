"""Helpers for tests that drive a sandbox: fast configs, sample media, and polling without timed assertions.

Provider tests elsewhere in the tree can use these too; nothing here is needed to run a sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from .config import SandboxConfig
from .media import write_sample_audio, write_sample_video

__all__ = [
    "SampleMedia",
    "eventually",
    "fast_config",
    "sample_media",
    "wait_fal_completed",
    "wait_task_finished",
]


def fast_config(**overrides: Any) -> SandboxConfig:
    """Jobs that take a fraction of a second, and webhook retries in milliseconds."""
    values: dict[str, Any] = {"queue_seconds": 0.05, "processing_seconds": 0.1, "webhook_retry_scale": 0.01}
    values.update(overrides)
    return SandboxConfig(**values)


@dataclass(frozen=True)
class SampleMedia:
    video: Path  # 1.0 s, 25 fps, 160x120, no audio track
    audio: Path  # 1.4 s mono WAV
    long_audio: Path  # 2.2 s mono WAV
    av: Path  # 0.8 s video with an AAC track
    text: Path  # not media at all


def sample_media(directory: str | Path) -> SampleMedia:
    """Write a small set of inputs into ``directory``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    text = root / "notes.txt"
    text.write_text("this is not a video\n")
    return SampleMedia(
        video=write_sample_video(root / "talk.mp4", 1.0),
        audio=write_sample_audio(root / "dub.wav", 1.4),
        long_audio=write_sample_audio(root / "long.wav", 2.2),
        av=write_sample_video(root / "with_audio.mp4", 0.8, audio=True),
        text=text,
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 20.0, every: float = 0.02
) -> None:
    """Poll ``check`` until it holds: a guard against hangs, not a timing assertion."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within} s")
        await anyio.sleep(every)


async def wait_fal_completed(
    http: httpx.AsyncClient, status_url: str, *, key: str = "sandbox-fal-key", within: float = 20.0
) -> dict[str, Any]:
    """Poll a fal status URL until ``COMPLETED``; returns that status body."""
    final: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal final
        response = await http.get(status_url, headers={"Authorization": f"Key {key}"})
        final = response.json()
        return bool(final.get("status") == "COMPLETED")

    await eventually(done, within=within)
    return final


async def wait_task_finished(
    http: httpx.AsyncClient, task_url: str, *, key: str = "sandbox-unified-key", within: float = 20.0
) -> dict[str, Any]:
    """Poll a unified task URL until ``completed`` or ``failed``; returns that body."""
    final: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal final
        response = await http.get(task_url, headers={"Authorization": f"Bearer {key}"})
        final = response.json()
        return final.get("status") in ("completed", "failed")

    await eventually(done, within=within)
    return final
