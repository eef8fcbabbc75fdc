"""Fixtures for the fleet tests: a loopback sandbox, a private PostgreSQL store and Redis broker, Celery workers.

Nothing is mocked: the workers are real Celery workers (in this process, or ``celery -A
lipsyncer.contrib.celery worker`` subprocesses) on a real redis-server, storing jobs in a real PostgreSQL,
talking HTTP to the sandbox on a loopback port.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# --import-mode=importlib puts no test folder on sys.path: make fleet_support importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_support import SANDBOX_KEYS, FleetSetup, WorkerProcess, write_fleet_config

from lipsyncer.contrib.sandbox import LoopbackServer, Sandbox, serve_in_thread
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config, sample_media
from servers import RedisServer


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    return {"processing_seconds": 0.3, "queue_seconds": 0.1}


@pytest.fixture
def served(sandbox_overrides: dict[str, Any]) -> Iterator[LoopbackServer]:
    with Sandbox(fast_config(**sandbox_overrides)) as sandbox, serve_in_thread(sandbox) as server:
        yield server


@pytest.fixture
def fleet_setup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    served: LoopbackServer,
    postgres_url: str,
    redis: RedisServer,
) -> FleetSetup:
    for var in list(os.environ):
        if var.startswith("LIPSYNCER_") or var in SANDBOX_KEYS:
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    broker = redis.url(redis.new_db())
    config = write_fleet_config(
        tmp_path / "lipsyncer.toml",
        base_url=served.base_url,
        store_url=postgres_url,
        broker_url=broker,
        result_backend=redis.url(redis.new_db()),
    )
    return FleetSetup(config=config, store_url=postgres_url, broker_url=broker, work=tmp_path)


@pytest.fixture
def start_workers(fleet_setup: FleetSetup) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(name: str, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(fleet_setup, name, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
