"""The exact error bodies, statuses and headers each emulated API puts on the wire.

Kept in one module so the faults, the validators and the docs agree on a single shape per error; a test that
asserts a shape asserts it against the provider's documented contract (``docs/sandbox.md`` lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FAL_MODEL_ERRORS",
    "FAL_REQUEST_ERRORS",
    "UNIFIED_ERROR_TYPES",
    "UNIFIED_TASK_ERRORS",
    "WireError",
    "fal_detail_item",
    "fal_error",
    "fal_http_error",
    "fal_ingress_error",
    "fal_model_error",
    "fal_request_error",
    "fal_validation_error",
    "gateway_page",
    "unified_error",
]

FAL_ERRORS_DOC = "https://docs.fal.ai/errors"


@dataclass(frozen=True)
class WireError:
    """An HTTP error response: status, JSON (or text) body and headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    error_type: str | None = None
    message: str = ""


# ------------------------------------------------------------------------------------------------- fal


@dataclass(frozen=True)
class _FalModelErrorSpec:
    status: int
    loc: tuple[str, ...]
    msg: str
    retryable: bool


# Model errors: ``{"detail": [{loc, msg, type, url, ctx?, input?}]}`` plus ``X-Fal-Retryable``.
FAL_MODEL_ERRORS: dict[str, _FalModelErrorSpec] = {
    "face_detection_error": _FalModelErrorSpec(
        422, ("body", "video_url"), "Could not detect a face in the video.", False
    ),
    "content_policy_violation": _FalModelErrorSpec(
        422, ("body",), "The content could not be processed because it violates the content policy.", False
    ),
    "file_download_error": _FalModelErrorSpec(
        422,
        ("body", "video_url"),
        "Failed to download the file. Please check that the URL is accessible.",
        False,
    ),
    "file_too_large": _FalModelErrorSpec(422, ("body", "video_url"), "The file is too large.", False),
    "unsupported_video_format": _FalModelErrorSpec(
        422, ("body", "video_url"), "The video format is not supported.", False
    ),
    "unsupported_audio_format": _FalModelErrorSpec(
        422, ("body", "audio_url"), "The audio format is not supported.", False
    ),
    "video_duration_too_long": _FalModelErrorSpec(
        422, ("body", "video_url"), "The video is longer than the maximum allowed duration.", False
    ),
    "audio_duration_too_long": _FalModelErrorSpec(
        422, ("body", "audio_url"), "The audio is longer than the maximum allowed duration.", False
    ),
    "feature_not_supported": _FalModelErrorSpec(422, ("body",), "This feature is not supported.", False),
    "internal_server_error": _FalModelErrorSpec(500, ("body",), "Internal server error.", True),
    "downstream_service_unavailable": _FalModelErrorSpec(
        500, ("body",), "A downstream service is temporarily unavailable.", True
    ),
    "downstream_service_error": _FalModelErrorSpec(
        400, ("body",), "A downstream service returned an error.", False
    ),
    "generation_timeout": _FalModelErrorSpec(504, ("body",), "The generation timed out.", True),
}

# Request (infrastructure) errors: flat ``{"detail": "<text>", "error_type": "<type>"}`` plus ``X-Fal-Error-Type``.
FAL_REQUEST_ERRORS: dict[str, tuple[int, str]] = {
    "request_timeout": (504, "Request timed out"),
    "startup_timeout": (504, "The runner did not start in time"),
    "runner_scheduling_failure": (503, "No runner could be allocated for the request"),
    "runner_connection_timeout": (503, "The connection to the runner timed out"),
    "runner_disconnected": (503, "The runner disconnected unexpectedly"),
    "runner_connection_refused": (503, "The runner refused the connection"),
    "runner_connection_error": (503, "Connection error with the runner"),
    "runner_incomplete_response": (502, "The runner sent an incomplete response"),
    "runner_server_error": (500, "The runner encountered an internal server error"),
    "client_disconnected": (499, "The client closed the connection"),
    "client_cancelled": (499, "Request was cancelled by the client"),
    "bad_request": (400, "Bad request"),
    "internal_error": (500, "Internal error"),
}

# The error_type a bare ``http_error`` fault on fal carries when none is given.
_FAL_DEFAULT_TYPE_BY_STATUS = {
    400: "bad_request",
    500: "internal_error",
    502: "runner_incomplete_response",
    503: "runner_scheduling_failure",
    504: "request_timeout",
}


def fal_detail_item(
    error_type: str,
    msg: str,
    *,
    loc: tuple[str | int, ...] | list[str | int] = ("body",),
    ctx: dict[str, Any] | None = None,
    input: Any = None,
    with_input: bool = False,
) -> dict[str, Any]:
    """One entry of fal's ``detail`` list (pydantic's error shape plus fal's ``url``)."""
    item: dict[str, Any] = {
        "loc": list(loc),
        "msg": msg,
        "type": error_type,
        "url": f"{FAL_ERRORS_DOC}#{error_type}",
    }
    if ctx is not None:
        item["ctx"] = ctx
    if with_input:
        item["input"] = input
    return item


def fal_validation_error(items: list[dict[str, Any]], *, retryable: bool = False) -> WireError:
    """422 with a list ``detail``; the first item names the error type."""
    first = items[0]
    return WireError(
        status=422,
        body={"detail": items},
        headers={"X-Fal-Retryable": "true" if retryable else "false"},
        error_type=str(first["type"]),
        message=str(first["msg"]),
    )


def fal_model_error(
    error_type: str,
    message: str | None = None,
    *,
    loc: tuple[str | int, ...] | None = None,
    ctx: dict[str, Any] | None = None,
    input: Any = None,
    with_input: bool = False,
) -> WireError:
    spec = FAL_MODEL_ERRORS[error_type]
    msg = message or spec.msg
    item = fal_detail_item(error_type, msg, loc=loc or spec.loc, ctx=ctx, input=input, with_input=with_input)
    return WireError(
        status=spec.status,
        body={"detail": [item]},
        headers={"X-Fal-Retryable": "true" if spec.retryable else "false"},
        error_type=error_type,
        message=msg,
    )


def fal_request_error(error_type: str, detail: str | None = None, *, status: int | None = None) -> WireError:
    default_status, default_detail = FAL_REQUEST_ERRORS.get(error_type, (status or 500, "Request failed"))
    text = detail or default_detail
    headers = {"X-Fal-Error-Type": error_type}
    if error_type == "request_timeout":
        # fal marks a start-timeout the caller asked for; fal-client then does not retry it.
        headers["X-Fal-Request-Timeout-Type"] = "user"
    return WireError(
        status=status or default_status,
        body={"detail": text, "error_type": error_type},
        headers=headers,
        error_type=error_type,
        message=text,
    )


def fal_error(error_type: str, message: str | None = None) -> WireError:
    """A job failure of the given fal type, in whichever of fal's two shapes that type uses."""
    if error_type in FAL_MODEL_ERRORS:
        return fal_model_error(error_type, message)
    if error_type in FAL_REQUEST_ERRORS:
        return fal_request_error(error_type, message)
    raise KeyError(f"unknown fal error type {error_type!r}")


def fal_http_error(
    status: int, error_type: str | None, message: str | None, retry_after: int | None
) -> WireError:
    """A refused HTTP call on fal (rate limit, gateway or runner failure)."""
    if status == 429:
        text = message or "Too many requests: the concurrent request limit was exceeded"
        # fal documents no Retry-After (and fal-client ignores it): sent only when a fault asks for one.
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        if error_type:
            headers["X-Fal-Error-Type"] = error_type
            return WireError(429, {"detail": text, "error_type": error_type}, headers, error_type, text)
        return WireError(429, {"detail": text}, headers, None, text)
    if status == 401:
        text = message or "Invalid API key"
        return WireError(401, {"detail": text}, {}, None, text)
    kind = error_type or _FAL_DEFAULT_TYPE_BY_STATUS.get(status, "internal_error")
    return fal_request_error(kind, message, status=status)


_NGINX_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def fal_ingress_error(status: int) -> WireError:
    """What fal's ingress (nginx) answers before a request reaches the queue: HTML, no request id.

    fal-client retries exactly these (502/503/504 whose body mentions nginx and that carry no
    ``x-fal-request-id``), so this shape is how a test exercises fal-client's own retry loop.
    """
    reason = _NGINX_REASONS.get(status, "Error")
    html = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return WireError(status, html, {"Content-Type": "text/html"}, None, f"{status} {reason}")


def gateway_page(status: int) -> WireError:
    """The nginx page a gateway in front of either API answers with (502/503/504; no request id header)."""
    return fal_ingress_error(status)


# --------------------------------------------------------------------------------------------- unified

UNIFIED_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    502: "upstream_error",
    503: "service_unavailable_error",
}

_UNIFIED_DEFAULT_MESSAGES: dict[int, tuple[str, str | None]] = {
    400: ("Invalid request", None),
    401: ("Invalid or expired API token", "check your API key"),
    402: ("Insufficient credits", "top up your account"),
    403: ("No permission to access this resource", None),
    404: ("Resource not found", None),
    413: ("Request body too large", "reduce the request size"),
    429: ("Rate limit exceeded", "retry after 60 seconds"),
    500: ("Internal server error", "try again later"),
    502: ("Upstream AI service unavailable", "try a different model"),
    503: ("Service temporarily unavailable", "retry after 30 seconds"),
}

# Task error codes (``status: failed`` with ``error: {code, message}``) and whether retrying can help.
UNIFIED_TASK_ERRORS: dict[str, tuple[bool, str]] = {
    "content_policy_violation": (False, "The content violates the safety policy"),
    "invalid_parameters": (False, "Invalid request parameters"),
    "image_processing_error": (False, "The input media could not be processed"),
    "request_cancelled": (False, "The request was cancelled"),
    "resource_not_found": (False, "The task or one of its resources was not found"),
    "generation_timeout": (True, "Task processing timed out; retry later"),
    "quota_exceeded": (True, "Rate limit or quota exceeded; reduce frequency and retry later"),
    "resource_exhausted": (True, "Upstream resources are temporarily exhausted; retry later"),
    "generation_failed_no_content": (True, "The model produced no output"),
    "service_error": (True, "Internal service error; retry later"),
    "service_unavailable": (True, "Service temporarily unavailable; retry later"),
    "unknown_error": (True, "Unclassified error"),
}


def unified_error(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    code: int | str | None = None,
    suggestion: str | None = None,
    retry_after: int | None = None,
) -> WireError:
    """``{"error": {code, message, type, param?, fallback_suggestion?}}`` with ``Retry-After`` on 429/503."""
    default_message, default_suggestion = _UNIFIED_DEFAULT_MESSAGES.get(status, ("Error", None))
    text = message or default_message
    error: dict[str, Any] = {
        "code": status if code is None else code,
        "message": text,
        "type": UNIFIED_ERROR_TYPES.get(status, "internal_server_error"),
    }
    if param is not None:
        error["param"] = param
    tip = suggestion if suggestion is not None else default_suggestion
    if tip is not None:
        error["fallback_suggestion"] = tip
    headers: dict[str, str] = {}
    if status == 429:
        headers["Retry-After"] = str(retry_after if retry_after is not None else 60)
    elif status == 503 and retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return WireError(status, {"error": error}, headers, str(error["type"]), text)
