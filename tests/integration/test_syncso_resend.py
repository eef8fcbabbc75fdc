"""sync.so through the client: a create whose answer was lost is re-sent with the same Idempotency-Key."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lipsyncer import AsyncLipsyncer, LipsyncRequest
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia

pytestmark = pytest.mark.anyio


@pytest.mark.xfail(strict=True, reason="client re-send of idempotent submits: lead's lifecycle work")
async def test_a_dropped_create_is_resent_with_the_same_key_and_completes_once(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    sandbox.add_fault(Fault(kind="drop_after_accept", api="syncso", operation="create", times=1))
    async with make_client(only=["syncso"], storage="fal-cdn") as client:
        request = LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2")
        result = await client.run(request)
    creates = sandbox.find_requests(api="syncso", operation="create")
    assert [c.dropped for c in creates] == [True, False]  # the sandbox took the first; its answer was lost
    keys = [c.headers.get("idempotency-key") for c in creates]
    assert keys[0] and keys == [keys[0]] * 2, "the re-send carries the job's key"
    generations = [j for j in sandbox.jobs if j.api == "syncso"]
    assert len(generations) == 1, "the key replayed the generation: exactly one exists"
    assert result.remote_id == generations[0].id and result.served_by.provider == "syncso"
    assert sandbox.file_bytes(result.video.url)


async def test_a_syncso_job_runs_through_the_client(
    make_client: Callable[..., AsyncLipsyncer], media: SampleMedia, sandbox: Sandbox
) -> None:
    async with make_client(only=["syncso"], storage="fal-cdn") as client:
        request = LipsyncRequest(video=media.video, audio=media.audio, model="react-1", emotion="happy")
        result = await client.run(request)
    [create] = sandbox.find_requests(api="syncso", operation="create")
    assert create.body["model"] == "react-1" and create.body["options"]["prompt"] == "happy"
    assert result.served_by.provider == "syncso" and result.cost is not None
    assert sandbox.file_bytes(result.video.url)
