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

from servers import REDIS_DBS_EACH, SHARED, PostgresServer, RedisServer, server_port, stop_shared

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """PostgreSQL on a free loopback port for the whole session, started on first use (shared by a run's
    xdist workers: each names its databases for itself)."""
    with server_port("postgres") as port:
        yield PostgresServer(port=port, prefix=f"lipsyncer_{os.environ.get('PYTEST_XDIST_WORKER', 'test')}")


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """redis-server on a free loopback port for the whole session, started on first use (shared by a run's
    xdist workers: worker N numbers its databases from N * REDIS_DBS_EACH)."""
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    with server_port("redis") as port:
        yield RedisServer(port=port, first_db=index * REDIS_DBS_EACH)


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
