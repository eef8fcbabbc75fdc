"""Machine output parses and has the documented keys; `providers` lists every built-in and never a key value."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import PROVIDER_IDS, SANDBOX_KEYS, Invoke, Media, probe_mp4

from lipsyncer.contrib.sandbox import LoopbackServer, Sandbox
from lipsyncer.core.jobs import SQLiteJobStore
from lipsyncer.core.schema import JobState


def sync_rule(mode: str, v: float, a: float) -> float:
    """The output length each sync mode gives (reference §1), written out here rather than imported."""
    return {"cut_off": min(v, a), "loop": a, "bounce": a, "silence": v, "remap": a}[
        str(getattr(mode, "value", mode))
    ]


RESULT_KEYS = {
    "job_id",
    "remote_id",
    "served_by",
    "attempts",
    "cost",
    "saved_to",
    "video",
    "elapsed_seconds",
}
PLAN_KEYS = {"model", "strategy", "output_seconds", "candidates", "excluded", "suggestions", "explanation"}
CANDIDATE_KEYS = {"route", "provider", "model", "endpoint", "priority", "price_per_second", "estimated_cost"}
FAKE_FAL = "fal-key-value-that-must-never-be-printed-1234"
FAKE_UNIFIED = "unified-key-value-that-must-never-be-printed-5678"


def test_run_json_is_one_document_with_the_documented_keys(
    cli: Invoke, media: Media, clean_env: Path
) -> None:
    outcome = cli(
        ["run", media.video, media.audio, "--sandbox", "--json", "--sync-mode", "loop", "-o", "out.mp4"]
    )
    assert outcome.code == 0, outcome.stderr
    payload = json.loads(outcome.stdout)  # the whole of stdout is one JSON document
    assert set(payload) == RESULT_KEYS
    assert payload["served_by"] == {
        "provider": "fal-v2",
        "model": "lipsync-2",
        "endpoint": "fal-ai/sync-lipsync/v2",
    }
    assert payload["job_id"].startswith("job_") and payload["remote_id"]
    assert [a["provider"] for a in payload["attempts"]] == ["fal-v2"]
    assert payload["attempts"][0]["remote_id"] == payload["remote_id"]
    assert set(payload["cost"]) >= {"amount", "currency", "seconds", "price_per_second", "basis"}
    assert payload["cost"]["basis"] == "output_duration"
    saved = Path(payload["saved_to"])
    assert saved == (clean_env / "out.mp4").resolve()
    seconds, videos = probe_mp4(saved)
    assert videos == 1
    expected = sync_rule("loop", media.video_seconds, media.audio_seconds)
    assert abs(seconds - expected) <= 0.1
    assert abs(payload["cost"]["seconds"] - expected) <= 0.1
    # People still get the story, on stderr.
    assert "Routing 'lipsync-2'" in outcome.stderr and "Saved to" in outcome.stderr


def test_run_pins_a_provider_and_tells_what_it_did(cli: Invoke, media: Media, clean_env: Path) -> None:
    outcome = cli(["run", media.video, media.audio, "--sandbox", "-p", "fal-v2-pro", "-m", "lipsync-2-pro"])
    assert outcome.code == 0, outcome.stderr
    out = outcome.stdout
    assert "Routing 'fal-v2-pro:lipsync-2-pro'" in out
    assert "Served by fal-v2-pro:lipsync-2-pro (fal-ai/sync-lipsync/v2/pro)" in out
    assert "Saved to" in out
    saved = clean_env / "talk.lipsync.mp4"  # the default name, next to the cwd
    assert saved.is_file() and probe_mp4(saved)[1] == 1


def test_route_and_estimate_json(cli: Invoke, media: Media) -> None:
    outcome = cli(
        ["route", media.video, media.audio, "-m", "lipsync-2-pro", "--sandbox", "--json", "--explain"]
    )
    assert outcome.code == 0, outcome.stderr
    plan = json.loads(outcome.stdout)
    assert set(plan) == PLAN_KEYS
    assert set(plan["candidates"][0]) == CANDIDATE_KEYS
    routes = [c["route"] for c in plan["candidates"]]
    assert routes[0] == "fal-v2-pro:lipsync-2-pro" and "fal-v2:lipsync-2-pro" in routes
    # --sandbox sets up the sandbox's fal-cdn storage, so the unified API (URLs only) can take local files.
    assert "unified:lipsync-2-pro" in routes
    assert not any(e["kind"] == "storage" for e in plan["excluded"])

    outcome = cli(
        [
            "estimate",
            media.video,
            media.audio,
            "-m",
            "lipsync-2",
            "--sync-mode",
            "cut_off",
            "--sandbox",
            "--json",
        ]
    )
    assert outcome.code == 0, outcome.stderr
    estimate = json.loads(outcome.stdout)
    assert estimate["output_seconds"] == sync_rule("cut_off", media.video_seconds, media.audio_seconds)
    cost = estimate["candidates"][0]["estimated_cost"]
    assert cost["basis"] == "estimate" and float(cost["amount"]) > 0


def test_estimate_takes_durations_for_urls(cli: Invoke) -> None:
    outcome = cli(
        [
            "estimate",
            "https://cdn.example/talk.mp4",
            "https://cdn.example/dub.wav",
            "--video-seconds",
            "60",
            "--audio-seconds",
            "30",
            "--sync-mode",
            "silence",
            "-m",
            "sync-3",
            "--sandbox",
            "--json",
        ]
    )
    assert outcome.code == 0, outcome.stderr
    estimate = json.loads(outcome.stdout)
    assert estimate["output_seconds"] == 60
    by_route = {c["route"]: c["estimated_cost"]["amount"] for c in estimate["candidates"]}
    assert set(by_route) == {"fal-v3:sync-3", "syncso:sync-3", "unified:sync-3"}


def test_providers_lists_every_builtin_and_never_a_key(cli: Invoke) -> None:
    env = {"FAL_KEY": FAKE_FAL, "EVOLINK_API_KEY": FAKE_UNIFIED}
    table = cli(["providers"], env=env)
    assert table.code == 0, table.stderr
    for pid in PROVIDER_IDS:
        assert pid in table.stdout
    assert "FAL_KEY found" in table.stdout and "EVOLINK_API_KEY found" in table.stdout
    assert "fal-cdn" in table.stdout

    listing = cli(["providers", "--json"], env=env)
    assert listing.code == 0, listing.stderr
    payload = json.loads(listing.stdout)
    rows = {row["id"]: row for row in payload["providers"]}
    assert set(rows) >= set(PROVIDER_IDS)
    assert rows["fal-v3"]["credential_env"] == "FAL_KEY" and rows["fal-v3"]["credentials"] == "found"
    assert rows["unified"]["credential_env"] == "EVOLINK_API_KEY"
    syncso = rows["syncso"]
    assert (syncso["credential_env"], syncso["credentials"]) == ("SYNC_API_KEY", "missing")
    assert "idempotent submits" in syncso["features"] and "cancel" not in syncso["features"]
    react = next(m for m in syncso["models"] if m["id"] == "react-1")
    assert {"model_mode", "emotion"} <= set(react["options"])
    assert "temperature" in next(m for m in rows["unified"]["models"] if m["id"] == "lipsync-2")["options"]
    assert all(row["plugin"] != "?" for row in rows.values())
    assert {s["id"] for s in payload["storages"]} == {"fal-cdn"}

    for outcome in (table, listing):
        text = outcome.stdout + outcome.stderr
        assert FAKE_FAL not in text and FAKE_UNIFIED not in text
        assert FAKE_FAL[:12] not in text  # not even a prefix


def test_providers_says_which_keys_are_missing(cli: Invoke) -> None:
    payload = json.loads(cli(["providers", "--json"]).stdout)
    assert {row["credentials"] for row in payload["providers"]} == {"missing"}
    sandboxed = json.loads(cli(["providers", "--json", "--sandbox"]).stdout)
    assert {row["credentials"] for row in sandboxed["providers"]} == {"found"}


def test_jobs_commands_read_the_store(
    cli: Invoke, media: Media, config: Path, served: tuple[Sandbox, LoopbackServer], clean_env: Path
) -> None:
    store = clean_env / "jobs.sqlite"
    common = ["--config", config, "--store", store]
    ran = cli(["run", media.video, media.audio, "-o", "a.mp4", "--json", *common], env=SANDBOX_KEYS)
    assert ran.code == 0, ran.stderr
    job_id = json.loads(ran.stdout)["job_id"]

    listed = json.loads(cli(["jobs", "list", "--json", *common]).stdout)
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    assert listed["jobs"][0]["state"] == "completed"
    assert cli(["jobs", "list", "--state", "queued", "--json", *common]).stdout.count("job_") == 0

    shown = cli(["jobs", "show", job_id, "--json", *common])
    job = json.loads(shown.stdout)
    assert job["result"]["saved_to"] == str((clean_env / "a.mp4").resolve())
    assert [h["state"] for h in job["history"]][-1] == "completed"
    human = cli(["jobs", "show", job_id, *common])
    assert job_id in human.stdout and "Status history" in human.stdout

    nothing = cli(["jobs", "resume", *common])
    assert nothing.code == 0 and "nothing to resume" in nothing.stdout
    again = cli(["jobs", "cancel", job_id, *common])
    assert again.code == 3 and "already completed" in again.stderr
    assert len(served[0].submits()) == 1
    assert SQLiteJobStore(store).get(job_id).state is JobState.COMPLETED  # type: ignore[union-attr]
