"""The job store on SQL: one SQLAlchemy Core implementation for SQLite (the embedded default) and PostgreSQL.

Every operation that must be atomic across processes is one statement: compare-and-swap and claims are
``UPDATE ... WHERE`` (PostgreSQL re-checks the ``WHERE`` on the row it waited for, SQLite serialises writers),
and a key replay is ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING``. Single statements run in
autocommit; the few multi-statement changes (opening, migrating, deleting) run in one transaction.
``synchronous=NORMAL`` in SQLite's WAL mode survives a process kill (only an OS crash can lose the last
commits), which is the failure this store exists for, at a fraction of the cost of an fsync per write.

The schema version is stored in the database (SQLite: ``PRAGMA user_version``; elsewhere: the
``lipsyncer_schema`` table). An embedded SQLite store is migrated in place when opened; a shared server
store is refused until ``lipsyncer jobs migrate`` runs once, so a rolling deploy never has old and new
workers rewriting one schema under each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from ..errors import ConfigError
from ..schema import Job, JobState, JobStatus, utcnow
from .base import SCHEMA_VERSION, Claim

__all__ = ["SQLJobStore", "SQLiteJobStore", "redacted"]

_metadata = MetaData()
# ISO timestamps sort as text only byte by byte: PostgreSQL's default collation would compare them by locale.
# Generic types in the variants: the PostgreSQL dialect (~75 ms to import) loads only for a PostgreSQL store.
_SORTABLE = Text().with_variant(Text(collation="C"), "postgresql")

_jobs = Table(
    "jobs",
    _metadata,
    Column("id", Text, primary_key=True),
    Column("provider", Text, nullable=False),
    Column("remote_id", Text),
    Column("state", Text, nullable=False),
    Column("submitted_at", _SORTABLE, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("idempotency_key", Text),
    Column("claim_owner", Text),
    Column("claim_until", Double),
    Index("jobs_remote", "provider", "remote_id"),
    Index("jobs_state", "state"),
    Index("jobs_key", "idempotency_key", unique=True),
)
_history = Table(
    "job_status",
    _metadata,
    # INTEGER PRIMARY KEY is SQLite's rowid; BIGSERIAL on PostgreSQL. Orders a job's history.
    Column("seq", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("observed_at", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("data", Text, nullable=False),
    Index("job_status_job", "job_id"),
)
_version_table = Table("lipsyncer_schema", MetaData(), Column("version", Integer, nullable=False))

_LOCK_KEY = 0x6C697073796E63
"""PostgreSQL advisory lock taken while opening or migrating: concurrent openers take turns."""

_POOL_PARAMS = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle")
"""Connection-pool settings read from the store URL's query (``?pool_size=5``), never sent to the server."""


def redacted(url: str | URL) -> str:
    """The URL with its password masked: what reprs, errors and logs show."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<invalid store URL>"
    return parsed.render_as_string(hide_password=True)


def _row(job: Job) -> dict[str, Any]:
    job.updated_at = utcnow()
    return {
        "id": job.id,
        "provider": job.provider,
        "remote_id": job.remote_id,
        "state": job.state.value,
        "submitted_at": job.submitted_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "data": job.model_dump_json(),
        "version": job.version,
        "idempotency_key": job.idempotency_key or job.id,
    }


def _status_row(job_id: str, status: JobStatus) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "observed_at": status.observed_at.isoformat(),
        "state": status.state.value,
        "data": status.model_dump_json(),
    }


def _job(data: object, version: object) -> Job:
    job = Job.model_validate_json(str(data))
    job.version = int(str(version))
    return job


class _Statements:
    """Every statement built once per dialect: executing a prebuilt statement skips SQLAlchemy's building and
    cache-key work, which would otherwise cost more than SQLite's own write."""

    def __init__(self, is_sqlite: bool) -> None:
        j, h = _jobs, _history
        if is_sqlite:
            self.create: Any = sqlite.insert(j)
        else:
            from sqlalchemy.dialects import postgresql

            self.create = postgresql.insert(j)
        self.create = self.create.on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(j.c.id)
        self.swap = (
            update(j)
            .where(j.c.id == bindparam("b_id"), j.c.version == bindparam("b_expected"))
            .values(
                provider=bindparam("b_provider"),
                remote_id=bindparam("b_remote_id"),
                state=bindparam("b_state"),
                updated_at=bindparam("b_updated_at"),
                data=bindparam("b_data"),
                version=bindparam("b_version"),
            )
        )
        row = select(j.c.data, j.c.version)
        self.by_id = row.where(j.c.id == bindparam("b_value")).limit(1)
        self.by_key = row.where(j.c.idempotency_key == bindparam("b_value")).limit(1)
        self.by_remote = row.where(
            j.c.provider == bindparam("b_provider"), j.c.remote_id == bindparam("b_remote")
        )
        self.by_remote = self.by_remote.limit(1)
        free = or_(
            j.c.claim_owner.is_(None),
            j.c.claim_owner == bindparam("b_owner"),
            j.c.claim_until <= bindparam("b_now"),
        )
        self.claim = (
            update(j)
            .where(j.c.id == bindparam("b_id"), free)
            .values(claim_owner=bindparam("b_owner"), claim_until=bindparam("b_until"))
        )
        self.release = (
            update(j)
            .where(j.c.id == bindparam("b_id"), j.c.claim_owner == bindparam("b_owner"))
            .values(claim_owner=None, claim_until=None)
        )
        self.claim_of = select(j.c.claim_owner, j.c.claim_until).where(j.c.id == bindparam("b_id"))
        self.record = h.insert()
        self.history = select(h.c.data).where(h.c.job_id == bindparam("b_id")).order_by(h.c.seq)
        self.forget_history = delete(h).where(h.c.job_id == bindparam("b_id"))
        self.forget_job = delete(j).where(j.c.id == bindparam("b_id"))


class SQLJobStore:
    """The job store on any SQLAlchemy URL it supports: ``sqlite:///path`` or ``postgresql://...``.

    Args:
        url: a SQLAlchemy URL; ``postgresql://`` uses psycopg 3. Query parameters ``pool_size``,
            ``max_overflow``, ``pool_timeout`` and ``pool_recycle`` size the connection pool.
        migrate: bring an older schema up to date when opening. Default: yes for SQLite (one host, embedded),
            no for a server (run ``lipsyncer jobs migrate`` once, with the workers stopped).

    SQLite gets one connection, serialised by a lock (WAL lets other processes read and write alongside);
    a server gets a pool, each statement on a connection of its own.
    """

    def __init__(self, url: str | URL, *, migrate: bool | None = None) -> None:
        parsed = _parse(url)
        self.url = parsed
        self._sqlite = parsed.get_backend_name() == "sqlite"
        pool = {k: int(v) for k, v in parsed.query.items() if k in _POOL_PARAMS and isinstance(v, str)}
        parsed = parsed.difference_update_query(_POOL_PARAMS)
        options: dict[str, Any] = {
            "hide_parameters": True,  # job data stays out of exception texts
            "isolation_level": "AUTOCOMMIT",  # one statement, one commit; transactions are explicit
            "pool_reset_on_return": None,  # nothing is left open to roll back
        }
        if self._sqlite:
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_pre_ping=True, **pool)  # survive a failover or an idle-connection reaper
        try:
            self._engine: Engine = create_engine(parsed, **options)
        except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as exc:
            raise ConfigError(
                f"cannot open job store {redacted(parsed)}: {type(exc).__name__}",
                fix="for PostgreSQL install the extra: pip install 'lipsyncer[postgresql]'",
            ) from None
        self._sql = _Statements(self._sqlite)
        self._dbapi: Any = self._engine.dialect.dbapi
        self._compiled: dict[int, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._shared: Connection | None = None
        try:
            if self._sqlite:
                event.listen(self._engine, "connect", _sqlite_pragmas)
                self._shared = self._engine.connect()
            self._open_schema(self._sqlite if migrate is None else migrate)
        except OperationalError as exc:
            self.close()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
            raise ConfigError(
                f"cannot open job store {redacted(self.url)}: {reason}",
                fix="check job_store (host, port, database, user) and that the database server is running",
            ) from None
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redacted(self.url)!r})"

    def close(self) -> None:
        with self._lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None
        self._engine.dispose()

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._shared is None and self._sqlite:
            raise ConfigError(f"job store {self!r} is closed")
        if self._sqlite:
            with self._lock:
                assert self._shared is not None
                yield self._shared
            return
        with self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction; on SQLite ``BEGIN IMMEDIATE``, so concurrent writers wait instead of failing."""
        if not self._sqlite:
            with self._engine.connect() as conn:
                conn = conn.execution_options(isolation_level="READ COMMITTED")
                with conn.begin():
                    yield conn
            return
        with self._connection() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def _run(self, statement: Any, params: Mapping[str, Any]) -> tuple[list[Any], int]:
        """Execute a prebuilt statement on the DBAPI cursor, compiled once for this dialect: the hot path skips
        SQLAlchemy's per-execution context (our parameters are plain str, int, float and None)."""
        with self._connection() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                return self._execute(cursor, statement, params)
            finally:
                cursor.close()

    def _execute(self, cursor: Any, statement: Any, params: Mapping[str, Any]) -> tuple[list[Any], int]:
        compiled = self._compiled.get(id(statement))
        if compiled is None:
            done = statement.compile(dialect=self._engine.dialect, column_keys=list(params))
            names = tuple(done.positiontup) if done.positional and done.positiontup else None
            compiled = self._compiled[id(statement)] = (done.string, names, dict(done.params))
        sql, names, fixed = compiled  # fixed: the statement's own literals (a LIMIT)
        merged = {**fixed, **params}
        values: Any = tuple(merged[n] for n in names) if names is not None else merged
        cursor.execute(sql, values)
        rows: list[Any] = list(cursor.fetchall()) if cursor.description is not None else []
        return rows, int(cursor.rowcount)

    @contextmanager
    def _atomic(self) -> Iterator[Callable[[Any, Mapping[str, Any]], tuple[list[Any], int]]]:
        """Prebuilt statements in one transaction (one commit): yields what runs one. SQLite takes the write
        lock at once (``BEGIN IMMEDIATE``), so a concurrent writer waits instead of failing midway."""
        with self._connection() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute("BEGIN IMMEDIATE" if self._sqlite else "BEGIN")
                try:
                    yield lambda statement, params: self._execute(cursor, statement, params)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    def _write(self, statement: Any, params: Mapping[str, Any]) -> int:
        return int(self._run(statement, params)[1])

    def _one(self, statement: Any, params: Mapping[str, Any]) -> Job | None:
        rows = self._run(statement, params)[0]
        return _job(*rows[0]) if rows else None

    # ------------------------------------------------------------------ schema

    def _open_schema(self, migrate: bool) -> None:
        with self._transaction() as conn:
            if not self._sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            version = self._stored_version(conn)
            if version is None:
                _metadata.create_all(conn)
                self._write_version(conn, SCHEMA_VERSION)
                return
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"job store {redacted(self.url)} has schema version {version}, newer than this "
                    f"lipsyncer understands ({SCHEMA_VERSION})",
                    fix="upgrade lipsyncer, or point job_store at another store",
                )
            if version == SCHEMA_VERSION:
                return
            if not migrate:
                raise ConfigError(
                    f"job store {redacted(self.url)} has schema version {version}; this lipsyncer needs "
                    f"{SCHEMA_VERSION}",
                    fix="stop every worker and client using it, then run "
                    "`lipsyncer jobs migrate --store URL` once (URL: your job_store)",
                )
            for step in range(version, SCHEMA_VERSION):
                _MIGRATIONS[step](conn, self._sqlite)
            for index in (*_jobs.indexes, *_history.indexes):
                index.create(conn, checkfirst=True)
            self._write_version(conn, SCHEMA_VERSION)

    def _stored_version(self, conn: Connection) -> int | None:
        """The stored schema version; None for an empty database. A jobs table with no version is 1."""
        tables = set(inspect(conn).get_table_names())
        stored = 0
        if self._sqlite:
            stored = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
        elif _version_table.name in tables:
            stored = int(conn.execute(select(_version_table.c.version)).scalar_one_or_none() or 0)
        if stored:
            return stored
        return 1 if _jobs.name in tables else None

    def _write_version(self, conn: Connection, version: int) -> None:
        if self._sqlite:
            conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")
            return
        _version_table.create(conn, checkfirst=True)
        conn.execute(delete(_version_table))
        conn.execute(_version_table.insert().values(version=version))

    @property
    def schema_version(self) -> int:
        with self._connection() as conn:
            return self._stored_version(conn) or 0

    # ------------------------------------------------------------------ the protocol

    def create(self, job: Job) -> Job:
        job.version = 1
        row = _row(job)
        try:
            inserted = bool(self._run(self._sql.create, row)[0])
        except self._dbapi.IntegrityError:  # the id itself collided: not a key replay, a bug
            raise ConfigError(f"job id {job.id} is already stored") from None
        if inserted:
            return job
        stored = self.get_by_key(str(row["idempotency_key"]))
        if stored is None:  # the keyed row was deleted in between: try again
            return self.create(job)
        return stored

    def update(self, job: Job, *, status: JobStatus | None = None) -> Job | None:
        expected = job.version
        new = job.model_copy(update={"version": expected + 1})  # the caller's draft is already private
        row = _row(new)
        params = {
            f"b_{k}": row[k]
            for k in ("id", "provider", "remote_id", "state", "updated_at", "data", "version")
        }
        params["b_expected"] = expected
        if status is None:
            return new if self._write(self._sql.swap, params) else None
        with self._atomic() as run:  # the row and its history entry: one commit
            if not run(self._sql.swap, params)[1]:
                return None
            run(self._sql.record, _status_row(job.id, status))
        return new

    def get(self, job_id: str) -> Job | None:
        return self._one(self._sql.by_id, {"b_value": job_id})

    def get_by_key(self, idempotency_key: str) -> Job | None:
        return self._one(self._sql.by_key, {"b_value": idempotency_key})

    def find_remote(self, provider: str, remote_id: str) -> Job | None:
        return self._one(self._sql.by_remote, {"b_provider": provider, "b_remote": remote_id})

    def list_jobs(self, *, states: Iterable[JobState] | None = None, limit: int = 100) -> list[Job]:
        query = select(_jobs.c.data, _jobs.c.version)
        if states is not None:
            query = query.where(_jobs.c.state.in_([s.value for s in states]))
        query = query.order_by(_jobs.c.submitted_at.desc()).limit(limit)
        with self._connection() as conn:
            return [_job(*row) for row in conn.execute(query)]

    def delete(self, job_id: str) -> bool:
        with self._transaction() as conn:
            conn.execute(self._sql.forget_history, {"b_id": job_id})
            return bool(conn.execute(self._sql.forget_job, {"b_id": job_id}).rowcount)

    def claim(self, job_id: str, owner: str, *, until: float, now: float) -> bool:
        params = {"b_id": job_id, "b_owner": owner, "b_until": until, "b_now": now}
        return bool(self._write(self._sql.claim, params))

    def release(self, job_id: str, owner: str) -> None:
        self._write(self._sql.release, {"b_id": job_id, "b_owner": owner})

    def claim_of(self, job_id: str) -> Claim | None:
        rows = self._run(self._sql.claim_of, {"b_id": job_id})[0]
        if not rows or rows[0][0] is None:
            return None
        return Claim(owner=str(rows[0][0]), until=float(rows[0][1]))

    def record_status(self, job_id: str, status: JobStatus) -> None:
        self._write(self._sql.record, _status_row(job_id, status))

    def history(self, job_id: str) -> list[JobStatus]:
        with self._connection() as conn:
            return [
                JobStatus.model_validate_json(str(r[0]))
                for r in conn.execute(self._sql.history, {"b_id": job_id})
            ]


class SQLiteJobStore(SQLJobStore):
    """The SQL store on a SQLite file in WAL mode: the default, shared safely by the processes of one host.

    ``synchronous=NORMAL`` in WAL mode survives a process kill (only an OS crash can lose the last commits),
    which is the failure this store exists for, at a fraction of the cost of an fsync per write.
    """

    def __init__(self, path: str | Path, *, migrate: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(URL.create("sqlite", database=str(self.path)), migrate=migrate)

    def __repr__(self) -> str:
        return f"SQLiteJobStore({str(self.path)!r})"


def import_driver(url: str | URL) -> None:
    """Import the database driver a store on ``url`` uses, opening nothing (a Celery worker does it before
    its pool forks, so every child starts with it loaded)."""
    _parse(url).get_dialect().import_dbapi()


def _parse(url: str | URL) -> URL:
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        raise ConfigError(
            "job_store is neither a path nor a database URL",
            fix="use a file path, sqlite:///path or postgresql://user:password@host/database",
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"job store {redacted(parsed)}: {backend!r} is not supported",
            fix="use a file path, sqlite:///path or postgresql://user:password@host/database",
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            "an in-memory SQLite job store is private to one connection",
            fix="use a file path, or MemoryJobStore() for tests",
        )
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 256 KiB of page cache instead of SQLite's 2 MB per connection: rows are small and read by key, and the
    # OS caches the file anyway. At 500 jobs in flight the default cache was a fifth of the batch's memory.
    cursor.execute("PRAGMA cache_size=-256")
    cursor.close()


# ---------------------------------------------------------------------------------------- migrations


def _migrate_1_to_2(conn: Connection, _sqlite: bool) -> None:
    """Versions, idempotency keys (old jobs are keyed by their id) and claims."""
    double = Double().compile(dialect=conn.dialect)
    for statement in (
        "ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT",
        "ALTER TABLE jobs ADD COLUMN claim_owner TEXT",
        f"ALTER TABLE jobs ADD COLUMN claim_until {double}",
        "UPDATE jobs SET idempotency_key = id",
    ):
        conn.exec_driver_sql(statement)


def _migrate_2_to_3(conn: Connection, is_sqlite: bool) -> None:
    """The status history gets its own sequence column, in the order it was written."""
    conn.exec_driver_sql("ALTER TABLE job_status RENAME TO job_status_old")
    conn.exec_driver_sql("DROP INDEX IF EXISTS job_status_job")
    _history.create(conn)
    order = "rowid" if is_sqlite else "observed_at"
    conn.exec_driver_sql(
        "INSERT INTO job_status (job_id, observed_at, state, data) "
        f"SELECT job_id, observed_at, state, data FROM job_status_old ORDER BY {order}"
    )
    conn.exec_driver_sql("DROP TABLE job_status_old")


_MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}
