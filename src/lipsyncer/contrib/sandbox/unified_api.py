"""The unified task API (api.evolink.ai and its white-label copies): create a task, query it, callbacks.

Unlike fal, the unified API validates parameters when the task is created (400 ``invalid_request_error`` naming
``param``); media problems surface later as a failed task (``invalid_parameters``). Result links and the task
itself disappear ``result_ttl_seconds`` after completion (404).
"""

from __future__ import annotations

import ipaddress
import json
import math
from typing import Any
from urllib.parse import urlsplit

from .engine import Engine
from .exchange import Call, Reply, is_loopback_host
from .faults import JOB_KINDS
from .jobs import Job, Phase
from .webhooks import Outgoing
from .wire import UNIFIED_TASK_ERRORS, unified_error

__all__ = ["UNIFIED_MODELS", "UnifiedApi"]

UNIFIED_MODELS = ("lipsync-2", "lipsync-2-pro", "sync-3")
SYNC_MODES = ("cut_off", "loop", "bounce", "silence", "remap")
_LIPSYNC2_ONLY = ("temperature", "active_speaker")
_CALLBACK_DELAYS = (1.0, 2.0, 4.0)
_CREDITS_PER_SECOND = {"lipsync-2": 5, "lipsync-2-pro": 8, "sync-3": 13}


class UnifiedApi:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        engine.notifiers["unified"] = self.callback
        legacy = engine.config.unified_legacy_media_fields
        # The one place the media field names live (an older revision called them video/audio).
        self.video_field = "video" if legacy else "video_url"
        self.audio_field = "audio" if legacy else "audio_url"

    def authorized(self, call: Call) -> bool:
        return call.header("authorization") == f"Bearer {self.engine.config.unified_key}"

    @staticmethod
    def unauthorized() -> Reply:
        return Reply.error(unified_error(401, "Invalid API key: use 'Authorization: Bearer <key>'"))

    # -------------------------------------------------------------------------------------- create

    def create(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        body = call.json_or_none
        if not call.is_json or not isinstance(body, dict):
            return Reply.error(unified_error(400, "Request body must be a JSON object"))
        cfg = self.engine.config
        known = {
            "model",
            self.video_field,
            self.audio_field,
            "sync_mode",
            "temperature",
            "active_speaker",
            "callback_url",
        }
        unknown = [name for name in body if name not in known]
        call.ignored_fields = tuple(unknown)
        call.endpoint = body.get("model") if isinstance(body.get("model"), str) else None
        if unknown and cfg.strict:
            return self._bad(f"Unknown parameter: {unknown[0]}", unknown[0], "remove it")

        model = body.get("model", "lipsync-2")
        if not isinstance(model, str) or model not in UNIFIED_MODELS:
            return self._bad(
                f"Unsupported model: {model!r}", "model", f"use one of {', '.join(UNIFIED_MODELS)}"
            )
        media: dict[str, str] = {}
        for name in (self.video_field, self.audio_field):
            value = body.get(name)
            if value is None:
                return self._bad(f"{name} is required", name)
            if not isinstance(value, str) or urlsplit(value).scheme.lower() not in ("http", "https"):
                return self._bad(f"{name} must be a public http(s) URL", name)
            media[name] = value
        sync_mode = body.get("sync_mode", "loop")
        if sync_mode not in SYNC_MODES:
            return self._bad(
                f"Invalid sync_mode: {sync_mode!r}", "sync_mode", f"use one of {', '.join(SYNC_MODES)}"
            )
        if model == "sync-3":
            for name in _LIPSYNC2_ONLY:
                if name in body:
                    return self._bad(
                        f"{name} is not supported by model sync-3",
                        name,
                        "remove it, or use lipsync-2 / lipsync-2-pro",
                    )
        if "temperature" in body:
            temperature = body["temperature"]
            if (
                isinstance(temperature, bool)
                or not isinstance(temperature, (int, float))
                or not 0 <= temperature <= 1
            ):
                return self._bad("temperature must be a number between 0 and 1", "temperature")
        if "active_speaker" in body and not isinstance(body["active_speaker"], bool):
            return self._bad("active_speaker must be a boolean", "active_speaker")
        callback = body.get("callback_url")
        if callback is not None:
            problem = self._callback_problem(callback)
            if problem is not None:
                return self._bad(problem, "callback_url")

        faults = self.engine.faults.draw(JOB_KINDS, "unified", "create", model)
        forced = next((f for f in faults if f.kind == "job_error"), None)
        early = next((f for f in faults if f.kind == "webhook_early"), None)
        now, wall = self.engine.clock.monotonic(), self.engine.clock.time()
        created = int(wall)
        job = Job(
            id=f"task-unified-{created}-{self.engine.new_key(8)}",
            seq=0,
            api="unified",
            endpoint=model,
            model=model,
            arguments=body,
            origin=call.origin,
            submitted=now,
            submitted_wall=wall,
            queue_seconds=cfg.queue_seconds,
            processing_seconds=cfg.processing_seconds,
            video_url=media[self.video_field],
            audio_url=media[self.audio_field],
            sync_mode=sync_mode,
            webhook_url=callback,
            forced_error=forced,
            webhook_fail=any(f.kind == "webhook_fail" for f in faults),
            webhook_duplicate=any(f.kind == "webhook_duplicate" for f in faults),
            early_lead=(early.seconds if early.seconds is not None else 1.0) if early is not None else 0.0,
            ignored_fields=tuple(unknown),
            extra={
                "created": created,
                "temperature": body.get("temperature", 0.5 if model != "sync-3" else None),
            },
        )
        self.engine.add_job(job)
        call.job_id = job.id
        with self.engine.locked():
            return Reply(200, self.task(job, now, call.origin))

    def _bad(self, message: str, param: str, suggestion: str | None = None) -> Reply:
        return Reply.error(unified_error(400, message, param=param, suggestion=suggestion))

    def _callback_problem(self, url: Any) -> str | None:
        if not isinstance(url, str):
            return "callback_url must be a string"
        if len(url) > 2048:
            return "callback_url must be at most 2048 characters"
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            return "callback_url must be an HTTPS URL"
        loopback = is_loopback_host(host)
        if self.engine.config.allow_insecure_callbacks and loopback:
            return None
        if parts.scheme != "https":
            return "callback_url must use HTTPS"
        if loopback or _is_private(host):
            return "callback_url must not point to a private or loopback address"
        return None

    # --------------------------------------------------------------------------------------- query

    def query(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        task_id = call.params["task_id"]
        if not task_id.startswith("task-unified-"):
            return Reply.error(
                unified_error(400, f"Invalid task ID: {task_id!r}", param="task_id", code="invalid_task_id")
            )
        job = self.engine.get(task_id)
        now = self.engine.clock.monotonic()
        if job is None or job.api != "unified" or (job.expires_at is not None and now >= job.expires_at):
            return Reply.error(unified_error(404, f"Task {task_id} not found or expired", param="task_id"))
        call.job_id = job.id
        call.endpoint = job.model
        with self.engine.locked():
            return Reply(200, self.task(job, now, call.origin))

    def task(self, job: Job, now: float, origin: str) -> dict[str, Any]:
        """The task object (create response, query response and callback body are the same shape)."""
        phase = job.phase(now)
        output = job.outcome.output if job.outcome is not None else None
        estimated = math.ceil(job.queue_seconds + job.processing_seconds)
        body: dict[str, Any] = {
            "created": job.extra["created"],
            "id": job.id,
            "model": job.model,
            "object": "video.generation.task",
            "progress": 0,
            "status": "pending",
            "task_info": {
                "can_cancel": False,
                "estimated_time": estimated,
                "video_duration": round(output.duration, 3) if output is not None else 0,
            },
            "type": "video",
            "usage": {
                "billing_rule": "per_second",
                "credits_reserved": _CREDITS_PER_SECOND[job.model] * estimated,
                "user_group": "default",
            },
        }
        if phase is Phase.QUEUED:
            return body
        if phase is Phase.RUNNING:
            body.update(status="processing", progress=int(10 + 70 * job.progress(now)))
            return body
        if phase is Phase.SUCCEEDED:
            assert output is not None
            url = origin + output.path
            body.update(
                status="completed",
                progress=100,
                results=[{"url": url}] if self.engine.config.results_as_objects else [url],
            )
            return body
        code, message = self._task_error(job)
        body.update(status="failed", progress=0, error={"code": code, "message": message})
        return body

    @staticmethod
    def _task_error(job: Job) -> tuple[str, str]:
        failure = job.outcome.failure if job.outcome is not None else None
        if failure is None:
            return "unknown_error", UNIFIED_TASK_ERRORS["unknown_error"][1]
        if failure.forced:
            default = UNIFIED_TASK_ERRORS.get(failure.error_type, (True, "Task failed"))[1]
            return failure.error_type, failure.message or default
        if failure.error_type == "internal_server_error":
            return "service_error", failure.message
        return "invalid_parameters", failure.message

    # ------------------------------------------------------------------------------------ callback

    def callback(self, job: Job, phase: Phase) -> Outgoing | None:
        if job.webhook_url is None:
            return None
        now = job.natural_end() or self.engine.clock.monotonic()
        with self.engine.locked():
            task = self.task(job, max(now, job.visible_end() or now), job.origin)
        raw = json.dumps(task).encode()
        retries = self.engine.config.callback_retries
        return Outgoing(
            api="unified",
            job_id=job.id,
            url=job.webhook_url,
            body=raw,
            make_headers=lambda data: {"Content-Type": "application/json", "User-Agent": "lipsyncer-sandbox"},
            retry_delays=tuple(
                (_CALLBACK_DELAYS[i] if i < 3 else 4.0 * 2 ** (i - 2)) for i in range(retries)
            ),
            dropped=job.webhook_fail,
            duplicate=job.webhook_duplicate,
            early=job.early_lead > 0,
        )


def _is_private(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the sandbox resolves nothing
    return address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
