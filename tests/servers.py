"""PostgreSQL and Redis servers for the tests: the real binaries on free loopback ports, in temp dirs.

No mocks: the fleet tests need the real locking of PostgreSQL and the real delivery of Redis. A session starts
each server once, on first use (see the root conftest); a test gets its own database. The xdist workers of
one run share one of each: the first worker to ask starts it, the controller stops it after the run.
``scripts/check.sh`` installs the binaries on a fresh machine; elsewhere see the README.
"""

from __future__ import annotations

import fcntl
import glob
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_START_GUARD = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str | None:
    """On PATH, else where Debian's postgresql packages put it (/usr/lib/postgresql/<version>/bin)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    return candidates[-1] if candidates else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parents[1].name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"
    prefix: str = "lipsyncer_test"  # a worker's own names on a server the run's workers share
    _databases: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"{self.prefix}_{next(self._databases)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres") as conn:
            conn.autocommit = True
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@dataclass
class RedisServer:
    port: int
    first_db: int = 0  # a worker's own databases on a server the run's workers share
    _dbs: Iterator[int] = field(init=False)

    def __post_init__(self) -> None:
        self._dbs = itertools.count(self.first_db)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def new_db(self) -> int:
        """A database number no other test of the run uses."""
        db = next(self._dbs)
        if db >= self.first_db + REDIS_DBS_EACH:
            raise RuntimeError(
                f"more than {REDIS_DBS_EACH} Redis databases in one worker: raise REDIS_DBS_EACH"
            )
        return db


REDIS_DBS_EACH = 100
"""Databases per worker on a shared Redis (worker N owns N*100 to N*100+99)."""


@dataclass(frozen=True)
class _Launched:
    """A server process, where it listens and the directory it owns (removed when it stops)."""

    process: subprocess.Popen[bytes]
    port: int
    work: Path
    stop_signal: int


def _unprivileged() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` (else ``nobody``) user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no postgres or nobody user to run PostgreSQL as")


def _launch_postgres(*, detached: bool = False) -> _Launched:
    initdb, postgres = find_binary("initdb"), find_binary("postgres")
    if initdb is None or postgres is None:
        pytest.fail("PostgreSQL is not installed: run scripts/check.sh once (or see the README)")
    work = Path(tempfile.mkdtemp(prefix="lipsyncer-pg-"))
    ids = _unprivileged()
    if ids is not None:
        os.chown(work, *ids)

    def drop_privileges() -> None:
        if ids is not None:
            os.setgid(ids[1])
            os.setuid(ids[0])

    data, log = work / "data", work / "server.log"
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--locale=C", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        preexec_fn=drop_privileges,
    )
    port = free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(work),
        "fsync": "off",  # a test server: durability across an OS crash is not what is tested
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "1000",  # every worker's fleet tests, their Celery workers' pools included
    }
    args = [postgres, "-D", str(data)] + [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=drop_privileges, start_new_session=detached
        )
    # Immediate shutdown: no shutdown checkpoint for a cluster deleted right after.
    launched = _Launched(process, port, work, signal.SIGQUIT)
    _wait(lambda: _pg_ready(port), launched, "postgres", log)
    return launched


def _pg_ready(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _launch_redis(*, detached: bool = False) -> _Launched:
    binary = find_binary("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/check.sh once (or see the README)")
    work = Path(tempfile.mkdtemp(prefix="lipsyncer-redis-"))
    port = free_port()
    log = work / "server.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(work), "--daemonize", "no", "--databases", str(REDIS_DBS_EACH * 16)]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=detached)
    launched = _Launched(process, port, work, signal.SIGTERM)
    _wait(lambda: _redis_ready(port), launched, "redis-server", log)
    return launched


def _redis_ready(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait(ready: Callable[[], bool], launched: _Launched, what: str, log: Path) -> None:
    deadline = time.monotonic() + _START_GUARD
    while not ready():
        if launched.process.poll() is not None:
            code = launched.process.returncode
            raise RuntimeError(f"{what} exited with {code}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            launched.process.kill()
            raise RuntimeError(f"{what} did not start within {_START_GUARD:g} s")
        time.sleep(0.05)


def _stop(launched: _Launched) -> None:
    process = launched.process
    if process.poll() is None:
        process.send_signal(launched.stop_signal)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    shutil.rmtree(launched.work, ignore_errors=True)


_LAUNCH = {"postgres": _launch_postgres, "redis": _launch_redis}


@contextmanager
def server_port(kind: str) -> Iterator[int]:
    """The port of a ``kind`` server ("postgres" or "redis") for this session: under xdist the run's shared
    one (the controller stops it), else one of this process's own, stopped on exit."""
    if os.environ.get("PYTEST_XDIST_WORKER") and SHARED in os.environ:
        yield shared_port(kind)
        return
    launched = _LAUNCH[kind]()
    try:
        yield launched.port
    finally:
        _stop(launched)


# ------------------------------------------------------------------------------ shared by a run's workers

SHARED = "LIPSYNCER_TEST_SERVERS"
"""Environment variable: the directory where the xdist controller keeps the run's shared servers' state."""


def shared_port(kind: str) -> int:
    """The port of the run's one ``kind`` server ("postgres" or "redis"); the first worker to ask starts it
    while the others wait on the lock. It outlives that worker (its own session): ``stop_shared`` ends it."""
    root = Path(os.environ[SHARED])
    with open(root / f"{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = root / f"{kind}.json"
        if not state.exists():
            launched = _LAUNCH[kind](detached=True)
            pid, work, stop = launched.process.pid, str(launched.work), int(launched.stop_signal)
            state.write_text(json.dumps({"port": launched.port, "pid": pid, "work": work, "signal": stop}))
        return int(json.loads(state.read_text())["port"])


def stop_shared(root: Path) -> None:
    """Stop the servers the workers started under ``root`` (the controller, once every worker is done)."""
    for state in root.glob("*.json"):
        record = json.loads(state.read_text())
        pid = int(record["pid"])
        with suppress(ProcessLookupError):
            os.kill(pid, int(record["signal"]))
            give_up = time.monotonic() + 20
            while time.monotonic() < give_up and not _exited(pid):
                time.sleep(0.05)
            if not _exited(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(record["work"], ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def _exited(pid: int) -> bool:
    """Gone, or a zombie its starter (a worker still shutting down) has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")
