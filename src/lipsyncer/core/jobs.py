"""Durable job handles: a paid job is in the store before a byte of its submit leaves.

The store lives in :mod:`lipsyncer.core.store`; these names stay importable from here.
"""

from __future__ import annotations

from .store import (
    SCHEMA_VERSION,
    Claim,
    JobStore,
    MemoryJobStore,
    SQLiteJobStore,
    SQLJobStore,
    default_store_path,
    job_summary,
    store_from_url,
)

__all__ = [
    "SCHEMA_VERSION",
    "Claim",
    "JobStore",
    "MemoryJobStore",
    "SQLJobStore",
    "SQLiteJobStore",
    "default_store_path",
    "job_summary",
    "store_from_url",
]
