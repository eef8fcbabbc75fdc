"""Fixtures for the CLI tests: sample media, a loopback sandbox, a config pointing at it, a clean environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

# The project runs pytest with --import-mode=importlib, which does not put test folders on sys.path: make
# this folder's helper module importable (as ``cli_support``) for the test modules next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_support import SANDBOX_KEYS, Invoke, Media, Outcome, write_config

from lipsyncer.cli import build_app
from lipsyncer.contrib.sandbox import (
    LoopbackServer,
    Sandbox,
    SandboxConfig,
    serve_in_thread,
    write_sample_audio,
    write_sample_video,
)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    """A 2 s video and a 3 s audio: lengths differ, so every sync mode's rule is visible."""
    folder = tmp_path_factory.mktemp("media")
    return Media(
        video=write_sample_video(folder / "talk.mp4", 2.0),
        audio=write_sample_audio(folder / "dub.wav", 3.0),
        video_seconds=2.0,
        audio_seconds=3.0,
    )


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real key, no user config, no user job store: every test starts from nothing, in its own cwd."""
    for var in list(os.environ):
        if var.startswith("LIPSYNCER_") or var in SANDBOX_KEYS:
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def served() -> Iterator[tuple[Sandbox, LoopbackServer]]:
    """A sandbox on a loopback port; a job takes about a second."""
    with (
        Sandbox(SandboxConfig(processing_seconds=0.5, queue_seconds=0.1)) as sandbox,
        serve_in_thread(sandbox) as server,
    ):
        yield sandbox, server


@pytest.fixture
def config(clean_env: Path, served: tuple[Sandbox, LoopbackServer]) -> Path:
    """A config sending every provider to the loopback sandbox (keys are up to each test's env)."""
    return write_config(clean_env / "lipsyncer-test.toml", served[1].base_url)


@pytest.fixture
def cli(clean_env: Path) -> Invoke:
    """Run the CLI in-process: ``cli(args, env=...)`` -> Outcome, stdout and stderr kept apart."""
    runner = CliRunner()

    def invoke(args: Sequence[str | Path], env: Mapping[str, str | None] | None = None) -> Outcome:
        result = runner.invoke(build_app(), [str(a) for a in args], env=dict(env or {}))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr)

    return invoke
