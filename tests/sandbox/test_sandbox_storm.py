"""``Fault.storm``: a seeded mix of faults before and after acceptance, repeatable for a seed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault, ManualClock, Sandbox

pytestmark = pytest.mark.anyio

QUEUE = "https://queue.fal.run"
FAL_AUTH = {"Authorization": "Key sandbox-fal-key"}
API = "https://api.evolink.ai"
UNIFIED_AUTH = {"Authorization": "Bearer sandbox-unified-key"}

# What a storm may do to a submit (docs/sandbox.md), and the rule: only the *_after_accept kinds leave a job.
SUBMIT_MENU = {
    "http_error:429",
    "http_error:500",
    "http_error:503",
    "http_error:502:ingress",
    "drop_connection",
    "drop_after_accept",
    "gateway_after_accept:502",
    "gateway_after_accept:504",
}
CREATES = {
    "http_error": False,
    "drop_connection": False,
    "drop_after_accept": True,
    "gateway_after_accept": True,
}


def body(n: int) -> dict[str, Any]:
    # Inputs nobody can fetch: the job fails fast without rendering, which is all the accounting needs.
    return {"video_url": f"https://media.invalid/{n}.mp4", "audio_url": f"https://media.invalid/{n}.wav"}


async def submit_all(sandbox: Sandbox, count: int) -> list[str]:
    """Send ``count`` submits (alternating fal and unified); what each client saw, in order."""
    seen: list[str] = []
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        for n in range(count):
            try:
                if n % 2:
                    response = await http.post(
                        f"{QUEUE}/fal-ai/sync-lipsync/v2",
                        params={"fal_webhook": f"https://hooks.invalid/fal?lipsyncer_job=job-{n}"},
                        json=body(n),
                        headers=FAL_AUTH,
                    )
                else:
                    response = await http.post(
                        f"{API}/v1/videos/generations",
                        json={**body(n), "callback_url": f"https://hooks.invalid/cb?lipsyncer_job=job-{n}"},
                        headers=UNIFIED_AUTH,
                    )
                seen.append(str(response.status_code))
            except httpx.RemoteProtocolError:
                seen.append("dropped")
    return seen


def storm_sandbox(make_sandbox: Callable[..., Sandbox], rate: float, seed: int) -> Sandbox:
    # A manual clock that never moves: jobs stay queued, so no webhook is ever due.
    return make_sandbox(clock=ManualClock(), faults=Fault.storm(rate, seed=seed))


async def test_a_storm_repeats_for_a_seed_and_differs_for_another(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    first = await submit_all(storm_sandbox(make_sandbox, 0.5, seed=3), 60)
    again = await submit_all(storm_sandbox(make_sandbox, 0.5, seed=3), 60)
    other = await submit_all(storm_sandbox(make_sandbox, 0.5, seed=4), 60)
    assert first == again
    assert first != other
    hits = sum(1 for s in first if s != "200")
    assert 10 < hits < 50, f"about half of 60 submits meet a fault, got {hits}"


async def test_every_submit_fault_happens_and_only_after_accept_kinds_leave_a_job(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = storm_sandbox(make_sandbox, 1.0, seed=11)
    await submit_all(sandbox, 160)

    chosen: Counter[str] = Counter()
    for stats in sandbox.faults:
        chosen.update(stats.chosen)
    assert set(chosen) == SUBMIT_MENU, "each fault of the submit menu was drawn"
    assert sum(chosen.values()) == 160

    expected_jobs = 0
    for record in sandbox.submits():
        (fault,) = record.faults
        creates = CREATES[fault]
        assert (record.job_id is not None) is creates, record
        assert record.dropped is (fault in ("drop_connection", "drop_after_accept"))
        expected_jobs += creates
    assert sandbox.accepted_count() == expected_jobs
    # Every marked request was accepted at most once, and every accepted job carries its marker.
    counts = sandbox.accepted_submits()
    assert None not in counts and set(counts.values()) == {1}
    assert sandbox.accepted_twice() == {}


def test_storm_helper_arguments() -> None:
    (fal,) = Fault.storm(1.0, seed=1, apis=("fal",), hold_seconds=5)
    assert fal.seconds == 5 and fal.api == "fal"
    with pytest.raises(ValueError, match="probability"):
        Fault.storm(1.5)


async def test_storm_reads_and_result_fetches_meet_transient_faults(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(clock=ManualClock())
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:
        job = (await http.post(f"{QUEUE}/fal-ai/sync-lipsync/v2", json=body(0), headers=FAL_AUTH)).json()
        sandbox.add_fault(Fault.storm(1.0, seed=2, apis=("fal",))[0])
        seen: Counter[str] = Counter()
        waits: set[str | None] = set()
        for _ in range(40):
            try:
                response = await http.get(job["status_url"], headers=FAL_AUTH)
            except httpx.RemoteProtocolError:
                seen["dropped"] += 1
                continue
            seen[str(response.status_code)] += 1
            if response.status_code == 429:
                waits.add(response.headers.get("retry-after"))
    assert set(seen) == {"429", "500", "503", "dropped"}, "reads meet only transient faults"
    assert waits == {"1"}, "a storm's rate limits ask for a 1 s wait, not a minute"
    assert sandbox.accepted_count() == 1
