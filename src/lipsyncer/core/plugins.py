"""The plugin host: one pluggy manager per client, entry points loaded one by one.

Nothing outside this module touches ``pm.hook``; callers get typed functions. A plugin that fails to import
or to register is reported and skipped (strict mode raises), so one broken third-party package cannot take
a media platform's whole pipeline down with it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .provider import Provider, Storage
from .schema import JobEvent

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "PluginReport"]

ENTRY_POINT_GROUP = "lipsyncer"
log = logging.getLogger("lipsyncer.plugins")


class _InstalledEntryPoints:
    """lipsyncer's entry points, read once per installed set of packages.

    Finding them reads every installed distribution's metadata: ~20 ms of CPU per client, paid again by every
    client a process builds. The answer changes only when a package is installed or removed (which adds or
    removes a ``*.dist-info`` directory, changing its folder's mtime) or ``sys.path`` changes; both are in the
    key, so a plugin installed while the process runs is found by the next client.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[tuple[str, tuple[int, int]], ...] | None = None
        self._found: tuple[metadata.EntryPoint, ...] = ()

    def __call__(self) -> tuple[metadata.EntryPoint, ...]:
        key = tuple((entry, _mtime(entry)) for entry in sys.path)
        with self._lock:
            if key != self._key:
                found = metadata.entry_points(group=ENTRY_POINT_GROUP)
                self._found = tuple(sorted(found, key=lambda e: e.name))
                self._key = key
            return self._found


def _mtime(path: str) -> tuple[int, int]:
    """A folder's mtime, and its link count: one more per sub-folder, so a ``*.dist-info`` added within the
    mtime's tick (a few ms on most file systems) still changes the key."""
    try:
        found = os.stat(path or ".")
    except OSError:
        return (-1, -1)
    return (found.st_mtime_ns, found.st_nlink)


_installed = _InstalledEntryPoints()  # a fact about the environment, shared by every client in the process


@dataclass
class PluginReport:
    """What happened to one plugin: where it came from and whether it loaded."""

    name: str
    origin: str | metadata.EntryPoint = "in-process"
    ok: bool = True
    error: str | None = None
    providers: list[str] = field(default_factory=list)
    storages: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """``"<distribution> <version>"`` of an installed plugin, ``"in-process"`` for one passed in.

        Read when asked: parsing every plugin's package metadata cost each new client ~20 ms of CPU.
        """
        if isinstance(self.origin, str):
            return self.origin
        dist = getattr(self.origin, "dist", None)
        return f"{dist.name} {dist.version}" if dist is not None else self.origin.value


class PluginHost:
    """Loads plugins into a private plugin manager and exposes what they register."""

    def __init__(
        self,
        *,
        allow: Iterable[str] | None = None,
        block: Iterable[str] = (),
        strict: bool = False,
        entry_points: bool = True,
        plugins: Iterable[object] = (),
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs.LipsyncProvider)
        self._allow = None if allow is None else set(allow)
        self._block = set(block)
        self._strict = strict
        self.reports: dict[str, PluginReport] = {}
        if entry_points:
            self._load_entry_points()
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            self._register(plugin, name, source="in-process")
        self.providers: dict[str, type[Provider]] = self._collect("register_providers", Provider)
        self.storages: dict[str, type[Storage]] = self._collect("register_storage", Storage)
        if self._strict:
            self.check_pending()

    # ------------------------------------------------------------------ loading

    def _wanted(self, name: str) -> bool:
        if name in self._block:
            return False
        return self._allow is None or name in self._allow

    def _load_entry_points(self) -> None:
        seen: set[str] = set()
        for ep in _installed():
            if ep.name in seen or not self._wanted(ep.name):
                continue
            seen.add(ep.name)
            try:
                module = ep.load()
            except Exception as exc:
                self._fail(ep.name, ep, f"failed to import {ep.value}: {type(exc).__name__}: {exc}", exc)
                continue
            self._register(module, ep.name, source=ep)

    def _register(self, plugin: object, name: str, *, source: str | metadata.EntryPoint) -> None:
        if not self._wanted(name):
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(name, source, f"failed to register: {type(exc).__name__}: {exc}", exc)
            return
        self.reports[name] = PluginReport(name=name, origin=source)

    def _fail(self, name: str, source: str | metadata.EntryPoint, message: str, exc: BaseException) -> None:
        self.reports[name] = PluginReport(name=name, origin=source, ok=False, error=message)
        if self._strict:
            raise PluginError(f"plugin {name!r} {message}", plugin=name) from exc
        warnings.warn(f"lipsyncer plugin {name!r} skipped: {message}", RuntimeWarning, stacklevel=4)
        log.warning("plugin %s skipped: %s", name, message)

    def _collect(self, hook_name: str, base: type) -> dict[str, Any]:
        """Call each implementation on its own, so one plugin's failure skips only that plugin."""
        kind = "provider" if base is Provider else "storage"
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order (pluggy reverses only when calling)
            plugin_name = self.pm.get_name(impl.plugin) or impl.plugin_name
            batch: list[Any] = []
            try:
                impl.function(register=_registrar(base, batch))
                for cls in batch:
                    if cls.id in found and found[cls.id] is not cls:
                        raise TypeError(f"{kind} id {cls.id!r} is already registered by {owners[cls.id]!r}")
            except Exception as exc:
                source = self.reports[plugin_name].origin if plugin_name in self.reports else "in-process"
                self._fail(plugin_name, source, f"{hook_name} raised {type(exc).__name__}: {exc}", exc)
                continue
            report = self.reports.setdefault(plugin_name, PluginReport(name=plugin_name))
            for cls in batch:
                found[cls.id] = cls
                owners[cls.id] = plugin_name
                (report.providers if kind == "provider" else report.storages).append(cls.id)
        return found

    # ------------------------------------------------------------------ typed hook calls

    def observed(self) -> bool:
        """Whether any plugin observes ``job_event``: when none does, events need not be built at all."""
        return bool(self.pm.hook.job_event.get_hookimpls())

    def emit(self, event: JobEvent) -> None:
        """Tell observers through pluggy (so ``tryfirst``, wrappers and impls taking fewer arguments work as
        pluggy documents); an observer's exception is logged, never raised into the job."""
        try:
            self.pm.hook.job_event(event=event)
        except Exception:
            log.exception("a job_event observer failed on %s %s", event.kind, event.job_id)

    def limit_backend(self, url: str) -> Any:
        """The limits backend a plugin builds for ``url`` (None when no installed plugin serves it)."""
        return self.pm.hook.make_limit_backend(url=url)

    def plugin_for(self, provider_id: str) -> PluginReport | None:
        return next((r for r in self.reports.values() if provider_id in r.providers), None)

    def check_pending(self) -> None:
        """Fail when a plugin implements a hook that does not exist (a typo would otherwise be silent)."""
        self.pm.check_pending()


def _registrar(base: type, batch: list[Any]) -> Any:
    """The ``register`` callable handed to plugins: validates early so mistakes surface at load time."""

    def register(cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"register() takes a {base.__name__} subclass, got {cls!r}")
        if issubclass(cls, Provider):
            cls.validate_ids()
        elif not getattr(cls, "id", None):
            raise TypeError(f"{cls.__name__} declares no id")
        batch.append(cls)

    return register


def hook_names() -> list[str]:
    """Names of every hook in the specification (the docs test compares against this)."""
    return sorted(n for n in dir(hookspecs.LipsyncProvider) if not n.startswith("_"))
