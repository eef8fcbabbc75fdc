"""One redactor per client: the secrets it knows never reach an error, a repr, a log line or a traceback.

Providers can be handed their key back in an error body (a proxy echoing the ``Authorization`` header, an API
quoting the bad key). Rather than each provider scrubbing its own way, every error a provider raises, its
``details``, every exception it chains, and every record of the ``lipsyncer`` logger tree go through the
client's :class:`Redactor`.

Logging. Python consults a logger's filters only for records created on that very logger, not for records
propagated from its children, so a filter on ``lipsyncer`` alone would miss ``lipsyncer.providers.unified``.
:meth:`Redactor.attach` therefore puts one shared :class:`RedactingFilter` on the ``lipsyncer`` logger and on
every ``lipsyncer.*`` logger that exists at that moment (and on any extra tree named, e.g. ``fal_client``).
The filter holds its redactors weakly: two clients in one process each register theirs, each client's
:meth:`Redactor.detach` (on close) removes only its own, and a client that is never closed leaves nothing
behind once it is garbage collected. The filter removes itself from a logger when no redactor is left.
"""

from __future__ import annotations

import json
import logging
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

__all__ = ["MARK", "RedactingFilter", "Redactor"]

MARK = "<redacted>"
"""What a secret is replaced with."""

_CREDENTIAL_NAME = re.compile(r"(^|_)(KEY|API_KEY|TOKEN|SECRET|PASSWORD)$|API_?KEY", re.IGNORECASE)
_SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-fal-cdn-token", "cookie", "set-cookie", "proxy-authorization"}
)
_KEEP_BODY = 64 * 1024
E = TypeVar("E", bound=BaseException)


class Redactor:
    """The secrets of one client, and how to take them out of text, structures, exceptions and log records.

    Each secret is also looked for in the forms it takes once quoted: ``repr`` / JSON escaping and URL
    encoding. Longer secrets are replaced first, so a key and a part of it (fal's ``id:secret``) both go.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._attached: list[tuple[logging.Logger, RedactingFilter]] = []
        self.add(*secrets)

    def __repr__(self) -> str:
        return f"<Redactor secrets={len(self._secrets)}>"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Redactor:
        """Values of variables named like credentials (``*_KEY``, ``*_TOKEN``, ``*_SECRET``...).

        For places that have no client to ask (the CLI's ``--debug`` traceback); a client knows its keys.
        Values under 8 characters are left out: a ``DEBUG_TOKEN=1`` must not blank every "1" of a traceback.
        """
        return cls(
            value
            for name, value in environ.items()
            if _CREDENTIAL_NAME.search(name) and len(value.strip()) >= 8
        )

    # ------------------------------------------------------------------ secrets

    def add(self, *secrets: str | None) -> None:
        """Know more secrets. Empty and whitespace-only values are ignored (they would blank every text)."""
        fresh: set[str] = set()
        for secret in secrets:
            if not secret or not secret.strip():
                continue
            fresh |= _forms(secret)
        if not fresh - self._secrets:
            return
        self._secrets |= fresh
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __contains__(self, text: object) -> bool:
        """Does ``text`` show any secret?"""
        return isinstance(text, str) and self._pattern is not None and self._pattern.search(text) is not None

    # ------------------------------------------------------------------ values

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MARK, text)

    def data(self, data: bytes) -> bytes:
        if self._pattern is None:
            return data
        for secret in sorted(self._secrets, key=len, reverse=True):
            data = data.replace(secret.encode("utf-8", "surrogatepass"), MARK.encode())
        return data

    def value(self, value: Any) -> Any:
        """``value`` with every secret replaced: text, bytes, and mappings, lists and tuples of them."""
        if self._pattern is None:
            return value
        return self._value(value, set())

    def _value(self, value: Any, seen: set[int]) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (bytes, bytearray)):
            return self.data(bytes(value))
        if isinstance(value, (Mapping, list, tuple, set, frozenset)):
            if id(value) in seen:
                return value
            seen = seen | {id(value)}
        if isinstance(value, Mapping):
            return {self._value(k, seen): self._value(v, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v, seen) for v in value]
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(self._value(v, seen) for v in value)
        if isinstance(value, (set, frozenset)):
            return type(value)(self._value(v, seen) for v in value)
        if isinstance(value, httpx.Request):
            return self.request(value)
        if isinstance(value, httpx.Response):
            return self.response(value)
        return value

    def headers(self, headers: httpx.Headers | Mapping[str, str]) -> dict[str, str]:
        """Credential headers replaced whole; secrets replaced in every other value."""
        items = headers.multi_items() if isinstance(headers, httpx.Headers) else headers.items()
        return {k: (MARK if k.lower() in _SECRET_HEADERS else self.text(v)) for k, v in items}

    def request(self, request: httpx.Request) -> httpx.Request:
        """A copy safe to keep: no credential header, no secret in the URL or the body (when read).

        A body over 64 KiB (an upload) is not kept: an error should not hold a video in memory.
        """
        try:
            content = request.content
        except httpx.RequestNotRead:
            content = b""
        if len(content) > _KEEP_BODY:
            content = b""
        return httpx.Request(
            request.method,
            self.text(str(request.url)),
            headers=self.headers(request.headers),
            content=self.data(content),
        )

    def response(self, response: httpx.Response) -> httpx.Response:
        """A copy safe to keep: secrets out of the body (when read), the headers and the request."""
        try:
            content = response.content
        except httpx.ResponseNotRead:
            content = b""
        headers = self.headers(response.headers)
        headers.pop("content-encoding", None)  # the copy holds decoded bytes
        try:
            request: httpx.Request | None = self.request(response.request)
        except RuntimeError:
            request = None
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=self.data(content),
            request=request,
            extensions={k: v for k, v in response.extensions.items() if k == "reason_phrase"},
        )

    # ------------------------------------------------------------------ exceptions

    def exception(self, exc: E) -> E:
        """Redact ``exc`` in place, with every exception it chains (cause, context, group members).

        ``args``, ``str`` and ``repr`` sources, ``details``, ``message``, ``fix``, notes, and every plain
        attribute holding text, structures or httpx requests and responses. Returns ``exc``.
        """
        if self._pattern is None:
            return exc
        seen: set[int] = set()
        todo: list[BaseException | None] = [exc]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            self._one(current)
            todo += [current.__cause__, current.__context__]
            todo += list(getattr(current, "exceptions", None) or ())
        return exc

    def _one(self, exc: BaseException) -> None:
        with suppress(TypeError, AttributeError):  # an exception type that forbids it keeps its args
            exc.args = tuple(self.value(a) for a in exc.args)
        attributes = getattr(exc, "__dict__", {})
        for name, attr in list(attributes.items()):
            if isinstance(attr, BaseException):
                continue  # reached through the chain or not at all; never replaced
            cleaned = self.value(attr)
            try:
                changed = isinstance(attr, (httpx.Request, httpx.Response)) or bool(cleaned != attr)
            except Exception:  # pragma: no cover - a type whose comparison fails
                changed = False
            if changed:
                attributes[name] = cleaned

    @contextmanager
    def scrubbing(self) -> Iterator[None]:
        """Redact (in place) any exception raised in the block before it propagates."""
        try:
            yield
        except Exception as exc:
            self.exception(exc)
            raise

    def traceback(self, exc: BaseException) -> str:
        """The full traceback of ``exc`` (causes included) as text, redacted."""
        import traceback

        self.exception(exc)
        return self.text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    # ------------------------------------------------------------------ logging

    def record(self, record: logging.LogRecord) -> None:
        """Redact a log record in place: its message (with its args merged), exception and stack texts."""
        if self._pattern is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a record whose args do not fit its format: logging reports that itself
            message = None
        if message is not None and message in self:
            record.msg, record.args = self.text(message), None
        if record.exc_info and record.exc_info[1] is not None:
            self.exception(record.exc_info[1])
        if record.exc_text:
            record.exc_text = self.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.text(record.stack_info)

    def attach(self, *trees: str) -> None:
        """Redact every record of the ``lipsyncer`` logger tree (and of ``trees``) until :meth:`detach`."""
        manager = logging.Logger.manager
        roots = ("lipsyncer", *trees)
        names = set(roots) | {
            name
            for name, logger in list(manager.loggerDict.items())
            if isinstance(logger, logging.Logger) and any(name.startswith(r + ".") for r in roots)
        }
        for name in sorted(names):
            logger = logging.getLogger(name)
            if any(owner is logger for owner, _ in self._attached):
                continue
            shared = RedactingFilter.on(logger)
            shared.add(self)
            self._attached.append((logger, shared))

    def detach(self) -> None:
        """Stop redacting records for this client (its loggers keep other clients' redaction)."""
        for _logger, shared in self._attached:
            shared.discard(self)
        self._attached.clear()


class RedactingFilter(logging.Filter):
    """The one filter on a logger that runs every live redactor registered with it. Never drops a record."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = weakref.ref(logger)
        self._redactors: weakref.WeakSet[Redactor] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<RedactingFilter redactors={len(self._redactors)}>"

    @classmethod
    def on(cls, logger: logging.Logger) -> RedactingFilter:
        """The logger's redacting filter, added if it has none."""
        for existing in logger.filters:
            if isinstance(existing, RedactingFilter):
                return existing
        made = cls(logger)
        logger.addFilter(made)
        return made

    def add(self, redactor: Redactor) -> None:
        self._redactors.add(redactor)

    def discard(self, redactor: Redactor) -> None:
        self._redactors.discard(redactor)
        if not self._redactors:
            logger = self._logger()
            if logger is not None:
                logger.removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        for redactor in list(self._redactors):
            redactor.record(record)
        return True


def _forms(secret: str) -> set[str]:
    """A secret as it may appear once quoted: raw, ``repr``- and JSON-escaped, URL-encoded."""
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe="")}
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return {f for f in forms if f}
