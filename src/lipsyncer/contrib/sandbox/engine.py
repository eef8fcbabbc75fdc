"""The sandbox's shared state and its worker threads: jobs, files, faults, logs, rendering, notifications.

Both HTTP faces (in-process ASGI and the loopback server) call into one ``Engine``; every mutable structure is
guarded by a lock, and nothing blocking runs on an event loop: fetching inputs and rendering happen on
``render_workers`` threads, webhooks on the deliverer's threads, timed actions on the timer thread.
"""

from __future__ import annotations

import hashlib
import logging
import random
import string
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from lipsyncer.core.media import MediaInfo

from .cdn import FileStore
from .clock import Clock, MonotonicClock
from .config import SandboxConfig
from .faults import FaultPlan
from .jobs import Failure, Job, Outcome, Phase, RenderFacts
from .media import MediaFailure, MediaField, Rendered, fetch_media, probe_input, render_lipsync
from .recording import DeliveryLog, RequestLog
from .scheduler import Scheduler
from .webhooks import Deliverer, Outgoing, WebhookSigner

__all__ = ["Engine", "Notifier"]

log = logging.getLogger(__name__)

Notifier = Callable[[Job, Phase], "Outgoing | None"]
_ALPHABET = string.ascii_lowercase + string.digits
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Engine:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock: Clock = config.clock or MonotonicClock()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._rng = random.Random(f"lipsyncer-sandbox-ids:{config.seed or 0}")
        self._jobs: dict[str, Job] = {}
        self._order: list[Job] = []
        self._waiting: dict[str, deque[Job]] = {}
        self._closed = False
        self.files = FileStore(self.new_key, config.cdn_token_ttl_seconds, self.clock)
        self.faults = FaultPlan(config.faults, config.seed or 0)
        self.requests = RequestLog()
        self.deliveries = DeliveryLog()
        self.signer = WebhookSigner(config.seed or 0, config.user_id, self.clock)
        self.scheduler = Scheduler(self.clock)
        self.deliverer = Deliverer(
            self.scheduler,
            self.deliveries,
            clock=self.clock,
            transport=config.webhook_transport,
            timeout=config.webhook_timeout_seconds,
            retry_scale=config.webhook_retry_scale,
            on_settled=self._notify,
        )
        self._workers = ThreadPoolExecutor(
            max_workers=config.render_workers, thread_name_prefix="lipsyncer-sandbox-render"
        )
        self.notifiers: dict[str, Notifier] = {}

    # ------------------------------------------------------------------------------------------ ids

    def new_key(self, length: int) -> str:
        with self._lock:
            return "".join(self._rng.choice(_ALPHABET) for _ in range(length))

    def new_uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # ----------------------------------------------------------------------------------------- jobs

    def add_job(self, job: Job) -> None:
        """Register a job and start working on it: fetch, check and render on a worker thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the sandbox is closed")
            job.seq = len(self._order) + 1
            self._jobs[job.id] = job
            self._order.append(job)
            self._waiting.setdefault(job.api, deque()).append(job)
            self._changed.notify_all()
        self._workers.submit(self._process, job)
        if job.timeout_at is not None:
            self.scheduler.call_at(job.timeout_at, lambda: self._maybe_notify(job))

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._order)

    def locked(self) -> threading.RLock:
        return self._lock

    def queue_position(self, job: Job, now: float) -> int:
        """Requests ahead of ``job`` that are still waiting (same API).

        Each API's jobs wait in a deque in submit order; jobs at its head that left the queue for good (it
        started, was cancelled or timed out: the clock only moves forward) are dropped as they are met, so a
        look-up costs the jobs still ahead of it, not every job ever submitted.
        """
        with self._lock:
            waiting = self._waiting.get(job.api, deque())
            while waiting and waiting[0].phase(now) is not Phase.QUEUED:
                waiting.popleft()
            ahead = 0
            for other in waiting:
                if other.seq >= job.seq:
                    break
                if other.phase(now) is Phase.QUEUED:
                    ahead += 1
            return ahead

    def cancel(self, job: Job, now: float) -> bool:
        """Cancel unless finished; True when the cancellation was taken."""
        with self._lock:
            if job.phase(now).finished:
                return False
            job.cancelled_at = now
            self._changed.notify_all()
        self.scheduler.call_at(now, lambda: self._maybe_notify(job))
        return True

    # -------------------------------------------------------------------------------------- workers

    def _process(self, job: Job) -> None:
        try:
            outcome = self._work(job)
        except Exception as exc:  # a render bug must surface as a typed job failure, not a hung job
            log.exception("sandbox render failed for %s", job.id)
            outcome = Outcome(failure=Failure("internal_server_error", f"Rendering failed: {exc}"))
        with self._lock:
            job.outcome = outcome
            job.work_done = self.clock.monotonic()
            end = job.visible_end()
            if job.api == "unified" and end is not None:
                job.expires_at = end + self.config.result_ttl_seconds
                if outcome.output is not None:
                    self.files.expire_at(outcome.output.path, job.expires_at)
            self._changed.notify_all()
        natural = job.natural_end()
        if natural is not None:
            self.scheduler.call_at(natural, lambda: self._maybe_notify(job))

    def _work(self, job: Job) -> Outcome:
        started = time.perf_counter()  # real time: how long the render took, for the debug log
        with self._lock:
            if job.cancelled_at is not None or job.timeout_at is not None:
                return Outcome(skipped=True)  # its fate is sealed: nothing to render
        if job.schema_failure is not None:
            return Outcome(failure=job.schema_failure)
        assert job.video_url is not None and job.audio_url is not None
        try:
            video = self._fetch(job.video_url, "video_url")
            audio = self._fetch(job.audio_url, "audio_url")
            video_info = self._probe(video)
            audio_info = self._probe(audio)
        except MediaFailure as exc:
            return Outcome(failure=_media_failure(exc, job))
        too_long = self._check_limits(video_info, audio_info)
        if too_long is not None:
            return Outcome(failure=too_long)
        if job.forced_error is not None:
            forced = job.forced_error
            assert forced.error_type is not None
            return Outcome(failure=Failure(forced.error_type, forced.message or "", forced=True))
        cfg = self.config
        key = (video.digest, audio.digest, str(job.sync_mode), cfg.audio_sample_rate, cfg.audio_channels)
        rendered = _RENDERS.get(key)
        if rendered is None:
            with tempfile.TemporaryDirectory(prefix="lipsyncer-sandbox-") as tmp:
                rendered = render_lipsync(
                    video.write(Path(tmp)),
                    audio.write(Path(tmp)),
                    job.sync_mode,
                    video_info=video_info,
                    audio_info=audio_info,
                    sample_rate=cfg.audio_sample_rate,
                    channels=cfg.audio_channels,
                )
            _RENDERS.put(key, rendered)
        stored = self.files.put(
            rendered.data,
            file_name="output.mp4",
            content_type="video/mp4",
            directory=self.new_key(12),
            ttl=self.config.cdn_ttl_seconds if job.api == "fal" else None,
        )
        log.debug("rendered %s in %.3f s", job.id, time.perf_counter() - started)
        return Outcome(
            output=RenderFacts(
                path=stored.path,
                file_name=stored.file_name,
                content_type=stored.content_type,
                file_size=len(rendered.data),
                width=rendered.width,
                height=rendered.height,
                fps=rendered.fps,
                duration=rendered.duration,
                num_frames=rendered.num_frames,
                audio_seconds=rendered.audio_seconds,
            )
        )

    def _fetch(self, url: str, field: MediaField) -> _Input:
        """The input's bytes (fetched every time: links expire, downloads fail) and their digest."""
        data = fetch_media(url, field, self.files)
        suffix = Path(urlsplit(url).path).suffix if not url.startswith("data:") else ""
        return _Input(field, data, hashlib.sha256(data).hexdigest(), suffix[:8])

    def _probe(self, media: _Input) -> MediaInfo:
        """``probe_input`` once per content (and name suffix): the answer, or the format failure, is cached,
        so thousands of jobs on one clip write it to disk and open it with FFmpeg once."""
        key = (media.digest + media.suffix, media.field)
        known = _PROBES.get(key)
        if known is None:
            try:
                with tempfile.TemporaryDirectory(prefix="lipsyncer-sandbox-") as tmp:
                    known = probe_input(media.write(Path(tmp)), media.field)
            except MediaFailure as exc:
                known = exc
            _PROBES.put(key, known)
        if isinstance(known, MediaFailure):
            raise MediaFailure(known.field, known.kind, known.message)
        return known

    def _check_limits(self, video: MediaInfo, audio: MediaInfo) -> Failure | None:
        cfg = self.config
        if cfg.max_video_seconds is not None and video.duration > cfg.max_video_seconds:
            return Failure(
                "video_duration_too_long",
                f"The video is {video.duration:.2f} s long; the maximum is {cfg.max_video_seconds:g} s.",
                field="video_url",
                ctx={"max_duration": cfg.max_video_seconds, "provided_duration": round(video.duration, 3)},
            )
        if cfg.max_audio_seconds is not None and audio.duration > cfg.max_audio_seconds:
            return Failure(
                "audio_duration_too_long",
                f"The audio is {audio.duration:.2f} s long; the maximum is {cfg.max_audio_seconds:g} s.",
                field="audio_url",
                ctx={"max_duration": cfg.max_audio_seconds, "provided_duration": round(audio.duration, 3)},
            )
        return None

    # -------------------------------------------------------------------------------- notifications

    def _maybe_notify(self, job: Job) -> None:
        """Send the job's webhook/callback once its outcome is final (called from the timer thread)."""
        now = self.clock.monotonic()
        with self._lock:
            if job.webhook_started or job.webhook_url is None:
                return
            final = job.final_phase()
            natural = job.natural_end()
            if final is None or natural is None:
                return  # the worker will call again when done
            if now < natural:
                self.scheduler.call_at(natural, lambda: self._maybe_notify(job))
                return
            job.webhook_started = True
            notifier = self.notifiers.get(job.api)
        outgoing = notifier(job, final) if notifier is not None else None
        if outgoing is not None:
            self.deliverer.deliver(outgoing)
        self._notify()

    # ------------------------------------------------------------------------------------ idleness

    def _notify(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def _idle(self) -> bool:
        if self.deliverer.inflight:
            return False
        for job in self._order:
            if job.work_done is None:
                return False
            if job.webhook_url is not None and not job.webhook_started:
                return False
        return True

    def wait_rendered(self, timeout: float) -> bool:
        """Block until every job's work (fetch, checks, render) is done; False on timeout (real time)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(job.work_done is None for job in self._order):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until every job is rendered and every notification settled; False on timeout.

        ``timeout`` is real time (a guard against hangs, not sandbox time): with a ``ManualClock``, advance it
        past the jobs' ends first, or this waits for notifications that are not due yet.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._workers.shutdown(wait=True, cancel_futures=True)
        self.scheduler.close()
        self.deliverer.close()


class _Memo(Generic[K, V]):
    """The last ``size`` answers of a pure function of file contents, shared by every sandbox in the process.

    Renders and probes depend only on the input bytes (by digest) and the arguments in the key, never on a
    sandbox's state or config beyond them, so sandboxes share them: a test suite or a load test that starts
    many sandboxes on the same clips encodes each output once, not once per sandbox (~0.1 s of CPU each).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._kept: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._kept[key] = value
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)


_RENDERS: _Memo[tuple[str, str, str, int, int], Rendered] = _Memo(32)
"""By input digests, sync mode and output audio format: thousands of jobs on the same clips render once."""

_PROBES: _Memo[tuple[str, str], MediaInfo | MediaFailure] = _Memo(256)
"""By input digest: a probe opens the container with FFmpeg, a digest only reads bytes."""


@dataclass(frozen=True)
class _Input:
    """One fetched input: its bytes, their digest, and the URL's file suffix (a hint some probes use)."""

    field: MediaField
    data: bytes
    digest: str
    suffix: str

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.field}{self.suffix}"
        path.write_bytes(self.data)
        return path


def _media_failure(exc: MediaFailure, job: Job) -> Failure:
    url = job.video_url if exc.field == "video_url" else job.audio_url
    if exc.kind == "download":
        return Failure("file_download_error", exc.message, field=exc.field, input=url)
    kind = "unsupported_video_format" if exc.field == "video_url" else "unsupported_audio_format"
    return Failure(kind, exc.message, field=exc.field, input=url)
