"""What a unified create call's answer means once it has left: refused (safe to try elsewhere) or unknown.

The rule, written out independently of the code: a 4xx other than 408/499 is a refusal; a 503 in the API's own
envelope (``service_unavailable_error``) is a refusal too (the API sheds load before creating anything);
everything else after the send — 500, 502, 504, a gateway's HTML page (503 included), 408, a dropped or
timed-out connection, an unreadable 2xx — is an unknown outcome. This is the unified column of the matrix in
docs/errors.md. Each row counts the create calls the sandbox saw: exactly one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.core.errors import (
    InvalidRequestError,
    ProviderError,
    ProviderUnavailableError,
    SubmitOutcomeUnknownError,
)
from lipsyncer.providers.unified import UnifiedProvider

pytestmark = pytest.mark.anyio

Fn = Callable[..., Any]


def expected_refusal(status: int, envelope_type: str | None) -> bool:
    """The documented rule, independent of ``create_refused``."""
    if status // 100 == 4:
        return status not in (408, 499)
    return status == 503 and envelope_type == "service_unavailable_error"


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 429, 503])
async def test_the_apis_own_refusals_may_fall_back(
    status: int, sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="create", status=status))
    with pytest.raises(ProviderError) as caught:
        await submit(provider, urls.request("lipsync-2"))
    err = caught.value
    assert expected_refusal(status, err.details["error"]["type"])
    assert (err.status_code, err.accepted) == (status, False)
    assert err.retryable is (status in (429, 503))
    assert len(sandbox.submits()) == 1 and sandbox.jobs == []


@pytest.mark.parametrize("status", [500, 502])
async def test_server_errors_in_the_envelope_are_unknown(
    status: int, sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    sandbox.add_fault(Fault(kind="http_error", api="unified", operation="create", status=status))
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await submit(provider, urls.request("lipsync-2"))
    assert not expected_refusal(status, "internal_server_error" if status == 500 else "upstream_error")
    assert caught.value.status_code == status
    assert len(sandbox.submits()) == 1


def _gateway(inner: httpx.AsyncBaseTransport, status: int, *, forward: bool) -> httpx.AsyncBaseTransport:
    """A gateway in front of the API that (maybe) forwards the create call, then answers its own page."""

    class Gateway(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method != "POST":
                return await inner.handle_async_request(request)
            if forward:
                await (await inner.handle_async_request(request)).aclose()
            return httpx.Response(status, html=f"<html><h1>{status}</h1><hr>nginx</html>")

    return Gateway()


@pytest.mark.parametrize(
    ("status", "forward"), [(502, True), (503, True), (503, False), (504, True), (408, True), (499, True)]
)
async def test_gateway_pages_are_unknown_whether_or_not_they_forwarded(
    status: int, forward: bool, sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    """A 503 page cannot say whether the API got the call: only the API's envelope can."""
    assert not expected_refusal(status, None)
    provider = make_provider(sandbox, transport=_gateway(sandbox.transport(), status, forward=forward))
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await submit(provider, urls.request("lipsync-2"))
    assert caught.value.status_code == status
    assert len(sandbox.submits()) == (1 if forward else 0)
    assert len(sandbox.jobs) == (1 if forward else 0)


@pytest.mark.parametrize("kind", ["drop_connection", "drop_after_accept"])
async def test_a_dropped_connection_after_the_send_is_unknown(
    kind: str, sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    sandbox.add_fault(Fault(kind=kind, api="unified", operation="create"))
    with pytest.raises(SubmitOutcomeUnknownError):
        await submit(provider, urls.request("lipsync-2"))
    assert len(sandbox.submits()) == 1


async def test_an_unreadable_accept_is_unknown(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    inner = sandbox.transport()

    class Portal(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            if request.method != "POST":
                return response
            await response.aclose()
            return httpx.Response(200, html="<html>Sign in to the network</html>")

    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await submit(make_provider(sandbox, transport=Portal()), urls.request("lipsync-2"))
    assert caught.value.status_code == 200
    assert len(sandbox.jobs) == 1


async def test_a_body_that_cannot_be_encoded_is_local_and_nothing_is_sent(
    sandbox: Sandbox, provider: UnifiedProvider, urls: Any, submit: Fn
) -> None:
    """``model_copy(update=...)`` skips validation: the last check before the wire still refuses NaN."""
    request = urls.request("lipsync-2", temperature=0.5).model_copy(update={"temperature": math.nan})
    with pytest.raises(InvalidRequestError) as caught:
        await submit(provider, request)
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)
    assert caught.value.field == "temperature"
    assert sandbox.requests == []


async def test_refused_connections_send_nothing(
    sandbox: Sandbox, make_provider: Fn, urls: Any, submit: Fn
) -> None:
    class Refuse(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ProviderUnavailableError) as caught:
        await submit(make_provider(sandbox, transport=Refuse()), urls.request("lipsync-2"))
    assert (caught.value.accepted, caught.value.retryable) == (False, True)
    assert sandbox.requests == []
