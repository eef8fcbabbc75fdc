from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lipsyncer import AsyncLipsyncer, SQLiteJobStore, load_settings
from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, sample_media

FAST_POLLING = {"initial_interval": 0.02, "max_interval": 0.1, "jitter": 0.1, "call_timeout": 10}


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    return {"strict": True}


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    """Read-only inputs, written once: no test here changes them, and outputs go to each test's tmp_path."""
    return sample_media(tmp_path_factory.mktemp("integration-media"))


@pytest.fixture
def keys(sandbox: Sandbox) -> dict[str, str]:
    return {
        "FAL_KEY": sandbox.config.fal_key,
        "EVOLINK_API_KEY": sandbox.config.unified_key,
        "SYNC_API_KEY": sandbox.config.syncso_key,
    }


@pytest.fixture
def make_client(sandbox: Sandbox, keys: dict[str, str], tmp_path: Path) -> Callable[..., AsyncLipsyncer]:
    """A client wired to the in-process sandbox; keyword arguments are config settings."""

    def make(
        *, config: Path | None = None, env: dict[str, str] | None = None, **settings: Any
    ) -> AsyncLipsyncer:
        env = {**keys, **(env or {})}
        settings.setdefault("polling", FAST_POLLING)
        return AsyncLipsyncer(
            load_settings(config, env=env, cwd=tmp_path, **settings),
            env=env,
            transport=sandbox.transport(),
            store=SQLiteJobStore(tmp_path / "jobs.sqlite"),
        )

    return make
