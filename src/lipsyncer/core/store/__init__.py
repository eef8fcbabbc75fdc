"""Job stores: the protocol, the SQL store (SQLite by default, PostgreSQL for a fleet) and an in-memory one.

:func:`store_from_url` turns the ``job_store`` setting into a store: a file path or ``sqlite:///path`` is
SQLite on this host; ``postgresql://user:password@host/database`` is PostgreSQL, shared by every process
and machine of a fleet.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import SCHEMA_VERSION, Claim, JobStore, default_store_path, job_summary
from .memory import MemoryJobStore
from .sql import SQLiteJobStore, SQLJobStore, import_driver, redacted

__all__ = [
    "SCHEMA_VERSION",
    "Claim",
    "JobStore",
    "MemoryJobStore",
    "SQLJobStore",
    "SQLiteJobStore",
    "default_store_path",
    "import_driver",
    "job_summary",
    "redacted",
    "store_from_url",
]


def store_from_url(target: str | os.PathLike[str], *, migrate: bool | None = None) -> SQLJobStore:
    """The store ``job_store`` names: a path (or ``sqlite:///path``) or a ``postgresql://`` URL.

    ``migrate`` brings an older schema up to date when opening (default: SQLite yes, a server no; see
    ``lipsyncer jobs migrate``).
    """
    value = os.fspath(target)
    if "://" not in value:
        return SQLiteJobStore(Path(value), migrate=True if migrate is None else migrate)
    if value.startswith("sqlite:///"):
        return SQLiteJobStore(
            Path(value.removeprefix("sqlite:///")), migrate=True if migrate is None else migrate
        )
    return SQLJobStore(value, migrate=migrate)
