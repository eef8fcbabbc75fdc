"""Fixtures every test directory shares; a directory changes its sandboxes by overriding ``sandbox_overrides``."""

from __future__ import annotations

import gc

# Collection builds hundreds of thousands of objects that live to the end of the session (test modules and
# what they import, items, fixture definitions): the garbage collector walking them over and over was a fifth
# of each worker's collection time. It stays off until collection ends, which freezes them out of its reach.
gc.disable()

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

# --import-mode=importlib puts no test folder on sys.path: make tests/servers.py importable as ``servers``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import (
    REDIS_DBS_EACH,
    SHARED,
    PostgresServer,
    RedisServer,
    postgres_server,
    redis_server,
    shared_port,
    stop_shared,
)

if TYPE_CHECKING:  # the sandbox loads where a test builds one: the xdist controller never does
    from lipsyncer.contrib.sandbox import Sandbox

# scripts/check.sh (CI) draws the same examples every run, so a run is red only for a change; a plain
# ``pytest`` explores new ones each time. No deadline and no too-slow health check there: both time examples
# on the wall clock, and a busy 2-core machine running six workers would fail a correct change.
settings.register_profile(
    "check", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("LIPSYNCER_HYPOTHESIS") == "check":
    settings.load_profile("check")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    """Config every sandbox of a test starts from (on top of ``fast_config``)."""
    return {}


@pytest.fixture
def make_sandbox(
    sandbox_overrides: dict[str, Any], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Sandbox]]:
    """Build fast sandboxes with config overrides; all are closed after the test.

    A test marked ``frozen_sandbox_clock`` gets sandboxes whose time stands still (a ``ManualClock`` nobody
    moves): what it checks of a fresh job cannot change while a loaded machine is slow to answer.
    """
    from lipsyncer.contrib.sandbox import ManualClock, Sandbox
    from lipsyncer.contrib.sandbox.testing import fast_config

    made: list[Sandbox] = []
    frozen = request.node.get_closest_marker("frozen_sandbox_clock") is not None

    def make(**overrides: Any) -> Sandbox:
        base = {**sandbox_overrides, "clock": ManualClock()} if frozen else sandbox_overrides
        sandbox = Sandbox(fast_config(**{**base, **overrides}))
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.close()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()


def pytest_configure(config: pytest.Config) -> None:
    """The xdist controller of a run keeps the state of the PostgreSQL and Redis its workers share: one of
    each for the run instead of one per worker (each costs ~1 s of CPU to start and more to run)."""
    if config.getoption("numprocesses", default=None) and not hasattr(config, "workerinput"):
        os.environ[SHARED] = tempfile.mkdtemp(prefix="lipsyncer-test-servers-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and SHARED in os.environ:
        stop_shared(Path(os.environ.pop(SHARED)))


def _worker() -> str | None:
    """This xdist worker's id ("gw3"), when it shares the run's servers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return worker if worker and SHARED in os.environ else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """PostgreSQL on a free loopback port for the whole session, started on first use: the run's shared one
    under xdist (databases named for the worker), else one of this session's own."""
    worker = _worker()
    if worker is not None:
        yield PostgresServer(port=shared_port("postgres"), prefix=f"lipsyncer_{worker}")
        return
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """redis-server on a free loopback port for the whole session, started on first use: the run's shared one
    under xdist (worker N owns its own range of database numbers), else one of this session's own."""
    worker = _worker()
    if worker is not None:
        index = int(worker.removeprefix("gw"))
        yield RedisServer(port=shared_port("redis"), first_db=index * REDIS_DBS_EACH)
        return
    with redis_server() as server:
        yield server


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (modules, their imports, classes, test items) lives until the session ends:
    freeze it out of the garbage collector, so no collection during the run walks it again."""
    gc.freeze()
    gc.enable()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes() -> None:
    """The xdist controller collects nothing itself (its workers do): it collects garbage from here on."""
    gc.enable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (in their order): on several workers the long runs start at once and the short tests
    fill in around them, instead of one long run starting last and leaving the other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # a stable sort keeps the order
