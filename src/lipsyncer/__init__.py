"""lipsyncer: every hosted lip-sync API behind one typed, pluggable interface.

The public names below are imported on first use (PEP 562), so ``import lipsyncer`` costs almost nothing and a
command such as ``lipsyncer --help`` never pays for httpx, pydantic models or the providers it does not touch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_ERRORS = (
    "AuthenticationError",
    "CancelNotSupportedError",
    "ClientClosedError",
    "ConfigError",
    "DeadlineExceededError",
    "IdempotencyKeyReusedError",
    "InvalidMediaError",
    "InvalidRequestError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTargetMismatchError",
    "LipsyncError",
    "MissingCredentialsError",
    "NoRouteError",
    "PluginError",
    "ProviderError",
    "ProviderRejectedError",
    "ProviderUnavailableError",
    "QuotaExceededError",
    "RateLimitedError",
    "ResultExpiredError",
    "StorageError",
    "SubmitOutcomeUnknownError",
    "UnsupportedOptionError",
    "WebhookVerificationError",
)
_SCHEMA = (
    "ActiveSpeaker",
    "Attempt",
    "Cost",
    "Job",
    "JobEvent",
    "JobState",
    "JobStatus",
    "LipsyncRequest",
    "LipsyncResult",
    "LogEntry",
    "MediaKind",
    "MediaSource",
    "Option",
    "SyncMode",
    "VideoFile",
)
_PROVIDER = (
    "ModelSpec",
    "Provider",
    "ProviderContext",
    "ProviderOptions",
    "ProviderOutput",
    "Storage",
    "StorageContext",
    "Submission",
    "WebhookEvent",
)

_WHERE: dict[str, str] = {
    "AsyncLipsyncer": ".core.client",
    "Lipsyncer": ".core.sync",
    "BatchItem": ".core.batch",
    "Outcome": ".core.batch",
    "PollingPolicy": ".core.config",
    "ProviderSettings": ".core.config",
    "Settings": ".core.config",
    "load_settings": ".core.config",
    "DownloadError": ".core.download",
    "hookimpl": ".core.hookspecs",
    "JobStore": ".core.jobs",
    "MemoryJobStore": ".core.jobs",
    "SQLiteJobStore": ".core.jobs",
    "Route": ".core.router",
    "RoutePlan": ".core.router",
    "Redactor": ".core.redact",
    **dict.fromkeys(_ERRORS, ".core.errors"),
    **dict.fromkeys(_SCHEMA, ".core.schema"),
    **dict.fromkeys(_PROVIDER, ".core.provider"),
}
"""Each public name and the module that defines it."""

__all__ = [
    "ActiveSpeaker",
    "AsyncLipsyncer",
    "Attempt",
    "AuthenticationError",
    "BatchItem",
    "CancelNotSupportedError",
    "ClientClosedError",
    "ConfigError",
    "Cost",
    "DeadlineExceededError",
    "DownloadError",
    "IdempotencyKeyReusedError",
    "InvalidMediaError",
    "InvalidRequestError",
    "Job",
    "JobEvent",
    "JobFailedError",
    "JobNotFoundError",
    "JobState",
    "JobStatus",
    "JobStore",
    "JobTargetMismatchError",
    "LipsyncError",
    "LipsyncRequest",
    "LipsyncResult",
    "Lipsyncer",
    "LogEntry",
    "MediaKind",
    "MediaSource",
    "MemoryJobStore",
    "MissingCredentialsError",
    "ModelSpec",
    "NoRouteError",
    "Option",
    "Outcome",
    "PluginError",
    "PollingPolicy",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "ProviderOptions",
    "ProviderOutput",
    "ProviderRejectedError",
    "ProviderSettings",
    "ProviderUnavailableError",
    "QuotaExceededError",
    "RateLimitedError",
    "Redactor",
    "ResultExpiredError",
    "Route",
    "RoutePlan",
    "SQLiteJobStore",
    "Settings",
    "Storage",
    "StorageContext",
    "StorageError",
    "Submission",
    "SubmitOutcomeUnknownError",
    "SyncMode",
    "UnsupportedOptionError",
    "VideoFile",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "hookimpl",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lipsyncer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from .core.batch import BatchItem, Outcome
    from .core.client import AsyncLipsyncer
    from .core.config import PollingPolicy, ProviderSettings, Settings, load_settings
    from .core.download import DownloadError
    from .core.errors import (
        AuthenticationError,
        CancelNotSupportedError,
        ClientClosedError,
        ConfigError,
        DeadlineExceededError,
        IdempotencyKeyReusedError,
        InvalidMediaError,
        InvalidRequestError,
        JobFailedError,
        JobNotFoundError,
        JobTargetMismatchError,
        LipsyncError,
        MissingCredentialsError,
        NoRouteError,
        PluginError,
        ProviderError,
        ProviderRejectedError,
        ProviderUnavailableError,
        QuotaExceededError,
        RateLimitedError,
        ResultExpiredError,
        StorageError,
        SubmitOutcomeUnknownError,
        UnsupportedOptionError,
        WebhookVerificationError,
    )
    from .core.hookspecs import hookimpl
    from .core.jobs import JobStore, MemoryJobStore, SQLiteJobStore
    from .core.provider import (
        ModelSpec,
        Provider,
        ProviderContext,
        ProviderOptions,
        ProviderOutput,
        Storage,
        StorageContext,
        Submission,
        WebhookEvent,
    )
    from .core.redact import Redactor
    from .core.router import Route, RoutePlan
    from .core.schema import (
        ActiveSpeaker,
        Attempt,
        Cost,
        Job,
        JobEvent,
        JobState,
        JobStatus,
        LipsyncRequest,
        LipsyncResult,
        LogEntry,
        MediaKind,
        MediaSource,
        Option,
        SyncMode,
        VideoFile,
    )
    from .core.sync import Lipsyncer
