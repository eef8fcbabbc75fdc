"""The unified task API (api.evolink.ai and its white-label copies): lipsync-2, lipsync-2-pro, sync-3.

One create call (``POST /v1/videos/generations``) returns a ``task-unified-...`` id, polled with
``GET /v1/tasks/{id}``. There is no cancel and no upload endpoint, callbacks are unsigned (only a hint to
re-query the task), and result links live 24 hours. See ``docs/providers/unified.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from lipsyncer import Provider, hookimpl

from ._provider import UnifiedProvider, UnifiedSettings
from ._wire import MEDIA_FIELDS

__all__ = ["MEDIA_FIELDS", "UnifiedProvider", "UnifiedSettings", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register the unified task API provider."""
    register(UnifiedProvider)
