"""Private PostgreSQL and Redis servers for the tests: the real binaries on free loopback ports, in temp dirs.

No mocks: the fleet tests need the real locking of PostgreSQL and the real delivery of Redis. Each server is
started once per test session (see the root conftest) and stopped after it; a test gets its own database.
``scripts/check.sh`` installs the binaries on a fresh machine; elsewhere see the README.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + _START_GUARD
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{what} did not start within {_START_GUARD:g} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"
    _databases: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"lipsyncer_test_{next(self._databases)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres") as conn:
            conn.autocommit = True
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


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


@contextmanager
def postgres_server(template: Path | None = None) -> Iterator[PostgresServer]:
    """A server on a new cluster. With ``template`` (a directory that several processes share, such as the
    xdist workers of one run), the cluster is a copy of one made there once: initdb is most of a server's
    start-up CPU (~1 s), a copy a few milliseconds."""
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
    if template is None:
        _initdb(initdb, data, drop_privileges)
    else:
        cluster = _template_cluster(initdb, template, ids, drop_privileges)
        subprocess.run(["cp", "-a", str(cluster), str(data)], check=True)  # -a: owner and modes too
    port = free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(work),
        "fsync": "off",  # a test server: durability across an OS crash is not what is tested
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
    }
    args = [postgres, "-D", str(data)] + [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=drop_privileges)
    server = PostgresServer(port=port)
    try:
        _wait(lambda: _pg_ready(port), process, "postgres", log)
        yield server
    finally:
        _stop(process, signal.SIGQUIT)  # immediate: no shutdown checkpoint for files deleted next
        shutil.rmtree(work, ignore_errors=True)


def _initdb(initdb: str, data: Path, as_user: Callable[[], None]) -> None:
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--locale=C", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        preexec_fn=as_user,
    )


def _template_cluster(
    initdb: str, root: Path, ids: tuple[int, int] | None, as_user: Callable[[], None]
) -> Path:
    """The cluster under ``root`` for this initdb, made by whichever process asks first (the others wait on
    the lock); made aside and moved in, so a process killed half-way leaves no half-made template. (initdb
    runs in a directory of its own: as root, the server's user may not be able to enter ``root``.)"""
    version = hashlib.sha256(initdb.encode()).hexdigest()[:12]  # another PostgreSQL: another template
    home = root / f"postgres-template-{version}"
    home.mkdir(parents=True, exist_ok=True)
    cluster = home / "data"
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cluster.exists():
            aside = Path(tempfile.mkdtemp(prefix="lipsyncer-pg-initdb-"))
            try:
                if ids is not None:
                    os.chown(aside, *ids)
                _initdb(initdb, aside / "data", as_user)
                shutil.move(aside / "data", cluster)
            finally:
                shutil.rmtree(aside, ignore_errors=True)
    return cluster


def _pg_ready(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@dataclass(frozen=True)
class RedisServer:
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    binary = find_binary("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/check.sh once (or see the README)")
    work = Path(tempfile.mkdtemp(prefix="lipsyncer-redis-"))
    port = free_port()
    log = work / "server.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(work), "--daemonize", "no", "--databases", "64"]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _redis_ready(port), process, "redis-server", log)
        yield RedisServer(port=port)
    finally:
        _stop(process, signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)


def _redis_ready(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False
