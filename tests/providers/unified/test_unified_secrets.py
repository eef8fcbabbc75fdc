"""The API key never shows: not in reprs, not in errors (even when the server echoes it), not in log lines."""

from __future__ import annotations

import logging
import string
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from lipsyncer.cli.errors import describe
from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.contrib.sandbox.testing import fast_config
from lipsyncer.core.config import ProviderSettings
from lipsyncer.core.errors import JobFailedError, LipsyncError, ProviderError
from lipsyncer.core.provider import ProviderContext
from lipsyncer.providers.unified import UnifiedProvider

pytestmark = pytest.mark.anyio

Fn = Callable[..., Any]
KEY = "sandbox-unified-key"


def shown(value: Any) -> str:
    parts = [repr(value), str(value)]
    if isinstance(value, LipsyncError):
        parts += [repr(value.args), repr(vars(value))]
    return "\n".join(parts)


async def test_reprs_do_not_show_the_key(provider: UnifiedProvider) -> None:
    for value in (provider, provider.context, provider.context.settings, UnifiedProvider):
        assert KEY not in shown(value)


async def test_errors_and_logs_do_not_show_the_key(
    sandbox: Sandbox,
    provider: UnifiedProvider,
    make_provider: Fn,
    urls: Any,
    submit: Fn,
    job: Fn,
    finish: Fn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f"the gateway saw 'Authorization: Bearer {KEY}'"
    errors: list[LipsyncError] = []

    # A full successful flow, with debug logging on.
    handle = job(await submit(provider, urls.request("lipsync-2")))
    await finish(provider, handle)
    await provider.result(handle)

    # Error envelopes that echo the key, on create and on look-up.
    for operation, status in (("create", 500), ("create", 429), ("query", 503)):
        sandbox.add_fault(
            Fault(kind="http_error", api="unified", operation=operation, status=status, message=echo, times=1)
        )
        with pytest.raises(LipsyncError) as caught:  # a 500 on create is an unknown outcome
            if operation == "create":
                await submit(provider, urls.request("lipsync-2"))
            else:
                await provider.status(handle)
        errors.append(caught.value)

    # A task failure whose message echoes the key.
    sandbox.add_fault(
        Fault(kind="job_error", api="unified", error_type="service_error", message=echo, times=1)
    )
    failed = job(await submit(provider, urls.request("lipsync-2")))
    statuses = await finish(provider, failed)
    with pytest.raises(JobFailedError) as caught_failure:
        await provider.result(failed)
    errors.append(caught_failure.value)

    # A refused key.
    wrong = make_provider(sandbox, key="sk-wrong-" + KEY)
    with pytest.raises(ProviderError) as caught:
        await submit(wrong, urls.request("lipsync-2"))
    errors.append(caught.value)

    assert all("<redacted>" in str(e) for e in errors[:-1]), "the echo reached each error, redacted"
    for error in errors:
        assert KEY not in shown(error)
    assert KEY not in repr(statuses)
    assert caplog.records, "debug logging was on"
    for record in caplog.records:
        assert KEY not in record.getMessage()


# ------------------------------------------------------------------------------- an echoed key, at random

# A generated key that is a word of our reprs ("ProviderSettings") or a piece of a URL the test requests
# cannot be told apart from them in what is shown. Real keys are random and carry digits: so must these.
_WIRE = "https://api.evolink.ai/v1/videos/generations https://api.evolink.ai/v1/tasks/task-unified-"
_KEYS = st.text(alphabet=string.ascii_letters + string.digits + "-_:.+/=", min_size=16, max_size=64).filter(
    lambda key: key not in _WIRE and any(c.isdigit() for c in key)
)


async def _echo_round(
    sandbox: Sandbox, helpers: tuple[Fn, Fn, Fn], key: str, status: int, where: str
) -> list[Any]:
    """One job against a sandbox that echoes ``key`` in an error body; returns what the caller got to see."""
    host, submit, job = helpers
    provider = UnifiedProvider(
        ProviderContext(settings=ProviderSettings(), api_key=SecretStr(key), transport=sandbox.transport())
    )
    echo = f"the gateway saw 'Authorization: Bearer {key}'"
    urls = host(sandbox)
    seen: list[Any] = [provider, provider.context]
    try:
        operation = "create" if where == "submit" else "query"
        if where == "submit":
            sandbox.add_fault(
                Fault(kind="http_error", api="unified", operation=operation, status=status, message=echo)
            )
        try:
            submission = await submit(provider, urls.request("lipsync-2"))
        except LipsyncError as exc:
            seen.append(exc)
        else:
            sandbox.add_fault(
                Fault(kind="http_error", api="unified", operation=operation, status=status, message=echo)
            )
            try:
                seen.append(await provider.status(job(submission)))
            except LipsyncError as exc:
                seen.append(exc)
    finally:
        await provider.aclose()
    return seen


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=_KEYS,
    status=st.sampled_from([400, 401, 402, 403, 429, 500, 502, 503]),
    where=st.sampled_from(["submit", "status"]),
)
def test_an_echoed_key_never_shows_anywhere(
    key: str, status: int, where: str, host: Fn, submit: Fn, job: Fn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with Sandbox(fast_config(unified_key=key, strict=True)) as sandbox:
        seen = anyio.run(_echo_round, sandbox, (host, submit, job), key, status, where)
    texts: list[str] = []
    errors = [s for s in seen if isinstance(s, LipsyncError)]
    assert errors, "every round meets the echo in an error"
    for obj in seen:
        texts.append(shown(obj))
    for error in errors:
        texts.append("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        failure = describe(error)  # the CLI's line and fix
        texts += [failure.message, failure.fix or ""]
        assert "<redacted>" in str(error) or "<redacted>" in repr(vars(error)), "the echo reached the error"
    texts += [record.getMessage() for record in caplog.records] + [caplog.text]
    leaks = [t for t in texts if key in t]
    assert not leaks, leaks[0][:500]
