"""The provider as a plugin: registered through the entry point, capabilities declared as data."""

from __future__ import annotations

from decimal import Decimal
from importlib.metadata import entry_points

from lipsyncer.core.provider import Provider
from lipsyncer.providers import unified
from lipsyncer.providers.unified import UnifiedProvider


def test_registered_through_the_entry_point() -> None:
    [entry] = [e for e in entry_points(group="lipsyncer") if e.name == "unified"]
    module = entry.load()
    registered: list[type[Provider]] = []

    module.register_providers(registered.append)

    assert module is unified and registered == [UnifiedProvider]


def test_capabilities_are_class_data() -> None:
    UnifiedProvider.validate_ids()
    assert UnifiedProvider.id == "unified"
    assert [m.id for m in UnifiedProvider.models] == ["lipsync-2", "lipsync-2-pro", "sync-3"]
    assert {m.endpoint for m in UnifiedProvider.models} == {"/v1/videos/generations"}
    assert {m.id: m.price_per_second for m in UnifiedProvider.models} == {
        "lipsync-2": Decimal("0.05"),
        "lipsync-2-pro": Decimal("0.083"),
        "sync-3": Decimal("0.133"),
    }
    speeds = [m.seconds_per_output_second for m in UnifiedProvider.models]
    assert speeds == sorted(speeds), "sync-3 is the slowest"
    assert UnifiedProvider.credential_env == "EVOLINK_API_KEY"
    assert UnifiedProvider.can_cancel is False and UnifiedProvider.uploads_local_files is False
    assert UnifiedProvider.accepts_webhooks is True and UnifiedProvider.webhook_schemes == {"https"}
    assert UnifiedProvider.hosts == ("api.evolink.ai",)
