"""sync.so direct (``api.sync.so``): lipsync-1.9.0-beta, lipsync-2, lipsync-2-pro, sync-3 and react-1.

Through sync.so's own SDK (``syncsdk``) over lipsyncer's transport. The only API here that honours an
``Idempotency-Key`` (so a submit whose answer was lost may be re-sent), signs its webhooks
(``Sync-Signature``) and serves react-1 (``model_mode`` and ``emotion``). See ``docs/providers/syncso.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from lipsyncer import Provider, hookimpl

from ._provider import SyncsoProvider, SyncsoSettings
from ._webhooks import sign

__all__ = ["SyncsoProvider", "SyncsoSettings", "register_providers", "sign"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register the sync.so direct provider."""
    register(SyncsoProvider)
