"""The redactor: secrets out of text, structures, httpx objects, exception chains and the logger tree."""

from __future__ import annotations

import gc
import json
import logging
import traceback
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from lipsyncer.core.errors import ProviderUnavailableError
from lipsyncer.core.provider import ProviderContext
from lipsyncer.core.redact import MARK, RedactingFilter, Redactor

KEY = "k3y-1d:s3cr3t-Value/with+chars"


def test_text_and_its_quoted_forms() -> None:
    r = Redactor([KEY])
    for shown in (KEY, quote(KEY, safe=""), json.dumps(KEY)[1:-1], repr(KEY)[1:-1]):
        assert r.text(f"before {shown} after") == f"before {MARK} after"
    assert r.text("nothing here") == "nothing here"


def test_a_key_and_a_part_of_it_both_go() -> None:
    r = Redactor([KEY, KEY.split(":")[1]])
    assert r.text(f"{KEY} and {KEY.split(':')[1]}") == f"{MARK} and {MARK}"


def test_empty_secrets_are_ignored() -> None:
    r = Redactor(["", "   ", None])
    assert not r
    assert r.text("every word stays") == "every word stays"


def test_structures_keys_values_and_bytes() -> None:
    r = Redactor([KEY])
    data = {"detail": [{"msg": f"bad key {KEY}"}], KEY: (KEY, 3), "raw": KEY.encode()}
    out = r.value(data)
    assert KEY not in repr(out)
    assert out["detail"][0]["msg"] == f"bad key {MARK}"
    assert out[MARK] == (MARK, 3)
    assert out["raw"] == MARK.encode()


def test_httpx_objects_lose_credentials_and_echoes() -> None:
    r = Redactor([KEY])
    request = httpx.Request("POST", f"https://api.test/x?k={KEY}", headers={"Authorization": f"Key {KEY}"})
    response = httpx.Response(401, json={"detail": f"key {KEY} refused"}, request=request)
    clean = r.response(response)
    assert clean.status_code == 401 and clean.json() == {"detail": f"key {MARK} refused"}
    assert clean.request.headers["authorization"] == MARK
    assert KEY not in str(clean.request.url) and KEY not in repr(clean.request.headers)


def test_a_copied_request_does_not_keep_an_upload() -> None:
    upload = httpx.Request("POST", "https://cdn.test/files/upload", content=b"\x00" * 200_000)
    small = httpx.Request("POST", "https://api.test/", content=f'{{"k": "{KEY}"}}'.encode())
    r = Redactor([KEY])
    assert r.request(upload).content == b""
    assert r.request(small).content == f'{{"k": "{MARK}"}}'.encode()


def _raise_chain() -> ProviderUnavailableError:
    request = httpx.Request("GET", "https://api.test/", headers={"Authorization": f"Bearer {KEY}"})
    response = httpx.Response(502, text=f"upstream saw {KEY}", request=request)
    try:
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as low:
            raise RuntimeError(f"wrapped: {KEY}") from low
    except RuntimeError as mid:
        try:
            raise ProviderUnavailableError(
                f"echo {KEY}", provider="p", details={"body": KEY}, fix=f"not {KEY}"
            ) from mid
        except ProviderUnavailableError as top:
            top.add_note(f"note {KEY}")
            return top
    raise AssertionError("unreachable")


def test_an_exception_chain_is_redacted_in_place() -> None:
    exc = _raise_chain()
    assert Redactor([KEY]).exception(exc) is exc
    texts = [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    texts.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    chained: BaseException | None = exc
    while chained is not None:
        texts += [str(chained), repr(chained), repr(vars(chained))]
        if isinstance(chained, httpx.HTTPStatusError):
            texts += [
                chained.response.text,
                repr(chained.request.headers),
                repr(chained.response.request.headers),
            ]
        chained = chained.__cause__
    assert all(KEY not in t for t in texts), [t for t in texts if KEY in t]
    assert exc.details == {"body": MARK} and exc.fix == f"not {MARK}"


def test_the_traceback_text_of_a_chain_is_redacted() -> None:
    text = Redactor([KEY]).traceback(_raise_chain())
    assert KEY not in text
    assert "HTTPStatusError" in text and "RuntimeError: wrapped: <redacted>" in text


def test_scrubbing_redacts_what_propagates() -> None:
    r = Redactor([KEY])
    with pytest.raises(ValueError) as caught, r.scrubbing():
        raise ValueError(f"echo {KEY}")
    assert str(caught.value) == f"echo {MARK}"


def test_provider_context_teaches_its_key_to_its_redactor() -> None:
    shared = Redactor()
    context = ProviderContext(settings=None, api_key=SecretStr(KEY), redactor=shared)
    assert context.redactor is shared and shared.text(KEY) == MARK
    alone = ProviderContext(settings=None, api_key=SecretStr(KEY))
    assert alone.redactor.text(KEY) == MARK
    assert "Redactor" not in repr(alone)


def test_from_environ_picks_credential_named_variables() -> None:
    env = {
        "FAL_KEY": "fal-secret-123",
        "MY_API_TOKEN": "tok-456-abc",
        "HOME": "/home/me",
        "EVOLINK_API_KEY": "ev-0123456789",
        "DEBUG_TOKEN": "1",  # too short to be a credential: every "1" would go
    }
    r = Redactor.from_environ(env)
    text = "fal-secret-123 tok-456-abc ev-0123456789 /home/me line 1"
    assert r.text(text) == f"{MARK} {MARK} {MARK} /home/me line 1"


# ----------------------------------------------------------------------------------------------- logging


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def capture() -> object:
    handler = _Capture()
    root = logging.getLogger("lipsyncer")
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


def test_every_logger_of_the_tree_is_redacted(capture: _Capture) -> None:
    child = logging.getLogger("lipsyncer.test_redact.child")
    r = Redactor([KEY])
    r.attach()
    try:
        child.info("child says %s", KEY)
        logging.getLogger("lipsyncer").warning("root says " + KEY)
        try:
            raise ValueError(KEY)
        except ValueError:
            child.exception("failed")
    finally:
        r.detach()
    joined = "\n".join(capture.lines)
    assert KEY not in joined
    assert f"child says {MARK}" in joined and f"root says {MARK}" in joined
    assert f"ValueError: {MARK}" in joined


def test_two_clients_each_keep_their_own_redaction(capture: _Capture) -> None:
    log = logging.getLogger("lipsyncer.test_redact.two")
    one, two = Redactor(["first-secret-1"]), Redactor(["second-secret-2"])
    one.attach()
    two.attach()
    log.info("first-secret-1 second-secret-2")
    one.detach()
    log.info("first-secret-1 second-secret-2")
    two.detach()
    assert capture.lines == [f"{MARK} {MARK}", f"first-secret-1 {MARK}"]
    assert not any(isinstance(f, RedactingFilter) for f in log.filters), "removed with its last redactor"


def test_an_unclosed_client_leaves_nothing_behind(capture: _Capture) -> None:
    log = logging.getLogger("lipsyncer.test_redact.gc")
    r = Redactor(["gone-secret-3"])
    r.attach()
    [shared] = [f for f in log.filters if isinstance(f, RedactingFilter)]
    del r
    gc.collect()
    log.info("gone-secret-3")  # no redactor is alive to know it: no secret to hide, nothing kept alive
    assert len(shared._redactors) == 0
    assert capture.lines == ["gone-secret-3"]
