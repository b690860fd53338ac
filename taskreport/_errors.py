"""Every exception taskreport raises, and their mapping to the API's error bodies.

The service answers errors with ``{"type": ..., "errors": [{"code", "detail", "attr"}]}``; each status code
maps to one class here, so callers can catch what they care about and servers can render the same body.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "ConfigurationError",
    "Forbidden",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestFailed",
    "ServerError",
    "TaskReportError",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
    "error_from_response",
]


class TaskReportError(Exception):
    """Base class of every taskreport error."""

    #: the HTTP status this error stands for (set per class, or per instance from a response)
    status_code: int | None = None
    #: seconds the service asked us to wait (``Retry-After`` on a 429 or 503), or None
    retry_after: float | None = None
    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        attr: str | None = None,
        status_code: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        self.detail = detail or self.__class__.__name__
        self.code = code or self.default_code
        self.attr = attr
        if status_code is not None:
            self.status_code = status_code
        self.errors: list[dict[str, Any]] = errors or [{"code": self.code, "detail": self.detail, "attr": self.attr}]
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{self.attr}: {self.detail}" if self.attr else self.detail

    @property
    def error_type(self) -> str:
        status = self.status_code or 500
        return "server_error" if status >= 500 else "client_error"

    def to_body(self) -> dict[str, Any]:
        """The API's error body for this error."""
        return {"type": self.error_type, "errors": self.errors}


class ValidationError(TaskReportError, ValueError):
    """Invalid input. ``attr`` names the field."""

    status_code = 400
    default_code = "invalid"


class Unauthorized(TaskReportError):
    status_code = 401
    default_code = "authentication_failed"


class Forbidden(TaskReportError):
    """Authenticated, but not allowed (403): unlike 401, it says nothing about the token as a whole."""

    status_code = 403
    default_code = "permission_denied"


class RequestFailed(TaskReportError):
    """The parameters were valid but the request failed (402)."""

    status_code = 402
    default_code = "request_failed"


class NotFound(TaskReportError, LookupError):
    status_code = 404
    default_code = "not_found"


class MethodNotAllowed(TaskReportError):
    status_code = 405
    default_code = "method_not_allowed"


class NotAcceptable(TaskReportError):
    status_code = 406
    default_code = "not_acceptable"


class PayloadTooLarge(TaskReportError):
    status_code = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(TaskReportError):
    status_code = 415
    # the seed's 415 body uses this code, not "unsupported_media_type"
    default_code = "not_acceptable"


class RateLimited(TaskReportError):
    """Too many requests (429). ``retry_after`` is in seconds, or None when the service did not say."""

    status_code = 429
    default_code = "throttled"

    def __init__(self, detail: str = "", *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(detail or "Request was throttled.", **kwargs)


class ServerError(TaskReportError):
    status_code = 500
    default_code = "error"


class TransportError(TaskReportError):
    """The service could not be reached: connection refused, timed out, reset."""

    default_code = "unreachable"


class ConfigurationError(TaskReportError, ValueError):
    """taskreport is configured in a way it refuses to run with (for example a token over plain HTTP)."""

    default_code = "configuration"


_BY_STATUS: dict[int, type[TaskReportError]] = {
    400: ValidationError,
    401: Unauthorized,
    402: RequestFailed,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
}


#: answers that say the service is briefly unable, not that the request is wrong
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
#: answers that say the whole service is down or pushing back, not just this one request
SERVICE_DOWN_STATUSES = frozenset({429, 502, 503, 504})


def is_transient(exc: TaskReportError) -> bool:
    """Worth sending the same request again later: unreachable, timed out, throttled or unavailable."""
    return isinstance(exc, TransportError) or exc.status_code in TRANSIENT_STATUSES


def is_service_down(exc: TaskReportError) -> bool:
    """The next request would fail the same way, whatever it is."""
    return isinstance(exc, TransportError) or exc.status_code in SERVICE_DOWN_STATUSES


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # only for an HTTP-date Retry-After

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> TaskReportError:
    """The exception for an error response, keeping every error the body lists."""
    errors: list[dict[str, Any]] = []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        errors = [e for e in body["errors"] if isinstance(e, dict)]
    first = errors[0] if errors else {}
    detail = str(first.get("detail") or f"HTTP {status}")
    code = first.get("code")
    attr = first.get("attr")
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else TaskReportError)
    kwargs: dict[str, Any] = {"code": code, "attr": attr, "status_code": status, "errors": errors or None}
    retry = None
    if headers:
        retry = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
    if cls is RateLimited:
        return RateLimited(detail, retry_after=retry, **kwargs)
    exc = cls(detail, **kwargs)
    exc.retry_after = retry
    return exc
