"""The provider as a plugin: registered through the entry point, capabilities declared as data."""

from __future__ import annotations

from importlib.metadata import entry_points

from lipsyncer.contrib.sandbox.unified_api import UNIFIED_MODELS
from lipsyncer.core.provider import Provider
from lipsyncer.providers import unified
from lipsyncer.providers.unified import UnifiedProvider


def test_registered_through_the_entry_point() -> None:
    [entry] = [e for e in entry_points(group="lipsyncer") if e.name == "unified"]
    module = entry.load()
    registered: list[type[Provider]] = []

    module.register_providers(registered.append)

    assert module is unified and registered == [UnifiedProvider]


def test_declared_models_are_the_ones_the_api_takes() -> None:
    """Declared data against the task API's model list (as the sandbox emulates it from the reference); prices,
    options, credentials and the endpoint are pinned by the capability-matrix docs test."""
    UnifiedProvider.validate_ids()
    assert [m.id for m in UnifiedProvider.models] == list(UNIFIED_MODELS)
    assert all(m.wire_name in (None, m.id) for m in UnifiedProvider.models)
