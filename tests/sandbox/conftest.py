"""Fixtures for the sandbox tests: fast sandboxes, sample media, fal-client and httpx wired in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config, sample_media
from lipsyncer.providers.fal._client import FalAsyncClient


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("sandbox-media"))


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Build fast sandboxes with config overrides; all are closed after the test."""
    made: list[Sandbox] = []

    def make(**overrides: Any) -> Sandbox:
        sandbox = Sandbox(fast_config(**overrides))
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.close()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()


@pytest.fixture
async def fal(sandbox: Sandbox) -> AsyncIterator[FalAsyncClient]:
    client = FalAsyncClient(key=sandbox.config.fal_key, transport=sandbox.transport())
    yield client
    await client.aclose()


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A raw client on the in-process transport; tests pass absolute URLs with the real host names."""
    async with httpx.AsyncClient(transport=sandbox.transport()) as client:
        yield client
