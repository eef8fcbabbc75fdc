"""``Sandbox``: the offline emulator of fal's queue, the unified task API and sync.so's API, as one ASGI app.

Requests are routed by path only (the ``Host`` header says which real service the client meant, and is echoed
in every URL handed back). Each request is recorded, may meet a fault, and is answered by the API module that
owns its path. State lives in the ``Engine``; this module is the HTTP face and the test-facing inspection API.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from lipsyncer.core.http import redact_headers
from lipsyncer.core.schema import JobState

from .accounting import Grouping, group_accepted, max_overlap
from .cdn import CdnApi
from .client_config import client_config, config_toml
from .clock import Clock
from .config import SandboxConfig
from .engine import Engine
from .exchange import Call, Reply, origin_of
from .fal_api import FalApi, app_of
from .fal_schema import FAL_ENDPOINTS
from .faults import FILE_KINDS, REQUEST_KINDS, Fault, FaultStats
from .jobs import JobView
from .recording import RecordedRequest, WebhookDelivery
from .syncso_api import SyncsoApi
from .syncso_api import fault_error as syncso_fault_error
from .transport import TRANSPORT_STATE_KEY, ConnectionDropped, SandboxTransport
from .unified_api import UnifiedApi
from .wire import WireError, fal_http_error, gateway_page, unified_error

__all__ = ["Sandbox"]

Handler = Callable[[Call], Reply]


@dataclass(frozen=True)
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    api: str
    operation: str
    handler: Handler


class Sandbox:
    """An in-memory fal queue + unified task API with real MP4 output, faults on demand and full request logs.

    Use ``transport()`` to talk to it in-process, or ``serve_in_thread(sandbox)`` for a loopback server. Close
    it (or use it as a context manager) to stop its worker threads.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        config = config or SandboxConfig()
        if config.seed is None:
            # A fresh seed per instance: two sandboxes never hand out the same ids (jobs from two runs must
            # not collide by remote id in one job store); config.seed says which, to repeat a run.
            config = config.model_copy(update={"seed": secrets.randbits(32)})
        self._config = config
        self._engine = Engine(self._config)
        self._fal = FalApi(self._engine)
        self._unified = UnifiedApi(self._engine)
        self._syncso = SyncsoApi(self._engine)
        self._cdn = CdnApi(
            self._engine.files, fal_key=self._config.fal_key, file_ttl=lambda: self._config.cdn_ttl_seconds
        )
        self._routes = self._build_routes()

    # ------------------------------------------------------------------------------------ public API

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @property
    def app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """The ASGI application (serve it with any ASGI server, or use ``transport()``)."""
        return self.__call__

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process transport: give it to ``FalAsyncClient(key=..., transport=...)`` or ``httpx.AsyncClient``."""
        return SandboxTransport(self.app)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (Authorization redacted)."""
        return self._engine.requests.snapshot()

    def find_requests(
        self, *, api: str | None = None, operation: str | None = None, endpoint: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (api is None or r.api == api)
            and (operation is None or r.operation == operation)
            and (endpoint is None or r.endpoint == endpoint)
        ]

    def submits(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Job-creating requests: fal submits, unified and sync.so creates (``endpoint``: fal endpoint id or model)."""
        return [
            r
            for r in self.requests
            if (r.api, r.operation) in (("fal", "submit"), ("unified", "create"), ("syncso", "create"))
            and (endpoint is None or r.endpoint == endpoint)
        ]

    @property
    def clock(self) -> Clock:
        """Where the sandbox reads time: ``config.clock``, or the real monotonic clock."""
        return self._engine.clock

    @property
    def jobs(self) -> list[JobView]:
        now = self._engine.clock.monotonic()
        with self._engine.locked():
            return [job.view(now) for job in self._engine.jobs()]

    def job(self, job_id: str) -> JobView:
        job = self._engine.get(job_id)
        if job is None:
            raise KeyError(job_id)
        with self._engine.locked():
            return job.view(self._engine.clock.monotonic())

    # ------------------------------------------------------------------------ exactly-once accounting

    def accepted_jobs(self, api: str | None = None) -> list[JobView]:
        """Every job a submit created (``api``: fal, unified...), whether or not the client saw the answer."""
        return [job for job in self.jobs if api is None or job.api == api]

    def accepted_count(self, api: str | None = None) -> int:
        """How many submits the sandbox accepted (created a job for)."""
        return len(self.accepted_jobs(api))

    def accepted_submits(
        self, by: Grouping = "lipsyncer_job", *, api: str | None = None
    ) -> dict[str | None, int]:
        """Accepted submits per client marker: how many jobs each request caused.

        ``by``: a query parameter of the job's webhook/callback URL (default ``lipsyncer_job``, which
        lipsyncer appends), ``"idempotency_key"`` (the ``Idempotency-Key`` header), ``"body"`` (a digest of
        the submitted body, callback URL left out) or a function of the ``JobView``. Jobs without the marker
        are counted under ``None``.
        """
        return group_accepted(self.accepted_jobs(api), by)

    def accepted_twice(self, by: Grouping = "lipsyncer_job", *, api: str | None = None) -> dict[str, int]:
        """The markers accepted more than once (``{}`` when every marked request was accepted at most once)."""
        counts = self.accepted_submits(by, api=api)
        return {key: n for key, n in counts.items() if key is not None and n > 1}

    def completed_jobs(self, api: str | None = None) -> list[JobView]:
        """Jobs the sandbox finished with an output (what a client must not abandon)."""
        return [job for job in self.accepted_jobs(api) if job.state is JobState.COMPLETED]

    def in_flight(self, api: str | None = None, endpoint: str | None = None) -> int:
        """Jobs accepted and not yet visibly finished, now (``endpoint``: fal endpoint id or unified model)."""
        now = self._engine.clock.monotonic()
        with self._engine.locked():
            return sum(
                1
                for job in self._engine.jobs()
                if (api is None or job.api == api)
                and (endpoint is None or job.endpoint == endpoint)
                and not job.phase(now).finished
            )

    def max_in_flight(self, api: str | None = None, endpoint: str | None = None) -> int:
        """The most jobs in flight at one instant so far (per API or endpoint), to check concurrency limits."""
        now = self._engine.clock.monotonic()
        with self._engine.locked():
            jobs = [
                job
                for job in self._engine.jobs()
                if (api is None or job.api == api) and (endpoint is None or job.endpoint == endpoint)
            ]
            return max_overlap(jobs, now)

    # ------------------------------------------------------------------------------- client config

    def client_config(
        self, base_url: str | None = None, *, insecure_callbacks: bool | None = None
    ) -> dict[str, Any]:
        """lipsyncer settings that send every emulated provider, and the fal-cdn storage, to this sandbox.

        ``base_url``: where the sandbox listens (``server.base_url``); None for the in-process transport,
        where only the storage and provider options are needed. ``insecure_callbacks`` (default: the
        sandbox's ``allow_insecure_callbacks``) lets the unified provider send http loopback callback URLs.
        The dict has ``Settings`` field names: ``settings.with_overrides(**sandbox.client_config(url))``.
        """
        insecure = self._config.allow_insecure_callbacks if insecure_callbacks is None else insecure_callbacks
        return client_config(base_url, insecure_callbacks=insecure)

    def client_config_toml(
        self, base_url: str | None = None, *, insecure_callbacks: bool | None = None
    ) -> str:
        """``client_config`` as the text of a ``lipsyncer.toml``."""
        return config_toml(self.client_config(base_url, insecure_callbacks=insecure_callbacks))

    @property
    def ignored_fields(self) -> dict[str, tuple[str, ...]]:
        """Per job id, the input fields the endpoint does not have or the model ignores."""
        return {job.id: job.ignored_fields for job in self._engine.jobs() if job.ignored_fields}

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        return self._engine.deliveries.snapshot()

    @property
    def faults(self) -> list[FaultStats]:
        return self._engine.faults.stats()

    def add_fault(self, fault: Fault) -> None:
        self._engine.faults.add(fault)

    def clear_faults(self) -> None:
        self._engine.faults.clear()

    def jwks(self) -> dict[str, Any]:
        """The JWKS fal webhook receivers verify against (also served at ``/.well-known/jwks.json``)."""
        return self._engine.signer.jwks()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._engine.signer.public_key

    def put_file(
        self,
        data: bytes,
        *,
        file_name: str,
        content_type: str = "application/octet-stream",
        base_url: str = "https://v3.fal.media",
    ) -> str:
        """Host ``data`` as if uploaded to fal's CDN; returns its URL under ``base_url``."""
        stored = self._engine.files.put(data, file_name=file_name, content_type=content_type)
        return base_url.rstrip("/") + stored.path

    def file_bytes(self, url: str) -> bytes | None:
        """The content behind a sandbox file URL (any host), or None when unknown or expired."""
        path = httpx.URL(url).path
        stored = self._engine.files.get(path)
        return None if stored is None else stored.data

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every job is rendered and every webhook settled; False if ``timeout`` passes first."""
        return self._engine.wait_idle(timeout)

    def wait_rendered(self, timeout: float = 30.0) -> bool:
        """Block until every job's inputs are fetched and its output rendered (or its failure known).

        The step a ``ManualClock`` test takes before ``clock.advance``: rendering is real work on worker
        threads, so a job finishes at ``max(start + processing_seconds, the clock when its render ended)``.
        """
        return self._engine.wait_rendered(timeout)

    def close(self) -> None:
        """Stop the worker, timer and delivery threads (pending work is dropped)."""
        self._engine.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- routing

    def _build_routes(self) -> list[_Route]:
        endpoints = "|".join(re.escape(e) for e in sorted(FAL_ENDPOINTS, key=len, reverse=True))
        requests = r"^/(?P<owner>[^/]+)/(?P<app>[^/]+)/requests/(?P<request_id>[^/]+)"
        table: list[tuple[str, str, str, str, Handler]] = [
            ("GET", r"^/_sandbox/requests$", "admin", "requests", self._admin_requests),
            ("GET", r"^/_sandbox/jobs$", "admin", "jobs", self._admin_jobs),
            ("GET", r"^/_sandbox/webhooks$", "admin", "webhooks", self._admin_webhooks),
            ("GET", r"^/_sandbox/faults$", "admin", "faults", self._admin_faults),
            ("POST", r"^/_sandbox/faults$", "admin", "add_fault", self._admin_add_fault),
            ("DELETE", r"^/_sandbox/faults$", "admin", "clear_faults", self._admin_clear_faults),
            ("GET", r"^/\.well-known/jwks\.json$", "fal", "jwks", self._jwks),
            ("POST", r"^/storage/auth/token$", "cdn", "token", self._cdn.token),
            ("POST", r"^/storage/upload/initiate$", "cdn", "upload_initiate", self._cdn.initiate),
            ("PUT", r"^/storage/upload/put/(?P<key>[A-Za-z0-9]+)$", "cdn", "upload_put", self._cdn.put),
            ("POST", r"^/files/upload$", "cdn", "upload", self._cdn.upload),
            ("GET,HEAD", r"^/files/.+$", "cdn", "file", self._file),
            ("POST", r"^/v1/videos/generations$", "unified", "create", self._unified.create),
            ("GET", r"^/v1/tasks/(?P<task_id>[^/]+)$", "unified", "query", self._unified.query),
            ("POST", r"^/v2/generate$", "syncso", "create", self._syncso.create),
            ("GET", r"^/v2/generate/(?P<generation_id>[^/]+)$", "syncso", "get", self._syncso.get),
            ("GET", r"^/v2/generations$", "syncso", "list", self._syncso.list),
            ("POST", r"^/v2/analyze/cost$", "syncso", "cost", self._syncso.cost),
            ("GET", requests + r"/status$", "fal", "status", self._fal.status),
            ("PUT", requests + r"/cancel$", "fal", "cancel", self._fal.cancel),
            ("GET", requests + r"$", "fal", "result", self._fal.result),
            ("POST", rf"^/(?P<endpoint>{endpoints})$", "fal", "submit", self._fal.submit),
        ]
        return [
            _Route(frozenset(methods.split(",")), re.compile(pattern), api, operation, handler)
            for methods, pattern, api, operation, handler in table
        ]

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str], bool]:
        """(route, path params, path known with another method)."""
        other_method = False
        for route in self._routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if method in route.methods:
                return route, {k: v for k, v in match.groupdict().items() if v is not None}, False
            other_method = True
        return None, {}, other_method

    # ------------------------------------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        server = scope.get("server") or ("127.0.0.1", 80)
        host = headers.get("host") or f"{server[0]}:{server[1]}"
        call = Call(
            method=request.method,
            path=request.url.path,
            host=host,
            origin=origin_of(host, headers.get("x-forwarded-proto")),
            query=dict(request.query_params),
            headers=headers,
            body=body,
        )
        route, params, other_method = self._match(call.method, call.path)
        call.params = params
        api, operation = (route.api, route.operation) if route is not None else _unrouted(call.path)
        call.endpoint = self._endpoint_of(api, operation, call)
        record = self._engine.requests.add(
            RecordedRequest(
                seq=0,
                at=datetime.fromtimestamp(self._engine.clock.time(), timezone.utc),
                method=call.method,
                host=host,
                path=call.path,
                query=call.query,
                headers=redact_headers(dict(request.headers)),
                body=call.json_or_none,
                body_size=len(body),
                api=api,
                operation=operation,
                endpoint=call.endpoint,
            )
        )

        fired: list[Fault] = []
        if api in ("fal", "unified", "cdn", "syncso") and route is not None:
            fired = self._engine.faults.draw(
                REQUEST_KINDS, api, operation, call.endpoint, finished=self._finished(api, call)
            )
        names: tuple[str, ...] = tuple(f.kind for f in fired)
        clock = self._engine.clock
        for fault in fired:
            if fault.kind == "slow" and not fault.after:
                await clock.sleep(fault.seconds or 0.0)
        refusal = next((f for f in fired if f.kind in ("http_error", "drop_connection")), None)
        if refusal is not None and refusal.kind == "drop_connection":
            self._engine.requests.update(record.seq, faults=names, dropped=True)
            await _drop(scope, receive)
            return

        if refusal is not None:
            reply = Reply.error(_fault_error(api, refusal))
        elif route is None:
            reply = _not_found(call.path, other_method)
        else:
            reply = route.handler(call)
            names += tuple(call.faults)
            if call.job_id is not None and operation in ("submit", "create"):
                self._remember_key(call.job_id, call.header("idempotency-key"))
            gateway = next((f for f in fired if f.kind == "gateway_after_accept"), None)
            if gateway is not None:
                # Handled (a job IS created), but the gateway in front answers with its own page.
                reply = Reply.error(gateway_page(gateway.http_status))

        # Recorded before any late delivery, so a client that gave up still finds what it caused.
        self._engine.requests.update(
            record.seq,
            status=reply.status,
            job_id=call.job_id,
            endpoint=call.endpoint,
            ignored_fields=call.ignored_fields,
            faults=names,
        )
        if refusal is None:
            for fault in fired:
                if (fault.kind == "slow" and fault.after) or fault.kind == "hold_after_accept":
                    await clock.sleep(fault.seconds or 0.0)
        if refusal is None and any(f.kind == "drop_after_accept" for f in fired):
            self._engine.requests.update(record.seq, status=None, dropped=True)
            await _drop(scope, receive)
            return
        response = Response(
            content=reply.content(),
            status_code=reply.status,
            headers=reply.headers,
            media_type=reply.media_type,
        )
        await response(scope, receive, send)

    def _remember_key(self, job_id: str, key: str | None) -> None:
        job = self._engine.get(job_id)
        if job is not None and key is not None:
            with self._engine.locked():
                job.extra.setdefault("idempotency_key", key)

    def _finished(self, api: str, call: Call) -> bool | None:
        """Whether the job a request is about has finished (None when it names no known job)."""
        job_id = call.params.get("request_id") or call.params.get("task_id") or call.params.get("job_id")
        job = self._engine.get(job_id) if job_id else None
        if job is None or job.api != api:
            return None
        with self._engine.locked():
            return job.phase(self._engine.clock.monotonic()).finished

    def _endpoint_of(self, api: str, operation: str, call: Call) -> str | None:
        if api == "fal" and operation == "submit":
            return call.params.get("endpoint")
        if api == "fal" and "request_id" in call.params:
            job = self._engine.get(call.params["request_id"])
            return job.endpoint if job is not None else f"{call.params['owner']}/{call.params['app']}"
        if api == "unified" and operation == "create":
            body = call.json_or_none
            model = body.get("model", "lipsync-2") if isinstance(body, dict) else None
            return model if isinstance(model, str) else None
        if api == "syncso" and "generation_id" in call.params:
            job = self._engine.get(call.params["generation_id"])
            return job.model if job is not None else None
        if api == "syncso" and operation in ("create", "cost"):
            body = call.json_or_none
            model = body.get("model") if isinstance(body, dict) else None
            return model if isinstance(model, str) else None
        if api == "unified" and "task_id" in call.params:
            job = self._engine.get(call.params["task_id"])
            return job.model if job is not None else None
        return None

    # ----------------------------------------------------------------------------------- small routes

    def _jwks(self, call: Call) -> Reply:
        return Reply(200, self.jwks())

    def _file(self, call: Call) -> Reply:
        expired = self._engine.faults.draw(FILE_KINDS, "cdn", "file", call.endpoint)
        call.faults.extend(f.kind for f in expired)
        return self._cdn.file(call, _expired_error(expired[0]) if expired else None)

    def _admin_requests(self, call: Call) -> Reply:
        return Reply(200, {"requests": [r.to_json() for r in self.requests]})

    def _admin_jobs(self, call: Call) -> Reply:
        return Reply(200, {"jobs": [j.to_json() for j in self.jobs]})

    def _admin_webhooks(self, call: Call) -> Reply:
        return Reply(200, {"deliveries": [d.to_json() for d in self.webhook_deliveries]})

    def _admin_faults(self, call: Call) -> Reply:
        stats = [
            {
                "index": s.index,
                "fault": s.fault.model_dump(mode="json"),
                "matched": s.matched,
                "fired": s.fired,
                "chosen": s.chosen,
            }
            for s in self.faults
        ]
        return Reply(200, {"faults": stats})

    def _admin_add_fault(self, call: Call) -> Reply:
        try:
            fault = Fault.model_validate_json(call.body)
        except ValidationError as exc:
            return Reply(422, {"detail": json.loads(exc.json())})
        self.add_fault(fault)
        return Reply(201, {"fault": fault.model_dump(mode="json")})

    def _admin_clear_faults(self, call: Call) -> Reply:
        self.clear_faults()
        return Reply(200, {"faults": []})


def _unrouted(path: str) -> tuple[str, str]:
    if path.startswith("/v1/"):
        return "unified", "unknown"
    if path.startswith("/v2/"):
        return "syncso", "unknown"
    if path.startswith("/_sandbox/"):
        return "admin", "unknown"
    if path.startswith("/files/") or path.startswith("/storage/"):
        return "cdn", "unknown"
    return "fal", "unknown"


def _not_found(path: str, other_method: bool) -> Reply:
    if other_method:
        if path.startswith("/v1/"):
            return Reply.error(unified_error(404, "Method not allowed on this path"))
        return Reply(405, {"detail": "Method Not Allowed"})
    if path.startswith("/v1/"):
        return Reply.error(unified_error(404, f"Unknown endpoint {path}"))
    if path.startswith("/v2/"):
        return Reply.error(syncso_fault_error(404, None, f"Cannot find {path}", None))
    segments = path.strip("/").split("/")
    if "requests" in segments[2:]:
        # A queue URL that kept the endpoint's sub-path: fal's status/result URLs drop it.
        at = segments.index("requests")
        app = "/".join(segments[:2])
        hint = f"/{app}/requests/{'/'.join(segments[at + 1 :])}"
        return Reply(404, {"detail": f"Not Found: queue URLs drop the endpoint sub-path; use {hint}"})
    if len(segments) >= 2 and segments[0] and not path.startswith("/_sandbox/"):
        return Reply(404, {"detail": f"Application '{app_of('/'.join(segments))}' not found"})
    return Reply(404, {"detail": "Not Found"})


def _expired_error(fault: Fault) -> WireError:
    status = fault.status or 404
    text = fault.message or ("This link has expired" if status == 410 else "File not found")
    return WireError(status, {"detail": text})


def _fault_error(api: str, fault: Fault) -> WireError:
    status = fault.http_status
    if fault.ingress:
        return gateway_page(status)
    if api == "unified":
        return unified_error(status, fault.message, retry_after=fault.retry_after)
    if api == "syncso":
        return syncso_fault_error(status, fault.error_type, fault.message, fault.retry_after)
    return fal_http_error(status, fault.error_type, fault.message, fault.retry_after)


async def _drop(scope: Scope, receive: Receive) -> None:
    """Close the connection without a response: abort the socket (loopback) or raise for the transport."""
    transport = (scope.get("state") or {}).get(TRANSPORT_STATE_KEY)
    if transport is None:
        raise ConnectionDropped()
    transport.abort()
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
        else:  # pragma: no cover - unknown lifespan message
            await asyncio.sleep(0)
