"""Fixtures every test directory shares; a directory changes its sandboxes by overriding ``sandbox_overrides``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import fast_config


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    """Config every sandbox of a test starts from (on top of ``fast_config``)."""
    return {}


@pytest.fixture
def make_sandbox(sandbox_overrides: dict[str, Any]) -> Iterator[Callable[..., Sandbox]]:
    """Build fast sandboxes with config overrides; all are closed after the test."""
    made: list[Sandbox] = []

    def make(**overrides: Any) -> Sandbox:
        sandbox = Sandbox(fast_config(**{**sandbox_overrides, **overrides}))
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.close()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()
