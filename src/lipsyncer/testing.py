"""The provider contract, as checks any provider plugin can run against its own test backend.

lipsyncer runs these against every built-in provider (over its sandbox); a third party runs them against its own
fake or staging API by implementing :class:`ContractHarness`::

    import pytest
    from lipsyncer.testing import CONTRACT_CHECKS

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda c: c.__name__)
    async def test_contract(check, harness):   # harness: your ContractHarness fixture
        await check(harness)

Each check is an ``async def check_...(harness)`` that raises ``AssertionError`` (or the unexpected error) when
the provider breaks the contract: submit, status, result, cancel, webhook, errors, secrets. The checks need no
test framework; they import only lipsyncer's public names.
"""

from __future__ import annotations

import abc
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import anyio

from . import (
    AuthenticationError,
    CancelNotSupportedError,
    Job,
    JobState,
    JobStatus,
    LipsyncError,
    LipsyncRequest,
    ModelSpec,
    Option,
    Provider,
    ProviderError,
    ProviderOptions,
    ProviderOutput,
    RateLimitedError,
    Submission,
    SubmitOutcomeUnknownError,
    UnsupportedOptionError,
    WebhookEvent,
    WebhookVerificationError,
)

__all__ = [
    "CONTRACT_CHECKS",
    "ContractHarness",
    "check_cancel",
    "check_declarations",
    "check_rate_limit_is_retryable",
    "check_refusal_before_acceptance",
    "check_secrets_stay_secret",
    "check_submit_status_result",
    "check_unhonoured_option_refused_before_any_request",
    "check_unknown_outcome",
    "check_webhooks",
]

SECRET = "sk-contract-9f8e7d6c5b4a3210"
"""A wrong key the backend must refuse; it must never show in an error, its causes or a repr."""


class ContractHarness(abc.ABC):
    """A provider wired to a backend the test can steer. Implement the abstract members for your provider."""

    provider_cls: type[Provider]
    """The provider class under test (a class attribute, or set in ``__init__``)."""
    model: str
    """A model of ``provider_cls`` to run jobs with."""
    webhook_url: ClassVar[str] = "https://hooks.example.com/lipsyncer?lipsyncer_job=contract-job"
    within: ClassVar[float] = 30.0
    """Seconds a job may take on the backend (a guard against hangs, not a timing assertion)."""

    @abc.abstractmethod
    def provider(self, *, api_key: str | None = None) -> Provider:
        """A new provider instance talking to the backend; ``api_key`` replaces the valid key when given."""

    @abc.abstractmethod
    def request(self, **fields: Any) -> LipsyncRequest:
        """A request for :attr:`model` whose media the backend can fetch (``fields`` add options)."""

    @abc.abstractmethod
    def refuse_submits(self, status: int) -> None:
        """From now on, the backend refuses every submit with ``status`` (401, 429) in its own error body."""

    @abc.abstractmethod
    def drop_next_submit_after_accept(self) -> None:
        """The backend takes the next submit (the job exists) and drops the connection before answering."""

    @abc.abstractmethod
    def submits_seen(self) -> int:
        """How many submit requests reached the backend so far."""

    @abc.abstractmethod
    def jobs_created(self) -> int:
        """How many jobs the backend holds (a replayed submit makes none)."""

    async def delivery(self, submission: Submission) -> tuple[Mapping[str, str], bytes]:
        """The backend's genuine webhook delivery for a job submitted with :attr:`webhook_url` (once finished).
        Providers with ``accepts_webhooks`` must override this."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the harness made (providers are closed by the checks)."""


# ---------------------------------------------------------------------------------------------- helpers


async def _submit(
    provider: Provider, harness: ContractHarness, request: LipsyncRequest | None = None, **kwargs: Any
) -> tuple[Submission, ModelSpec]:
    request = request or harness.request()
    spec = provider.model_spec(harness.model)
    assert spec is not None, f"{provider.id} declares no model {harness.model!r}"
    provider.check(request, spec)
    video = await provider.stage(request.video)
    audio = await provider.stage(request.audio)
    submission = await provider.submit(request, spec, video_url=video, audio_url=audio, **kwargs)
    return submission, spec


def _job(provider: Provider, spec: ModelSpec, submission: Submission, *, key: str = "contract-job") -> Job:
    return Job(
        id="contract-job",
        provider=provider.id,
        model=spec.id,
        endpoint=submission.endpoint,
        remote_id=submission.remote_id,
        idempotency_key=key,
        status_url=submission.status_url,
        result_url=submission.result_url,
        cancel_url=submission.cancel_url,
        request_fingerprint="contract",
        provider_data=dict(submission.provider_data),
    )


async def _until(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"the backend did not get there within {within} s")
        await anyio.sleep(0.02)


async def _finish(provider: Provider, job: Job, within: float) -> JobStatus:
    last: list[JobStatus] = []

    async def finished() -> bool:
        status = await provider.status(job)
        assert isinstance(status, JobStatus), f"status() returned {type(status).__name__}, not JobStatus"
        last.append(status)
        return status.state.finished

    await _until(finished, within)
    return last[-1]


def _text_of(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(
        getattr(exc, "details", None)
    )


# ---------------------------------------------------------------------------------------------- checks


async def check_declarations(harness: ContractHarness) -> None:
    """Capabilities are data the router can read: ids, models, prices, options, typed settings."""
    cls = harness.provider_cls
    cls.validate_ids()
    assert isinstance(cls.id, str) and cls.id and cls.id == cls.id.strip()
    for spec in cls.models:
        assert (
            isinstance(spec, ModelSpec) and spec.price_per_second >= 0 and spec.seconds_per_output_second > 0
        )
        assert Option.SYNC_MODE in spec.options, f"{cls.id}:{spec.id} must honour sync_mode (always sent)"
        assert all(isinstance(o, Option) for o in spec.options)
        assert all(spec.honours(o) for o, _ in spec.option_notes), (
            "a note on an option the model does not honour"
        )
    assert issubclass(cls.options_model, ProviderOptions)
    assert cls.options_model.model_config.get("extra") == "forbid", "unknown settings keys must be errors"
    assert all(isinstance(h, str) and h for h in cls.hosts)
    if cls.idempotent_submits:
        assert cls.credential_env is None or isinstance(cls.credential_env, str)


async def check_submit_status_result(harness: ContractHarness) -> None:
    """A submit returns a Submission; status() reaches COMPLETED; result() returns the output."""
    provider = harness.provider()
    try:
        submission, spec = await _submit(provider, harness, idempotency_key="contract-job")
        assert isinstance(submission, Submission) and submission.remote_id
        assert submission.endpoint == spec.endpoint
        if submission.initial_status is not None:
            assert (
                not submission.initial_status.state.finished
                or submission.initial_status.state is JobState.COMPLETED
            )
        job = _job(provider, spec, submission)
        final = await _finish(provider, job, harness.within)
        assert final.state is JobState.COMPLETED, (final.error_code, final.error_message)
        output = await provider.result(job)
        assert isinstance(output, ProviderOutput) and output.video.url.startswith(("http://", "https://"))
    finally:
        await provider.aclose()


async def check_refusal_before_acceptance(harness: ContractHarness) -> None:
    """A refused key is an AuthenticationError with ``accepted=False`` (safe to fall back), not retryable."""
    harness.refuse_submits(401)
    provider = harness.provider()
    try:
        try:
            await _submit(provider, harness)
        except AuthenticationError as exc:
            assert exc.accepted is False and not exc.retryable and exc.provider == provider.id
        else:
            raise AssertionError("a 401 on submit must raise AuthenticationError")
        assert harness.jobs_created() == 0
    finally:
        await provider.aclose()


async def check_rate_limit_is_retryable(harness: ContractHarness) -> None:
    """A 429 is a RateLimitedError: refused before acceptance, retryable."""
    harness.refuse_submits(429)
    provider = harness.provider()
    try:
        try:
            await _submit(provider, harness)
        except RateLimitedError as exc:
            assert exc.accepted is False and exc.retryable
        else:
            raise AssertionError("a 429 on submit must raise RateLimitedError")
    finally:
        await provider.aclose()


async def check_unknown_outcome(harness: ContractHarness) -> None:
    """An answer lost after the backend took the job is SubmitOutcomeUnknownError, sent once; a provider with
    ``idempotent_submits`` may be re-sent with the same key and then names the job it already made."""
    harness.drop_next_submit_after_accept()
    provider = harness.provider()
    try:
        before = harness.submits_seen()
        try:
            await _submit(provider, harness, idempotency_key="contract-job")
        except SubmitOutcomeUnknownError as exc:
            assert exc.provider == provider.id
        else:
            raise AssertionError("a dropped submit answer must raise SubmitOutcomeUnknownError")
        assert harness.submits_seen() == before + 1, (
            "the provider (or its SDK) sent the submit again by itself"
        )
        assert harness.jobs_created() == 1
        if provider.idempotent_submits:
            again, _ = await _submit(provider, harness, idempotency_key="contract-job")
            assert again.remote_id and harness.jobs_created() == 1, "the same key must replay, not make a job"
    finally:
        await provider.aclose()


async def check_cancel(harness: ContractHarness) -> None:
    """``can_cancel`` providers cancel a running job; the others raise CancelNotSupportedError."""
    provider = harness.provider()
    try:
        submission, spec = await _submit(provider, harness)
        job = _job(provider, spec, submission)
        if not provider.can_cancel:
            try:
                await provider.cancel(job)
            except CancelNotSupportedError:
                return
            raise AssertionError("can_cancel is False, so cancel() must raise CancelNotSupportedError")
        await provider.cancel(job)
        final = await _finish(provider, job, harness.within)
        assert final.state in (JobState.CANCELLED, JobState.COMPLETED)  # it may have finished first
    finally:
        await provider.aclose()


async def check_webhooks(harness: ContractHarness) -> None:
    """A genuine delivery parses into a WebhookEvent for the job; a tampered one is refused."""
    provider = harness.provider()
    try:
        if not provider.accepts_webhooks:
            try:
                await provider.parse_webhook({}, b"{}")
            except WebhookVerificationError:
                return
            raise AssertionError("a provider without webhooks must refuse every delivery")
        submission, _ = await _submit(provider, harness, webhook_url=harness.webhook_url)
        headers, body = await harness.delivery(submission)
        event = await provider.parse_webhook(headers, body)
        assert isinstance(event, WebhookEvent) and event.remote_id == submission.remote_id
        assert event.status.state.finished
        other = submission.remote_id[:-1] + ("0" if submission.remote_id[-1] != "0" else "1")
        forged = body.replace(submission.remote_id.encode(), other.encode())
        assert forged != body, "the delivery body does not name the job"
        try:
            await provider.parse_webhook(headers, forged)
        except WebhookVerificationError:
            pass
        else:
            raise AssertionError("a delivery naming another job than the one signed or looked up was trusted")
    finally:
        await provider.aclose()


async def check_secrets_stay_secret(harness: ContractHarness) -> None:
    """A wrong key is refused, and never shows in the error, its causes, its details or the provider's repr."""
    provider = harness.provider(api_key=SECRET)
    try:
        assert SECRET not in repr(provider) and SECRET not in repr(provider.context)
        try:
            await _submit(provider, harness)
        except LipsyncError as exc:
            assert SECRET not in _text_of(exc), "the API key leaked into an error"
            assert isinstance(exc, ProviderError) and exc.accepted is False
        else:
            raise AssertionError("the backend accepted a wrong key")
    finally:
        await provider.aclose()


_SETTABLE: tuple[tuple[Option, dict[str, Any]], ...] = (
    (Option.TEMPERATURE, {"temperature": 0.5}),
    (Option.MODEL_MODE, {"model_mode": "lips"}),
    (Option.EMOTION, {"emotion": "happy"}),
)


async def check_unhonoured_option_refused_before_any_request(harness: ContractHarness) -> None:
    """An option the model does not honour is refused by check() and submit(), and nothing is sent."""
    provider = harness.provider()
    try:
        spec = provider.model_spec(harness.model)
        assert spec is not None
        unhonoured = next((fields for option, fields in _SETTABLE if not spec.honours(option)), None)
        if unhonoured is None:
            return  # honours every option a request can set on its own
        request = harness.request(**unhonoured)
        before = harness.submits_seen()
        for attempt in ("check", "submit"):
            try:
                if attempt == "check":
                    provider.check(request, spec)
                else:
                    await provider.submit(
                        request,
                        spec,
                        video_url="https://x.invalid/v.mp4",
                        audio_url="https://x.invalid/a.wav",
                    )
            except UnsupportedOptionError as exc:
                assert exc.fix, "say what to change"
            else:
                raise AssertionError(f"{attempt}() let an option the model does not honour through")
        assert harness.submits_seen() == before
    finally:
        await provider.aclose()


CONTRACT_CHECKS: tuple[Callable[[ContractHarness], Awaitable[None]], ...] = (
    check_declarations,
    check_submit_status_result,
    check_refusal_before_acceptance,
    check_rate_limit_is_retryable,
    check_unknown_outcome,
    check_cancel,
    check_webhooks,
    check_secrets_stay_secret,
    check_unhonoured_option_refused_before_any_request,
)
"""Every check, in order; parametrize a test over them."""
