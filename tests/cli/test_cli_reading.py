"""What a newcomer reads: 80-column tables with whole words, money as money, clean help, one history row per
change, fal's percent, no silent overwrite, precise errors, and the everyday `jobs` commands."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cli_support import SANDBOX_KEYS, Invoke, Media, probe_mp4, write_config

from lipsyncer.cli import COMMANDS
from lipsyncer.cli.errors import EXIT_INPUT, EXIT_PROVIDER
from lipsyncer.cli.housekeeping import CSV_COLUMNS, prunable
from lipsyncer.cli.progress import changes, status_text
from lipsyncer.cli.render import cost_text, money, rate
from lipsyncer.contrib.sandbox import LoopbackServer, ManualClock, Sandbox, SandboxConfig, serve_in_thread
from lipsyncer.core.jobs import SQLiteJobStore
from lipsyncer.core.plugins import PluginHost
from lipsyncer.core.schema import Cost, Job, JobState, JobStatus, utcnow

NARROW = {"COLUMNS": "80"}


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def assert_whole(words: set[str], text: str) -> None:
    """Each word appears intact, bounded by spaces or line ends (a split word would not)."""
    for word in words:
        assert re.search(rf"(?<!\S){re.escape(word)}(?!\S)", text), f"{word!r} is split or missing:\n{text}"


def run_job(cli: Invoke, media: Media, config: Path, store: Path, *extra: str) -> str:
    """One real job on the loopback sandbox; returns its id."""
    outcome = cli(
        ["run", media.video, media.audio, "--config", config, "--store", store, "--json", *extra],
        env=SANDBOX_KEYS,
    )
    assert outcome.code == 0, outcome.stderr
    job_id: str = json.loads(outcome.stdout)["job_id"]
    return job_id


# ------------------------------------------------------------------------------------------- tables


def test_providers_fit_80_columns_with_every_word_whole(cli: Invoke) -> None:
    outcome = cli(["providers", "--sandbox"], env=NARROW)
    assert outcome.code == 0, outcome.stderr
    assert all(len(line) <= 80 for line in lines_of(outcome.stdout)), outcome.stdout
    words: set[str] = set()
    for pid, cls in PluginHost().providers.items():
        words.add(pid)
        words.add(cls.credential_env or "")
        for model in cls.models:
            words.add(model.id)
            words.add(f"${model.price_per_second * 60:.2f}/min")  # the per-minute price, written out
    assert_whole(words - {""}, outcome.stdout)


def test_providers_wide_shows_features_and_plugin(cli: Invoke) -> None:
    narrow = cli(["providers", "--sandbox"], env=NARROW)
    wide = cli(["providers", "--sandbox", "--wide"], env={"COLUMNS": "200"})
    assert "uploads local files" not in narrow.stdout
    assert "uploads local files" in wide.stdout and "(lipsyncer " in wide.stdout


def test_jobs_list_and_show_fit_80_columns(cli: Invoke, media: Media, config: Path, clean_env: Path) -> None:
    store = clean_env / "jobs.sqlite"
    job_id = run_job(cli, media, config, store, "-o", "out.mp4")
    listed = cli(["jobs", "list", "--store", store, "--config", config], env=NARROW)
    assert all(len(line) <= 80 for line in lines_of(listed.stdout)), listed.stdout
    assert_whole({job_id, "completed", "fal-v2:lipsync-2"}, listed.stdout)
    wide = cli(["jobs", "list", "--store", store, "--config", config, "--wide"], env={"COLUMNS": "200"})
    remote_id = SQLiteJobStore(store).get(job_id).remote_id  # type: ignore[union-attr]
    assert remote_id and remote_id in wide.stdout and remote_id not in listed.stdout
    shown = cli(["jobs", "show", job_id, "--store", store, "--config", config], env=NARROW)
    tables = shown.stdout.split("Attempts", 1)[1]  # the key/value lines above may run long (URLs)
    assert all(len(line) <= 80 for line in lines_of(tables)), tables


def test_estimate_table_fits_80_columns(cli: Invoke, media: Media) -> None:
    outcome = cli(["estimate", media.video, media.audio, "--sandbox", "-m", "lipsync-2-pro"], env=NARROW)
    assert outcome.code == 0, outcome.stderr
    table = outcome.stdout.split("Excluded:", 1)[0]
    assert all(len(line) <= 80 for line in lines_of(table)), table
    # lipsync-2-pro at $5/min for the 2 s the default cut_off mode gives: the amount, written out.
    assert_whole({"fal-v2-pro:lipsync-2-pro", "$0.0833/s", "$0.1667"}, table)  # 5 / 60 * 2 = 0.16666...


def test_money_is_money() -> None:
    five_a_minute = Decimal(5) / 60
    assert rate(five_a_minute) == "$0.0833/s"
    assert money(Decimal("1.0000")) == "$1.00" and money(Decimal("0.1500")) == "$0.15"
    cost = Cost.of(five_a_minute, 12.0, "output_duration")
    assert cost_text(cost) == "$1.00 (12.00 s at $0.0833/s, output duration)"


# ------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["route"],
        ["estimate"],
        ["providers"],
        ["demo"],
        ["jobs"],
        ["jobs", "list"],
        ["jobs", "show"],
        ["jobs", "resume"],
        ["jobs", "download"],
        ["jobs", "prune"],
        ["jobs", "export"],
        ["jobs", "cancel"],
        ["sandbox", "serve"],
    ],
)
def test_help_has_no_type_tags_or_braces(cli: Invoke, argv: list[str]) -> None:
    outcome = cli([*argv, "--help"], env=NARROW)
    assert outcome.code == 0, outcome.stderr
    for junk in ("<bool>", "<str>", "<float>", "<int>", "<path>", "{VIDEO}", "{video}", "[["):
        assert junk not in outcome.stdout, (junk, outcome.stdout)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_root_summaries_are_the_commands_own_first_lines(cli: Invoke, name: str) -> None:
    """``lipsyncer --help`` lists summaries without importing commands; they must not drift from them."""
    outcome = cli([name, "--help"], env={"COLUMNS": "200"})
    paragraphs = [p.strip() for p in outcome.stdout.split("\n\n") if p.strip()]
    assert paragraphs[1] == COMMANDS[name][1], paragraphs[:2]


# ------------------------------------------------------------------------------------------- progress


def status(state: JobState, **fields: object) -> JobStatus:
    return JobStatus(state=state, **fields)  # type: ignore[arg-type]


def test_history_has_one_row_per_change() -> None:
    t0 = utcnow()
    seen = [
        status(JobState.QUEUED, observed_at=t0),
        status(JobState.QUEUED, queue_position=0, observed_at=t0 + timedelta(seconds=1)),
        status(JobState.QUEUED, queue_position=0, observed_at=t0 + timedelta(seconds=2)),
        status(JobState.RUNNING, observed_at=t0 + timedelta(seconds=3)),
        status(JobState.RUNNING, progress=10, observed_at=t0 + timedelta(seconds=4)),
        status(JobState.RUNNING, progress=10, observed_at=t0 + timedelta(seconds=5)),
        status(JobState.RUNNING, progress=30, observed_at=t0 + timedelta(seconds=6)),
        status(JobState.COMPLETED, progress=100, observed_at=t0 + timedelta(seconds=7)),
    ]
    rows = changes(seen)
    assert [status_text(s) for s in rows] == [
        "queued, position 0",
        "running, 10%",
        "running, 30%",
        "completed",
    ]
    # A row is dated when its state began: queued at t0, running at t0+3 s.
    assert [s.observed_at for s in rows[:2]] == [t0, t0 + timedelta(seconds=3)]


def test_fal_jobs_show_their_percent_and_queue_position(cli: Invoke, media: Media, clean_env: Path) -> None:
    # The sandbox's time moves only after a look-up: the bar sees the job queued, then running, however slow
    # the machine is to answer (on the wall clock a loaded machine could miss the queue).
    clock = ManualClock()
    moved = threading.Event()
    with (
        Sandbox(SandboxConfig(processing_seconds=2.0, queue_seconds=0.3, clock=clock)) as sandbox,
        serve_in_thread(sandbox) as server,
    ):

        def move_after_each_look_up() -> None:
            seen = 0
            while not moved.is_set():
                looks = len(sandbox.find_requests(api="fal", operation="status"))
                if looks > seen:
                    seen = looks
                    clock.advance(0.4)
                moved.wait(0.01)

        mover = threading.Thread(target=move_after_each_look_up, daemon=True)
        mover.start()
        config = write_config(clean_env / "slow.toml", server.base_url)
        store = clean_env / "jobs.sqlite"
        try:
            outcome = cli(
                ["run", media.video, media.audio, "--config", config, "--store", store, "-o", "out.mp4"],
                env=SANDBOX_KEYS,
            )
        finally:
            moved.set()
            mover.join(timeout=10)
    assert outcome.code == 0, outcome.stderr
    assert re.search(r": queued, position \d+$", outcome.stdout, re.M), outcome.stdout
    # fal logs "Processing: N%" every tenth of the processing time: the bar shows those numbers.
    shown = [int(n) for n in re.findall(r": running, (\d+)%$", outcome.stdout, re.M)]
    assert shown and all(0 < n < 100 and n % 10 == 0 for n in shown), outcome.stdout
    assert shown == sorted(set(shown)), "one line per change, in order"
    history = SQLiteJobStore(store).history(SQLiteJobStore(store).list_jobs()[0].id)
    for seen in history:
        if seen.state is JobState.RUNNING and seen.logs:
            percents = [float(m) for e in seen.logs for m in re.findall(r"(\d+)%", e.message)]
            assert seen.progress == (percents[-1] if percents else None)


# ------------------------------------------------------------------------------------------- outputs


def test_output_is_never_overwritten_without_force(
    cli: Invoke, media: Media, config: Path, served: tuple[Sandbox, LoopbackServer], clean_env: Path
) -> None:
    existing = clean_env / "out.mp4"
    existing.write_bytes(b"my earlier render")
    args = ["run", media.video, media.audio, "--config", config, "-o", existing]
    refused = cli(args, env=SANDBOX_KEYS)
    assert refused.code == EXIT_INPUT
    assert "already exists" in refused.error_lines[0] and "--force" in refused.error_lines[1]
    assert existing.read_bytes() == b"my earlier render"
    assert served[0].submits() == [], "refused before anything was sent"
    forced = cli([*args, "--force"], env=SANDBOX_KEYS)
    assert forced.code == 0, forced.stderr
    assert probe_mp4(existing)[1] == 1


def test_demo_says_where_it_writes(cli: Invoke, clean_env: Path) -> None:
    (clean_env / "lipsyncer-demo.mp4").write_bytes(b"an earlier demo")
    outcome = cli(["demo", "--processing-seconds", "0.2"])
    assert outcome.code == 0, outcome.stderr
    target = clean_env.resolve() / "lipsyncer-demo-1.mp4"  # the default never replaces a file
    assert outcome.stdout.splitlines()[0].startswith(f"The demo writes its MP4 to {target}")
    assert probe_mp4(target)[1] == 1
    assert (clean_env / "lipsyncer-demo.mp4").read_bytes() == b"an earlier demo"


# ------------------------------------------------------------------------------------------- errors


def test_a_directory_is_not_a_missing_file(cli: Invoke, media: Media, clean_env: Path) -> None:
    folder = clean_env / "takes"
    folder.mkdir()
    (folder / "take1.mp4").write_bytes(b"")
    outcome = cli(["run", folder, media.audio, "--sandbox"])
    assert outcome.code == EXIT_INPUT
    assert "is a directory, not a file" in outcome.error_lines[0]
    assert str(folder / "take1.mp4") in outcome.error_lines[1]


def test_estimate_of_an_unreadable_file_names_the_flag(cli: Invoke, media: Media, clean_env: Path) -> None:
    junk = clean_env / "notes.mp4"
    junk.write_text("not a video")
    outcome = cli(["estimate", junk, media.audio, "--sandbox"])
    assert outcome.code == EXIT_INPUT, outcome.stderr
    assert "notes.mp4" in outcome.error_lines[0]
    assert "--video-seconds" in outcome.error_lines[1] and "video_seconds" not in outcome.error_lines[1]
    fine = cli(["estimate", junk, media.audio, "--sandbox", "--video-seconds", "2"])
    assert fine.code == 0, fine.stderr


def test_a_refused_key_names_its_variable(
    cli: Invoke, media: Media, clean_env: Path, served: tuple[Sandbox, LoopbackServer]
) -> None:
    config = write_config(clean_env / "unified.toml", served[1].base_url)
    config.write_text('storage = "fal-cdn"\n' + config.read_text())
    env = {**SANDBOX_KEYS, "EVOLINK_API_KEY": "a-wrong-key"}
    outcome = cli(
        ["run", media.video, media.audio, "--config", config, "-p", "unified", "-o", "o.mp4"], env=env
    )
    assert outcome.code == EXIT_PROVIDER, outcome.stderr
    assert "EVOLINK_API_KEY" in outcome.error_lines[1]
    assert "a-wrong-key" not in outcome.stderr + outcome.stdout


# ------------------------------------------------------------------------------------------- jobs


def test_jobs_download_export_and_prune_preview(
    cli: Invoke, media: Media, config: Path, clean_env: Path
) -> None:
    store = clean_env / "jobs.sqlite"
    first = run_job(cli, media, config, store, "-o", "a.mp4", "--sync-mode", "loop")
    second = run_job(cli, media, config, store, "-o", "b.mp4")
    common = ["--store", store, "--config", config]

    copy = clean_env / "copy.mp4"
    got = cli(["jobs", "download", first, "-o", copy, *common], env=SANDBOX_KEYS)
    assert got.code == 0, got.stderr
    assert abs(probe_mp4(copy)[0] - media.audio_seconds) <= 0.1  # loop: the audio's length
    again = cli(["jobs", "download", first, "-o", copy, *common], env=SANDBOX_KEYS)
    assert again.code == EXIT_INPUT and "--force" in again.error_lines[1]

    jsonl = cli(["jobs", "export", "--format", "jsonl", *common])
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["id"] for r in records] == [second, first]  # newest first, like `jobs list`
    table = list(csv.DictReader(io.StringIO(cli(["jobs", "export", "--format", "csv", *common]).stdout)))
    assert tuple(table[0]) == CSV_COLUMNS
    stored = SQLiteJobStore(store).get(first)
    assert stored is not None and stored.result is not None and stored.result.cost is not None
    row = next(r for r in table if r["id"] == first)
    assert (row["state"], Decimal(row["cost"])) == ("completed", stored.result.cost.amount)

    # A job still in flight is never pruned, however old.
    old = utcnow() - timedelta(days=90)
    SQLiteJobStore(store).create(
        Job(
            id="job_inflight",
            provider="fal-v2",
            model="lipsync-2",
            endpoint="e",
            request_fingerprint="f",
            state=JobState.RUNNING,
            submitted_at=old,
        )
    )
    preview = cli(["jobs", "prune", "--older-than", "0s", "--dry-run", "--json", *common])
    assert preview.code == 0, preview.stderr
    assert set(json.loads(preview.stdout)["jobs"]) == {first, second}
    kept = cli(["jobs", "prune", "--older-than", "1d", "--dry-run", "--json", *common])
    assert json.loads(kept.stdout)["jobs"] == []


def test_prunable_keeps_unfinished_and_recent_jobs() -> None:
    now = utcnow()

    def job(name: str, state: JobState, age_days: float) -> Job:
        made = Job(id=name, provider="p", model="m", endpoint="e", request_fingerprint="f", state=state)
        made.updated_at = now - timedelta(days=age_days)
        return made

    jobs = [
        job("old-done", JobState.COMPLETED, 40),
        job("old-failed", JobState.FAILED, 31),
        job("new-done", JobState.COMPLETED, 2),
        job("old-running", JobState.RUNNING, 400),
        job("old-unknown", JobState.UNKNOWN, 400),
        job("old-submitting", JobState.SUBMITTING, 400),
    ]
    assert [j.id for j in prunable(jobs, older_than=timedelta(days=30), now=now)] == [
        "old-done",
        "old-failed",
    ]


@pytest.mark.skipif(not hasattr(SQLiteJobStore, "delete"), reason="needs JobStore.delete(job_id) -> bool")
def test_jobs_prune_deletes_old_finished_jobs(
    cli: Invoke, media: Media, config: Path, clean_env: Path
) -> None:
    store = clean_env / "jobs.sqlite"
    done = run_job(cli, media, config, store, "-o", "a.mp4")
    outcome = cli(["jobs", "prune", "--older-than", "0s", "--store", store, "--config", config])
    assert outcome.code == 0, outcome.stderr
    assert SQLiteJobStore(store).get(done) is None


@pytest.mark.parametrize(
    ("content", "line", "needle", "fix"),
    [
        (
            'model = "lipsync-2"\n\n[providers.fal-v3]\npriority = "high"\n',
            4,
            "providers.fal-v3.priority",
            "whole number",
        ),
        ("[polling]\nintial_interval = 2\n", 2, "polling.intial_interval", "remove polling.intial_interval"),
        ("# budget\nmax_attempts = 0\n", 2, "max_attempts", "max_attempts to a value >= 1"),
        ('[providers]\nfal-v2 = { priority = "x" }\n', 2, "providers.fal-v2.priority", "whole number"),
    ],
)
def test_config_errors_name_file_line_key_and_fix(
    cli: Invoke, clean_env: Path, content: str, line: int, needle: str, fix: str
) -> None:
    broken = clean_env / "broken.toml"
    broken.write_text(content)
    outcome = cli(["providers", "--config", broken])
    assert outcome.code == EXIT_INPUT
    assert outcome.error_lines[0].startswith(f"error: {broken}, line {line}: {needle}"), outcome.error_lines
    assert fix in outcome.error_lines[1]


@pytest.mark.parametrize(
    ("state", "command"),
    [
        (JobState.QUEUED, "lipsyncer jobs resume job_x"),
        (JobState.SUBMITTING, "lipsyncer jobs resume job_x"),
        (JobState.UNKNOWN, "lipsyncer jobs resolve job_x REMOTE_ID"),
        (JobState.FAILED, None),
    ],
)
def test_jobs_show_names_the_next_command(state: JobState, command: str | None) -> None:
    from rich.console import Console

    from lipsyncer.cli.render import job_detail

    job = Job(
        id="job_x", provider="fal-v2", model="lipsync-2", endpoint="e", request_fingerprint="f", state=state
    )
    console = Console(width=80, record=True, file=io.StringIO())
    for renderable in job_detail(job, []):
        console.print(renderable)
    text = console.export_text()
    assert (command in text) if command else ("lipsyncer jobs" not in text), text


def test_sandbox_runs_unified_with_local_files(cli: Invoke, media: Media, clean_env: Path) -> None:
    """--sandbox sets up the sandbox's storage: the unified API (URLs only) then takes local files."""
    outcome = cli(["run", media.video, media.audio, "--sandbox", "-p", "unified", "-o", "u.mp4", "--json"])
    assert outcome.code == 0, outcome.stderr
    assert json.loads(outcome.stdout)["served_by"]["provider"] == "unified"
    assert probe_mp4(clean_env / "u.mp4")[1] == 1
