"""One error taxonomy for every provider, so callers branch on meaning rather than on wire formats.

Every error carries ``retryable`` (may the same request succeed later or elsewhere) and, for provider errors,
``accepted`` (might the provider have taken — and billed — the job). Fallback relies on both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

    from .schema import Job

__all__ = [
    "AuthenticationError",
    "CancelNotSupportedError",
    "ConfigError",
    "DeadlineExceededError",
    "InvalidMediaError",
    "InvalidRequestError",
    "JobFailedError",
    "JobNotFoundError",
    "LipsyncError",
    "MissingCredentialsError",
    "NoRouteError",
    "PluginError",
    "ProviderError",
    "ProviderRejectedError",
    "ProviderUnavailableError",
    "QuotaExceededError",
    "RateLimitedError",
    "ResultExpiredError",
    "StorageError",
    "SubmitOutcomeUnknownError",
    "UnsupportedOptionError",
    "WebhookVerificationError",
]


class LipsyncError(Exception):
    """Root of every error lipsyncer raises on purpose."""

    retryable: bool = False
    fix: str | None = None
    attempts: tuple[Any, ...] = ()
    """The :class:`~lipsyncer.core.schema.Attempt` records made before this error, when any."""
    job: Job | None = None
    """The stored job this error concerns, when one was written (a refused or unknown submit, a failure)."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if fix is not None:
            self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


# --------------------------------------------------------------------------------- before any network call


class InvalidRequestError(LipsyncError, ValueError):
    """The request cannot be sent as it is; ``field`` names what to change."""

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.field = field

    @classmethod
    def from_validation(cls, exc: ValidationError, model: str) -> InvalidRequestError:
        """Turn pydantic's report into one typed error, keeping our own error when a validator raised it."""
        problems: list[str] = []
        fixes: list[str] = []
        for err in exc.errors():
            original = (err.get("ctx") or {}).get("error")
            if isinstance(original, InvalidRequestError):
                return original
            loc = ".".join(str(p) for p in err["loc"]) or model
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown field {loc!r}")
                fixes.append(f"remove {loc!r} (see the {model} reference for its fields)")
            elif err["type"] == "missing":
                problems.append(f"{loc} is required")
                fixes.append(f"pass {loc}")
            else:
                problems.append(f"{loc}: {err['msg']}")
                fixes.append(f"give {loc} a valid value ({err['msg'][0].lower() + err['msg'][1:]})")
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        field = ".".join(str(p) for p in first) or None
        return cls(f"invalid {model}: " + "; ".join(problems), field=field, fix="; ".join(fixes) or None)


class InvalidMediaError(InvalidRequestError):
    """A local media file cannot be what the request says it is (unreadable, empty, no video or audio stream).

    Raised before anything is uploaded or paid for; ``field`` is ``video`` or ``audio`` and ``path`` the file.
    """

    def __init__(self, message: str, *, field: str, path: str, fix: str | None = None) -> None:
        super().__init__(message, field=field, fix=fix)
        self.path = path


class UnsupportedOptionError(InvalidRequestError):
    """The chosen route cannot honour an option the request sets (it is never dropped silently)."""

    def __init__(
        self, message: str, *, option: str, provider: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(message, field=option, fix=fix)
        self.option = option
        self.provider = provider


class NoRouteError(LipsyncError):
    """No enabled provider can serve the request; ``reasons`` has one entry per provider."""

    def __init__(
        self,
        message: str,
        *,
        reasons: Mapping[str, str],
        suggestions: Iterable[str] = (),
        exclusions: Iterable[Any] = (),
        fix: str | None = None,
    ) -> None:
        self.reasons = dict(reasons)
        self.suggestions = list(suggestions)
        self.exclusions = tuple(exclusions)
        """The router's :class:`~lipsyncer.core.router.Exclusion` records, each with its ``kind``."""
        lines = [message]
        lines += [f"  - {route}: {why}" for route, why in self.reasons.items()]
        if self.suggestions:
            lines.append("A relaxed request would be served:")
            lines += [f"  - {s}" for s in self.suggestions]
        super().__init__("\n".join(lines), fix=fix)


class MissingCredentialsError(LipsyncError):
    def __init__(self, provider: str, env_var: str) -> None:
        super().__init__(
            f"provider {provider!r} needs an API key and {env_var} is not set",
            fix=f"export {env_var}=... or set providers.{provider}.api_key_env in the config",
        )
        self.provider = provider
        self.env_var = env_var


class ConfigError(LipsyncError):
    pass


class PluginError(LipsyncError):
    def __init__(self, message: str, *, plugin: str) -> None:
        super().__init__(message)
        self.plugin = plugin


class StorageError(LipsyncError):
    """A local file could not be made reachable for the provider."""


# --------------------------------------------------------------------------------------- provider answers


class ProviderError(LipsyncError):
    """The provider answered with an error.

    ``accepted`` is False when the provider certainly did not take the job (safe to try another route),
    True when it did, None when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        code: str | None = None,
        retryable: bool = False,
        accepted: bool | None = False,
        details: Any = None,
        fix: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, fix=fix)
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (429, and 503s that say so)."""
        self.provider = provider
        self.status_code = status_code
        self.code = code
        self.retryable = retryable
        self.accepted = accepted
        self.details = details

    def __str__(self) -> str:
        where = f"{self.provider}"
        if self.status_code is not None:
            where += f" HTTP {self.status_code}"
        if self.code:
            where += f" {self.code}"
        text = f"{where}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


class AuthenticationError(ProviderError):
    """The key was refused. Never retryable: the fix is a different key."""


class QuotaExceededError(ProviderError):
    """The account cannot pay for the job (402 / insufficient quota)."""


class RateLimitedError(ProviderError):
    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("retryable", True)
        super().__init__(message, **kw)


class ProviderUnavailableError(ProviderError):
    """5xx, upstream outage or transport failure before the job was accepted."""


class ProviderRejectedError(ProviderError):
    """The provider refused the input (422-style): sending it again, anywhere, will not help as is."""


class WebhookVerificationError(LipsyncError):
    """A webhook's signature, timestamp or body did not check out; it must not be acted on."""


class CancelNotSupportedError(LipsyncError):
    def __init__(self, provider: str) -> None:
        super().__init__(
            f"provider {provider!r} has no cancel endpoint; the job keeps running and is billed",
            fix="let it finish, or route jobs you may cancel to a provider with cancel support",
        )
        self.provider = provider


# --------------------------------------------------------------------------------------- after acceptance


class SubmitOutcomeUnknownError(LipsyncError):
    """The submit was sent but its answer was lost. It is never re-sent blindly: resolve it by look-up."""

    def __init__(
        self, message: str, *, provider: str, job: Job | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(
            message,
            fix=(
                "do not resubmit: a webhook tagged with the job id resolves it; or find the provider's id for "
                "it (dashboard, logs) and run `lipsyncer jobs resolve JOB_ID REMOTE_ID`"
            ),
        )
        self.provider = provider
        self.job = job
        self.status_code = status_code
        """The HTTP status that came back instead of an answer (a 5xx, a gateway page), if any."""


class JobFailedError(LipsyncError):
    """The provider accepted the job and it failed; ``code`` and ``reason`` are the provider's."""

    def __init__(
        self,
        message: str,
        *,
        job: Job | None = None,
        code: str | None = None,
        reason: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.job = job
        self.code = code
        self.reason = reason
        self.retryable = retryable


class DeadlineExceededError(LipsyncError):
    """A start, total or per-call deadline passed; the job (if any) is still stored and resumable."""

    def __init__(self, message: str, *, deadline: str, job: Job | None = None) -> None:
        super().__init__(
            message, fix="raise the deadline in the polling config, or `lipsyncer jobs resume` later"
        )
        self.deadline = deadline
        self.job = job


class JobNotFoundError(LipsyncError):
    def __init__(self, job_id: str, store: str) -> None:
        super().__init__(
            f"no job {job_id!r} in the job store {store}", fix="list jobs with `lipsyncer jobs list`"
        )
        self.job_id = job_id


class ResultExpiredError(LipsyncError):
    def __init__(self, url: str, expired_at: datetime | None) -> None:
        when = f" at {expired_at.isoformat()}" if expired_at else ""
        super().__init__(
            f"the result link expired{when}; the provider no longer serves it",
            fix="set download_dir so results are saved as soon as jobs complete",
        )
        self.url = url
        self.expired_at = expired_at


class JobTargetMismatchError(ConfigError):
    """A stored job's requests went somewhere this client would not send them (a sandbox, a gateway)."""

    def __init__(self, job_id: str, provider: str, stored: str | None, current: str | None) -> None:
        where = {None: "the provider's real hosts", "transport": "a custom transport (e.g. the sandbox)"}
        super().__init__(
            f"job {job_id} was sent to {provider} at {where.get(stored, stored)}, but this client would send "
            f"its look-ups to {where.get(current, current)}",
            fix=(
                f"resume it with the config it was submitted with (`[providers.{provider}] base_url = "
                f"{stored!r}`)"
                if stored not in (None, "transport")
                else "resume it with the same transport (or sandbox) it was submitted through"
                if stored == "transport"
                else f"remove `[providers.{provider}] base_url` to resume it against the real API"
            ),
        )
        self.job_id = job_id
        self.stored = stored
        self.current = current


class IdempotencyKeyReusedError(InvalidRequestError):
    """The idempotency key is stored with a different request: the same key must mean the same job."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} already belongs to job {job_id}, submitted with a different request",
            field="idempotency_key",
            fix="use a new key for a different request (or resubmit the same request to get that job back)",
        )
        self.key = key
        self.job_id = job_id


class ClientClosedError(LipsyncError):
    """The client was closed; it builds no new connections."""

    def __init__(self) -> None:
        super().__init__("this client is closed", fix="create a new client (or use it in a `with` block)")
