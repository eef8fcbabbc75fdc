"""The API key never shows: not in reprs, not in errors (even when the server echoes it), not in log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from lipsyncer.contrib.sandbox import Fault, Sandbox
from lipsyncer.core.errors import JobFailedError, LipsyncError, ProviderError
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
