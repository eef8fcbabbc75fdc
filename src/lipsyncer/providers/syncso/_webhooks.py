"""sync.so webhook signatures: ``Sync-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.

syncsdk 0.3.0 ships the notification type but no verifier, so this is the standard library's HMAC, compared
in constant time. sync.so documents no tolerance window: 300 s, as for fal, keeps replays short-lived.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from lipsyncer import WebhookVerificationError

__all__ = ["SIGNATURE_HEADER", "sign", "verify_signature"]

SIGNATURE_HEADER = "sync-signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value sync.so would send (the sandbox and tests sign with it)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    tolerance: float,
    clock: Callable[[], float],
) -> int:
    """The signed timestamp when a ``v1`` signature matches and is fresh; WebhookVerificationError otherwise."""
    header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
    if not header:
        raise WebhookVerificationError("sync.so webhook has no Sync-Signature header")
    stamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamp = value
        elif name == "v1" and value:
            signatures.append(value)
    if stamp is None or not stamp.isdigit() or not signatures:
        raise WebhookVerificationError("sync.so Sync-Signature lacks t=<unix> or v1=<hex>")
    timestamp = int(stamp)
    if abs(clock() - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"sync.so webhook timestamp is more than {tolerance:g} s away from now (a replay, or a skewed clock)"
        )
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    # Every candidate is compared (rotation may send several); compare_digest keeps each comparison constant-time.
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookVerificationError("sync.so webhook signature does not match the configured secret")
    return timestamp
