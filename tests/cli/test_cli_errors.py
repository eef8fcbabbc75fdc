"""Bad CLI input fails before any request reaches a provider: one line naming the problem, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import SANDBOX_KEYS, Invoke, Media, Outcome, cli_command, process_env, run_process

from lipsyncer.cli.errors import EXIT_INPUT, EXIT_USAGE
from lipsyncer.contrib.sandbox import LoopbackServer, Sandbox


def assert_one_line_error(outcome: Outcome, code: int, *needles: str) -> None:
    assert outcome.code == code, (outcome.code, outcome.stderr)
    assert "Traceback" not in outcome.stderr + outcome.stdout
    lines = outcome.error_lines
    assert lines and lines[0].startswith("error: "), outcome.stderr
    assert len(lines) <= 2, lines  # the problem, then at most its fix
    if len(lines) == 2:
        assert lines[1].startswith("fix: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert outcome.stdout == ""


@pytest.mark.parametrize(
    ("case", "extra", "code", "needles"),
    [
        ("missing video", {"video": "nowhere.mp4"}, EXIT_INPUT, ["video file not found", "nowhere.mp4"]),
        ("missing audio", {"audio": "nowhere.wav"}, EXIT_INPUT, ["audio file not found", "nowhere.wav"]),
        (
            "unknown model",
            {"args": ["-m", "lipsync-9"]},
            EXIT_INPUT,
            ["no provider serves model 'lipsync-9'"],
        ),
        (
            "option the model does not honour",
            {"args": ["-m", "sync-3", "--temperature", "0.5"]},
            EXIT_INPUT,
            ["fal-v3:sync-3: does not honour temperature"],
        ),
        (
            "option the pinned route does not honour",
            {"args": ["-p", "fal-v2", "--active-speaker", "auto"]},
            EXIT_INPUT,
            ["fal-v2:lipsync-2: does not honour active_speaker.auto"],
        ),
        ("temperature out of range", {"args": ["--temperature", "3"]}, EXIT_INPUT, ["temperature"]),
        ("unknown provider", {"args": ["-p", "acme"]}, EXIT_INPUT, ["provider 'acme' is not installed"]),
        ("bad speaker hint", {"args": ["--active-speaker", "1,2,3"]}, EXIT_INPUT, ["--active-speaker"]),
        ("unknown flag", {"args": ["--frobnicate"]}, EXIT_USAGE, ["No such option: --frobnicate"]),
        ("bad sync mode", {"args": ["--sync-mode", "zigzag"]}, EXIT_USAGE, ["--sync-mode"]),
    ],
)
def test_bad_input_fails_before_any_request(
    cli: Invoke,
    media: Media,
    config: Path,
    served: tuple[Sandbox, LoopbackServer],
    case: str,
    extra: dict[str, object],
    code: int,
    needles: list[str],
) -> None:
    video = extra.get("video", media.video)
    audio = extra.get("audio", media.audio)
    args = ["run", video, audio, "--config", config, "-o", "out.mp4", *extra.get("args", [])]  # type: ignore[misc]
    outcome = cli(args, env=SANDBOX_KEYS)
    assert_one_line_error(outcome, code, *needles)
    assert served[0].requests == [], case
    assert not Path("out.mp4").exists()


def test_no_credentials_names_the_missing_variable(
    cli: Invoke, media: Media, config: Path, served: tuple[Sandbox, LoopbackServer]
) -> None:
    outcome = cli(["run", media.video, media.audio, "--config", config, "-m", "lipsync-2-pro"])
    assert_one_line_error(outcome, EXIT_INPUT, "FAL_KEY is not set")
    assert "--sandbox" in outcome.error_lines[1]
    assert served[0].requests == []


def test_route_and_estimate_refuse_the_same_input(cli: Invoke, media: Media, config: Path) -> None:
    for command in ("route", "estimate"):
        outcome = cli(
            [command, media.video, media.audio, "--config", config, "-m", "sync-3", "--temperature", "1"]
        )
        assert_one_line_error(outcome, EXIT_INPUT, "does not honour temperature")


def test_estimate_of_urls_asks_for_durations(cli: Invoke) -> None:
    outcome = cli(["estimate", "https://cdn.example/a.mp4", "https://cdn.example/a.wav", "--sandbox"])
    assert_one_line_error(outcome, EXIT_INPUT, "video is not a local file")
    assert "--video-seconds" in outcome.error_lines[1]


def test_unknown_job_is_one_line(cli: Invoke, clean_env: Path) -> None:
    for args in (["show", "job_nope"], ["resume", "job_nope"], ["cancel", "job_nope"]):
        outcome = cli(["jobs", *args, "--store", clean_env / "jobs.sqlite"])
        assert_one_line_error(outcome, EXIT_INPUT, "no job 'job_nope'")


def test_bad_config_is_one_line(cli: Invoke, clean_env: Path, media: Media) -> None:
    broken = clean_env / "broken.toml"
    broken.write_text("strategy = 'cheapest-ever'\n")
    outcome = cli(["route", media.video, media.audio, "--config", broken])
    assert_one_line_error(outcome, EXIT_INPUT, "unknown routing strategy 'cheapest-ever'")
    outcome = cli(["providers", "--config", clean_env / "absent.toml"])
    assert_one_line_error(outcome, EXIT_INPUT, "config file not found")


def test_json_mode_keeps_stdout_empty_on_error(cli: Invoke, media: Media) -> None:
    outcome = cli(["run", media.video, "nowhere.wav", "--sandbox", "--json"])
    assert_one_line_error(outcome, EXIT_INPUT, "audio file not found")


def test_debug_shows_the_traceback(cli: Invoke, media: Media) -> None:
    with pytest.raises(Exception, match="audio file not found"):
        cli(["run", media.video, "nowhere.wav", "--sandbox", "--debug"])


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_exits_non_zero(
    clean_env: Path, media: Media, config: Path, served: tuple[Sandbox, LoopbackServer]
) -> None:
    env = process_env(clean_env)  # no key at all
    outcome = run_process(
        cli_command("run", media.video, media.audio, "--config", config), cwd=clean_env, env=env
    )
    assert_one_line_error(outcome, EXIT_INPUT, "FAL_KEY is not set")
    outcome = run_process(cli_command("run", media.video), cwd=clean_env, env=env)
    assert_one_line_error(outcome, EXIT_USAGE, "Missing argument")
    assert served[0].requests == []
    json.dumps(outcome.__dict__)  # plain strings: nothing rich-specific leaked into the streams
