"""fal webhook deliveries: Ed25519 verification against fal's JWKS, then the body as a WebhookEvent.

The signed message is ``request_id \\n user_id \\n timestamp \\n sha256_hex(body)`` (UTF-8), signature in hex.
Keys are cached per verifier (one per provider instance, never per process) for up to 24 h; an unknown
signature triggers one early refresh, at most every five minutes, so key rotation works and forged
deliveries cannot make us hammer the JWKS URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import anyio
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lipsyncer import (
    JobState,
    JobStatus,
    LogEntry,
    ProviderOutput,
    ProviderUnavailableError,
    WebhookEvent,
    WebhookVerificationError,
)

from ._client import borrow
from ._errors import retryable_type
from ._queue import output_from

__all__ = ["DEFAULT_JWKS_URL", "FalWebhookVerifier"]

DEFAULT_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
"""fal-client's REST host (it moved from ``rest.alpha.fal.ai``, the URL in fal's older webhook docs);
``options.jwks_url`` or the client's ``webhook_jwks_url`` override it."""

_HEADERS = (
    "x-fal-webhook-request-id",
    "x-fal-webhook-user-id",
    "x-fal-webhook-timestamp",
    "x-fal-webhook-signature",
)


class FalWebhookVerifier:
    """Checks fal's signature and timestamp on a delivery and decodes it. Parsing has no side effects
    beyond filling the key cache, so the same delivery parsed twice gives the same event."""

    def __init__(
        self,
        *,
        provider: str,
        jwks_url: str = DEFAULT_JWKS_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        tolerance: float = 300.0,
        cache_seconds: float = 24 * 3600.0,
        refresh_after: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.jwks_url = jwks_url
        self._transport = transport
        self._tolerance = tolerance
        self._cache_seconds = cache_seconds
        self._refresh_after = refresh_after
        self._clock = clock
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<FalWebhookVerifier {self.provider} jwks={self.jwks_url}>"

    async def parse(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        request_id, sent_at, message, signature = self._signed_message(headers, body)
        await self._verify(message, signature)
        event = _event(body, request_id, provider=self.provider)
        # Stamped with fal's send time, not ours: parsing the same delivery twice gives equal events.
        status = event.status.model_copy(
            update={"observed_at": datetime.fromtimestamp(sent_at, timezone.utc)}
        )
        return WebhookEvent(
            remote_id=event.remote_id,
            status=status,
            output=event.output,
            delivery_id=hashlib.sha256(message).hexdigest()[:32],
            raw=event.raw,
        )

    def _signed_message(self, headers: Mapping[str, str], body: bytes) -> tuple[str, int, bytes, bytes]:
        lowered = {k.lower(): v for k, v in headers.items()}
        missing = [h for h in _HEADERS if not lowered.get(h)]
        if missing:
            raise WebhookVerificationError(f"fal webhook lacks {', '.join(missing)}")
        request_id, user_id, timestamp, signature = (lowered[h].strip() for h in _HEADERS)
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise WebhookVerificationError(
                f"fal webhook timestamp {timestamp!r} is not unix seconds"
            ) from None
        skew = abs(self._clock() - sent_at)
        if skew > self._tolerance:
            raise WebhookVerificationError(
                f"fal webhook timestamp is {skew:.0f} s away from now (limit {self._tolerance:.0f} s)",
                fix="check this machine's clock; replayed deliveries are refused",
            )
        try:
            raw_signature = bytes.fromhex(signature)
        except ValueError:
            raise WebhookVerificationError("fal webhook signature is not hex") from None
        digest = hashlib.sha256(body).hexdigest()
        message = f"{request_id}\n{user_id}\n{timestamp}\n{digest}".encode()
        return request_id, sent_at, message, raw_signature

    async def _verify(self, message: bytes, signature: bytes) -> None:
        keys = await self._current_keys(refresh=False)
        if _any_verifies(keys, message, signature):
            return
        if self._fetched_at is None or self._clock() - self._fetched_at >= self._refresh_after:
            keys = await self._current_keys(refresh=True)
            if _any_verifies(keys, message, signature):
                return
        raise WebhookVerificationError(f"fal webhook signature matches no key of {self.jwks_url}")

    async def _current_keys(self, *, refresh: bool) -> list[Ed25519PublicKey]:
        async with self._lock:
            fresh = self._fetched_at is not None and self._clock() - self._fetched_at < self._cache_seconds
            if fresh and not refresh:
                return self._keys
            self._keys = await self._fetch()
            self._fetched_at = self._clock()
            return self._keys

    async def _fetch(self) -> list[Ed25519PublicKey]:
        """fal's JWKS. Unreachable: ProviderUnavailableError (try again), not a verdict on the delivery."""
        try:
            async with httpx.AsyncClient(transport=borrow(self._transport), timeout=30.0) as client:
                response = await client.get(self.jwks_url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailableError(
                f"cannot fetch fal's webhook keys from {self.jwks_url} ({type(exc).__name__})",
                provider=self.provider,
                retryable=True,
                accepted=True,
            ) from exc
        keys = [key for jwk in _jwks_entries(document) if (key := _ed25519(jwk)) is not None]
        if not keys:
            raise ProviderUnavailableError(
                f"{self.jwks_url} lists no Ed25519 key", provider=self.provider, retryable=True, accepted=True
            )
        return keys


def _jwks_entries(document: Any) -> list[Mapping[str, Any]]:
    entries = document.get("keys") if isinstance(document, Mapping) else None
    return [e for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []


def _ed25519(jwk: Mapping[str, Any]) -> Ed25519PublicKey | None:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        return None
    x: str = jwk["x"]
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        return None


def _any_verifies(keys: list[Ed25519PublicKey], message: bytes, signature: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def _event(body: bytes, request_id: str, *, provider: str) -> WebhookEvent:
    """The delivery's meaning: OK with output, OK whose output fal could not serialise, or ERROR."""
    try:
        data = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("fal webhook body is not JSON") from None
    if not isinstance(data, Mapping):
        raise WebhookVerificationError("fal webhook body is not a JSON object")
    if str(data.get("request_id", request_id)) != request_id:
        raise WebhookVerificationError("fal webhook body names another request than its signed header")
    raw = dict(data)
    outcome = data.get("status")
    payload = data.get("payload")
    if outcome == "OK":
        if payload is None:
            # The job completed but fal could not put its output in the webhook: fetch it with result().
            note = f"output not delivered in the webhook: {data.get('payload_error') or 'no payload'}"
            status = JobStatus(
                state=JobState.COMPLETED,
                raw_status="OK",
                progress=100,
                logs=[LogEntry(message=note, level="WARN", source="fal-webhook")],
            )
            return WebhookEvent(remote_id=request_id, status=status, raw=raw)
        output: ProviderOutput = output_from(payload, provider=provider)
        status = JobStatus(state=JobState.COMPLETED, raw_status="OK", progress=100)
        return WebhookEvent(remote_id=request_id, status=status, output=output, raw=raw)
    if outcome == "ERROR":
        code, reason = _error_of(payload)
        text = str(data.get("error") or reason or "fal reported an error")
        if reason and reason not in text:
            text = f"{text}: {reason}"
        state = JobState.CANCELLED if code == "client_cancelled" else JobState.FAILED
        status = JobStatus(
            state=state,
            raw_status="ERROR",
            error_code=code,
            error_message=text,
            retryable=retryable_type(code),
        )
        return WebhookEvent(remote_id=request_id, status=status, raw=raw)
    raise WebhookVerificationError(f"fal webhook has an unknown status {outcome!r}")


def _error_of(payload: Any) -> tuple[str | None, str | None]:
    """The error type and a readable reason from an ERROR delivery's ``payload``."""
    if not isinstance(payload, Mapping):
        return None, None
    detail = payload.get("detail")
    if isinstance(detail, list):
        entries = [e for e in detail if isinstance(e, Mapping)]
        code = next((str(e["type"]) for e in entries if e.get("type")), None)
        reason = "; ".join(
            ".".join(str(p) for p in e.get("loc") or () if p != "body") + ": " + str(e.get("msg", ""))
            for e in entries
        )
        return code, reason or None
    error_type = payload.get("error_type")
    return (str(error_type) if error_type else None), (str(detail) if detail else None)
