"""Helpers shared by the CLI tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import av

PROVIDER_IDS = ("fal-legacy", "fal-v2", "fal-v2-pro", "fal-v3", "syncso", "unified")
SANDBOX_KEYS = {"FAL_KEY": "sandbox-fal-key", "EVOLINK_API_KEY": "sandbox-unified-key"}
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Media:
    video: Path
    audio: Path
    video_seconds: float
    audio_seconds: float


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


Invoke = Callable[..., Outcome]
"""``cli(args, env=None) -> Outcome``: the CLI run in-process."""


def write_config(path: Path, base_url: str, *, job_store: Path | None = None) -> Path:
    """Every provider (and the fal CDN storage) pointed at ``base_url``; fast polling for a fast sandbox."""
    lines = []
    if job_store is not None:
        lines.append(f'job_store = "{job_store}"')
    lines += ["[polling]", "initial_interval = 0.2", "max_interval = 0.5", "multiplier = 1.2", ""]
    for pid in PROVIDER_IDS:
        lines += [f"[providers.{pid}]", f'base_url = "{base_url}"', ""]
    lines += ["[storages.fal-cdn]", f'base_url = "{base_url}"', ""]
    path.write_text("\n".join(lines))
    return path


def process_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A subprocess environment with no real key, no user config and a private data dir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIPSYNCER_") and k not in SANDBOX_KEYS and k != "COLUMNS"
    }
    env.update({"XDG_DATA_HOME": str(home / "data"), "COLUMNS": "200"})
    env.update(extra or {})
    return env


def cli_command(*args: str | Path) -> list[str]:
    """``python -m lipsyncer.cli ...`` with the test's interpreter (the venv's)."""
    return [sys.executable, "-m", "lipsyncer.cli", *(str(a) for a in args)]


def run_process(args: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 120) -> Outcome:
    done = subprocess.run(list(args), cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout)
    return Outcome(done.returncode, done.stdout, done.stderr)


def probe_mp4(path: Path) -> tuple[float, int]:
    """(duration in seconds, number of video streams), read with PyAV: fails on anything but real media."""
    with av.open(str(path)) as container:
        assert container.format.name.startswith("mov"), container.format.name
        videos = len(container.streams.video)
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base), videos
        assert container.duration is not None
        return container.duration / 1_000_000, videos
