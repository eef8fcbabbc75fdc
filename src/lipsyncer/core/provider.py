"""The Provider base class: capabilities as data, the work as async methods.

The router reads only the class attributes declared here, so adding a provider never edits the router.
A provider instance is built per client with a :class:`ProviderContext` (its settings, key, transport and
storage), which is why two clients with different configs can share a process.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from .errors import (
    CancelNotSupportedError,
    ConfigError,
    JobFailedError,
    LipsyncError,
    ProviderError,
    StorageError,
    UnsupportedOptionError,
    WebhookVerificationError,
)
from .redact import Redactor
from .schema import Job, JobStatus, LipsyncRequest, MediaKind, MediaSource, Option, VideoFile

__all__ = [
    "ModelSpec",
    "Provider",
    "ProviderContext",
    "ProviderOptions",
    "ProviderOutput",
    "Storage",
    "StorageContext",
    "Submission",
    "WebhookEvent",
    "check_provider_options",
    "parse_options",
]


@dataclass(frozen=True)
class ModelSpec:
    """One model as served by one provider: what it honours, what it costs, how long it takes."""

    id: str
    endpoint: str
    options: frozenset[Option]
    price_per_second: Decimal
    wire_name: str | None = None
    seconds_per_output_second: float = 4.0
    """Upper bound of processing time per output second, used to tune polling and deadlines."""
    max_video_seconds: float | None = None
    max_audio_seconds: float | None = None
    option_notes: tuple[tuple[Option, str], ...] = ()
    """How an honoured option is honoured, where routes differ (shown in the capability matrix), e.g.
    ``((Option.SPEAKER_BOXES, "integers, no null frames"),)``."""

    def honours(self, option: Option) -> bool:
        return option in self.options

    def note(self, option: Option) -> str | None:
        return next((text for opt, text in self.option_notes if opt is option), None)


class ProviderOptions(BaseModel):
    """Base of a provider's typed settings, read from ``[providers.<id>.options]``.

    A provider declares its own subclass as ``Provider.options_model``; unknown keys are errors
    (``extra="forbid"``), so a typo in the config fails loudly instead of being ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_options(provider_id: str, model: type[ProviderOptions], raw: Mapping[str, Any]) -> ProviderOptions:
    """``raw`` validated against ``model``; ConfigError naming the provider and the offending key."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        known = ", ".join(sorted(model.model_fields)) or "none"
        problems = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "options"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key!r}: {err['msg']}")
        raise ConfigError(
            f"providers.{provider_id}.options: {'; '.join(problems)}",
            fix=f"{provider_id} takes these options: {known}",
        ) from None


def check_provider_options(configured: Mapping[str, Any], providers: Mapping[str, type[Provider]]) -> None:
    """Validate every ``[providers.<id>.options]`` of ``configured`` (``Settings.providers``) against the
    installed provider's ``options_model``, so a typo fails when the client is built, not at first use."""
    for provider_id, conf in sorted(configured.items()):
        cls = providers.get(provider_id)
        raw = getattr(conf, "options", None) or {}
        if cls is not None:
            parse_options(provider_id, cls.options_model, raw)


@dataclass(frozen=True)
class ProviderContext:
    """What a client hands a provider instance. Secrets stay in ``api_key`` (a SecretStr: never printed)."""

    settings: Any
    """The provider's :class:`~lipsyncer.core.config.ProviderSettings`."""
    api_key: SecretStr | None = None
    transport: httpx.AsyncBaseTransport | None = None
    """Set when the provider must not use the default network path (sandbox, gateway, tests)."""
    storage: Storage | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    """Client-wide settings a provider may read (e.g. ``webhook_jwks_url``); its own are ``settings.options``."""
    webhook_secret: SecretStr | None = None
    """The shared secret that signs this provider's webhooks, for providers that declare
    ``webhook_secret_env``; None: read that variable from the process environment."""
    redactor: Redactor = field(default_factory=Redactor, repr=False, compare=False)
    """The client's redactor: errors the provider raises (and their causes) go through it. It learns
    ``api_key`` here, so a provider built without a client's redactor still hides its own key."""

    def __post_init__(self) -> None:
        if self.api_key is not None:
            self.redactor.add(self.api_key.get_secret_value())
        if self.webhook_secret is not None:
            self.redactor.add(self.webhook_secret.get_secret_value())

    @property
    def base_url(self) -> str | None:
        return getattr(self.settings, "base_url", None)

    def key(self) -> str:
        if self.api_key is None:
            raise RuntimeError("provider built without credentials")  # the router excludes such routes
        return self.api_key.get_secret_value()


@dataclass(frozen=True)
class Submission:
    """What the provider returns once it has accepted a job."""

    remote_id: str
    endpoint: str
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None
    provider_data: Mapping[str, Any] = field(default_factory=dict)
    initial_status: JobStatus | None = None


@dataclass(frozen=True)
class ProviderOutput:
    video: VideoFile
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook: which job it concerns and what state it reports."""

    remote_id: str
    status: JobStatus
    output: ProviderOutput | None = None
    delivery_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """Base class of every provider plugin. Subclasses declare the class attributes and implement the I/O."""

    id: ClassVar[str]
    description: ClassVar[str] = ""
    models: ClassVar[tuple[ModelSpec, ...]]
    credential_env: ClassVar[str | None] = None
    """Default env var holding the API key (config's ``api_key_env`` overrides it); None: no key needed."""
    webhook_secret_env: ClassVar[str | None] = None
    """Default env var holding the webhook signing secret (config's ``webhook_secret_env`` overrides it)."""
    options_model: ClassVar[type[ProviderOptions]] = ProviderOptions
    """The pydantic model of ``[providers.<id>.options]``; the base takes no options at all."""
    can_cancel: ClassVar[bool] = False
    idempotent_submits: ClassVar[bool] = False
    """True when the API honours an idempotency key on submit (sync.so's ``Idempotency-Key``): a submit whose
    answer was lost may then be re-sent with the same key, and the provider replays the job it already took.
    False (every other API): such a submit is never re-sent."""
    accepts_webhooks: ClassVar[bool] = False
    webhook_schemes: ClassVar[frozenset[str]] = frozenset({"https", "http"})
    uploads_local_files: ClassVar[bool] = False
    """True when the provider hosts local files itself; otherwise a configured storage must."""
    upload_domain: ClassVar[str | None] = None
    """Providers with the same upload domain can fetch each other's uploads (all fal plugins upload to fal's
    CDN), so a fallback between them stages each local file once. None: this provider's own."""
    accepts_data_uris: ClassVar[bool] = True
    """False when only http(s) URLs reach the API: data URIs then need hosting like local files."""
    hosts: ClassVar[tuple[str, ...]] = ()
    """The real hosts this provider talks to; a configured ``base_url`` rebases exactly these."""
    docs_url: ClassVar[str | None] = None
    default_priority: ClassVar[int] = 100
    """Lower is tried first when the config sets no priority."""

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        raw = getattr(context.settings, "options", None) or {}
        self.options: ProviderOptions = parse_options(self.id, self.options_model, raw)
        """This instance's typed settings (an instance of ``options_model``)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r}>"

    def webhook_secret(self) -> str | None:
        """The webhook signing secret: the context's, else the configured (or default) env var's value."""
        if self.context.webhook_secret is not None:
            return self.context.webhook_secret.get_secret_value()
        var = getattr(self.context.settings, "webhook_secret_env", None) or self.webhook_secret_env
        return os.environ.get(var) or None if var else None

    def result_unavailable(self, job: Job, what: str, status: JobStatus) -> LipsyncError:
        """What ``result()`` raises when a look-up of ``what`` (``"task t-1"``) found no output to return.

        A job that ended without one is a :class:`JobFailedError` with the provider's code and reason; one
        still running is a retryable ``not_finished`` :class:`ProviderError`, so a caller asks again later.
        """
        if status.state.finished:
            reason = status.error_message or "no reason given"
            return JobFailedError(
                f"{what} {status.raw_status}: {status.error_code}: {reason}",
                job=job,
                code=status.error_code,
                reason=reason,
                retryable=bool(status.retryable),
            )
        return ProviderError(
            f"{what} is {status.raw_status}, not completed",
            provider=self.id,
            code="not_finished",
            retryable=True,
            accepted=True,
        )

    # ------------------------------------------------------------------ data the router reads

    @classmethod
    def model_spec(cls, model: str) -> ModelSpec | None:
        return next((m for m in cls.models if m.id == model), None)

    @classmethod
    def validate_ids(cls) -> None:
        """Catch plugin mistakes at registration, not at the first paid call."""
        if not getattr(cls, "id", None):
            raise TypeError(f"{cls.__name__} declares no id")
        if not getattr(cls, "models", None):
            raise TypeError(f"{cls.__name__} declares no models")
        ids = [m.id for m in cls.models]
        if len(ids) != len(set(ids)):
            raise TypeError(f"{cls.__name__} declares a model twice")
        if Option.WEBHOOK in {o for m in cls.models for o in m.options} and not cls.accepts_webhooks:
            raise TypeError(f"{cls.__name__} honours webhooks on a model but accepts_webhooks is False")
        if not (isinstance(cls.options_model, type) and issubclass(cls.options_model, ProviderOptions)):
            raise TypeError(f"{cls.__name__}.options_model must subclass ProviderOptions")
        if cls.options_model.model_config.get("extra") != "forbid":
            raise TypeError(f"{cls.__name__}.options_model must forbid unknown keys (extra='forbid')")

    # ------------------------------------------------------------------ the work

    async def stage(self, media: MediaSource) -> str:
        """A URL (or data URI) the provider can fetch for ``media``: uploaded or stored when it cannot."""
        if media.kind is MediaKind.URL or (media.kind is MediaKind.DATA_URI and self.accepts_data_uris):
            return str(media.value)
        if media.kind is MediaKind.DATA_URI:
            media = media.decoded()  # storages pass data URIs through; this provider cannot fetch them
        if self.uploads_local_files:
            return await self.upload(media)
        if self.context.storage is not None:
            return await self.context.storage.put(media)
        raise StorageError(
            f"{self.id} cannot fetch {media.describe()} itself and no storage is configured",
            fix="pass a public URL, or set `storage` in the config (e.g. 'fal-cdn')",
        )

    async def upload(self, media: MediaSource) -> str:
        raise StorageError(f"{self.id} does not upload local files")

    def check(self, request: LipsyncRequest, model: ModelSpec) -> None:
        """Refuse, before any network call, an option this route cannot honour. Providers may add checks."""
        for option in sorted(request.options(), key=lambda o: o.value):
            if not model.honours(option):
                raise UnsupportedOptionError(
                    f"{self.id}:{model.id} does not honour {option.value}",
                    option=option.value,
                    provider=self.id,
                    fix="remove the option or pick a model/provider that honours it (see `lipsyncer providers`)",
                )
        if request.webhook_url is not None:
            scheme = request.webhook_url.split(":", 1)[0].lower()
            if scheme not in self.webhook_schemes:
                raise UnsupportedOptionError(
                    f"{self.id} only delivers webhooks to {'/'.join(sorted(self.webhook_schemes))} URLs",
                    option=Option.WEBHOOK.value,
                    provider=self.id,
                    fix="use an https webhook_url",
                )

    @abc.abstractmethod
    async def submit(
        self,
        request: LipsyncRequest,
        model: ModelSpec,
        *,
        video_url: str,
        audio_url: str,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submission:
        """Send the job. Raise ProviderError(accepted=False) only when the provider certainly refused it,
        and SubmitOutcomeUnknownError when the request left but no answer came back.

        ``webhook_url`` is the URL to give the provider (the request's own, tagged with
        ``lipsyncer_job=<job id>`` so a delivery resolves a job whose answer was lost): send it, not
        ``request.webhook_url``. ``idempotency_key`` is the job's key, the same on every re-send of the job;
        a provider with ``idempotent_submits`` passes it to its API, the others ignore it."""

    @abc.abstractmethod
    async def status(self, job: Job) -> JobStatus:
        """Look the job up once, with its progress. Transient errors raise ProviderError(retryable=True)."""

    async def brief_status(self, job: Job) -> JobStatus:
        """A look-up for a waiter nobody watches (a batch, a ``wait`` without ``on_status``): the state,
        queue position and errors :meth:`status` gives, where the progress detail may be left out when it
        costs the provider more to send and us to read (fal's growing logs). Default: :meth:`status`."""
        return await self.status(job)

    @abc.abstractmethod
    async def result(self, job: Job) -> ProviderOutput:
        """The output of a completed job; JobFailedError with the provider's reason otherwise."""

    async def cancel(self, job: Job) -> None:
        raise CancelNotSupportedError(self.id)

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify and decode a webhook delivery; raise WebhookVerificationError when it must not be trusted."""
        raise WebhookVerificationError(f"{self.id} does not take webhooks")

    async def aclose(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class StorageContext:
    settings: Mapping[str, Any]
    api_key: SecretStr | None = None
    transport: httpx.AsyncBaseTransport | None = None
    redactor: Redactor = field(default_factory=Redactor, repr=False, compare=False)
    """As :attr:`ProviderContext.redactor`."""

    def __post_init__(self) -> None:
        if self.api_key is not None:
            self.redactor.add(self.api_key.get_secret_value())


class Storage(abc.ABC):
    """Makes a local file reachable by URL for providers that cannot take uploads (e.g. the unified API)."""

    id: ClassVar[str]
    credential_env: ClassVar[str | None] = None
    hosts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: StorageContext) -> None:
        self.context = context

    @abc.abstractmethod
    async def put(self, media: MediaSource) -> str:
        """Store the file and return a URL that a provider can fetch."""

    async def aclose(self) -> None:
        """Release connections."""
