"""Through the whole client: bad input fails with a typed error before anything reaches the sandbox, and a key
the provider echoes back never shows in an error, its causes, a log record or a stored job."""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipsyncer import (
    ActiveSpeaker,
    InvalidRequestError,
    Lipsyncer,
    LipsyncError,
    LipsyncRequest,
    MemoryJobStore,
    SQLiteJobStore,
    load_settings,
)
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import SampleMedia, fast_config

BadRequest = Callable[[SampleMedia, Path], Any]

BAD: dict[str, BadRequest] = {
    "nan temperature": lambda m, t: LipsyncRequest(
        video=m.video, audio=m.audio, model="lipsync-2", temperature=math.nan
    ),
    "infinite temperature": lambda m, t: LipsyncRequest(
        video=m.video, audio=m.audio, model="lipsync-2", temperature=math.inf
    ),
    "fractional pixel": lambda m, t: LipsyncRequest(
        video=m.video, audio=m.audio, model="sync-3", active_speaker=ActiveSpeaker.at(0, 10.5, 20)
    ),
    "nan pixel": lambda m, t: LipsyncRequest(
        video=m.video, audio=m.audio, model="sync-3", active_speaker=ActiveSpeaker.at(0, math.nan, 20)
    ),
    "swapped inputs": lambda m, t: LipsyncRequest(video=m.audio, audio=m.video, model="lipsync-2"),
    "empty audio": lambda m, t: LipsyncRequest(
        video=m.video, audio=_write(t / "empty.wav", b""), model="sync-3"
    ),
    "text as video": lambda m, t: LipsyncRequest(
        video=_write(t / "notes.mp4", b"these are my notes\n" * 10), audio=m.audio, model="sync-3"
    ),
    "name too long": lambda m, t: LipsyncRequest(
        video=t / ("v" * 300 + ".mp4"), audio=m.audio, model="sync-3"
    ),
    "unknown model": lambda m, t: LipsyncRequest(video=m.video, audio=m.audio, model="lipsync-9"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(BAD)), key=st.booleans())
def test_bad_input_fails_typed_before_any_request(
    case: str, key: bool, media: SampleMedia, tmp_path: Path, sandbox: Sandbox
) -> None:
    env = {"FAL_KEY": sandbox.config.fal_key, "EVOLINK_API_KEY": sandbox.config.unified_key}
    with Lipsyncer(
        load_settings(env=env, cwd=tmp_path, storage="fal-cdn"),
        env=env,
        transport=sandbox.transport(),
        store=MemoryJobStore(),
    ) as client:
        with pytest.raises(LipsyncError) as info:
            client.submit(BAD[case](media, tmp_path), idempotency_key="k" if key else None)
        assert isinstance(info.value, (InvalidRequestError,)) or type(info.value).__name__ == "NoRouteError"
        assert info.value.fix, f"{case}: a typed error says what to change"
        assert client.store.list_jobs() == []  # nothing written, nothing billed
    assert sandbox.requests == [], f"{case} reached the sandbox"


# A generated key that is a word of our reprs ("ProviderSettings") or a piece of a URL the test requests
# cannot be told apart from them in what is shown. Real keys are random and carry digits: so must these.
_WIRE = (
    "https://queue.fal.run/fal-ai/sync-lipsync/v2 https://queue.fal.run/fal-ai/sync-lipsync/v3 "
    "https://queue.fal.run/fal-ai/sync-lipsync/requests/ "
    "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3 https://v3.fal.media/files/upload"
)
_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:", min_size=12, max_size=40).filter(
    lambda key: key not in _WIRE and any(c.isdigit() for c in key)
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_KEYS)
def test_an_echoed_key_never_shows_anywhere(
    key: str, media: SampleMedia, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = tmp_path / f"{abs(hash(key))}.sqlite"
    with Sandbox(fast_config(fal_key=key)) as sandbox:
        # Every fal answer that fails echoes the key, as some gateways do.
        sandbox.add_fault(
            Fault(kind="http_error", api="fal", operation="status", status=500, times=2, message=key)
        )
        sandbox.add_fault(
            Fault(kind="http_error", api="fal", operation="result", status=429, times=1, message=f"key={key}")
        )
        env = {"FAL_KEY": key}
        settings_ = load_settings(
            env=env, cwd=tmp_path, polling={"initial_interval": 0.02, "max_interval": 0.05}
        )
        shown: list[str] = []
        with Lipsyncer(
            settings_, env=env, transport=sandbox.transport(), store=SQLiteJobStore(store)
        ) as client:
            result = client.run(LipsyncRequest(video=media.video, audio=media.audio, model="sync-3"))
            shown += [repr(result), result.model_dump_json(), repr(client)]
            sandbox.add_fault(
                Fault(kind="http_error", api="fal", operation="submit", status=401, message=key)
            )
            with pytest.raises(LipsyncError) as info:
                client.submit(LipsyncRequest(video=media.video, audio=media.audio, model="lipsync-2"))
            error: BaseException | None = info.value
            shown.append("".join(traceback.format_exception(info.value)))
            while error is not None:
                shown += [str(error), repr(error), repr(getattr(error, "details", None)), repr(error.args)]
                error = error.__cause__ or error.__context__
            shown += [job.model_dump_json() for job in client.store.list_jobs()]
    shown += [record.getMessage() for record in caplog.records]
    shown += [str(record.exc_info) for record in caplog.records if record.exc_info]
    leaks = [text for text in shown if key in text]
    assert not leaks, leaks[:1]
