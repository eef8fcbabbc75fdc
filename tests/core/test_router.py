"""The router's promises, checked over generated requests against the installed providers' declared data."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipsyncer import (
    ActiveSpeaker,
    AsyncLipsyncer,
    LipsyncRequest,
    MemoryJobStore,
    NoRouteError,
    Option,
    SyncMode,
    load_settings,
)
from lipsyncer.core.plugins import PluginHost

KEYS = {"FAL_KEY": "k-fal", "EVOLINK_API_KEY": "k-unified"}
HOST = PluginHost()
MODELS = sorted({m.id for cls in HOST.providers.values() for m in cls.models})


def client(env: dict[str, str] | None = None, **overrides: object) -> AsyncLipsyncer:
    env = KEYS if env is None else env
    return AsyncLipsyncer(load_settings(env=env, cwd="/", **overrides), env=env, store=MemoryJobStore())


ROUTING = client()

speakers = st.one_of(
    st.none(),
    st.just(ActiveSpeaker.automatic()),
    st.builds(ActiveSpeaker.at, st.integers(0, 500), st.integers(0, 4000), st.integers(0, 4000)),
    st.just(ActiveSpeaker.boxes([(1.0, 2.0, 30.0, 40.0), None])),
    st.just(ActiveSpeaker.boxes_from("https://media.example/boxes.json")),
    st.just(ActiveSpeaker.face(base64.b64encode(b"face").decode())),
)

requests = st.builds(
    LipsyncRequest,
    video=st.sampled_from(["https://media.example/v.mp4", "data:video/mp4;base64,AAAA"]),
    audio=st.just("https://media.example/a.wav"),
    model=st.sampled_from([*MODELS, "react-1"]),
    sync_mode=st.sampled_from(list(SyncMode)),
    temperature=st.none() | st.floats(0, 1),
    active_speaker=speakers,
    model_mode=st.none() | st.just("lips"),
    emotion=st.none() | st.just("happy"),
    webhook_url=st.none() | st.sampled_from(["https://hooks.example/l", "http://hooks.example/l"]),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_every_candidate_honours_every_option_and_failures_name_every_provider(
    request: LipsyncRequest,
) -> None:
    c = ROUTING  # routing reads only the client's settings: one client serves every example
    try:
        plan = c.route(request)
    except NoRouteError as exc:
        mentioned = {key.split(":")[0] for key in exc.reasons}
        assert mentioned == set(HOST.providers), "every provider gets a reason"
        assert all(exc.reasons.values())
        return
    assert plan.candidates
    for route in plan.candidates:
        assert route.model.id == request.model_id
        assert request.options() <= route.model.options, route.id
        if request.webhook_url:
            assert request.webhook_url.split(":")[0] in route.provider.webhook_schemes
    routed = {r.id for r in plan.candidates} | {e.route for e in plan.excluded}
    assert {r.split(":")[0] for r in routed} == set(HOST.providers)


def test_unknown_model_lists_known_models() -> None:
    with pytest.raises(NoRouteError, match="known models") as info:
        client().route(
            LipsyncRequest(
                video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="lipsync-9"
            )
        )
    assert set(info.value.reasons) == set(HOST.providers)


def test_no_route_error_suggests_where_the_option_is_honoured() -> None:
    request = LipsyncRequest(
        video="https://m.example/v.mp4",
        audio="https://m.example/a.wav",
        model="fal-v2-pro:lipsync-2-pro",
        temperature=0.7,
    )
    with pytest.raises(NoRouteError) as info:
        client().route(request)
    text = str(info.value)
    assert "fal-v2-pro:lipsync-2-pro: does not honour temperature" in text
    assert (
        "temperature is honoured by syncso:lipsync-2, syncso:lipsync-2-pro, syncso:lipsync-1.9.0-beta, "
        "syncso:react-1, unified:lipsync-2, unified:lipsync-2-pro"
    ) in text
    assert "without temperature: fal-v2-pro:lipsync-2-pro" in text


def test_missing_credentials_exclude_routes_and_name_the_env_var() -> None:
    request = LipsyncRequest(video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="sync-3")
    with pytest.raises(NoRouteError) as info:
        client(env={}).route(request)
    assert info.value.reasons["fal-v3:sync-3"] == "no credentials (FAL_KEY is not set)"
    assert info.value.reasons["unified:sync-3"] == "no credentials (EVOLINK_API_KEY is not set)"


def test_local_files_need_upload_or_storage(tmp_path: Path) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF")
    request = LipsyncRequest(video="https://m.example/v.mp4", audio=clip, model="lipsync-2")
    plan = client().route(request)
    assert "unified:lipsync-2" not in {r.id for r in plan.candidates}
    assert any(e.route == "unified:lipsync-2" and e.kind == "storage" for e in plan.excluded)
    with_storage = client(storage="fal-cdn").route(request)
    assert "unified:lipsync-2" in {r.id for r in with_storage.candidates}


def test_cost_strategy_orders_by_price_and_priority_by_config() -> None:
    request = LipsyncRequest(
        video="https://m.example/v.mp4", audio="https://m.example/a.wav", model="lipsync-2-pro"
    )
    by_cost = client(strategy="cost").route(request)
    prices = [r.price_per_second for r in by_cost.candidates]
    assert prices == sorted(prices)
    pinned_order = client(only=["unified", "fal-v2", "fal-v2-pro"]).route(request)
    assert [r.provider.id for r in pinned_order.candidates] == ["unified", "fal-v2", "fal-v2-pro"]
    cheaper = client(strategy="cost", providers={"fal-v2": {"prices": {"lipsync-2-pro": "0.0001"}}})
    assert cheaper.route(request).first.id == "fal-v2:lipsync-2-pro"


def test_explain_names_candidates_and_exclusions() -> None:
    request = LipsyncRequest(
        video="https://m.example/v.mp4",
        audio="https://m.example/a.wav",
        model="sync-3",
        active_speaker=ActiveSpeaker.at(3, 10, 10),
    )
    text = client().route(request).explain()
    assert "1. fal-v3:sync-3" in text
    assert "unified:sync-3: does not honour active_speaker.point" in text
    assert "fal-legacy: does not serve 'sync-3'" in text


@pytest.mark.parametrize("option", [Option.MODEL_MODE, Option.EMOTION])
def test_react_options_are_honoured_by_react_1_on_syncso_only(option: Option) -> None:
    routes = {
        f"{cls.id}:{m.id}" for cls in HOST.providers.values() for m in cls.models if option in m.options
    }
    assert routes == {"syncso:react-1"}
