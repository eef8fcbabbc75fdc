"""Outgoing notifications: fal's Ed25519-signed webhooks, the unified API's unsigned callbacks, and delivery.

The signing key pair derives from the sandbox seed, so a receiver under test can pin the JWKS. Deliveries run
on the sandbox's own threads with a sync httpx client (or ``webhook_transport``), retried on failure with the
provider's schedule scaled by ``webhook_retry_scale``. The sandbox has no network: a receiver that is neither
loopback nor reachable through ``webhook_transport`` fails at once, with the reason recorded.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .clock import Clock, MonotonicClock
from .exchange import is_loopback_host
from .recording import DeliveryLog, WebhookDelivery
from .scheduler import Scheduler

__all__ = ["Deliverer", "Outgoing", "WebhookSigner", "signed_message"]

log = logging.getLogger(__name__)


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: ``request_id \\n user_id \\n timestamp \\n sha256_hex(body)``, UTF-8."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((request_id, user_id, timestamp, digest)).encode("utf-8")


class WebhookSigner:
    """The sandbox's fal webhook key pair (deterministic from the seed) and its JWKS."""

    def __init__(self, seed: int, user_id: str, clock: Clock | None = None) -> None:
        self._clock = clock or MonotonicClock()
        secret = hashlib.sha256(f"lipsyncer-sandbox-webhook-key:{seed}".encode()).digest()
        self._key = Ed25519PrivateKey.from_private_bytes(secret)
        self.public_key: Ed25519PublicKey = self._key.public_key()
        self.user_id = user_id
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._x = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        self.kid = hashlib.sha256(raw).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": self._x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}
            ]
        }

    def headers(self, request_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(self._clock.time()) if timestamp is None else timestamp)
        signature = self._key.sign(signed_message(request_id, self.user_id, stamp, body)).hex()
        return {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.user_id,
            "X-Fal-Webhook-Timestamp": stamp,
            "X-Fal-Webhook-Signature": signature,
        }


@dataclass
class Outgoing:
    """One notification to deliver, with its retry schedule (seconds before each retry, unscaled)."""

    api: str
    job_id: str
    url: str
    body: bytes
    make_headers: Callable[[bytes], dict[str, str]]
    retry_delays: tuple[float, ...]
    dropped: bool = False
    duplicate: bool = False
    early: bool = False
    _duplicated: bool = field(default=False, repr=False)


class Deliverer:
    """Delivers ``Outgoing`` notifications on a small thread pool; retries go through the timer."""

    def __init__(
        self,
        scheduler: Scheduler,
        deliveries: DeliveryLog,
        *,
        clock: Clock,
        transport: httpx.BaseTransport | None,
        timeout: float,
        retry_scale: float,
        on_settled: Callable[[], None],
    ) -> None:
        self._scheduler = scheduler
        self._clock = clock
        self._log = deliveries
        self._has_transport = transport is not None
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.Client | None = None  # built on first delivery: a TLS context costs ~40 ms
        self._retry_scale = retry_scale
        self._on_settled = on_settled
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lipsyncer-sandbox-webhook")
        self._lock = threading.Lock()
        self._inflight = 0
        self._closed = False

    @property
    def inflight(self) -> int:
        """Notifications accepted and not yet settled (delivered, given up, or dropped)."""
        with self._lock:
            return self._inflight

    def deliver(self, outgoing: Outgoing) -> None:
        with self._lock:
            if self._closed:
                return
            self._inflight += 1
        self._submit(outgoing, 1)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, timeout=self._timeout, trust_env=False)
            return self._client

    def _submit(self, outgoing: Outgoing, attempt: int) -> None:
        try:
            self._pool.submit(self._attempt, outgoing, attempt)
        except RuntimeError:  # pool shut down
            self._settle()

    def _settle(self) -> None:
        with self._lock:
            self._inflight -= 1
        self._on_settled()

    def _record(
        self,
        outgoing: Outgoing,
        attempt: int,
        headers: dict[str, str],
        status: int | None,
        error: str | None,
        *,
        dropped: bool = False,
    ) -> None:
        self._log.add(
            WebhookDelivery(
                outgoing.api,
                outgoing.job_id,
                outgoing.url,
                attempt,
                datetime.fromtimestamp(self._clock.time(), timezone.utc),
                outgoing.body,
                headers,
                status,
                error,
                dropped=dropped,
                duplicate=outgoing._duplicated and not dropped,
                early=outgoing.early,
            )
        )

    def _attempt(self, outgoing: Outgoing, attempt: int) -> None:
        if outgoing.dropped:
            self._record(outgoing, attempt, {}, None, "dropped by a webhook_fail fault", dropped=True)
            self._settle()
            return
        # Retries count from the attempt's start, read before the POST: under a ManualClock the schedule
        # then depends on the clock alone, not on whether this thread finished before a test moved it.
        began = self._clock.monotonic()
        headers = outgoing.make_headers(outgoing.body)
        status, error = self._post(outgoing.url, outgoing.body, headers)
        self._record(outgoing, attempt, headers, status, error)
        ok = status is not None and 200 <= status < 300
        if ok and outgoing.duplicate and not outgoing._duplicated:
            outgoing._duplicated = True
            self._submit(outgoing, attempt + 1)
            return
        retryable = error is None or not error.startswith("no network")
        if not ok and retryable and attempt <= len(outgoing.retry_delays):
            delay = outgoing.retry_delays[attempt - 1] * self._retry_scale
            if self._scheduler.call_at(began + delay, lambda: self._submit(outgoing, attempt + 1)):
                return
        self._settle()

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        host = urlsplit(url).netloc.rpartition("@")[2]
        if not self._has_transport and not is_loopback_host(host):
            return (
                None,
                f"no network: the sandbox only delivers to loopback hosts or through webhook_transport ({host})",
            )
        try:
            response = self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a broken test transport must not kill the delivery thread
            log.exception("webhook transport failed")
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None
