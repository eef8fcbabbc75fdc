"""Fixtures for the sandbox tests: fast sandboxes, sample media, fal-client and httpx wired in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from lipsyncer.contrib.sandbox import Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, sample_media
from lipsyncer.providers.fal._client import FalAsyncClient


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    return sample_media(tmp_path_factory.mktemp("sandbox-media"))


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
