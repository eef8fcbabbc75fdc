"""Faults on demand: declarative, matched per request, deterministic for a given seed and request order.

A fault names *what* goes wrong (``kind``), *where* (``api``/``operation``/``endpoint``; unset matches
anything) and *how often* (``times``: the first N matching requests; ``every``: every Nth; ``probability``:
a seeded coin; none of them: every matching request). Request-level kinds (``http_error``,
``drop_connection``, ``drop_after_accept``, ``slow``) act on any matching request; job-level kinds
(``job_error``, ``webhook_*``) are drawn when a job is created (fal ``submit``, unified and sync.so ``create``);
``expired_links`` acts on CDN file downloads.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .wire import FAL_MODEL_ERRORS, FAL_REQUEST_ERRORS, UNIFIED_ERROR_TYPES, UNIFIED_TASK_ERRORS

__all__ = ["JOB_KINDS", "REQUEST_KINDS", "Fault", "FaultApi", "FaultKind", "FaultPlan", "FaultStats"]

FaultKind = Literal[
    "http_error",
    "drop_connection",
    "drop_after_accept",
    "slow",
    "job_error",
    "webhook_fail",
    "webhook_duplicate",
    "webhook_early",
    "expired_links",
]
FaultApi = Literal["fal", "unified", "syncso", "cdn"]

REQUEST_KINDS: frozenset[str] = frozenset({"http_error", "drop_connection", "drop_after_accept", "slow"})
JOB_KINDS: frozenset[str] = frozenset({"job_error", "webhook_fail", "webhook_duplicate", "webhook_early"})
FILE_KINDS: frozenset[str] = frozenset({"expired_links"})
_ANSWERING = frozenset({"http_error", "drop_connection", "expired_links"})


class Fault(BaseModel):
    """One injected failure. See ``docs/sandbox.md`` for the wire shape each kind produces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    api: FaultApi | None = None
    operation: str | None = Field(
        default=None, description="submit, status, result, cancel, create, query, ..."
    )
    endpoint: str | None = Field(default=None, description="fal endpoint id, or the unified model id")
    times: int | None = Field(default=None, ge=1, description="fire on the first N matching requests")
    every: int | None = Field(default=None, ge=1, description="fire on every Nth matching request")
    probability: float | None = Field(default=None, ge=0.0, le=1.0, description="seeded chance per request")
    status: int | None = Field(default=None, description="http_error status; expired_links: 404 or 410")
    error_type: str | None = Field(
        default=None,
        description="job_error: fal error type, unified task code or sync.so generation_* code; "
        "http_error: fal error_type or sync.so errorCode",
    )
    message: str | None = None
    retry_after: int | None = Field(default=None, ge=0, description="Retry-After seconds on a 429")
    seconds: float | None = Field(default=None, ge=0, description="slow: the delay; webhook_early: the lead")
    after: bool = Field(default=False, description="slow: delay the response after the work is done")
    ingress: bool = Field(default=False, description="fal http_error: nginx HTML that fal-client retries")

    @model_validator(mode="after")
    def _check(self) -> Fault:
        if sum(x is not None for x in (self.times, self.every, self.probability)) > 1:
            raise ValueError("give at most one of times, every, probability")
        if self.kind == "http_error":
            status = self.status if self.status is not None else 500
            if not 400 <= status <= 599:
                raise ValueError(f"http_error status must be 4xx or 5xx, got {status}")
            if self.api == "unified" and status not in UNIFIED_ERROR_TYPES:
                raise ValueError(
                    f"the unified API has no {status} error; use one of {sorted(UNIFIED_ERROR_TYPES)}"
                )
            if self.ingress and status not in (502, 503, 504):
                raise ValueError("ingress errors are 502, 503 or 504")
        if self.kind == "job_error":
            if not self.error_type:
                raise ValueError("job_error needs error_type (a fal error type or a unified task error code)")
            fal_known = self.error_type in FAL_MODEL_ERRORS or self.error_type in FAL_REQUEST_ERRORS
            unified_known = self.error_type in UNIFIED_TASK_ERRORS
            syncso_known = self.error_type.startswith("generation_")  # sync.so's generation-level codes
            if self.api == "syncso" and not syncso_known:
                raise ValueError(
                    f"sync.so generation error codes start with 'generation_', got {self.error_type!r}"
                )
            if self.api == "fal" and not fal_known:
                raise ValueError(f"unknown fal error type {self.error_type!r}")
            if self.api == "unified" and not unified_known:
                raise ValueError(f"unknown unified task error code {self.error_type!r}")
            if not (fal_known or unified_known or syncso_known):
                raise ValueError(f"unknown error type {self.error_type!r}")
        if self.kind == "slow" and self.seconds is None:
            raise ValueError("slow needs seconds")
        if self.kind == "expired_links" and self.status not in (None, 404, 410):
            raise ValueError("expired_links answers 404 or 410")
        return self

    @property
    def http_status(self) -> int:
        return self.status if self.status is not None else 500

    def matches(self, api: str, operation: str, endpoint: str | None) -> bool:
        if self.api is not None and self.api != api:
            return False
        if self.operation is not None and self.operation != operation:
            return False
        return self.endpoint is None or self.endpoint == endpoint


@dataclass(frozen=True)
class FaultStats:
    """How often a fault matched a request and how often it fired."""

    index: int
    fault: Fault
    matched: int
    fired: int


class _Entry:
    def __init__(self, index: int, fault: Fault, seed: int) -> None:
        self.index = index
        self.fault = fault
        self.matched = 0
        self.fired = 0
        # One generator per fault: adding a fault never shifts another fault's coin flips.
        self.rng = random.Random(f"lipsyncer-sandbox:{seed}:{index}")

    def draw(self) -> bool:
        self.matched += 1
        fault = self.fault
        if fault.times is not None:
            fire = self.matched <= fault.times
        elif fault.every is not None:
            fire = self.matched % fault.every == 0
        elif fault.probability is not None:
            fire = self.rng.random() < fault.probability
        else:
            fire = True
        if fire:
            self.fired += 1
        return fire


class FaultPlan:
    """The live list of faults; thread-safe, since the loopback server and in-process clients share it."""

    def __init__(self, faults: Iterable[Fault], seed: int) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        for fault in faults:
            self.add(fault)

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._entries.append(_Entry(len(self._entries), fault, self._seed))

    def clear(self) -> None:
        with self._lock:
            self._entries = []

    def stats(self) -> list[FaultStats]:
        with self._lock:
            return [FaultStats(e.index, e.fault, e.matched, e.fired) for e in self._entries]

    def draw(self, kinds: frozenset[str], api: str, operation: str, endpoint: str | None) -> list[Fault]:
        """The faults of ``kinds`` that fire for this request, in declaration order.

        Evaluation stops at the first fault that answers in place of the handler (``http_error``,
        ``drop_connection``, ``expired_links``): later faults do not see a request that never reached them.
        Of the other kinds, once one fault of a kind fired, later faults of that kind are not drawn either.
        """
        fired: list[Fault] = []
        with self._lock:
            for entry in self._entries:
                fault = entry.fault
                if fault.kind not in kinds or not fault.matches(api, operation, endpoint):
                    continue
                if any(f.kind == fault.kind for f in fired):
                    continue
                if entry.draw():
                    fired.append(fault)
                    if fault.kind in _ANSWERING:
                        break
        return fired
