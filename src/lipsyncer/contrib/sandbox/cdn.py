"""fal's storage as the sandbox emulates it: CDN tokens, uploads, the GCS fallback, and file downloads.

Uploaded inputs and rendered outputs share one in-memory store keyed by URL path (``/files/...``), so a
sandbox URL resolves the same whichever host it names (fal's CDN through a rebasing transport, or the loopback
server). Downloads honour ``Range`` the way a CDN does (206 + ``Content-Range``, 416 when unsatisfiable).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .clock import Clock
from .exchange import Call, Reply, cdn_base
from .wire import WireError, fal_http_error

__all__ = ["FileStore", "StoredFile", "serve_file"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str | None, default: str = "upload.bin") -> str:
    cleaned = _UNSAFE.sub("_", (name or "").strip()).strip("._")
    return cleaned[:120] or default


@dataclass(frozen=True)
class StoredFile:
    path: str
    data: bytes
    content_type: str
    file_name: str
    created: float
    expires_at: float | None  # a deadline on the sandbox's clock

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class FileStore:
    """Thread-safe in-memory files plus the CDN upload tokens fal-client asks for."""

    def __init__(self, new_key: Callable[[int], str], token_ttl: float, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._tokens: dict[str, float] = {}
        self._pending_puts: dict[str, tuple[str, str, str]] = {}
        self._new_key = new_key
        self._token_ttl = token_ttl

    # ----------------------------------------------------------------------------------------- files

    def put(
        self,
        data: bytes,
        *,
        file_name: str,
        content_type: str,
        ttl: float | None = None,
        directory: str | None = None,
        path: str | None = None,
    ) -> StoredFile:
        name = safe_name(file_name)
        if path is None:
            path = f"/files/{directory or self._new_key(12)}/{name}"
        now = self._clock.monotonic()
        stored = StoredFile(path, data, content_type, name, now, None if ttl is None else now + ttl)
        with self._lock:
            self._files[path] = stored
        return stored

    def get(self, path: str) -> StoredFile | None:
        """The file at ``path``, or None when it is unknown or expired."""
        with self._lock:
            stored = self._files.get(path)
        if stored is None or stored.expired(self._clock.monotonic()):
            return None
        return stored

    def expire_at(self, path: str, deadline: float) -> None:
        with self._lock:
            stored = self._files.get(path)
            if stored is not None:
                self._files[path] = StoredFile(
                    stored.path, stored.data, stored.content_type, stored.file_name, stored.created, deadline
                )

    # ---------------------------------------------------------------------------------------- tokens

    def issue_token(self) -> tuple[str, datetime]:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = self._clock.monotonic() + self._token_ttl
        issued = datetime.fromtimestamp(self._clock.time(), timezone.utc)
        return token, issued + timedelta(seconds=self._token_ttl)

    def token_valid(self, token: str) -> bool:
        with self._lock:
            deadline = self._tokens.get(token)
        return deadline is not None and self._clock.monotonic() < deadline

    def reserve_put(self, file_name: str, content_type: str) -> tuple[str, str]:
        """A one-shot upload key (the GCS-style fallback) and the file path it will fill."""
        key = self._new_key(24)
        path = f"/files/{self._new_key(12)}/{safe_name(file_name)}"
        with self._lock:
            self._pending_puts[key] = (path, safe_name(file_name), content_type)
        return key, path

    def take_put(self, key: str) -> tuple[str, str, str] | None:
        with self._lock:
            return self._pending_puts.pop(key, None)


# --------------------------------------------------------------------------------------------- handlers


class CdnApi:
    """Handlers for ``rest.fal.ai/storage/...`` and ``v3.fal.media/files/...``."""

    def __init__(self, files: FileStore, *, fal_key: str, file_ttl: Callable[[], float | None]) -> None:
        self.files = files
        self._fal_key = fal_key
        self._file_ttl = file_ttl

    def _key_ok(self, call: Call) -> bool:
        return call.header("authorization") == f"Key {self._fal_key}"

    def token(self, call: Call) -> Reply:
        if not self._key_ok(call):
            return Reply.error(fal_http_error(401, None, "Invalid or missing fal key", None))
        token, expires = self.files.issue_token()
        return Reply(
            200,
            {
                "token": token,
                "token_type": "Bearer",
                "base_url": cdn_base(call.origin),
                "expires_at": expires.isoformat(),
            },
        )

    def upload(self, call: Call) -> Reply:
        auth = call.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not self.files.token_valid(token):
            return Reply.error(fal_http_error(401, None, "Invalid or expired CDN token", None))
        content_type = call.header("content-type") or "application/octet-stream"
        stored = self.files.put(
            call.body,
            file_name=call.header("x-fal-file-name") or "upload.bin",
            content_type=content_type,
            ttl=self._file_ttl(),
        )
        return Reply(200, {"access_url": call.origin + stored.path, "content_type": content_type})

    def initiate(self, call: Call) -> Reply:
        """fal-client's fallback when the v3 CDN upload fails: ``storage/upload/initiate`` then a PUT."""
        if not self._key_ok(call):
            return Reply.error(fal_http_error(401, None, "Invalid or missing fal key", None))
        data = call.json_or_none if isinstance(call.json_or_none, dict) else {}
        file_name = str(data.get("file_name") or "upload.bin")
        content_type = str(data.get("content_type") or "application/octet-stream")
        key, path = self.files.reserve_put(file_name, content_type)
        return Reply(
            200,
            {
                "upload_url": f"{call.origin}/storage/upload/put/{key}",
                "file_url": cdn_base(call.origin) + path,
            },
        )

    def put(self, call: Call) -> Reply:
        reserved = self.files.take_put(call.params["key"])
        if reserved is None:
            return Reply(404, {"detail": "Unknown or used upload URL"})
        path, name, content_type = reserved
        self.files.put(
            call.body,
            file_name=name,
            content_type=call.header("content-type") or content_type,
            ttl=self._file_ttl(),
            path=path,
        )
        return Reply(200, {})

    def file(self, call: Call, expired_fault: WireError | None) -> Reply:
        if expired_fault is not None:
            return Reply.error(expired_fault)
        stored = self.files.get(call.path)
        if stored is None:
            return Reply(404, {"detail": "File not found"})
        return serve_file(stored, call.header("range"), head=call.method == "HEAD")


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def serve_file(stored: StoredFile, range_header: str | None, *, head: bool = False) -> Reply:
    size = len(stored.data)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{stored.file_name}"',
    }
    start, end = 0, size - 1
    status = 200
    if range_header:
        match = _RANGE.match(range_header)
        if match is None or (not match.group(1) and not match.group(2)):
            # A multi-range or malformed header: serve the whole file, as many CDNs do.
            match = None
        if match is not None:
            first, last = match.group(1), match.group(2)
            if first:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            else:
                length = int(last)
                start, end = max(0, size - length), size - 1
                if length == 0:
                    start = size
            if start >= size or start > end:
                return Reply(
                    416, raw=b"", headers={"Content-Range": f"bytes */{size}"}, media_type=stored.content_type
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    chunk = stored.data[start : end + 1]
    headers["Content-Length"] = str(len(chunk))
    return Reply(status, raw=b"" if head else chunk, headers=headers, media_type=stored.content_type)
