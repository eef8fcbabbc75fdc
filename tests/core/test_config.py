"""Config precedence, and that two differently configured clients coexist in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsyncer import ConfigError, Lipsyncer, LipsyncRequest, MemoryJobStore, load_settings

KEYS = {"FAL_KEY": "k-fal", "EVOLINK_API_KEY": "k-unified"}
REQUEST = LipsyncRequest(
    video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="lipsync-2-pro"
)


def test_two_clients_with_different_configs_route_the_same_request_differently(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('only = ["unified", "fal-v2-pro"]\n')
    (tmp_path / "b.toml").write_text(
        'strategy = "cost"\n[providers.fal-v2]\nprices = {"lipsync-2-pro" = 0.0001}\n'
    )
    with (
        Lipsyncer(config=tmp_path / "a.toml", env=KEYS, store=MemoryJobStore()) as a,
        Lipsyncer(config=tmp_path / "b.toml", env=KEYS, store=MemoryJobStore()) as b,
    ):
        assert a.route(REQUEST).first.id == "unified:lipsync-2-pro"
        assert b.route(REQUEST).first.id == "fal-v2:lipsync-2-pro"
        assert a.route(REQUEST).first.id == "unified:lipsync-2-pro"  # b did not leak into a


def test_precedence_pyproject_then_file_then_env_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.lipsyncer]\nstrategy = "cost"\nmax_attempts = 5\nfallbacks = false\n'
    )
    (tmp_path / "lipsyncer.toml").write_text("max_attempts = 4\n")
    env = {"LIPSYNCER_FALLBACKS": "true"}
    settings = load_settings(env=env, cwd=tmp_path)
    assert (settings.strategy, settings.max_attempts, settings.fallbacks) == ("cost", 4, True)
    assert load_settings(env=env, cwd=tmp_path, max_attempts=2).max_attempts == 2
    other = tmp_path / "other.toml"
    other.write_text('strategy = "priority"\n')
    assert load_settings(env={"LIPSYNCER_CONFIG": str(other)}, cwd=tmp_path).strategy == "priority"


def test_swapping_backend_is_a_config_change_only(tmp_path: Path) -> None:
    config = tmp_path / "lipsyncer.toml"
    for only in ("unified", "fal-v2", "fal-v2-pro"):
        config.write_text(f'only = ["{only}"]\n')
        with Lipsyncer(env=KEYS, config=config, store=MemoryJobStore()) as client:
            assert client.route(REQUEST).first.provider.id == only
    with Lipsyncer(env={**KEYS, "LIPSYNCER_PROVIDERS": "fal-v2"}, store=MemoryJobStore()) as client:
        assert [r.id for r in client.route(REQUEST).candidates] == ["fal-v2:lipsync-2-pro"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("strategy = 3\n", "strategy"),
        ("max_attempts = 0\n", "max_attempts"),
        ("[providers.fal-v3]\nbase_url = 'ftp://x'\n", "base_url"),
        ("[providers.fal-v3]\nbogus = 1\n", "bogus"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_invalid_config_is_a_config_error_naming_the_key(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "lipsyncer.toml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, cwd=tmp_path)


def test_unknown_strategy_and_storage_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown routing strategy"):
        Lipsyncer(load_settings(env={}, cwd="/", strategy="fastest"), env={}, store=MemoryJobStore()).route(
            REQUEST
        )
    with pytest.raises(ConfigError, match="storage 'nowhere' is not installed"):
        Lipsyncer(load_settings(env={}, cwd="/", storage="nowhere"), env={}, store=MemoryJobStore())


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml", env={}, cwd=tmp_path)
