"""Errors: one class per status code, bodies as the service writes them, Retry-After."""

from __future__ import annotations

import email.utils
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from taskreport import _errors
from taskreport._errors import (
    ConfigurationError,
    Forbidden,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestFailed,
    ServerError,
    TaskReportError,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
    error_from_response,
    parse_retry_after,
)

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


def _body(code: str, detail: str, attr: str | None = None, kind: str = "client_error") -> dict[str, Any]:
    return {"type": kind, "errors": [{"code": code, "detail": detail, "attr": attr}]}


# The bodies documented in shared/seeds/003_e2fe648b9ae9a9d3.txt, as (status, class, body).
DOCUMENTED = [
    (401, Unauthorized, _body("authentication_failed", "Incorrect authentication credentials.")),
    (401, Unauthorized, _body("not_authenticated", "Authentication credentials were not provided.")),
    (405, MethodNotAllowed, _body("method_not_allowed", "Method \u201cpatch\u201d not allowed.")),
    (406, NotAcceptable, _body("not_acceptable", "Could not satisfy the request Accept header.")),
    (
        415,
        UnsupportedMediaType,
        _body("not_acceptable", "Unsupported media type \u201capplication/xml\u201d in request."),
    ),
    (500, ServerError, _body("error", "A server error occurred.", kind="server_error")),
]

MAPPING = [
    (400, ValidationError),
    (401, Unauthorized),
    (402, RequestFailed),
    (403, Forbidden),
    (404, NotFound),
    (405, MethodNotAllowed),
    (406, NotAcceptable),
    (413, PayloadTooLarge),
    (415, UnsupportedMediaType),
    (429, RateLimited),
    (500, ServerError),
    (502, ServerError),
    (503, ServerError),
    (504, ServerError),
]


@pytest.mark.parametrize(("status", "cls"), MAPPING)
def test_status_maps_to_class_keeping_code_detail_attr(status: int, cls: type[TaskReportError]) -> None:
    body = _body(
        "some_code", f"detail for {status}", attr="field", kind="server_error" if status >= 500 else "client_error"
    )
    err = error_from_response(status, body)
    assert type(err) is cls
    assert isinstance(err, TaskReportError)
    assert err.status_code == status
    assert err.code == "some_code"
    assert err.detail == f"detail for {status}"
    assert err.attr == "field"
    assert err.errors == body["errors"]
    assert err.to_body() == body


@pytest.mark.parametrize(("status", "cls"), MAPPING)
def test_status_without_body_still_maps(status: int, cls: type[TaskReportError]) -> None:
    for body in (None, "<html>Bad Gateway</html>", {}, {"errors": "nope"}, {"errors": ["not a dict"]}, []):
        err = error_from_response(status, body)
        assert type(err) is cls
        assert err.status_code == status
        assert err.attr is None
        assert err.detail  # something to show
        assert err.code == cls.default_code
        assert err.to_body()["type"] == ("server_error" if status >= 500 else "client_error")


def test_unmapped_client_status_is_base_error_keeping_status() -> None:
    err = error_from_response(418, _body("teapot", "I'm a teapot"))
    assert type(err) is TaskReportError
    assert err.status_code == 418
    assert err.code == "teapot"
    assert err.to_body() == _body("teapot", "I'm a teapot")


def test_every_error_in_the_body_is_kept() -> None:
    body = {
        "type": "client_error",
        "errors": [
            {"code": "blank", "detail": "may not be blank.", "attr": "name"},
            {"code": "max_value", "detail": "too big.", "attr": "value"},
        ],
    }
    err = error_from_response(400, body)
    assert isinstance(err, ValidationError)
    assert err.attr == "name"
    assert err.detail == "may not be blank."
    assert err.errors == body["errors"]
    assert err.to_body() == body


@pytest.mark.parametrize(("status", "cls", "body"), DOCUMENTED)
def test_documented_bodies_round_trip_exactly(status: int, cls: type[TaskReportError], body: dict[str, Any]) -> None:
    err = error_from_response(status, body)
    assert type(err) is cls
    assert err.to_body() == body
    # the JSON a server would send is the documented JSON
    assert json.loads(json.dumps(err.to_body())) == body


@pytest.mark.parametrize(("status", "cls", "body"), DOCUMENTED)
def test_raising_the_class_gives_the_documented_body(
    status: int, cls: type[TaskReportError], body: dict[str, Any]
) -> None:
    """What a server raises with only a detail renders the documented code and type."""
    first = body["errors"][0]
    # only the 401 "not_authenticated" variant needs a code other than the class's default
    extra = {} if first["code"] == cls.default_code else {"code": first["code"]}
    err = cls(first["detail"], **extra)
    assert err.status_code == status
    assert err.to_body() == body


def _seed_examples() -> list[tuple[int, dict[str, Any]]]:
    path = SEEDS / "003_e2fe648b9ae9a9d3.txt"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    found = []
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        status = int(section.split()[0])
        for block in re.findall(r"```json\n(.*?)```", section, flags=re.S):
            found.append((status, json.loads(block)))
    return found


def test_seed_file_bodies_round_trip() -> None:
    """Every error example in the seed document parses to its class and renders back unchanged."""
    examples = _seed_examples()
    if not examples:
        pytest.skip(f"seed document not found under {SEEDS}")
    assert {status for status, _ in examples} == {401, 405, 406, 415, 500}
    classes = {status: cls for status, cls, _ in DOCUMENTED}
    for status, body in examples:
        err = error_from_response(status, body)
        assert type(err) is classes[status]
        assert err.to_body() == body
        assert body in [b for s, _, b in DOCUMENTED if s == status]


def test_hierarchy() -> None:
    for name in _errors.__all__:
        obj = getattr(_errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, TaskReportError), name
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(NotFound, LookupError)
    # catching the base class catches everything the library raises
    with pytest.raises(TaskReportError):
        raise error_from_response(429, None)


def test_message_names_attr() -> None:
    err = ValidationError("may not be blank.", attr="name", code="blank")
    assert str(err) == "name: may not be blank."
    assert err.to_body() == _body("blank", "may not be blank.", "name")
    assert str(NotFound("Not found.")) == "Not found."


def test_defaults() -> None:
    assert NotFound().code == "not_found"
    assert NotFound().status_code == 404
    assert NotFound().detail  # never empty
    assert TransportError("connection refused").code == "unreachable"
    assert TransportError("x").status_code is None
    assert ServerError().to_body()["type"] == "server_error"
    assert ServerError(status_code=503).status_code == 503
    assert ServerError.status_code == 500  # the instance override does not leak to the class


# -- Retry-After ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5), ("-3", 0.0)],
)
def test_retry_after_seconds(header: str, expected: float) -> None:
    assert parse_retry_after(header) == expected
    err = error_from_response(429, None, {"Retry-After": header})
    assert isinstance(err, RateLimited)
    assert err.retry_after == expected
    assert err.status_code == 429


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(90.0)
    # a date in the past means: retry now
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0


def test_retry_after_http_date_against_the_clock() -> None:
    header = email.utils.formatdate(time.time() + 60, usegmt=True)
    err = error_from_response(429, _body("throttled", "Request was throttled."), {"Retry-After": header})
    assert isinstance(err, RateLimited)
    assert err.retry_after is not None
    assert 55 <= err.retry_after <= 61


@pytest.mark.parametrize("header", [None, "", "soon", "Mon, 99 Foo 2024"])
def test_retry_after_missing_or_garbage(header: str | None) -> None:
    assert parse_retry_after(header) is None
    headers = {} if header is None else {"Retry-After": header}
    err = error_from_response(429, None, headers)
    assert isinstance(err, RateLimited)
    assert err.retry_after is None
    assert err.code == "throttled"


def test_rate_limited_keeps_body() -> None:
    body = _body("throttled", "Request was throttled. Expected available in 3 seconds.")
    err = error_from_response(429, body, {"Retry-After": "3"})
    assert isinstance(err, RateLimited)
    assert err.retry_after == 3.0
    assert err.detail == body["errors"][0]["detail"]
    assert err.to_body() == body
