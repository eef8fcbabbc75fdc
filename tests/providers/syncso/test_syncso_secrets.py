"""The API key and the webhook secret never show in reprs, errors (and their causes) or logs."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lipsyncer import AuthenticationError, LipsyncError, WebhookVerificationError
from lipsyncer.contrib.sandbox import Sandbox

pytestmark = pytest.mark.anyio
Fn = Callable[..., Any]
KEY = "sk-live-0123456789abcdef"


def _leaks(exc: BaseException, secret: str) -> bool:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return secret in text or secret in repr(getattr(exc, "details", ""))


async def test_echoed_key_is_scrubbed_from_refusals(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn, caplog: pytest.LogCaptureFixture
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        key = request.headers["x-api-key"]
        return httpx.Response(
            401, json={"statusCode": 401, "message": f"API key {key} is not valid", "key": key}
        )

    provider = make_provider(sandbox, key=KEY, transport=httpx.MockTransport(echo))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as caught:
        await submit(provider, urls.request("lipsync-2"))
    assert "<redacted>" in str(caught.value)
    assert not _leaks(caught.value, KEY)
    assert KEY not in caplog.text and KEY not in repr(provider)


async def test_key_scrubbed_from_unknown_outcomes_and_look_ups(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn, job: Fn
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=f"<html>upstream said {request.headers['x-api-key']}</html>")

    provider = make_provider(sandbox, key=KEY, transport=httpx.MockTransport(echo))
    with pytest.raises(LipsyncError) as caught:
        await submit(provider, urls.request("lipsync-2"))
    assert not _leaks(caught.value, KEY)
    with pytest.raises(LipsyncError) as caught:
        await provider.status(job("gen-1"))
    assert not _leaks(caught.value, KEY)


async def test_webhook_secret_never_in_refusals(sandbox: Sandbox, make_provider: Fn) -> None:
    provider = make_provider(sandbox, secret="whsec_topsecret")
    with pytest.raises(WebhookVerificationError) as caught:
        await provider.parse_webhook({"Sync-Signature": "t=1,v1=00"}, b"{}")
    assert not _leaks(caught.value, "whsec_topsecret")
    assert "whsec_topsecret" not in repr(provider.context)
