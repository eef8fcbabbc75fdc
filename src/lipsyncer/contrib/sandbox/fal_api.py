"""fal's queue API for the Sync lipsync endpoints: submit, status, result, cancel, and the webhook body.

As on fal, submit accepts any body: the app validates when the job runs, so a bad input shows up as a
``COMPLETED`` status carrying ``error``/``error_type`` and a result that answers with the 422 itself.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from .engine import Engine
from .exchange import Call, Reply, cdn_base
from .fal_schema import FAL_ENDPOINTS, validate_fal_input
from .faults import JOB_KINDS
from .jobs import Failure, Job, Phase
from .webhooks import Outgoing
from .wire import (
    WireError,
    fal_detail_item,
    fal_error,
    fal_http_error,
    fal_model_error,
    fal_request_error,
    fal_validation_error,
)

__all__ = ["FalApi", "app_of"]

_TRUE = frozenset({"true", "1", "yes"})
# fal retries failed webhook deliveries for about two hours; the sandbox doubles from 1 s (scaled).
_FAL_RETRY_BASE = 1.0


def app_of(endpoint_id: str) -> str:
    """The ``owner/app`` part of an endpoint id, which is all queue URLs keep (``/v2/pro`` is dropped)."""
    return "/".join(endpoint_id.split("/")[:2])


class FalApi:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        engine.notifiers["fal"] = self.webhook

    # ------------------------------------------------------------------------------------- helpers

    def authorized(self, call: Call) -> bool:
        return call.header("authorization") == f"Key {self.engine.config.fal_key}"

    @staticmethod
    def unauthorized() -> Reply:
        return Reply.error(
            fal_http_error(
                401, None, "Invalid or missing credentials: use 'Authorization: Key <FAL_KEY>'", None
            )
        )

    def _urls(self, origin: str, job: Job) -> dict[str, str]:
        base = f"{origin}/{app_of(job.endpoint)}/requests/{job.id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def find(self, call: Call) -> Job | None:
        job = self.engine.get(call.params["request_id"])
        if (
            job is None
            or job.api != "fal"
            or app_of(job.endpoint) != f"{call.params['owner']}/{call.params['app']}"
        ):
            return None
        return job

    # -------------------------------------------------------------------------------------- submit

    def submit(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        endpoint = call.params["endpoint"]
        spec = FAL_ENDPOINTS[endpoint]
        cfg = self.engine.config

        timeout: float | None = None
        raw_timeout = call.header("x-fal-request-timeout")
        if raw_timeout is not None:
            try:
                timeout = float(raw_timeout)
            except ValueError:
                timeout = math.nan
            if not math.isfinite(timeout) or timeout <= 0:
                return Reply.error(
                    fal_request_error("bad_request", f"Invalid X-Fal-Request-Timeout: {raw_timeout!r}")
                )
        priority = call.header("x-fal-queue-priority")
        if priority is not None and priority not in ("normal", "low"):
            return Reply.error(
                fal_request_error("bad_request", f"Invalid X-Fal-Queue-Priority: {priority!r}")
            )

        body = call.json_or_none if call.is_json else None
        schema_failure: Failure | None = None
        if not call.is_json:
            item = fal_detail_item(
                "json_invalid", "JSON decode error", loc=("body", 0), ctx={"error": "Invalid JSON"}
            )
            schema_failure = _schema_failure(fal_validation_error([item]))
            parsed = None
            ignored: list[str] = []
        else:
            parsed, items, ignored = validate_fal_input(spec, body, strict=cfg.strict)
            if items:
                schema_failure = _schema_failure(fal_validation_error(items))
        call.ignored_fields = tuple(ignored)

        faults = self.engine.faults.draw(JOB_KINDS, "fal", "submit", endpoint)
        forced = next((f for f in faults if f.kind == "job_error"), None)
        early = next((f for f in faults if f.kind == "webhook_early"), None)
        clock = self.engine.clock
        now = clock.monotonic()
        job = Job(
            id=self.engine.new_uuid(),
            seq=0,
            api="fal",
            endpoint=endpoint,
            model=parsed.model if parsed is not None else spec.default_model,
            arguments=body,
            origin=call.origin,
            submitted=now,
            submitted_wall=clock.time(),
            queue_seconds=cfg.queue_seconds,
            processing_seconds=cfg.processing_seconds,
            video_url=parsed.video_url if parsed is not None else None,
            audio_url=parsed.audio_url if parsed is not None else None,
            sync_mode=parsed.sync_mode if parsed is not None else "cut_off",
            start_timeout=timeout,
            priority=priority,
            webhook_url=call.query.get("fal_webhook") or None,
            schema_failure=schema_failure,
            forced_error=forced,
            webhook_fail=any(f.kind == "webhook_fail" for f in faults),
            webhook_duplicate=any(f.kind == "webhook_duplicate" for f in faults),
            early_lead=(early.seconds if early.seconds is not None else 1.0) if early is not None else 0.0,
            ignored_fields=tuple(ignored),
        )
        self.engine.add_job(job)
        call.job_id = job.id
        position = self.engine.queue_position(job, now)
        return Reply(
            200,
            {
                "status": "IN_QUEUE",
                "request_id": job.id,
                **self._urls(call.origin, job),
                "queue_position": position,
            },
            headers={"x-fal-request-id": job.id},
        )

    # -------------------------------------------------------------------------------------- status

    def status(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        job = self.find(call)
        if job is None:
            return Reply(404, {"status": "NOT_FOUND"})
        call.job_id = job.id
        with_logs = call.query.get("logs", "").lower() in _TRUE
        now = self.engine.clock.monotonic()
        with self.engine.locked():
            phase = job.phase(now)
            body: dict[str, Any] = {"request_id": job.id, **self._urls(call.origin, job)}
            if phase is Phase.QUEUED:
                body.update(status="IN_QUEUE", queue_position=self.engine.queue_position(job, now), logs=None)
                return Reply(202, body)
            logs = _logs(job, now, phase) if with_logs else None
            if phase is Phase.RUNNING:
                body.update(status="IN_PROGRESS", logs=logs)
                return Reply(202, body)
            end = job.visible_end() or now
            started = min(job.start_at, end)
            body.update(status="COMPLETED", logs=logs, metrics={"inference_time": round(end - started, 3)})
            error = self._failure(job, phase)
            if error is not None:
                body.update(error=error.message, error_type=error.error_type)
            return Reply(200, body)

    # -------------------------------------------------------------------------------------- result

    def result(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        job = self.find(call)
        if job is None:
            return Reply(404, {"detail": f"Request {call.params['request_id']} not found"})
        call.job_id = job.id
        now = self.engine.clock.monotonic()
        with self.engine.locked():
            phase = job.phase(now)
            if not phase.finished:
                text = (
                    "Request is still in queue" if phase is Phase.QUEUED else "Request is still in progress"
                )
                return Reply(400, {"detail": text})
            error = self._failure(job, phase)
            if error is not None:
                reply = Reply.error(error)
                reply.headers["x-fal-request-id"] = job.id
                return reply
            return Reply(200, self.output(job, cdn_base(call.origin)), headers={"x-fal-request-id": job.id})

    # -------------------------------------------------------------------------------------- cancel

    def cancel(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        job = self.find(call)
        if job is None:
            return Reply(404, {"status": "NOT_FOUND"})
        call.job_id = job.id
        if self.engine.cancel(job, self.engine.clock.monotonic()):
            return Reply(202, {"status": "CANCELLATION_REQUESTED"})
        return Reply(400, {"status": "ALREADY_COMPLETED"})

    # ------------------------------------------------------------------------------------- outputs

    def output(self, job: Job, files_base: str) -> dict[str, Any]:
        assert job.outcome is not None and job.outcome.output is not None
        out = job.outcome.output
        video: dict[str, Any] = {
            "url": files_base + out.path,
            "content_type": out.content_type,
            "file_name": out.file_name,
            "file_size": out.file_size,
        }
        if job.endpoint == "fal-ai/sync-lipsync/v3" and not self.engine.config.fal_v3_plain_file:
            video.update(
                width=out.width,
                height=out.height,
                fps=out.fps,
                duration=round(out.duration, 3),
                num_frames=out.num_frames,
            )
        return {"video": video}

    def _failure(self, job: Job, phase: Phase) -> WireError | None:
        if phase is Phase.CANCELLED:
            return fal_request_error("client_cancelled")
        if phase is Phase.TIMED_OUT:
            return fal_request_error("request_timeout")
        if phase is Phase.FAILED:
            assert job.outcome is not None and job.outcome.failure is not None
            return fal_wire(job.outcome.failure)
        return None

    def webhook(self, job: Job, phase: Phase) -> Outgoing | None:
        """fal's webhook body for a finished job: ``OK`` with the output, or ``ERROR`` with the error body."""
        if job.webhook_url is None:
            return None
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        error = self._failure(job, phase)
        if error is None:
            body.update(status="OK", payload=self.output(job, cdn_base(job.origin)))
        else:
            payload = error.body if isinstance(error.body, dict) else {"detail": error.message}
            body.update(status="ERROR", error=_webhook_error_text(error), payload=payload)
        raw = json.dumps(body).encode()
        attempts = self.engine.config.fal_webhook_attempts
        signer = self.engine.signer
        return Outgoing(
            api="fal",
            job_id=job.id,
            url=job.webhook_url,
            body=raw,
            make_headers=lambda data: signer.headers(job.id, data),
            retry_delays=tuple(_FAL_RETRY_BASE * 2**i for i in range(attempts - 1)),
            dropped=job.webhook_fail,
            duplicate=job.webhook_duplicate,
            early=job.early_lead > 0,
        )


def fal_wire(failure: Failure) -> WireError:
    """The fal response for a job failure."""
    if failure.wire is not None:
        return failure.wire
    if failure.forced:
        return fal_error(failure.error_type, failure.message or None)
    if failure.field is not None:
        return fal_model_error(
            failure.error_type,
            failure.message,
            loc=("body", failure.field),
            ctx=failure.ctx,
            input=failure.input,
            with_input=True,
        )
    return fal_model_error(failure.error_type, failure.message)


def _schema_failure(error: WireError) -> Failure:
    return Failure(error.error_type or "validation_error", error.message, wire=error)


def _webhook_error_text(error: WireError) -> str:
    status = error.status
    return f"Invalid status code: {status}" if status != 499 else "Request was cancelled"


def _logs(job: Job, now: float, phase: Phase) -> list[dict[str, Any]]:
    """Log lines as fal streams them, derived from the clock so every poll agrees."""

    def entry(at: float, message: str, level: str = "INFO") -> dict[str, Any]:
        stamp = datetime.fromtimestamp(job.wall(at), timezone.utc).isoformat()
        return {"message": message, "level": level, "source": "USER", "timestamp": stamp}

    if now < job.start_at:
        return []
    end = job.visible_end() if phase.finished else None
    limit = min(now, end) if end is not None else now
    lines = [entry(job.start_at, f"Starting {job.model} (sync_mode={job.sync_mode})")]
    step = job.processing_seconds / 10 if job.processing_seconds > 0 else 0.0
    for tenth in range(1, 10):
        at = job.start_at + step * tenth
        if step <= 0 or at > limit:
            break
        lines.append(entry(at, f"Processing: {tenth * 10}%"))
    if phase is Phase.SUCCEEDED and end is not None:
        lines.append(entry(end, "Processing: 100%"))
        lines.append(entry(end, "Done"))
    elif (
        phase is Phase.FAILED
        and end is not None
        and job.outcome is not None
        and job.outcome.failure is not None
    ):
        lines.append(entry(end, job.outcome.failure.message or job.outcome.failure.error_type, "ERROR"))
    return lines
