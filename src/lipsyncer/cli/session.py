"""Building the client a command runs with: its settings, job store and, with ``--sandbox``, its transport.

Every command gets its own client (and sandbox) for its own run, closed on exit: nothing lives in the module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..core.errors import AuthenticationError

if TYPE_CHECKING:
    from ..contrib.sandbox import Sandbox
    from ..core.client import AsyncLipsyncer
    from ..core.config import Settings
    from ..core.jobs import JobStore

__all__ = [
    "SANDBOX_POLLING",
    "ClientOptions",
    "Session",
    "open_session",
    "sandbox_env",
    "start_sandbox",
    "store_setting",
]

SANDBOX_POLLING: Mapping[str, float] = MappingProxyType(
    {"initial_interval": 0.25, "max_interval": 1.0, "multiplier": 1.5}
)
"""``--sandbox`` polling unless the config sets its own: real providers take minutes, the sandbox a second."""

_SANDBOX_ENV_PASSTHROUGH = ("HOME", "XDG_DATA_HOME", "TMPDIR", "PATH")
"""The only variables besides ``LIPSYNCER_*`` a sandboxed client sees: no real key can reach a provider."""


@dataclass(frozen=True)
class ClientOptions:
    """The flags that decide how the client is built."""

    config: Path | None = None
    store: str | Path | None = None
    """A SQLite path or a database URL (``postgresql://...``)."""
    sandbox: bool = False
    ephemeral: bool = False
    """Keep jobs in memory: commands that never submit (route, estimate, providers) leave no store behind."""
    read_config: bool = True
    """False: defaults unless ``config`` is given (the demo must not depend on the user's config files)."""
    sandbox_settings: Mapping[str, Any] | None = None
    """Extra :class:`SandboxConfig` fields for the in-process sandbox."""
    overrides: Mapping[str, Any] | None = None
    """Settings applied on top of the loaded ones (e.g. the demo's fast polling)."""


def store_setting(store: str | Path) -> str:
    """``--store`` as a ``job_store`` setting: a URL as given, a path made absolute."""
    text = str(store)
    return text if "://" in text else str(Path(text).expanduser().resolve())


@dataclass(frozen=True)
class Session:
    client: AsyncLipsyncer
    sandbox: Sandbox | None
    store_note: str | None = None
    """Said when the store is temporary (sandbox), so nobody expects ``jobs resume`` to find the job later."""


@contextmanager
def start_sandbox(settings: Mapping[str, Any] | None = None) -> Iterator[Sandbox]:
    """An in-process sandbox, closed on exit. Imported lazily: it needs the ``sandbox`` extra."""
    try:
        from ..contrib.sandbox import Sandbox, SandboxConfig
    except ImportError as exc:  # pragma: no cover - the dev environment has the extra
        from ..core.errors import ConfigError

        raise ConfigError(
            f"the sandbox is not available: {exc}", fix="pip install 'lipsyncer[sandbox]'"
        ) from None
    with Sandbox(SandboxConfig(**dict(settings or {}))) as sandbox:
        yield sandbox


def sandbox_env(sandbox: Sandbox, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a sandboxed client reads keys from: the sandbox's keys and no real ones."""
    env = {k: v for k, v in environ.items() if k.startswith("LIPSYNCER_") or k in _SANDBOX_ENV_PASSTHROUGH}
    # The sandbox's keys under the built-in providers' default variables (config renames are dropped in
    # sandbox mode, see ``_detached``). A provider needing any other key is excluded as "no credentials".
    env.update(
        {
            "FAL_KEY": sandbox.config.fal_key,
            "EVOLINK_API_KEY": sandbox.config.unified_key,
            "SYNC_API_KEY": sandbox.config.syncso_key,
            "SYNC_WEBHOOK_SECRET": sandbox.config.syncso_webhook_secret,
        }
    )
    return env


def _detached(settings: Settings) -> Settings:
    """Settings whose providers and storages no longer point at real hosts or renamed key variables."""
    providers = {pid: {"base_url": None, "api_key_env": None} for pid in settings.providers}
    storages = {name: {"base_url": None} for name, conf in settings.storages.items() if "base_url" in conf}
    return settings.with_overrides(providers=providers, storages=storages)


class open_session:
    """``async with open_session(options) as session``: the client (and sandbox) for one command."""

    def __init__(self, options: ClientOptions) -> None:
        self._options = options
        self._stack = AsyncExitStack()
        self._client: AsyncLipsyncer | None = None

    async def __aenter__(self) -> Session:
        try:
            return await self._open()
        except BaseException:
            await self._stack.aclose()
            raise

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if isinstance(exc, AuthenticationError) and self._client is not None:
                _name_the_key(exc, self._client)
        finally:
            await self._stack.aclose()

    async def _open(self) -> Session:
        # Imported here: parsing a command line (and refusing a bad one) needs neither the client nor its job
        # store's SQLAlchemy (~1 s of CPU at start-up).
        from ..core.client import AsyncLipsyncer
        from ..core.config import Settings, load_settings
        from ..core.jobs import MemoryJobStore

        opts = self._options
        environ = dict(os.environ)
        wanted = opts.read_config or opts.config is not None
        settings = load_settings(opts.config, env=environ) if wanted else Settings()
        if opts.overrides:
            settings = settings.with_overrides(**opts.overrides)
        env: Mapping[str, str] = environ
        sandbox: Sandbox | None = None
        note: str | None = None
        if opts.sandbox:
            sandbox = self._stack.enter_context(start_sandbox(opts.sandbox_settings))
            env = sandbox_env(sandbox, environ)
            # The sandbox's own storage and provider options: unified takes local files through fal-cdn.
            settings = _detached(settings).with_overrides(**sandbox.client_config())
            if settings.polling is None:  # the sandbox answers in about a second: poll it accordingly
                settings = settings.with_overrides(polling=dict(SANDBOX_POLLING))
        store: JobStore | None = None
        if opts.store is not None:
            settings = settings.with_overrides(job_store=store_setting(opts.store))
        elif opts.ephemeral:
            store = MemoryJobStore()
        elif opts.sandbox:
            tmp = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="lipsyncer-sandbox-"))
            settings = settings.with_overrides(job_store=str(Path(tmp) / "jobs.sqlite"))
            note = "sandbox jobs are kept in a temporary store (pass --store to keep them)"
        transport = sandbox.transport() if sandbox is not None else None
        client = AsyncLipsyncer(settings, env=env, transport=transport, store=store)
        await self._stack.enter_async_context(client)
        self._client = client
        return Session(client=client, sandbox=sandbox, store_note=note)


def _name_the_key(exc: AuthenticationError, client: AsyncLipsyncer) -> None:
    """A refused key's fix names the variable it came from (the provider only knows "the API key")."""
    cls = client.plugins.providers.get(exc.provider)
    env_var = client.credential_env(cls) if cls is not None else None
    if env_var is None:
        return
    said = f"; {exc.fix}" if exc.fix else ""
    exc.fix = f"{env_var} holds a key {exc.provider} refused: set it to a valid key{said}"
