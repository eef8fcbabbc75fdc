"""The ``LipsyncProvider`` hook specification: the whole contract a plugin author reads.

Hooks are synchronous and about registration and observation; the work itself is async methods on the
provider objects a plugin registers. A plugin is handed a ``register`` callable so the host, not the plugin,
decides what a duplicate or a blocked name means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .limits import LimitBackend
    from .provider import Provider, Storage
    from .schema import JobEvent

PROJECT = "lipsyncer"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["LipsyncProvider", "hookimpl", "hookspec"]


class LipsyncProvider:
    """Hooks a lipsyncer plugin may implement (as module-level functions decorated with ``@hookimpl``)."""

    @hookspec
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        """Register provider classes: call ``register(MyProvider)`` once per class."""

    @hookspec
    def register_storage(self, register: Callable[[type[Storage]], None]) -> None:
        """Register storage backends that host local files for providers that cannot upload them."""

    @hookspec
    def job_event(self, event: JobEvent) -> None:
        """Observe a job's life: submitted, each status change, attempts that failed, completion, download.

        Fires once per stored transition. Called through pluggy on the client's event loop: hand slow work to
        a queue. An exception here is logged and never fails the job (it ends that event's pluggy call).
        """

    @hookspec(firstresult=True)
    def make_limit_backend(self, url: str) -> LimitBackend | None:
        """Build the backend that counts per-provider limits across processes, for `[limits] backend = url`.

        Return a ``LimitBackend`` for the URLs this plugin serves (e.g. ``redis://...``), None for others.
        """
