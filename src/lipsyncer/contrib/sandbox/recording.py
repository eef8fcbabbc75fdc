"""What the sandbox saw and sent: every request it answered and every webhook it delivered.

Tests assert on these logs instead of on timing ("the provider polled with logs=true", "no field was ignored",
"the webhook was retried"), so records are plain, immutable snapshots safe to read from any thread.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

__all__ = ["DeliveryLog", "RecordedRequest", "RequestLog", "WebhookDelivery"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received (credentials redacted) and how it was answered.

    ``status`` is None when no response was sent (a dropped connection). ``ignored_fields`` lists the input
    fields the endpoint does not have or the model ignores (dotted paths such as ``options.temperature``).
    """

    seq: int
    at: datetime
    method: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    body_size: int
    api: str
    operation: str
    endpoint: str | None = None
    status: int | None = None
    job_id: str | None = None
    ignored_fields: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    dropped: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["ignored_fields"] = list(self.ignored_fields)
        data["faults"] = list(self.faults)
        return data


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []

    def add(self, record: RecordedRequest) -> RecordedRequest:
        with self._lock:
            record = replace(record, seq=len(self._records) + 1)
            self._records.append(record)
            return record

    def update(self, seq: int, **changes: Any) -> None:
        with self._lock:
            self._records[seq - 1] = replace(self._records[seq - 1], **changes)

    def get(self, seq: int) -> RecordedRequest:
        with self._lock:
            return self._records[seq - 1]

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)


@dataclass(frozen=True)
class WebhookDelivery:
    """One delivery attempt of a fal webhook or a unified callback.

    ``dropped`` marks a delivery a ``webhook_fail`` fault swallowed (nothing was sent); ``status_code`` is
    None when the receiver could not be reached, with the reason in ``error``.
    """

    api: str
    job_id: str
    url: str
    attempt: int
    at: datetime
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status_code: int | None = None
    error: str | None = None
    dropped: bool = False
    duplicate: bool = False
    early: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["body"] = self.body.decode("utf-8", "replace")
        data["ok"] = self.ok
        return data


class DeliveryLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[WebhookDelivery] = []

    def add(self, item: WebhookDelivery) -> None:
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._items)
