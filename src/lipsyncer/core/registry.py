"""What a client builds and owns: credentials, transports, provider and storage instances, HTTP clients.

Ownership follows httpx: whatever the registry builds it closes in :meth:`Registry.aclose`; what it is handed
(a transport, a store) it only borrows. After ``aclose`` every accessor raises :class:`ClientClosedError`, so a
closed client cannot quietly open new connections.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from .config import Settings, load_settings
from .errors import ClientClosedError, ConfigError
from .http import BorrowedTransport, RebaseTransport, pool_limits
from .limits import LimitBackend, Limits
from .plugins import PluginHost
from .provider import Provider, ProviderContext, Storage, StorageContext, check_provider_options
from .redact import Redactor
from .router import Router

__all__ = ["CUSTOM_TRANSPORT", "Registry"]

CUSTOM_TRANSPORT = "transport"
"""A job's ``target`` when its requests went through a transport handed to the client (sandbox, tests)."""


class Registry:
    """Settings, plugins and the instances built from them, for one client."""

    def __init__(
        self,
        settings: Settings | None,
        *,
        config: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
        transport: httpx.AsyncBaseTransport | None,
        plugins: Iterable[object],
        entry_points: bool,
    ) -> None:
        self.env: Mapping[str, str] = dict(os.environ) if env is None else dict(env)
        self.settings = (
            settings
            if settings is not None
            else load_settings(None if config is None else Path(config), env=self.env)
        )
        self.plugins = PluginHost(
            allow=self.settings.plugins.allow,
            block=self.settings.plugins.block,
            strict=self.settings.plugins.strict,
            entry_points=entry_points,
            plugins=plugins,
        )
        self.transport = transport
        self._tls: ssl.SSLContext | None = None
        self._providers: dict[str, Provider] = {}
        self._storage: Storage | None = None
        self._http: dict[str, httpx.AsyncClient] = {}
        self.closed = False
        self._check_config()
        self.redactor = Redactor(self.secrets())
        """Every key this client could send: provider errors, their causes and its log records go through it."""
        self.redactor.attach()
        self.limits = Limits(self.settings, self._limit_backend())
        self._requests: dict[str, anyio.CapacityLimiter] = {}

    def _limit_backend(self) -> LimitBackend | None:
        url = self.settings.limits.backend
        if url is None:
            return None
        backend: LimitBackend | None = self.plugins.limit_backend(url)
        if backend is None:
            scheme = url.split(":", 1)[0]
            raise ConfigError(
                f"no installed plugin serves the limits backend {scheme}://...",
                fix="install the plugin for it (redis: `pip install 'lipsyncer[celery]'`), or remove [limits] backend",
            )
        return backend

    def requests(self, provider_id: str) -> anyio.CapacityLimiter:
        """The provider's HTTP request slots (``max_requests``): look-ups and fetches of thousands of jobs
        queue here instead of on the connection pool, whose cost grows with its queue."""
        if provider_id not in self._requests:
            self._requests[provider_id] = anyio.CapacityLimiter(
                self.settings.provider(provider_id).max_requests
            )
        return self._requests[provider_id]

    def _check_config(self) -> None:
        """Config naming something not installed is an error: a typo'd section would silently lose its
        override (a base_url meant for the sandbox, a price). ``strict_config = false`` relaxes it for
        plugins that are optional."""
        settings = self.settings
        check_provider_options(settings.providers, self.plugins.providers)  # a typo'd option is an error
        if settings.storage is not None and settings.storage not in self.plugins.storages:
            raise ConfigError(
                f"storage {settings.storage!r} is not installed",
                fix=f"use one of: {', '.join(sorted(self.plugins.storages)) or 'none installed'}",
            )
        if not settings.strict_config:
            return
        installed = sorted(self.plugins.providers)
        named = [("providers", p) for p in settings.providers] + [("only", p) for p in settings.only or ()]
        for where, provider_id in named:
            if provider_id not in self.plugins.providers:
                raise ConfigError(
                    f"config {where} names provider {provider_id!r}, which is not installed "
                    f"(installed: {', '.join(installed) or 'none'})",
                    fix="fix the name, install the plugin, or set `strict_config = false` if it is optional",
                )
        unknown_storages = sorted(set(settings.storages) - set(self.plugins.storages))
        if unknown_storages:
            raise ConfigError(
                f"config storages names {', '.join(map(repr, unknown_storages))}, not installed "
                f"(installed: {', '.join(sorted(self.plugins.storages)) or 'none'})",
                fix="fix the name, install the plugin, or set `strict_config = false` if it is optional",
            )

    def _open(self) -> None:
        if self.closed:
            raise ClientClosedError()

    # ------------------------------------------------------------------ credentials

    def credential_env(self, cls: type[Provider] | type[Storage]) -> str | None:
        """The env var that holds this provider's key (config may rename it); None when it needs none."""
        conf = self.settings.provider(cls.id) if issubclass(cls, Provider) else None
        return (conf.api_key_env if conf and conf.api_key_env else None) or cls.credential_env

    def key(self, cls: type[Provider] | type[Storage]) -> SecretStr | None:
        var = self.credential_env(cls)
        value = self.env.get(var) if var else None
        return SecretStr(value) if value else None

    def secrets(self) -> list[str]:
        """Every key this client could send: what the redactor must never let through."""
        classes: list[type[Provider] | type[Storage]] = [
            *self.plugins.providers.values(),
            *self.plugins.storages.values(),
        ]
        found = {k.get_secret_value() for cls in classes if (k := self.key(cls)) is not None}
        return sorted(found)

    def missing_credentials(self, cls: type[Provider]) -> str | None:
        var = self.credential_env(cls)
        return var if var and not self.env.get(var) else None

    # ------------------------------------------------------------------ where requests go

    def target(self, provider_id: str) -> str | None:
        """Where this client sends a provider's requests: its base_url, the custom transport, or None for
        the provider's real hosts. Stored on each job, so a resume never sends them elsewhere."""
        base = self.settings.provider(provider_id).base_url
        if base is not None:
            return base
        return CUSTOM_TRANSPORT if self.transport is not None else None

    def _tls_context(self) -> ssl.SSLContext:
        """One TLS context for every pool of this client, made when the first https connection opens."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def transport_for(
        self, hosts: tuple[str, ...], base_url: str | None, *, connections: int = 20
    ) -> httpx.AsyncBaseTransport | None:
        """What a provider, storage or download client sends through; theirs to close.

        The client's own ``transport`` is lent (closing a provider never closes it). A ``base_url`` gets its own
        connection pool keeping ``connections`` open, and every pool of this client shares one TLS context:
        loading the CA certificates costs ~40 ms of CPU each time.
        """
        if base_url is None:
            return None if self.transport is None else BorrowedTransport(self.transport)
        if self.transport is not None:
            inner: httpx.AsyncBaseTransport = BorrowedTransport(self.transport)
        else:
            from .pool import PooledTransport  # httpcore: imported when a client is built, not with lipsyncer

            inner = PooledTransport(verify=self._tls_context, limits=pool_limits(connections))
        return RebaseTransport(base_url, hosts=hosts, transport=inner)

    # ------------------------------------------------------------------ instances

    def provider(self, provider_id: str) -> Provider:
        """The client's instance of a provider (built on first use with this client's config and key)."""
        self._open()
        if provider_id not in self._providers:
            try:
                cls = self.plugins.providers[provider_id]
            except KeyError:
                raise ConfigError(
                    f"provider {provider_id!r} is not installed",
                    fix=f"installed: {', '.join(sorted(self.plugins.providers)) or 'none'}",
                ) from None
            conf = self.settings.provider(provider_id)
            self._providers[provider_id] = cls(
                ProviderContext(
                    settings=conf,
                    api_key=self.key(cls),
                    transport=self.transport_for(cls.hosts, conf.base_url, connections=conf.max_requests),
                    storage=self.storage(),
                    options=self._options(conf.options),
                    redactor=self.redactor,
                    webhook_secret=self._webhook_secret(cls),
                )
            )
        return self._providers[provider_id]

    def _webhook_secret(self, cls: type[Provider]) -> SecretStr | None:
        """The provider's webhook signing secret, from this client's env (config may rename the variable)."""
        var = self.settings.provider(cls.id).webhook_secret_env or cls.webhook_secret_env
        value = self.env.get(var) if var else None
        return SecretStr(value) if value else None

    def _options(self, own: Mapping[str, Any]) -> dict[str, Any]:
        """Provider options, with the client-wide settings a provider may read (its own win)."""
        shared = (
            {"webhook_jwks_url": self.settings.webhook_jwks_url} if self.settings.webhook_jwks_url else {}
        )
        return {**shared, **own}

    def storage(self) -> Storage | None:
        name = self.settings.storage
        if name is None:
            return None
        self._open()
        if self._storage is None:
            cls = self.plugins.storages[name]
            conf = dict(self.settings.storages.get(name, {}))
            self._storage = cls(
                StorageContext(
                    settings=conf,
                    api_key=self.key(cls),
                    transport=self.transport_for(cls.hosts, conf.get("base_url")),
                    redactor=self.redactor,
                )
            )
        return self._storage

    def http_for(self, provider_id: str) -> httpx.AsyncClient:
        """Downloads go through the serving provider's transport, so rebased hosts stay rebased."""
        self._open()
        if provider_id not in self._http:
            cls = self.plugins.providers.get(provider_id)
            conf = self.settings.provider(provider_id)
            transport = self.transport_for(cls.hosts if cls else (), conf.base_url)
            self._http[provider_id] = httpx.AsyncClient(
                transport=transport, timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True
            )
        return self._http[provider_id]

    @property
    def router(self) -> Router:
        return Router(
            self.plugins.providers,
            self.settings,
            has_credentials=self.missing_credentials,
            storage=self.settings.storage,
        )

    async def aclose(self) -> None:
        """Close what this registry built; borrowed transports stay open. Idempotent."""
        self.closed = True
        providers, self._providers = list(self._providers.values()), {}
        clients, self._http = list(self._http.values()), {}
        storage, self._storage = self._storage, None
        for provider in providers:
            await provider.aclose()
        if storage is not None:
            await storage.aclose()
        for client in clients:
            await client.aclose()
        await self.limits.aclose()
        self.redactor.detach()
