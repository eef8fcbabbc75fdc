"""Plugins are found through entry points, one broken plugin never takes the others down."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from lipsyncer import Lipsyncer, LipsyncRequest, MemoryJobStore, PluginError, load_settings
from lipsyncer.core.plugins import PluginHost

PROVIDER_SOURCE = """
from decimal import Decimal
from lipsyncer import ModelSpec, Option, Provider, hookimpl

class {cls}(Provider):
    id = "{pid}"
    models = (ModelSpec(id="{model}", endpoint="/x", options=frozenset({{Option.SYNC_MODE}}),
                        price_per_second=Decimal("{price}")),)
    credential_env = None

    async def submit(self, request, model, *, video_url, audio_url):
        raise NotImplementedError

    async def status(self, job):
        raise NotImplementedError

    async def result(self, job):
        raise NotImplementedError

@hookimpl
def register_providers(register):
    register({cls})
"""


def provider_source(pid: str, model: str = "lipsync-2", price: str = "0.01") -> str:
    cls = "P" + pid.replace("-", "_").title().replace("_", "")
    return PROVIDER_SOURCE.format(cls=cls, pid=pid, model=model, price=price)


def test_third_party_distribution_is_discovered_and_routed_to(install_dist: Callable[..., Path]) -> None:
    install_dist("lipsyncer-cheapo", "lipsyncer_cheapo", provider_source("cheapo", "house-model", "0.001"))
    host = PluginHost()
    assert "cheapo" in host.providers
    report = host.plugin_for("cheapo")
    assert report is not None and report.source == "lipsyncer-cheapo 1.0"
    with Lipsyncer(load_settings(env={}, cwd="/"), env={}, store=MemoryJobStore()) as client:
        plan = client.route(
            LipsyncRequest(
                video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="house-model"
            )
        )
    assert [r.id for r in plan.candidates] == ["cheapo:house-model"]


def test_a_plugin_installed_or_removed_while_the_process_runs_is_seen_by_the_next_client(
    install_dist: Callable[..., Path],
) -> None:
    """Entry points are read once per installed set of packages; installing or removing one is noticed."""
    site = install_dist("lipsyncer-first", "lipsyncer_first", provider_source("first"))
    assert "first" in PluginHost().providers and "second" not in PluginHost().providers
    install_dist(
        "lipsyncer-second", "lipsyncer_second", provider_source("second")
    )  # same folder, moments later
    assert {"first", "second"} <= set(PluginHost().providers)
    shutil.rmtree(site / "lipsyncer_second-1.0.dist-info")  # what `pip uninstall` removes
    assert "second" not in PluginHost().providers


def test_plugin_raising_at_import_is_skipped_with_a_warning(install_dist: Callable[..., Path]) -> None:
    install_dist("lipsyncer-broken", "lipsyncer_broken", "raise RuntimeError('boom at import')\n")
    install_dist("lipsyncer-fine", "lipsyncer_fine", provider_source("fine"))
    with pytest.warns(RuntimeWarning, match=r"lipsyncer-broken.*boom at import"):
        host = PluginHost()
    assert "fine" in host.providers
    assert host.reports["lipsyncer-broken"].ok is False
    assert "boom at import" in (host.reports["lipsyncer-broken"].error or "")


def test_strict_mode_raises_on_a_broken_plugin(install_dist: Callable[..., Path]) -> None:
    install_dist("lipsyncer-broken", "lipsyncer_broken", "import does_not_exist_anywhere\n")
    with pytest.raises(PluginError, match="lipsyncer-broken") as info:
        PluginHost(strict=True)
    assert info.value.plugin == "lipsyncer-broken"


def test_plugin_whose_register_hook_raises_is_skipped(install_dist: Callable[..., Path]) -> None:
    source = (
        "from lipsyncer import hookimpl\n@hookimpl\ndef register_providers(register):\n    register(object)\n"
    )
    install_dist("lipsyncer-wrong", "lipsyncer_wrong", source)
    with pytest.warns(RuntimeWarning, match="Provider subclass"):
        host = PluginHost()
    assert host.reports["lipsyncer-wrong"].ok is False
    with pytest.raises(PluginError):
        PluginHost(strict=True)


def test_duplicate_provider_id_is_refused_for_the_second_plugin(install_dist: Callable[..., Path]) -> None:
    install_dist("lipsyncer-a", "lipsyncer_a", provider_source("same", "m-a"))
    install_dist("lipsyncer-b", "lipsyncer_b", provider_source("same", "m-b"))
    with pytest.warns(RuntimeWarning, match="already registered"):
        host = PluginHost()
    assert host.providers["same"].models[0].id == "m-a"  # entry points load in name order


def test_block_and_allow_lists(install_dist: Callable[..., Path]) -> None:
    install_dist("lipsyncer-broken", "lipsyncer_broken", "raise RuntimeError('never imported')\n")
    install_dist("lipsyncer-fine", "lipsyncer_fine", provider_source("fine"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host = PluginHost(block=["lipsyncer-broken"])
    assert "lipsyncer-broken" not in host.reports and "fine" in host.providers
    only = PluginHost(allow=["lipsyncer-fine"])
    assert set(only.providers) == {"fine"}


def test_misspelt_hook_fails_check_pending() -> None:
    class Plugin:
        @staticmethod
        def register_provider(register: object) -> None:  # missing "s": would be silently ignored
            pass

    from lipsyncer import hookimpl

    Plugin.register_provider = hookimpl(Plugin.register_provider)  # type: ignore[method-assign]
    host = PluginHost(entry_points=False, plugins=[Plugin()])
    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError):
        host.check_pending()


def test_built_in_hookimpls_all_match_the_spec() -> None:
    PluginHost().check_pending()


def test_observer_errors_never_fail_the_caller() -> None:
    from lipsyncer import JobEvent, hookimpl

    seen: list[str] = []

    class Observer:
        @hookimpl
        def job_event(self, event: JobEvent) -> None:
            seen.append(event.kind)
            raise RuntimeError("observer bug")

    host = PluginHost(entry_points=False, plugins=[Observer()])
    host.emit(JobEvent(kind="submitted", job_id="j", provider="p", model="m"))
    assert seen == ["submitted"]
