"""Fixtures every test directory shares; a directory changes its sandboxes by overriding ``sandbox_overrides``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# --import-mode=importlib puts no test folder on sys.path: make tests/servers.py importable as ``servers``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import fast_config
from servers import PostgresServer, RedisServer, postgres_server, redis_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    """Config every sandbox of a test starts from (on top of ``fast_config``)."""
    return {}


@pytest.fixture
def make_sandbox(sandbox_overrides: dict[str, Any]) -> Iterator[Callable[..., Sandbox]]:
    """Build fast sandboxes with config overrides; all are closed after the test."""
    made: list[Sandbox] = []

    def make(**overrides: Any) -> Sandbox:
        sandbox = Sandbox(fast_config(**{**sandbox_overrides, **overrides}))
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.close()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL on a free loopback port for the whole session (started on first use)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port for the whole session (started on first use)."""
    with redis_server() as server:
        yield server
