"""Faults on demand: declarative, matched per request, deterministic for a given seed and request order.

A fault names *what* goes wrong (``kind``), *where* (``api``/``operation``/``endpoint``, and ``finished``
for requests about a job that has or has not finished; unset matches anything) and *how often* (``times``:
the first N matching requests; ``every``: every Nth; ``probability``: a seeded coin; none of them: every
matching request). Request-level kinds (``http_error``, ``drop_connection``, ``drop_after_accept``,
``gateway_after_accept``, ``hold_after_accept``, ``slow``, ``storm``) act on any matching request; job-level
kinds (``job_error``, ``webhook_*``) are drawn when a job is created (fal ``submit``, unified and sync.so
``create``);
``expired_links`` acts on CDN file downloads. A ``storm`` fault, when its coin fires, picks one concrete
request fault from a menu that fits the operation (see ``Fault.storm``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .wire import FAL_MODEL_ERRORS, FAL_REQUEST_ERRORS, UNIFIED_ERROR_TYPES, UNIFIED_TASK_ERRORS

__all__ = [
    "ANSWERING_KINDS",
    "JOB_KINDS",
    "REQUEST_KINDS",
    "Fault",
    "FaultApi",
    "FaultKind",
    "FaultPlan",
    "FaultStats",
]

FaultKind = Literal[
    "http_error",
    "drop_connection",
    "drop_after_accept",
    "gateway_after_accept",
    "hold_after_accept",
    "slow",
    "storm",
    "job_error",
    "webhook_fail",
    "webhook_duplicate",
    "webhook_early",
    "expired_links",
]
FaultApi = Literal["fal", "unified", "cdn", "syncso"]

REQUEST_KINDS: frozenset[str] = frozenset(
    {
        "http_error",
        "drop_connection",
        "drop_after_accept",
        "gateway_after_accept",
        "hold_after_accept",
        "slow",
        "storm",
    }
)
JOB_KINDS: frozenset[str] = frozenset({"job_error", "webhook_fail", "webhook_duplicate", "webhook_early"})
FILE_KINDS: frozenset[str] = frozenset({"expired_links"})
ANSWERING_KINDS: frozenset[str] = frozenset({"http_error", "drop_connection", "expired_links"})
"""Kinds that answer in place of the handler: nothing is created, and later faults never see the request."""
_GATEWAY_STATUSES = (502, 503, 504)
_CREATING_OPERATIONS = frozenset({"submit", "create"})


class Fault(BaseModel):
    """One injected failure. See ``docs/sandbox.md`` for the wire shape each kind produces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    api: FaultApi | None = None
    operation: str | None = Field(
        default=None, description="submit, status, result, cancel, create, query, ..."
    )
    endpoint: str | None = Field(default=None, description="fal endpoint id, or the unified model id")
    finished: bool | None = Field(
        default=None,
        description="match only requests about a known job that has (True) or has not (False) finished: "
        "True on fal's result GET or the unified task GET makes a result-fetch failure",
    )
    times: int | None = Field(default=None, ge=1, description="fire on the first N matching requests")
    every: int | None = Field(default=None, ge=1, description="fire on every Nth matching request")
    probability: float | None = Field(default=None, ge=0.0, le=1.0, description="seeded chance per request")
    seed: int | None = Field(
        default=None,
        description="seeds this fault's coin (default: the sandbox seed and the fault's position)",
    )
    status: int | None = Field(
        default=None,
        description="http_error status; gateway_after_accept: 502, 503 or 504; expired_links: 404 or 410",
    )
    error_type: str | None = Field(
        default=None,
        description="job_error: fal error type, unified task code or sync.so generation_* code; "
        "http_error: fal error_type or sync.so errorCode",
    )
    message: str | None = None
    retry_after: int | None = Field(
        default=None, ge=0, description="Retry-After seconds on a 429 (and on a unified or sync.so 503)"
    )
    seconds: float | None = Field(
        default=None,
        ge=0,
        description="slow / hold_after_accept: the delay; webhook_early: the lead; storm: add holds this long",
    )
    after: bool = Field(default=False, description="slow: delay the response after the work is done")
    ingress: bool = Field(default=False, description="http_error 502/503/504: the gateway's nginx HTML page")

    @classmethod
    def storm(
        cls,
        rate: float,
        seed: int | None = None,
        *,
        apis: Iterable[FaultApi] = ("fal", "unified"),
        hold_seconds: float | None = None,
        retry_after: int | None = 1,
    ) -> list[Fault]:
        """A mixed fault storm: each request to ``apis`` meets a fault with chance ``rate``, seeded by ``seed``.

        The fault each hit gets is drawn from a menu that fits the request: on a submit (fal ``submit``,
        unified ``create``) a 429, a 500, a 503, a gateway page before acceptance, a dropped connection before
        acceptance, or, after the job **is** created, a dropped connection or a 502/504 gateway page (and a
        held answer of ``hold_seconds`` when given); on any other request (status polls, result fetches after
        completion, cancels, uploads) a 429, a 500, a 503 or a dropped connection. A 429 or 503 carries
        ``Retry-After: retry_after`` (None: each API's own default, 60 and 30 s on the unified API), so a
        storm test does not wait a minute per refusal. Same seed and request order, same faults. Use as
        ``SandboxConfig(faults=Fault.storm(0.2, seed=7))``.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate is a probability between 0 and 1, got {rate}")
        return [
            cls(
                kind="storm",
                api=api,
                probability=rate,
                seed=seed,
                seconds=hold_seconds,
                retry_after=retry_after,
            )
            for api in apis
        ]

    @model_validator(mode="after")
    def _check(self) -> Fault:
        if sum(x is not None for x in (self.times, self.every, self.probability)) > 1:
            raise ValueError("give at most one of times, every, probability")
        if self.kind == "http_error":
            status = self.status if self.status is not None else 500
            if not 400 <= status <= 599:
                raise ValueError(f"http_error status must be 4xx or 5xx, got {status}")
            if self.api == "unified" and not self.ingress and status not in UNIFIED_ERROR_TYPES:
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
        if self.kind in ("slow", "hold_after_accept") and self.seconds is None:
            raise ValueError(f"{self.kind} needs seconds")
        if self.kind == "gateway_after_accept" and self.status not in (None, *_GATEWAY_STATUSES):
            raise ValueError("gateway_after_accept answers 502, 503 or 504")
        if self.kind == "expired_links" and self.status not in (None, 404, 410):
            raise ValueError("expired_links answers 404 or 410")
        return self

    @property
    def http_status(self) -> int:
        default = 502 if self.kind == "gateway_after_accept" else 500
        return self.status if self.status is not None else default

    def matches(self, api: str, operation: str, endpoint: str | None, finished: bool | None = None) -> bool:
        if self.api is not None and self.api != api:
            return False
        if self.operation is not None and self.operation != operation:
            return False
        if self.finished is not None and self.finished is not finished:
            return False  # set: the request must name a known job in that state
        return self.endpoint is None or self.endpoint == endpoint


def storm_menu(storm: Fault, api: str, operation: str) -> list[Fault]:
    """The concrete faults a ``storm`` picks from for one request (see ``Fault.storm``)."""
    unified = api == "unified"
    menu = [
        Fault(kind="http_error", status=429, retry_after=storm.retry_after),
        Fault(kind="http_error", status=500),
        Fault(kind="http_error", status=503, retry_after=storm.retry_after),
        Fault(kind="drop_connection"),
    ]
    if operation in _CREATING_OPERATIONS:
        menu += [
            Fault(kind="http_error", status=502, ingress=True),
            Fault(kind="drop_after_accept"),
            Fault(kind="gateway_after_accept", status=502),
            Fault(kind="gateway_after_accept", status=504),
        ]
        if storm.seconds is not None:
            menu.append(Fault(kind="hold_after_accept", seconds=storm.seconds))
    if unified:  # the unified API's own errors use its JSON envelope, which has these statuses
        menu = [
            f for f in menu if f.kind != "http_error" or f.ingress or f.http_status in UNIFIED_ERROR_TYPES
        ]
    return menu


def fault_label(fault: Fault) -> str:
    """A short name for a concrete fault (``http_error:503``, ``gateway_after_accept:504``...)."""
    if fault.kind in ("http_error", "gateway_after_accept", "expired_links"):
        suffix = ":ingress" if fault.ingress else ""
        return f"{fault.kind}:{fault.http_status if fault.kind != 'expired_links' else fault.status or 404}{suffix}"
    return fault.kind


@dataclass(frozen=True)
class FaultStats:
    """How often a fault matched a request and how often it fired."""

    index: int
    fault: Fault
    matched: int
    fired: int
    chosen: dict[str, int] = field(default_factory=dict)
    """For a ``storm``: how often each concrete fault was picked (``fault_label`` names)."""


class _Entry:
    def __init__(self, index: int, fault: Fault, seed: int) -> None:
        self.index = index
        self.fault = fault
        self.matched = 0
        self.fired = 0
        self.chosen: dict[str, int] = {}
        self._menus: dict[tuple[str, str], list[Fault]] = {}
        # One generator per fault: adding a fault never shifts another fault's coin flips.
        own = fault.seed if fault.seed is not None else seed
        self.rng = random.Random(f"lipsyncer-sandbox:{own}:{index}")

    def pick(self, api: str, operation: str) -> Fault:
        """The concrete fault a storm applies to this request (drawn from the same seeded generator)."""
        menu = self._menus.get((api, operation))
        if menu is None:
            menu = self._menus[(api, operation)] = storm_menu(self.fault, api, operation)
        chosen = menu[self.rng.randrange(len(menu))]
        label = fault_label(chosen)
        self.chosen[label] = self.chosen.get(label, 0) + 1
        return chosen

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
            return [FaultStats(e.index, e.fault, e.matched, e.fired, dict(e.chosen)) for e in self._entries]

    def draw(
        self,
        kinds: frozenset[str],
        api: str,
        operation: str,
        endpoint: str | None,
        *,
        finished: bool | None = None,
    ) -> list[Fault]:
        """The faults of ``kinds`` that fire for this request, in declaration order (storms resolved).

        Evaluation stops at the first fault that answers in place of the handler (``http_error``,
        ``drop_connection``, ``expired_links``): later faults do not see a request that never reached them.
        Of the other kinds, once one fault of a kind fired, later faults of that kind are not drawn either.
        """
        fired: list[Fault] = []
        with self._lock:
            for entry in self._entries:
                fault = entry.fault
                if fault.kind not in kinds or not fault.matches(api, operation, endpoint, finished):
                    continue
                if fault.kind != "storm" and any(f.kind == fault.kind for f in fired):
                    continue
                if not entry.draw():
                    continue
                if fault.kind == "storm":
                    fault = entry.pick(api, operation)
                    if any(f.kind == fault.kind for f in fired):
                        continue
                fired.append(fault)
                if fault.kind in ANSWERING_KINDS:
                    break
        return fired
