"""One HTTP exchange as the API handlers see it, and the rules for the URLs the sandbox hands out.

Handlers route by path only and build every URL they return from the request's own ``Host`` (and scheme), so
the same response is valid when a client reached the sandbox through ``RebaseTransport`` with fal's real host
names, and when it talks to the loopback server directly.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from .wire import WireError

__all__ = [
    "FAL_CDN_HOST",
    "FAL_HOSTS",
    "Call",
    "Reply",
    "cdn_base",
    "is_fal_host",
    "is_loopback_host",
    "origin_of",
]

FAL_CDN_HOST = "v3.fal.media"
FAL_HOSTS = (
    "queue.fal.run",
    "fal.run",
    "queue.falrun.com",
    "falrun.com",
    "rest.fal.ai",
    "rest.alpha.fal.ai",
    "v3.fal.media",
    "v3b.fal.media",
    "fal.media",
)
"""fal's real host names, as the emulator knows them (the fal plugins declare theirs as ``hosts``)."""
_NO_BODY = object()


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(host: str) -> bool:
    name = _hostname(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_fal_host(host: str) -> bool:
    name = _hostname(host)
    return name in FAL_HOSTS or name.endswith(".fal.run") or name.endswith(".fal.media")


def origin_of(host: str, forwarded_proto: str | None) -> str:
    """``scheme://host`` for URLs handed back to this client.

    ``X-Forwarded-Proto`` wins; loopback hosts are plain http; every other host (fal's, the unified API's,
    a white-label copy's) is https, as it is in production.
    """
    if forwarded_proto:
        scheme = forwarded_proto.split(",")[0].strip().lower()
    else:
        scheme = "http" if is_loopback_host(host) else "https"
    return f"{scheme}://{host}"


def cdn_base(origin: str) -> str:
    """Where files live for a client that reached us at ``origin``: fal's CDN host, or the loopback server."""
    host = origin.split("://", 1)[1]
    if is_fal_host(host):
        return f"https://{FAL_CDN_HOST}"
    return origin


@dataclass
class Call:
    """A received request, parsed once."""

    method: str
    path: str
    host: str
    origin: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    # Filled in by handlers for the request log.
    job_id: str | None = None
    endpoint: str | None = None
    ignored_fields: tuple[str, ...] = ()
    faults: list[str] = field(default_factory=list)  # faults a handler applied itself
    _json: Any = _NO_BODY
    _valid_json: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def json_or_none(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON (uploads are never parsed)."""
        if self._json is _NO_BODY:
            self._json = None
            self._valid_json = False
            if self._looks_like_json():
                try:
                    self._json = json.loads(self.body)
                    self._valid_json = True
                except ValueError:
                    pass
        return self._json

    @property
    def is_json(self) -> bool:
        _ = self.json_or_none  # parses once and caches
        return self._valid_json

    def _looks_like_json(self) -> bool:
        if not self.body:
            return False
        content_type = self.headers.get("content-type", "")
        return "json" in content_type or self.body.lstrip()[:1] in (b"{", b"[", b'"')


@dataclass
class Reply:
    """A response: JSON unless ``raw`` is set."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    media_type: str = "application/json"

    @classmethod
    def error(cls, err: WireError) -> Reply:
        headers = dict(err.headers)
        if isinstance(err.body, str):
            media = headers.pop("Content-Type", "text/plain")
            return cls(err.status, None, headers, raw=err.body.encode(), media_type=media)
        return cls(err.status, err.body, headers)

    def content(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body).encode()
