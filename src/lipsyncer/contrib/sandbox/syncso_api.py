"""sync.so's API (``api.sync.so``): create a generation, look it up, list, estimate its cost, signed webhooks.

Like sync.so, it validates the body when the generation is created (400 ``{statusCode, message, errorCode?}``)
and replays the generation an ``Idempotency-Key`` already made (per API key), so a create whose answer was
lost can be sent again. Webhooks carry ``Sync-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``,
signed here independently of the provider's verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .engine import Engine
from .exchange import Call, Reply, is_loopback_host
from .faults import JOB_KINDS
from .jobs import Job, Phase
from .media import MediaFailure, fetch_media, probe_input
from .webhooks import Outgoing
from .wire import WireError

__all__ = ["SYNCSO_MODELS", "SyncsoApi", "syncso_error", "syncso_signature"]

SYNCSO_MODELS = ("lipsync-2", "lipsync-2-pro", "lipsync-1.9.0-beta", "sync-3", "react-1")
SYNC_MODES = ("cut_off", "loop", "bounce", "silence", "remap")
MODEL_MODES = ("lips", "face", "head")
EMOTIONS = ("happy", "sad", "angry", "disgusted", "surprised", "neutral")
_REACT_ONLY = ("model_mode", "prompt")
_KNOWN_OPTIONS = (
    "sync_mode",
    "temperature",
    "active_speaker_detection",
    "occlusion_detection_enabled",
    *_REACT_ONLY,
)
_KNOWN_FIELDS = ("model", "input", "options", "segments", "webhookUrl", "outputFileName")
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_USD_PER_SECOND = {
    "lipsync-2": 0.05,
    "lipsync-2-pro": 0.083,
    "lipsync-1.9.0-beta": 0.02,
    "sync-3": 0.133,
    "react-1": 0.133,
}
FPS = 25
_RETRY_DELAYS = (1.0, 2.0, 4.0)
_FORCED_STATUS = {"generation_rejected": "REJECTED", "generation_timed_out": "TIMED_OUT"}


def syncso_error(
    status: int, message: str, code: str | None = None, *, retry_after: int | None = None
) -> WireError:
    """``{statusCode, message, errorCode?}``; a 429 carries ``Retry-After`` (60 s unless a fault says)."""
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if code is not None:
        body["errorCode"] = code
    headers: dict[str, str] = {}
    if status == 429:
        body.setdefault("errorCode", "rate_limit_exceeded")
        headers["Retry-After"] = str(retry_after if retry_after is not None else 60)
    elif retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return WireError(status, body, headers, body.get("errorCode"), message)


_DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Insufficient credits",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal server error",
    503: "Service Unavailable",
}


def fault_error(status: int, code: str | None, message: str | None, retry_after: int | None) -> WireError:
    """The answer an ``http_error`` fault on ``api="syncso"`` gives."""
    return syncso_error(
        status, message or _DEFAULT_MESSAGES.get(status, "Error"), code, retry_after=retry_after
    )


def syncso_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex>``: HMAC-SHA256 keyed with the secret's UTF-8 bytes over ``"<t>.<raw body>"``."""
    digest = hmac.new(
        secret.encode("utf-8"), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


class SyncsoApi:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        engine.notifiers["syncso"] = self.webhook
        # The engine's clock when it has one (an injectable clock), else the process's: both have
        # ``monotonic()`` and ``time()``, so job times stay on the same clock as every other API's.
        self.clock: Any = getattr(engine, "clock", time)
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = {}  # Idempotency-Key -> generation id (one API key, one organisation)

    def authorized(self, call: Call) -> bool:
        return call.header("x-api-key") == self.engine.config.syncso_key

    @staticmethod
    def unauthorized() -> Reply:
        return Reply.error(syncso_error(401, "Unauthorized: invalid or missing x-api-key"))

    @staticmethod
    def _bad(message: str, code: str | None = None) -> Reply:
        return Reply.error(syncso_error(400, message, code))

    # -------------------------------------------------------------------------------------- create

    def create(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        key = call.header("idempotency-key")
        if key is not None and not _IDEMPOTENCY_KEY.match(key):
            return self._bad(
                "Idempotency-Key must be 1-128 characters of [A-Za-z0-9._~-]", "INVALID_IDEMPOTENCY_KEY"
            )
        body = call.json_or_none
        if not call.is_json or not isinstance(body, dict):
            return self._bad("Request body must be a JSON object")
        parsed = self._parse(body, call)
        if isinstance(parsed, Reply):
            return parsed
        model, video_url, audio_url, options, ignored = parsed
        call.endpoint = model
        call.ignored_fields = tuple(ignored)

        with self._lock:  # one generation per key, even for two creates racing each other
            existing = self._by_key.get(key) if key is not None else None
            job = self.engine.get(existing) if existing is not None else None
            if job is None:
                job = self._new_job(body, call, model, video_url, audio_url, options, ignored)
                self.engine.add_job(job)
                if key is not None:
                    self._by_key[key] = job.id
        call.job_id = job.id
        with self.engine.locked():
            generation = self.generation(job, self.clock.monotonic(), call.origin)
        return Reply(201, generation)  # a replay answers as the first create did

    def _parse(
        self, body: dict[str, Any], call: Call
    ) -> Reply | tuple[str, str, str, dict[str, Any], list[str]]:
        cfg = self.engine.config
        ignored = [name for name in body if name not in _KNOWN_FIELDS]
        model = body.get("model")
        if not isinstance(model, str) or model not in SYNCSO_MODELS:
            return self._bad(f"model must be one of: {', '.join(SYNCSO_MODELS)}")
        inputs = body.get("input")
        if not isinstance(inputs, list):
            return self._bad("input must be an array of {type, url} objects")
        urls: dict[str, str] = {}
        for item in inputs:
            kind = item.get("type") if isinstance(item, dict) else None
            url = item.get("url") if isinstance(item, dict) else None
            if kind not in ("video", "audio") or kind in urls:
                return self._bad("input takes one video and one audio item")
            if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
                return self._bad(f"input {kind} needs an http(s) url")
            urls[kind] = url
        if set(urls) != {"video", "audio"}:
            return self._bad("input must include one video and one audio item")
        options = body.get("options", {})
        if not isinstance(options, dict):
            return self._bad("options must be an object")
        problem = _options_problem(model, options, ignored)
        if problem is not None:
            return self._bad(problem)
        webhook = body.get("webhookUrl")
        if webhook is not None:
            problem = _webhook_problem(webhook, cfg.allow_insecure_callbacks)
            if problem is not None:
                return self._bad(problem)
        name = body.get("outputFileName")
        if name is not None and (not isinstance(name, str) or not _FILE_NAME.match(name)):
            return self._bad("outputFileName takes up to 255 characters of [A-Za-z0-9_-]")
        if ignored and cfg.strict:
            return self._bad(f"Unexpected field: {ignored[0]}")
        return model, urls["video"], urls["audio"], options, ignored

    def _new_job(
        self,
        body: dict[str, Any],
        call: Call,
        model: str,
        video_url: str,
        audio_url: str,
        options: dict[str, Any],
        ignored: list[str],
    ) -> Job:
        cfg = self.engine.config
        faults = self.engine.faults.draw(JOB_KINDS, "syncso", "create", model)
        forced = next((f for f in faults if f.kind == "job_error"), None)
        early = next((f for f in faults if f.kind == "webhook_early"), None)
        now, wall = self.clock.monotonic(), self.clock.time()
        return Job(
            id=self.engine.new_uuid(),
            seq=0,
            api="syncso",
            endpoint=model,
            model=model,
            arguments=body,
            origin=call.origin,
            submitted=now,
            submitted_wall=wall,
            queue_seconds=cfg.queue_seconds,
            processing_seconds=cfg.processing_seconds,
            video_url=video_url,
            audio_url=audio_url,
            sync_mode=str(options.get("sync_mode", "loop")),  # sync.so's default, unlike fal's cut_off
            webhook_url=body.get("webhookUrl"),
            forced_error=forced,
            webhook_fail=any(f.kind == "webhook_fail" for f in faults),
            webhook_duplicate=any(f.kind == "webhook_duplicate" for f in faults),
            early_lead=(early.seconds if early.seconds is not None else 1.0) if early is not None else 0.0,
            ignored_fields=tuple(ignored),
            extra={
                "created_at": datetime.fromtimestamp(wall, timezone.utc).isoformat().replace("+00:00", "Z"),
                "temperature": options.get("temperature", 0.5 if model != "sync-3" else None),
            },
        )

    # --------------------------------------------------------------------------------------- reads

    def get(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        job = self.engine.get(call.params["generation_id"])
        if job is None or job.api != "syncso":
            return Reply.error(syncso_error(404, f"Generation {call.params['generation_id']} not found"))
        call.job_id = job.id
        call.endpoint = job.model
        with self.engine.locked():
            return Reply(200, self.generation(job, self.clock.monotonic(), call.origin))

    def list(self, call: Call) -> Reply:
        if not self.authorized(call):
            return self.unauthorized()
        wanted = {s.strip().upper() for s in call.query.get("status", "").split(",") if s.strip()}
        now = self.clock.monotonic()
        with self.engine.locked():
            items = [self.generation(j, now, call.origin) for j in self.engine.jobs() if j.api == "syncso"]
        return Reply(200, [g for g in items if not wanted or g["status"] in wanted])

    def cost(self, call: Call) -> Reply:
        """``[{estimatedFrameCount, estimatedGenerationCost}]`` from the inputs' durations (sandbox-hosted
        files and data URIs only: a handler must not fetch over loopback from the server's own loop)."""
        if not self.authorized(call):
            return self.unauthorized()
        body = call.json_or_none
        if not call.is_json or not isinstance(body, dict):
            return self._bad("Request body must be a JSON object")
        parsed = self._parse(body, call)
        if isinstance(parsed, Reply):
            return parsed
        model, video_url, audio_url, options, _ = parsed
        call.endpoint = model
        try:
            with tempfile.TemporaryDirectory(prefix="lipsyncer-sandbox-cost-") as tmp:
                seconds = []
                for field, url in (("video_url", video_url), ("audio_url", audio_url)):
                    if not url.startswith("data:") and not urlsplit(url).path.startswith("/files/"):
                        return self._bad(f"the sandbox estimates only hosted files, not {url[:60]}")
                    path = Path(tmp) / field
                    path.write_bytes(fetch_media(url, field, self.engine.files))  # type: ignore[arg-type]
                    seconds.append(probe_input(path, field).duration)  # type: ignore[arg-type]
        except MediaFailure as exc:
            return self._bad(exc.message)
        from lipsyncer.core.media import output_duration

        out = output_duration(str(options.get("sync_mode", "loop")), seconds[0], seconds[1])
        frames = math.ceil(round(out * FPS, 6))
        price = round(frames * _USD_PER_SECOND[model] / FPS, 4)
        return Reply(200, [{"estimatedFrameCount": frames, "estimatedGenerationCost": price}])

    def generation(self, job: Job, now: float, origin: str) -> dict[str, Any]:
        """The Generation object (create answer, look-up and webhook body share it)."""
        phase = job.phase(now)
        body = job.arguments if isinstance(job.arguments, dict) else {}
        new_names = self.engine.config.syncso_new_field_names
        output_key, code_key = ("outputMediaUrl", "errorCode") if new_names else ("outputUrl", "error_code")
        out: dict[str, Any] = {
            "id": job.id,
            "createdAt": job.extra["created_at"],
            "status": "PENDING",
            "model": job.model,
            "input": body.get("input", []),
            "options": body.get("options", {}),
            output_key: None,
            "outputDuration": None,
            "error": None,
            code_key: None,
            "webhookUrl": job.webhook_url,
        }
        if phase is Phase.QUEUED:
            return out
        if phase is Phase.RUNNING:
            out["status"] = "PROCESSING"
            return out
        output = job.outcome.output if job.outcome is not None else None
        if phase is Phase.SUCCEEDED and output is not None:
            out.update({"status": "COMPLETED", output_key: origin + output.path})
            out["outputDuration"] = round(output.duration, 3)
            return out
        if phase is Phase.CANCELLED:
            out["status"] = "CANCELED"
            return out
        failure = job.outcome.failure if job.outcome is not None else None
        code = "generation_failed" if failure is None else failure.error_type
        if failure is not None and not failure.forced:
            code = "generation_" + failure.error_type  # the sandbox's own media checks, named sync.so's way
        out.update(
            status=_FORCED_STATUS.get(code, "TIMED_OUT" if phase is Phase.TIMED_OUT else "FAILED"),
            error=(failure.message if failure is not None and failure.message else "Generation failed"),
        )
        out[code_key] = code
        return out

    # -------------------------------------------------------------------------------------- webhook

    def webhook(self, job: Job, phase: Phase) -> Outgoing | None:
        if job.webhook_url is None:
            return None
        now = job.natural_end() or self.clock.monotonic()
        with self.engine.locked():
            body = self.generation(job, max(now, job.visible_end() or now), job.origin)
        raw = json.dumps(body).encode()
        secret = self.engine.config.syncso_webhook_secret

        def headers(data: bytes) -> dict[str, str]:
            return {
                "Content-Type": "application/json",
                "User-Agent": "lipsyncer-sandbox",
                "Sync-Signature": syncso_signature(secret, int(self.clock.time()), data),
            }

        return Outgoing(
            api="syncso",
            job_id=job.id,
            url=job.webhook_url,
            body=raw,
            make_headers=headers,
            retry_delays=_RETRY_DELAYS,
            dropped=job.webhook_fail,
            duplicate=job.webhook_duplicate,
            early=job.early_lead > 0,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _options_problem(model: str, options: dict[str, Any], ignored: list[str]) -> str | None:
    """sync.so's option rules; options only react-1 reads are recorded as ignored on other models."""
    for name in options:
        if name not in _KNOWN_OPTIONS or (name in _REACT_ONLY and model != "react-1"):
            ignored.append(f"options.{name}")
    if model == "sync-3" and "temperature" in options:
        ignored.append("options.temperature")
    mode = options.get("sync_mode", "loop")
    if mode not in SYNC_MODES:
        return f"options.sync_mode must be one of: {', '.join(SYNC_MODES)}"
    temperature = options.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 1
    ):
        return "options.temperature must be a number between 0 and 1"
    if model == "react-1":
        if options.get("model_mode") not in (None, *MODEL_MODES):
            return f"options.model_mode must be one of: {', '.join(MODEL_MODES)}"
        if options.get("prompt") not in (None, *EMOTIONS):
            return f"options.prompt must be one of: {', '.join(EMOTIONS)}"
    speaker = options.get("active_speaker_detection")
    if speaker is None:
        return None
    if not isinstance(speaker, dict):
        return "options.active_speaker_detection must be an object"
    frame = speaker.get("frame_number")
    if frame is not None and (not _is_int(frame) or frame < 0):
        return "active_speaker_detection.frame_number must be a non-negative integer"
    point = speaker.get("coordinates")
    if point is not None and (not isinstance(point, list) or len(point) != 2 or not all(map(_is_int, point))):
        return "active_speaker_detection.coordinates must be [x, y] integers"
    boxes = speaker.get("bounding_boxes")
    if boxes is not None:
        if not isinstance(boxes, list):
            return "active_speaker_detection.bounding_boxes must be an array"
        for box in boxes:
            if box is not None and (not isinstance(box, list) or len(box) != 4 or not all(map(_is_int, box))):
                return "active_speaker_detection.bounding_boxes holds [x1, y1, x2, y2] integers or null"
    return None


def _webhook_problem(url: Any, allow_insecure_loopback: bool) -> str | None:
    if not isinstance(url, str):
        return "webhookUrl must be a string"
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if allow_insecure_loopback and parts.scheme == "http" and is_loopback_host(parts.netloc):
        return None
    return "webhookUrl must be an https URL"
